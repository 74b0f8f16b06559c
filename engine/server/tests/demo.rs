//! `mcp-engine serve --demo`: the demo tenant, over gRPC only, with every
//! kind of plugin at work, its A/B experiment, and a restart on the same
//! data.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use mcp_engine::proto::common::MessageType;
use mcp_engine::proto::engine::mcp_engine_client::McpEngineClient;
use mcp_engine::proto::engine::*;
use prost_types::{Struct, Value, value::Kind};
use tonic::transport::Channel;

/// Starts the engine with the demo on `data`; returns it and the demo key
/// it printed.
async fn start_demo(data: &std::path::Path) -> (Engine, String) {
    start_demo_with(data, HashMap::new()).await
}

struct Demo {
    client: McpEngineClient<Channel>,
    key: String,
    conversation: String,
}

impl Demo {
    async fn say_as(&mut self, text: &str, profile: Option<Struct>) -> ProcessMessageResponse {
        let mut request = message("demo", &self.conversation, text);
        if let Some(profile) = profile {
            request.content.as_mut().unwrap().metadata = Some(Struct {
                fields: [(
                    "user_profile".to_owned(),
                    Value {
                        kind: Some(Kind::StructValue(profile)),
                    },
                )]
                .into(),
            });
        }
        self.client
            .process_message(authed(request, &self.key))
            .await
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .into_inner()
    }

    async fn say(&mut self, text: &str) -> String {
        let response = self.say_as(text, None).await;
        let status = response.status.unwrap();
        assert!(status.success, "{text:?}: {}", status.message);
        response.response.unwrap().text
    }
}

fn profile(spent: f64) -> Struct {
    Struct {
        fields: [
            (
                "name".to_owned(),
                Value {
                    kind: Some(Kind::StringValue("Ada".into())),
                },
            ),
            (
                "spent".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(spent)),
                },
            ),
        ]
        .into(),
    }
}

#[tokio::test]
async fn the_demo_tenant_takes_orders_tracks_them_and_plays_trivia() {
    let data = std::env::temp_dir().join(format!("mcp-demo-{}", std::process::id()));
    let (engine, key) = start_demo(&data).await;
    let (_, client) = clients(&engine).await;
    let mut demo = Demo {
        client,
        key: key.clone(),
        conversation: "vip-order".into(),
    };

    // A VIP orders: intent plugin, slots, VIP condition, price action.
    let hello = demo.say_as("hi", Some(profile(250.0))).await;
    let greeting = hello.response.unwrap().text;
    match hello.ab_variant.as_str() {
        "friendly" => assert!(
            greeting.starts_with("Welcome to Pizza Planet, Ada! 🍕"),
            "{greeting}"
        ),
        "brief" => assert_eq!(greeting, "Pizza Planet. Order, track, or trivia?"),
        other => panic!("variant {other:?}"),
    }
    assert_eq!(
        demo.say("I'd like to order a pizza").await,
        "What size would you like: small, medium or large?"
    );
    assert_eq!(
        demo.say("large pepperoni please").await,
        "How many large pepperoni pizzas? (1 to 10)"
    );
    assert_eq!(
        demo.say("eleven").await,
        "Please give a number from 1 to 10."
    );
    assert_eq!(
        demo.say("2").await,
        "That comes to $20.00.\nAs a VIP you get 20% off. Shall I place the order for 2 × large pepperoni?"
    );
    let placed = demo.say("yes").await;
    assert_eq!(
        placed,
        "Order placed! 2 × large pepperoni, $20.00. It will be with you in about 30 minutes."
    );

    // Someone else tracks an order: the tool plugin calls the order API.
    demo.conversation = "tracking".into();
    demo.say("hello").await;
    assert_eq!(
        demo.say("where is my order?").await,
        "What's your order number? It looks like AB1234."
    );
    assert_eq!(
        demo.say("it's ab1234").await,
        "Order AB1234 is out for delivery, about 12 minutes away. Anything else?"
    );
    demo.say("track my order").await;
    // An order the API does not know is the turn's integration error,
    // answered by the flow's error message.
    let unknown = demo.say_as("ZZ9999", None).await;
    assert_eq!(unknown.status.unwrap().error_code, "Integration");
    assert_eq!(
        unknown.response.unwrap().text,
        "I couldn't find order ZZ9999."
    );

    // Trivia: the tenant's state type.
    assert_eq!(
        demo.say("let's play trivia").await,
        "Pizza trivia: which Italian city is the Margherita from?"
    );
    assert_eq!(demo.say("Rome").await, "Not quite, try again.");
    assert_eq!(
        demo.say("Naples").await,
        "Correct!\nAnything else? Order, track, or more trivia?"
    );

    // README's suggested phrases work as the first message of a
    // conversation: the greeting, then the answer to the request.
    for (n, (phrase, answer)) in [
        (
            "I'd like to order a pizza",
            "What size would you like: small, medium or large?",
        ),
        (
            "where is my order AB1234?",
            "Order AB1234 is out for delivery, about 12 minutes away. Anything else?",
        ),
        (
            "let's play trivia",
            "Pizza trivia: which Italian city is the Margherita from?",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        demo.conversation = format!("first-words-{n}");
        let reply = demo.say(phrase).await;
        let (greeting, rest) = reply
            .split_once('\n')
            .unwrap_or_else(|| panic!("{phrase:?}: only {reply:?}"));
        assert!(greeting.contains("Pizza Planet"), "{phrase:?}: {greeting}");
        assert_eq!(rest, answer, "{phrase:?}");
    }

    // Every plugin was called.
    let (_, metrics) = http_get(&engine.http, "/metrics").await;
    for plugin in ["menu-intents", "vip-check", "price", "order-api", "trivia"] {
        assert!(
            metrics.contains(&format!(
                "mcp_plugin_calls_total{{outcome=\"ok\",plugin=\"{plugin}\",tenant=\"demo\"}}"
            )),
            "{plugin}: {metrics}"
        );
    }

    // The experiment splits new conversations between both greetings.
    let mut variants = BTreeSet::new();
    for n in 0..20 {
        demo.conversation = format!("ab-{n}");
        variants.insert(demo.say_as("hi", None).await.ab_variant);
    }
    assert_eq!(
        variants,
        BTreeSet::from(["brief".to_owned(), "friendly".to_owned()])
    );

    // Started again on the same data, the demo is kept and a new key works.
    drop(engine);
    let (engine, second_key) = start_demo(&data).await;
    assert_ne!(second_key, key);
    let (_, client) = clients(&engine).await;
    let mut demo = Demo {
        client,
        key: second_key,
        conversation: "after-restart".into(),
    };
    demo.say("hi").await;
    assert_eq!(
        demo.say("trivia please").await,
        "Pizza trivia: which Italian city is the Margherita from?"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
}

/// What real users do to the demo, over gRPC: tap quick replies, digress
/// mid-form and come back, correct and cancel, ramble, and ask for a person.
#[tokio::test]
async fn the_demo_copes_with_real_users() {
    use mcp_engine::proto::admin::ResumeConversationRequest;
    use mcp_engine::proto::common::Priority;

    let data = std::env::temp_dir().join(format!("mcp-demo-real-{}", std::process::id()));
    let (engine, key) = start_demo(&data).await;
    let (mut admin, client) = clients(&engine).await;
    let mut demo = Demo {
        client,
        key: key.clone(),
        conversation: "real-users".into(),
    };

    // Quick replies reach the client as the seed's QuickReply messages.
    let hello = demo.say_as("hi", None).await;
    let content = hello.response.unwrap();
    let offered: Vec<(&str, &str)> = content
        .quick_replies
        .iter()
        .map(|q| (q.title.as_str(), q.payload.as_str()))
        .collect();
    assert_eq!(
        offered,
        [
            ("Order a pizza", "ORDER"),
            ("Where's my order?", "TRACK"),
            ("Trivia", "TRIVIA")
        ]
    );
    assert_eq!(content.r#type, MessageType::QuickReply as i32);

    // Tapping one sends its title and payload; the flow routes on either.
    let mut tap = message("demo", &demo.conversation, "Order a pizza");
    tap.content.as_mut().unwrap().quick_replies = vec![QuickReply {
        title: "Order a pizza".into(),
        payload: "ORDER".into(),
        clicked: true,
        ..Default::default()
    }];
    let size = demo
        .client
        .process_message(authed(tap, &key))
        .await
        .unwrap()
        .into_inner();
    let size = size.response.unwrap();
    assert_eq!(
        size.text,
        "What size would you like: small, medium or large?"
    );
    assert_eq!(size.quick_replies.len(), 3);

    // A digression mid-form, and back to the question.
    assert_eq!(
        demo.say("large pepperoni").await,
        "How many large pepperoni pizzas? (1 to 10)"
    );
    assert_eq!(
        demo.say("actually, a quiz first").await,
        "Pizza trivia: which Italian city is the Margherita from?"
    );
    assert_eq!(
        demo.say("Naples").await,
        "Correct!\nBack to your order:\nHow many large pepperoni pizzas? (1 to 10)"
    );
    // A correction at the confirmation prices the order again.
    assert_eq!(
        demo.say("2").await,
        "That comes to $25.00.\nShall I place the order for 2 × large pepperoni?"
    );
    assert_eq!(
        demo.say("make it small").await,
        "Changed.\nThat comes to $16.00.\nShall I place the order for 2 × small pepperoni?"
    );
    assert_eq!(
        demo.say("never mind").await,
        "Please answer yes or no: shall I place the order?",
        "cancel belongs to the order form, not to the confirmation"
    );

    // Rambling at the menu escalates, then a person takes over.
    demo.conversation = "rambling".into();
    demo.say("hello").await;
    assert_eq!(
        demo.say("the weather is nice").await,
        "Sorry, I didn't catch that. You can order a pizza, track an order, or play pizza trivia."
    );
    assert!(demo.say("hmm").await.starts_with("I'm still not sure"));
    let handed = demo.say_as("blah", None).await;
    assert_eq!(
        handed.response.unwrap().text,
        "Let me get you a colleague.\nI'll hand you to a colleague; they'll answer here shortly."
    );
    let notes = handed.metadata.unwrap().custom_metadata.unwrap();
    let handoff = match &notes.fields["handoff"].kind {
        Some(Kind::StructValue(handoff)) => handoff.clone(),
        other => panic!("handoff: {other:?}"),
    };
    assert_eq!(
        handoff.fields["reason"].kind,
        Some(Kind::StringValue("asked for a person".into()))
    );
    // Automation is off: the message is kept, the bot says nothing.
    assert_eq!(demo.say("hello?").await, "");
    let state = demo
        .client
        .get_conversation_state(authed(
            GetConversationStateRequest {
                tenant_context: message("demo", "rambling", "").tenant_context,
                conversation_id: "rambling".into(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        state
            .metadata
            .unwrap()
            .custom_metadata
            .unwrap()
            .fields
            .contains_key("handoff"),
        "GetConversationState shows the handoff"
    );
    // The transcript keeps the message no one answered, and the handoff.
    let transcript = admin
        .get_transcript(authed(
            mcp_engine::proto::admin::GetTranscriptRequest {
                tenant_id: "demo".into(),
                conversation_id: "rambling".into(),
                limit: 0,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    let last = transcript.turns.last().unwrap();
    assert_eq!(
        last.input.as_ref().unwrap().fields["text"].kind,
        Some(Kind::StringValue("hello?".into()))
    );
    assert!(
        format!("{:?}", last.output).contains("asked for a person"),
        "{last:?}"
    );
    let resumed = admin
        .resume_conversation(authed(
            ResumeConversationRequest {
                tenant_id: "demo".into(),
                conversation_id: "rambling".into(),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.handoff_reason, "asked for a person");
    assert!(
        demo.say("hi").await.contains("Pizza Planet"),
        "the flow starts over"
    );
    let again = admin
        .resume_conversation(authed(
            ResumeConversationRequest {
                tenant_id: "demo".into(),
                conversation_id: "rambling".into(),
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    // Hints: bypass_automation hands over at once; require_human_review and
    // an ignored force_flow are said in the response; an unknown priority
    // is refused.
    demo.conversation = "hinted".into();
    demo.say("hi").await;
    let mut review = message("demo", "hinted", "I'd like to order a pizza");
    review.processing_hints = Some(ProcessingHints {
        require_human_review: true,
        force_flow: "other_flow".into(),
        priority: Priority::High as i32,
        ..Default::default()
    });
    let reviewed = demo
        .client
        .process_message(authed(review, &key))
        .await
        .unwrap()
        .into_inner();
    let notes = reviewed.metadata.unwrap().custom_metadata.unwrap();
    assert_eq!(
        notes.fields["review_required"].kind,
        Some(Kind::BoolValue(true))
    );
    assert!(
        format!("{:?}", notes.fields["hints_ignored"]).contains("force_flow"),
        "{notes:?}"
    );
    let mut bypass = message("demo", "hinted", "get me out of here");
    bypass.processing_hints = Some(ProcessingHints {
        bypass_automation: true,
        ..Default::default()
    });
    let bypassed = demo
        .client
        .process_message(authed(bypass, &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bypassed.response.unwrap().text, "");
    assert!(format!("{:?}", bypassed.metadata).contains("bypass_automation"));
    // expected_response_type picks the template; bypass_cache reads the
    // flows from the database again (the response says so: a cache miss).
    let mut brief = message("demo", "brief-please", "hi");
    brief.processing_hints = Some(ProcessingHints {
        expected_response_type: "brief".into(),
        ..Default::default()
    });
    let brief = demo
        .client
        .process_message(authed(brief, &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        brief.response.unwrap().text,
        "Pizza Planet. Order, track, or trivia?"
    );
    let cache_status =
        |response: ProcessMessageResponse| response.performance_metrics.unwrap().cache_status;
    let cached = demo
        .client
        .process_message(authed(message("demo", "cached", "hi"), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cache_status(cached), "hit");
    let mut fresh = message("demo", "fresh", "hi");
    fresh.processing_hints = Some(ProcessingHints {
        bypass_cache: true,
        ..Default::default()
    });
    let fresh = demo
        .client
        .process_message(authed(fresh, &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cache_status(fresh), "miss");

    let mut unknown = message("demo", "hinted", "hi");
    unknown.processing_hints = Some(ProcessingHints {
        priority: 42,
        ..Default::default()
    });
    let refused = demo
        .client
        .process_message(authed(unknown, &key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("processing_hints.priority"));

    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
}

/// `mcp-engine chat` against the demo: it lists quick replies and "#N"
/// taps one.
#[tokio::test]
async fn the_chat_command_shows_and_taps_quick_replies() {
    use tokio::io::AsyncWriteExt;

    let data = std::env::temp_dir().join(format!("mcp-demo-chat-{}", std::process::id()));
    let (engine, key) = start_demo(&data).await;
    let mut chat = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-engine"))
        .args(["chat", "--server", &engine.address, "--tenant", "demo"])
        .env("MCP_API_KEY", &key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    stdin.write_all(b"hi\n#2\nCD5678\n").await.unwrap();
    drop(stdin);
    let output = chat.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("[#1] Order a pizza  [#2] Where's my order?  [#3] Trivia"),
        "{text}"
    );
    assert!(
        text.contains("What's your order number? It looks like AB1234."),
        "{text}"
    );
    assert!(
        text.contains("Order CD5678 is in the oven, about 25 minutes away. Anything else?"),
        "{text}"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
}

/// examples/clients/python, with code generated from proto/ by grpcio-tools
/// (PyPI), orders from the demo.
#[tokio::test]
async fn the_python_client_example_orders_from_the_demo() {
    if !python_has("grpc_tools", "grpcio grpcio-tools") {
        return;
    }
    let data = std::env::temp_dir().join(format!("mcp-demo-py-{}", std::process::id()));
    let (engine, key) = start_demo(&data).await;
    let stubs = data.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let generated = std::process::Command::new("python3")
        .args(["-m", "grpc_tools.protoc", &format!("-I{repo}/proto")])
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .args(["common.proto", "mcp_engine.proto"])
        .status()
        .unwrap();
    assert!(generated.success());
    let output = tokio::process::Command::new("python3")
        .arg(format!("{repo}/examples/clients/python/client.py"))
        .args([
            "--server",
            engine.address.trim_start_matches("http://"),
            "--tenant",
            "demo",
        ])
        .args(["hello", "#2", "CD5678", "#1"])
        .env("MCP_API_KEY", &key)
        .env("PYTHONPATH", &stubs)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The client lists the quick replies, and "#2" taps the second.
    assert!(
        text.contains("[1] Order a pizza  [2] Where's my order?  [3] Trivia"),
        "{text}"
    );
    assert!(
        text.contains("you: Where's my order? (tapped TRACK)"),
        "{text}"
    );
    assert!(
        text.contains("bot: Order CD5678 is in the oven, about 25 minutes away. Anything else?"),
        "{text}"
    );
    assert!(
        text.contains("bot: What size would you like: small, medium or large?"),
        "{text}"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
}

//! What a turn reports and what the engine does around it, through the real
//! binary: per-turn plugin figures and cache status, per-plugin metrics,
//! `trigger_flow`, wait-state timeouts delivered with no message, the
//! client's deadline, graceful shutdown of a turn in flight, and every admin
//! call's error codes.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use mcp_engine::proto::admin::*;
use mcp_engine::proto::engine::*;
use prost_types::value::Kind;
use serde_json::json;
use tonic::Code;

fn number(metrics: &mcp_engine::proto::common::PerformanceMetrics, field: &str) -> f64 {
    match metrics
        .custom_metrics
        .as_ref()
        .and_then(|s| s.fields.get(field))
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::NumberValue(n)) => *n,
        other => panic!("custom_metrics.{field} is {other:?}"),
    }
}

#[tokio::test]
async fn a_turn_reports_its_plugin_calls_fuel_and_cache_use() {
    let engine = start(HashMap::new()).await;
    let (mut admin, mut client) = clients(&engine).await;
    let (tenant, key) = new_tenant(&mut admin, "perf", &[]).await;
    for (name, path) in [
        ("vip-check", mcp_example_plugins::VIP_CHECK),
        ("price", mcp_example_plugins::PRICE),
    ] {
        upload(&mut admin, &key, &tenant, name, path, HashMap::new()).await;
    }
    let flow = serde_json::from_str(&refunds_flow()).unwrap();
    publish(&mut admin, &key, &tenant, &flow).await;

    let first = client
        .process_message(authed(message(&tenant, "c-1", "hello"), &key))
        .await
        .unwrap()
        .into_inner();
    let metrics = first.performance_metrics.unwrap();
    assert_eq!(
        metrics.cache_status, "miss",
        "the first turn reads the flow and plugins"
    );
    assert_eq!(number(&metrics, "plugin_calls"), 1.0);
    assert_eq!(number(&metrics, "plugin_errors"), 0.0);
    assert!(number(&metrics, "fuel_used") > 0.0);

    let second = client
        .process_message(authed(message(&tenant, "c-1", "again"), &key))
        .await
        .unwrap()
        .into_inner();
    let metrics = second.performance_metrics.unwrap();
    assert_eq!(
        metrics.cache_status, "hit",
        "the pinned flow and loaded plugins are cached"
    );
    assert_eq!(number(&metrics, "plugin_calls"), 1.0);

    let (_, text) = http_get(&engine.http, "/metrics").await;
    let series = format!(
        "mcp_plugin_calls_total{{outcome=\"ok\",plugin=\"vip-check\",tenant=\"{tenant}\"}} 2"
    );
    assert!(text.contains(&series), "{text}");
    assert!(
        text.contains(&format!(
            "mcp_plugin_fuel_total{{plugin=\"vip-check\",tenant=\"{tenant}\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "mcp_plugin_call_duration_seconds_count{{plugin=\"vip-check\",tenant=\"{tenant}\"}} 2"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn trigger_flow_moves_the_conversation_to_the_named_flow() {
    let engine = start(HashMap::new()).await;
    let (mut admin, mut client) = clients(&engine).await;
    let (tenant, key) = new_tenant(&mut admin, "trigger", &[]).await;
    let orders = json!({
        "flow_id": "orders", "name": "Orders", "version": "3", "initial_state": "size",
        "states": {
            "size": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["size"],
                    "validation_rules": { "size": "one_of:small,large" },
                    "prompts": { "size": "Small or large?" }
                },
                "transitions": [ { "condition": "slot_filled", "target_state": "done" } ]
            },
            "done": { "type": "end", "config": { "message": "A {{ slots.size }} one for {{ variables.name }}." } }
        }
    });
    publish(&mut admin, &key, &tenant, &orders).await;
    let router = json!({
        "flow_id": "router", "name": "Router", "version": "1", "initial_state": "hello",
        "variables": { "name": "Ada" },
        "states": {
            "hello": {
                "type": "response",
                "config": { "response_templates": { "default": "Let's order." } },
                "entry_actions": [ { "type": "trigger_flow", "flow_id": "orders" } ],
                "transitions": [ { "condition": "any_input", "target_state": "bye" } ]
            },
            "bye": { "type": "end" }
        }
    });
    publish(&mut admin, &key, &tenant, &router).await;

    let handed = client
        .process_message(authed(message(&tenant, "c-1", "hi"), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(handed.current_state, "size");
    assert_eq!(
        handed.response.unwrap().text,
        "Let's order.\nSmall or large?",
        "the new flow's first question follows in the same reply"
    );
    let state = handed.conversation_state.unwrap();
    assert_eq!(
        (state.flow_id.as_str(), state.flow_version.as_str()),
        ("orders", "3")
    );

    let done = client
        .process_message(authed(message(&tenant, "c-1", "large please"), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        done.response.unwrap().text,
        "A large one for Ada.",
        "variables travel along"
    );

    // A trigger naming a flow that is not published is the turn's error; the
    // conversation stays in its flow.
    let broken = json!({
        "flow_id": "broken", "name": "Broken", "version": "1", "initial_state": "hello",
        "states": {
            "hello": {
                "type": "response",
                "config": { "response_templates": { "default": "Hm." } },
                "entry_actions": [ { "type": "trigger_flow", "flow_id": "nowhere" } ],
                "transitions": [ { "condition": "any_input", "target_state": "bye" } ]
            },
            "bye": { "type": "end" }
        }
    });
    publish(&mut admin, &key, &tenant, &broken).await;
    let failed = client
        .process_message(authed(message(&tenant, "c-2", "hi"), &key))
        .await
        .unwrap()
        .into_inner();
    let status = failed.status.unwrap();
    assert!(!status.success);
    assert!(
        status.message.contains("trigger_flow nowhere"),
        "{}",
        status.message
    );
    assert_eq!(failed.conversation_state.unwrap().flow_id, "broken");
}

fn waiting_flow() -> serde_json::Value {
    json!({
        "flow_id": "patience", "name": "Patience", "version": "1", "initial_state": "greet",
        "states": {
            "greet": {
                "type": "response",
                "config": { "response_templates": { "default": "Hello! Anything I can do?" } },
                "transitions": [ { "condition": "any_input", "target_state": "wait" } ]
            },
            "wait": {
                "type": "wait",
                "config": { "prompt": "Take your time.", "timeout_ms": 300 },
                "transitions": [
                    { "condition": "timeout", "target_state": "nudge" },
                    { "condition": "any_input", "target_state": "listening" }
                ]
            },
            "listening": {
                "type": "wait",
                "transitions": [ { "condition": "any_input", "target_state": "thanks" } ]
            },
            "nudge": { "type": "end", "config": { "message": "Still there? I'll close this for now." } },
            "thanks": { "type": "end", "config": { "message": "Thanks!" } }
        }
    })
}

/// Polls the conversation until it leaves `state`, for up to 10 s.
async fn left_state(
    client: &mut mcp_engine::proto::engine::mcp_engine_client::McpEngineClient<
        tonic::transport::Channel,
    >,
    tenant: &str,
    key: &str,
    conversation: &str,
    state: &str,
) -> ConversationState {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let current = client
            .get_conversation_state(authed(
                GetConversationStateRequest {
                    tenant_context: tenant_ctx(tenant),
                    conversation_id: conversation.into(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .unwrap()
            .into_inner()
            .conversation_state
            .unwrap();
        if current.current_state != state || Instant::now() > give_up {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tenant_ctx(id: &str) -> Option<mcp_engine::proto::common::TenantContext> {
    Some(mcp_engine::proto::common::TenantContext {
        tenant_id: id.into(),
        ..Default::default()
    })
}

async fn timeouts_fire_with_no_message(engine: &Engine) {
    let (mut admin, mut client) = clients(engine).await;
    let (tenant, key) = new_tenant(&mut admin, "patience", &[]).await;
    publish(&mut admin, &key, &tenant, &waiting_flow()).await;

    // A conversation nobody answers is nudged by its timeout.
    let waiting = client
        .process_message(authed(message(&tenant, "quiet", "hello"), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waiting.current_state, "wait");
    let state = left_state(&mut client, &tenant, &key, "quiet", "wait").await;
    assert_eq!(state.current_state, "nudge", "the timeout moved it on");

    // One that answers in time is not.
    client
        .process_message(authed(message(&tenant, "chatty", "hello"), &key))
        .await
        .unwrap();
    let answered = client
        .process_message(authed(message(&tenant, "chatty", "here I am"), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.current_state, "listening");

    // Well past chatty's old deadline (300 ms, looked for every 200 ms), no
    // timeout turn ran for it.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let chatty = left_state(&mut client, &tenant, &key, "chatty", "-").await;
    assert_eq!(chatty.current_state, "listening");
    assert_eq!(chatty.message_count, 2, "only the two messages were turns");

    // A stream of the conversation hears the timeout's message.
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let outbound = tokio_stream_of(receiver);
    let mut inbound = client
        .stream_conversation(authed(outbound, &key))
        .await
        .unwrap()
        .into_inner();
    use conversation_stream_request::RequestType;
    use conversation_stream_response::ResponseType;
    sender
        .send(ConversationStreamRequest {
            request_type: Some(RequestType::Init(StreamInit {
                tenant_context: tenant_ctx(&tenant),
                conversation_id: "streamed".into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    sender
        .send(ConversationStreamRequest {
            request_type: Some(RequestType::Message(message(&tenant, "streamed", "hello"))),
        })
        .await
        .unwrap();
    let mut heard = None;
    while let Ok(Some(response)) = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .unwrap_or(Ok(None))
    {
        if let Some(ResponseType::Event(event)) = response.response_type
            && event.event_type == "timeout"
        {
            heard = Some(event);
            break;
        }
    }
    let event = heard.expect("a timeout event on the stream");
    let data = event.event_data.unwrap();
    assert_eq!(
        data.fields["to"].kind,
        Some(Kind::StringValue("nudge".into()))
    );
    let Some(Kind::ListValue(messages)) = &data.fields["messages"].kind else {
        panic!("messages: {data:?}")
    };
    assert_eq!(
        messages.values[0].kind,
        Some(Kind::StringValue(
            "Still there? I'll close this for now.".into()
        ))
    );
}

fn tokio_stream_of(
    mut receiver: tokio::sync::mpsc::Receiver<ConversationStreamRequest>,
) -> impl futures::Stream<Item = ConversationStreamRequest> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test]
async fn wait_state_timeouts_fire_on_the_embedded_defaults() {
    let engine = start(HashMap::new()).await;
    timeouts_fire_with_no_message(&engine).await;
}

#[tokio::test]
async fn wait_state_timeouts_fire_on_postgres_and_redis() {
    let (Ok(database), Ok(redis)) = (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL"))
    else {
        return;
    };
    let env = HashMap::from([
        (
            "DATABASE_URL",
            postgres_schema_url(&database, "mcp_test_turns").await,
        ),
        ("REDIS_URL", redis),
    ]);
    let engine = start(env).await;
    timeouts_fire_with_no_message(&engine).await;
}

#[tokio::test]
async fn wait_state_timeouts_fire_on_a_redis_cluster() {
    let Ok(database) = std::env::var("DATABASE_URL") else {
        return;
    };
    let cluster = mcp_testkit::ThrowawayRedisCluster::start();
    let env = HashMap::from([
        (
            "DATABASE_URL",
            postgres_schema_url(&database, "mcp_test_turns_cluster").await,
        ),
        ("REDIS_URL", cluster.url()),
        ("REDIS_CLUSTER", "true".to_owned()),
    ]);
    let engine = start(env).await;
    timeouts_fire_with_no_message(&engine).await;
}

#[tokio::test]
async fn a_turn_waiting_for_a_permit_answers_within_the_clients_deadline() {
    let engine = start(HashMap::from([
        ("MAX_PARALLEL_EXECUTIONS", "1".to_owned()),
        ("STATE_EXECUTION_TIMEOUT_MS", "30000".to_owned()),
    ]))
    .await;
    let mut api = slow_api().await;
    let (tenant, key) = tenant_on_slow_api(&engine, &api).await;
    let (_, client) = clients(&engine).await;

    // The only permit is held by a turn waiting on the API.
    let mut busy_client = client.clone();
    let (busy_tenant, busy_key) = (tenant.clone(), key.clone());
    let busy = tokio::spawn(async move {
        busy_client
            .process_message(authed(
                message(&busy_tenant, "busy", "where is my order?"),
                &busy_key,
            ))
            .await
    });
    api.arrived.recv().await.unwrap();

    // A second turn that may wait 300 ms is told the engine is busy, by the
    // engine, not cancelled by its own deadline.
    let mut request = authed(message(&tenant, "other", "hello"), &key);
    request.set_timeout(Duration::from_millis(300));
    let refused = client.clone().process_message(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    api.release.send(()).await.unwrap();
    let done = busy.await.unwrap().unwrap().into_inner();
    assert_eq!(done.response.unwrap().text, "Your order is shipped.");
}

#[tokio::test]
async fn a_tenant_past_its_share_waits_and_other_tenants_are_answered() {
    let engine = start(HashMap::from([
        ("TENANT_MAX_PARALLEL", "1".to_owned()),
        ("STATE_EXECUTION_TIMEOUT_MS", "30000".to_owned()),
    ]))
    .await;
    let mut api = slow_api().await;
    let (tenant, key) = tenant_on_slow_api(&engine, &api).await;
    let (mut admin, client) = clients(&engine).await;
    let (other, other_key) = new_tenant(&mut admin, "other", &[]).await;
    publish(&mut admin, &other_key, &other, &hello_flow()).await;

    // The tenant's one place is held by a turn waiting on its API.
    let mut busy_client = client.clone();
    let (busy_tenant, busy_key) = (tenant.clone(), key.clone());
    let busy = tokio::spawn(async move {
        busy_client
            .process_message(authed(
                message(&busy_tenant, "busy", "where is my order?"),
                &busy_key,
            ))
            .await
    });
    api.arrived.recv().await.unwrap();

    // Its next turn, on another conversation, waits for the tenant's place
    // until its deadline; another tenant's turn runs at once.
    let mut request = authed(message(&tenant, "next", "hello"), &key);
    request.set_timeout(Duration::from_millis(300));
    let refused = client.clone().process_message(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    greeted(&mut client.clone(), &other, "c", &other_key).await;

    api.release.send(()).await.unwrap();
    let done = busy.await.unwrap().unwrap().into_inner();
    assert_eq!(done.response.unwrap().text, "Your order is shipped.");
}

#[tokio::test]
async fn sigterm_lets_a_turn_in_flight_finish() {
    let mut engine = start(HashMap::new()).await;
    let mut api = slow_api().await;
    let (tenant, key) = tenant_on_slow_api(&engine, &api).await;
    let (_, mut client) = clients(&engine).await;

    let in_flight = tokio::spawn(async move {
        client
            .process_message(authed(message(&tenant, "c-1", "where is my order?"), &key))
            .await
    });
    api.arrived.recv().await.unwrap();
    let pid = engine.child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The engine has stopped taking calls but waits for this one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        engine.child.try_wait().unwrap().is_none(),
        "it waits for the turn in flight"
    );
    api.release.send(()).await.unwrap();

    let done = in_flight
        .await
        .unwrap()
        .expect("the turn in flight is answered");
    assert_eq!(
        done.into_inner().response.unwrap().text,
        "Your order is shipped."
    );
    let status = tokio::time::timeout(Duration::from_secs(10), engine.child.wait())
        .await
        .expect("the engine exits after the turn")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Each call three ways: with no key (UNAUTHENTICATED), with another
/// tenant's key (PERMISSION_DENIED), and, where it takes input that can be
/// wrong, with a bad request from the right key (the code named).
macro_rules! refuses {
    ($client:expr, $method:ident, $request:expr, $keys:expr $(, $bad:expr => $code:expr)?) => {{
        let (own, other): (&str, &str) = $keys;
        let _ = own; // used only by calls that take input
        let unkeyed = $client.clone().$method(tonic::Request::new($request)).await.unwrap_err();
        assert_eq!(unkeyed.code(), Code::Unauthenticated, "{} without a key: {unkeyed:?}", stringify!($method));
        let wrong = $client.clone().$method(authed($request, "mcpk_nope_nope")).await.unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated, "{} with an unknown key: {wrong:?}", stringify!($method));
        let foreign = $client.clone().$method(authed($request, other)).await.unwrap_err();
        assert_eq!(foreign.code(), Code::PermissionDenied, "{} with another tenant's key: {foreign:?}", stringify!($method));
        $(
            let bad = $client.clone().$method(authed($bad, own)).await.unwrap_err();
            assert_eq!(bad.code(), $code, "{} with a bad request: {bad:?}", stringify!($method));
            assert!(!bad.message().is_empty());
        )?
    }};
}

#[tokio::test]
async fn every_call_refuses_missing_and_foreign_keys_and_bad_input() {
    let engine = start(HashMap::new()).await;
    let (mut admin, client) = clients(&engine).await;
    let (acme, key) = new_tenant(&mut admin, "codes", &[]).await;
    let (_, other_key) = new_tenant(&mut admin, "codes-other", &[]).await;
    let keys = (key.as_str(), other_key.as_str());
    let t = || acme.clone();

    // Admin.
    refuses!(admin, create_api_key, CreateApiKeyRequest { tenant_id: t(), name: "k".into(), scopes: vec!["messages".into()] }, keys,
        CreateApiKeyRequest { tenant_id: t(), name: "k".into(), scopes: vec!["everything".into()] } => Code::InvalidArgument);
    refuses!(admin, revoke_api_key, RevokeApiKeyRequest { tenant_id: t(), key_id: "k1".into() }, keys,
        RevokeApiKeyRequest { tenant_id: t(), key_id: "missing".into() } => Code::NotFound);
    refuses!(admin, upload_plugin, UploadPluginRequest { tenant_id: t(), name: "p".into(), version: "1".into(), component: vec![0; 8], ..Default::default() }, keys,
        UploadPluginRequest { tenant_id: t(), name: "p".into(), version: "1".into(), component: b"junk".to_vec(), ..Default::default() } => Code::InvalidArgument);
    refuses!(
        admin,
        list_plugins,
        ListPluginsRequest { tenant_id: t() },
        keys
    );
    refuses!(admin, set_plugin_enabled, SetPluginEnabledRequest { tenant_id: t(), name: "p".into(), version: "1".into(), enabled: true }, keys,
        SetPluginEnabledRequest { tenant_id: t(), name: "missing".into(), version: "1".into(), enabled: true } => Code::NotFound);
    refuses!(admin, delete_plugin, DeletePluginRequest { tenant_id: t(), name: "p".into(), version: "1".into() }, keys,
        DeletePluginRequest { tenant_id: t(), name: "missing".into(), version: "1".into() } => Code::NotFound);
    refuses!(admin, list_tools, ListToolsRequest { tenant_id: t() }, keys);
    refuses!(admin, publish_flow, PublishFlowRequest { tenant_id: t(), definition: refunds_flow(), ..Default::default() }, keys,
        PublishFlowRequest { tenant_id: t(), definition: "{}".into(), ..Default::default() } => Code::InvalidArgument);
    refuses!(
        admin,
        list_flow_versions,
        ListFlowVersionsRequest {
            tenant_id: t(),
            flow_id: String::new()
        },
        keys
    );
    refuses!(admin, get_flow_version, GetFlowVersionRequest { tenant_id: t(), flow_id: "f".into(), version: "1".into() }, keys,
        GetFlowVersionRequest { tenant_id: t(), flow_id: "missing".into(), version: "1".into() } => Code::NotFound);
    refuses!(admin, set_default_flow, SetDefaultFlowRequest { tenant_id: t(), flow_id: "f".into() }, keys,
        SetDefaultFlowRequest { tenant_id: t(), flow_id: "missing".into() } => Code::NotFound);
    refuses!(admin, create_experiment, CreateExperimentRequest { tenant_id: t(), config: "{}".into() }, keys,
        CreateExperimentRequest { tenant_id: t(), config: "not json".into() } => Code::InvalidArgument);
    refuses!(
        admin,
        list_experiments,
        ListExperimentsRequest { tenant_id: t() },
        keys
    );
    refuses!(admin, stop_experiment, StopExperimentRequest { tenant_id: t(), experiment_id: "e".into() }, keys,
        StopExperimentRequest { tenant_id: t(), experiment_id: "missing".into() } => Code::NotFound);
    refuses!(admin, get_transcript, GetTranscriptRequest { tenant_id: t(), conversation_id: "c".into(), limit: 0 }, keys,
        GetTranscriptRequest { tenant_id: t(), conversation_id: String::new(), limit: 0 } => Code::InvalidArgument);

    // MCPEngine.
    let mut oversized = message(&acme, "c", "");
    oversized.content.as_mut().unwrap().text = "x".repeat(65 * 1024);
    refuses!(client, process_message, message(&acme, "c", "hi"), keys,
        oversized => Code::InvalidArgument);
    let mut bad_channel = message(&acme, "c", "hi");
    bad_channel.channel = 999;
    let bad = client
        .clone()
        .process_message(authed(bad_channel, &key))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("channel"), "{}", bad.message());
    refuses!(client, get_conversation_state, GetConversationStateRequest { tenant_context: tenant_ctx(&acme), conversation_id: "c".into(), ..Default::default() }, keys,
        GetConversationStateRequest { tenant_context: tenant_ctx(&acme), conversation_id: String::new(), ..Default::default() } => Code::InvalidArgument);
    let missing = client
        .clone()
        .get_conversation_state(authed(
            GetConversationStateRequest {
                tenant_context: tenant_ctx(&acme),
                conversation_id: "never".into(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    refuses!(client, reset_conversation, ResetConversationRequest { tenant_context: tenant_ctx(&acme), conversation_id: "c".into(), ..Default::default() }, keys,
        ResetConversationRequest { tenant_context: tenant_ctx(&acme), conversation_id: "never".into(), ..Default::default() } => Code::NotFound);
    refuses!(client, batch_process_messages, BatchProcessMessagesRequest { tenant_context: tenant_ctx(&acme), messages: vec![message(&acme, "c", "hi")], ..Default::default() }, keys,
        BatchProcessMessagesRequest { tenant_context: tenant_ctx(&acme), messages: vec![message(&acme, "", "hi")], ..Default::default() } => Code::InvalidArgument);
    refuses!(
        client,
        get_metrics,
        GetMetricsRequest {
            tenant_context: tenant_ctx(&acme),
            ..Default::default()
        },
        keys
    );

    // StreamConversation: refused at the call, or by the stream's first reply.
    use conversation_stream_request::RequestType;
    let init = |conversation: &str| ConversationStreamRequest {
        request_type: Some(RequestType::Init(StreamInit {
            tenant_context: tenant_ctx(&acme),
            conversation_id: conversation.into(),
            ..Default::default()
        })),
    };
    let stream_code = |requests: Vec<ConversationStreamRequest>, key: Option<&str>| {
        let mut client = client.clone();
        let key = key.map(str::to_owned);
        async move {
            let outbound = futures::stream::iter(requests);
            let request = match &key {
                Some(key) => authed(outbound, key),
                None => tonic::Request::new(outbound),
            };
            match client.stream_conversation(request).await {
                Err(status) => status.code(),
                Ok(response) => match response.into_inner().message().await {
                    Err(status) => status.code(),
                    Ok(reply) => panic!("the stream was accepted: {reply:?}"),
                },
            }
        }
    };
    assert_eq!(
        stream_code(vec![init("c")], None).await,
        Code::Unauthenticated
    );
    assert_eq!(
        stream_code(vec![init("c")], Some("mcpk_nope_nope")).await,
        Code::Unauthenticated
    );
    assert_eq!(
        stream_code(vec![init("c")], Some(&other_key)).await,
        Code::PermissionDenied
    );
    assert_eq!(
        stream_code(vec![init("")], Some(&key)).await,
        Code::InvalidArgument
    );
    let not_init = ConversationStreamRequest {
        request_type: Some(RequestType::Message(message(&acme, "c", "hi"))),
    };
    assert_eq!(
        stream_code(vec![not_init], Some(&key)).await,
        Code::InvalidArgument
    );

    // No conversation was started by any of it.
    let (_, text) = http_get(&engine.http, "/metrics").await;
    let acme_label = format!("tenant=\"{acme}\"");
    assert!(
        !text
            .lines()
            .any(|line| line.starts_with("mcp_turns_total{") && line.contains(&acme_label)),
        "{text}"
    );
}

#[tokio::test]
async fn a_turn_past_the_clients_deadline_is_deadline_exceeded_and_unlocks() {
    let engine = start(HashMap::from([(
        "CONTEXT_LOCK_TIMEOUT_MS",
        "1000".to_owned(),
    )]))
    .await;
    let mut api = slow_api().await;
    let (tenant, key) = tenant_on_slow_api(&engine, &api).await;
    let (_, client) = clients(&engine).await;

    let mut request = authed(message(&tenant, "late", "where is my order?"), &key);
    request.set_timeout(Duration::from_millis(500));
    let late = client.clone().process_message(request).await.unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert!(
        late.message().contains("did not finish"),
        "the engine's answer: {late:?}"
    );
    api.arrived.recv().await.unwrap();
    api.release.send(()).await.unwrap();

    // The conversation is not left locked: the next message goes through.
    let next = tokio::spawn({
        let (mut client, tenant, key) = (client.clone(), tenant.clone(), key.clone());
        async move {
            client
                .process_message(authed(message(&tenant, "late", "where is my order?"), &key))
                .await
        }
    });
    api.arrived.recv().await.unwrap();
    api.release.send(()).await.unwrap();
    let done = next.await.unwrap().expect("not refused as busy");
    assert_eq!(
        done.into_inner().response.unwrap().text,
        "Your order is shipped."
    );
}

/// The due time `mcp:wakeups` holds for a conversation, if any.
async fn wakeup_of(
    redis: &mut redis::aio::MultiplexedConnection,
    tenant: &str,
    conversation: &str,
) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg("mcp:wakeups")
        .arg(format!("{tenant}:{conversation}"))
        .query_async(redis)
        .await
        .unwrap()
}

#[tokio::test]
async fn timeouts_of_reset_or_vanished_conversations_are_removed() {
    let (Ok(database), Ok(redis_url)) = (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL"))
    else {
        return;
    };
    let database = postgres_schema_url(&database, "mcp_test_turns_wakeups").await;
    let env = HashMap::from([
        ("DATABASE_URL", database.clone()),
        ("REDIS_URL", redis_url.clone()),
    ]);
    let engine = start(env).await;
    let (mut admin, mut client) = clients(&engine).await;
    let (tenant, key) = new_tenant(&mut admin, "unscheduled", &[]).await;
    publish(&mut admin, &key, &tenant, &waiting_flow()).await;
    let mut redis = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // Reset while a timeout is pending: the timeout goes with it.
    client
        .process_message(authed(message(&tenant, "reset", "hello"), &key))
        .await
        .unwrap();
    assert!(wakeup_of(&mut redis, &tenant, "reset").await.is_some());
    client
        .reset_conversation(authed(
            ResetConversationRequest {
                tenant_context: tenant_ctx(&tenant),
                conversation_id: "reset".into(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap();
    assert_eq!(wakeup_of(&mut redis, &tenant, "reset").await, None);

    // Context gone from Redis and the database (idled out): once its
    // timeout is claimed and finds nothing, it is not claimed again and
    // again.
    client
        .process_message(authed(message(&tenant, "vanished", "hello"), &key))
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("conversation:{{{tenant}:vanished}}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&database).await.unwrap();
        // The durable copy is written behind the reply: wait for it, then
        // forget it too.
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let deleted = sqlx::query(
                "DELETE FROM conversations WHERE tenant_id = $1 AND conversation_id = 'vanished'",
            )
            .bind(&tenant)
            .execute(&mut db)
            .await
            .unwrap()
            .rows_affected();
            if deleted == 1 || Instant::now() > give_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let give_up = Instant::now() + Duration::from_secs(10);
    while wakeup_of(&mut redis, &tenant, "vanished").await.is_some() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        wakeup_of(&mut redis, &tenant, "vanished").await,
        None,
        "the claim of a vanished conversation clears its timeout"
    );
}

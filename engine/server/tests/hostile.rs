//! Abuse from outside, through the real binary: each attack is stopped by
//! the mechanism meant for it, named in the error, while another tenant's
//! conversation keeps getting answers.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use mcp_engine::proto::engine::mcp_engine_client::McpEngineClient;
use mcp_engine::proto::engine::*;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

/// A tenant with a published flow, for the bystander's turns.
async fn bystander(engine: &Engine) -> (String, String) {
    named_tenant(engine, "bystander").await
}

async fn named_tenant(engine: &Engine, name: &str) -> (String, String) {
    let (mut admin, _) = clients(engine).await;
    let (tenant, key) = new_tenant(&mut admin, name, &[]).await;
    publish(&mut admin, &key, &tenant, &hello_flow()).await;
    (tenant, key)
}

/// Sends a bystander turn every 100 ms until `stop`; every one must be
/// answered. Returns how many were.
async fn keep_talking(
    mut client: McpEngineClient<Channel>,
    tenant: String,
    key: String,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut answered = 0;
    while !stop.load(Ordering::Relaxed) {
        greeted(&mut client, &tenant, "steady", &key).await;
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answered
}

async fn key_lookups(engine: &Engine) -> u64 {
    let (_, text) = http_get(&engine.http, "/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix("mcp_api_key_lookups "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no mcp_api_key_lookups in {text}"))
}

/// `calls` turns of 4 MiB each with no key or a malformed one, 32 at a
/// time; each must be refused as unauthenticated.
async fn flood(client: &McpEngineClient<Channel>, calls: usize) {
    let big = "x".repeat(4 << 20);
    let refused = AtomicUsize::new(0);
    futures::stream::iter(0..calls)
        .for_each_concurrent(32, |i| {
            let (mut client, big, refused) = (client.clone(), big.clone(), &refused);
            async move {
                let mut turn = message("victim", "c", "");
                turn.content.as_mut().unwrap().text = big;
                let mut request = tonic::Request::new(turn);
                if i % 2 == 0 {
                    request
                        .metadata_mut()
                        .insert("authorization", "Bearer not-a-key".parse().unwrap());
                }
                let status = client.process_message(request).await.unwrap_err();
                // Refused for the key, not for the size: the body was not read.
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                refused.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
    assert_eq!(refused.load(Ordering::Relaxed), calls);
}

#[tokio::test]
async fn unauthenticated_large_calls_are_refused_before_decoding_and_cost_no_key_lookup() {
    let engine = start(HashMap::new()).await;
    let (tenant, key) = bystander(&engine).await;
    let (_, client) = clients(&engine).await;
    // The bystander's key is looked up (and cached) before counting.
    let mut warm = client.clone();
    warm.process_message(authed(message(&tenant, "warm", "hi"), &key))
        .await
        .unwrap();

    // Alone, the flood costs not one lookup.
    let before = key_lookups(&engine).await;
    flood(&client, 5_000).await;
    assert_eq!(key_lookups(&engine).await, before, "no key was looked up");

    // With the bystander talking throughout, it is answered every time.
    let stop = Arc::new(AtomicBool::new(false));
    let talking = tokio::spawn(keep_talking(
        client.clone(),
        tenant.clone(),
        key.clone(),
        stop.clone(),
    ));
    flood(&client, 5_000).await;
    stop.store(true, Ordering::Relaxed);
    let answered = talking.await.unwrap();
    assert!(answered > 0);
}

#[tokio::test]
async fn oversized_fields_are_refused_naming_the_field_and_change_nothing() {
    let engine = start(HashMap::new()).await;
    let (tenant, key) = bystander(&engine).await;
    let (_, mut client) = clients(&engine).await;

    let long_user = {
        let mut turn = message(&tenant, "c-1", "hi");
        turn.user_id = "u".repeat(300);
        turn
    };
    let long_flow = {
        let mut turn = message(&tenant, "c-1", "hi");
        turn.processing_hints = Some(ProcessingHints {
            force_flow: "f".repeat(200),
            ..Default::default()
        });
        turn
    };
    let long_payload = {
        let mut turn = message(&tenant, "c-1", "hi");
        turn.content.as_mut().unwrap().payload = "p".repeat(10_000);
        turn
    };
    for (field, turn) in [
        ("user_id", long_user),
        ("processing_hints.force_flow", long_flow),
        ("content.payload", long_payload),
    ] {
        let status = client
            .process_message(authed(turn, &key))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{status:?}"
        );
    }
    // Nothing was started by the refused turns.
    let state = client
        .get_conversation_state(authed(
            GetConversationStateRequest {
                tenant_context: common::tenant(&tenant),
                conversation_id: "c-1".into(),
                ..Default::default()
            },
            &key,
        ))
        .await;
    assert_eq!(state.unwrap_err().code(), Code::NotFound);

    // A message over the service's decode limit, from a valid key, is
    // refused for its size.
    let mut huge = message(&tenant, "c-2", "");
    huge.content.as_mut().unwrap().payload = "p".repeat(5 << 20);
    let status = client
        .process_message(authed(huge, &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // A user profile that only grows is capped in total.
    let mut refused = None;
    for i in 0..10 {
        let mut turn = message(&tenant, "c-3", "hi");
        let profile: prost_types::Struct = prost_types::Struct {
            fields: [(
                format!("field{i}"),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("v".repeat(8_000))),
                },
            )]
            .into(),
        };
        turn.content.as_mut().unwrap().metadata = Some(prost_types::Struct {
            fields: [(
                "user_profile".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(profile)),
                },
            )]
            .into(),
        });
        if let Err(status) = client.process_message(authed(turn, &key)).await {
            refused = Some((i, status));
            break;
        }
    }
    let (i, status) = refused.expect("the profile was capped");
    assert!(i >= 3, "small profiles pass: refused at {i}");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("content.metadata.user_profile: "),
        "{status:?}"
    );
    // The bystander's conversation still answers.
    greeted(&mut client, &tenant, "steady", &key).await;
}

#[tokio::test]
async fn an_expensive_cel_expression_is_refused_at_publish_naming_the_bound() {
    let engine = start(HashMap::new()).await;
    let (tenant, key) = bystander(&engine).await;
    let (mut admin, _) = clients(&engine).await;
    let mut flow = hello_flow();
    flow["flow_id"] = json!("costly");
    flow["states"]["hello"]["transitions"] = json!([{
        "condition": "expression",
        "expression": "[1,2].all(a, [1,2].all(b, [1,2].all(c, a + b + c > 0)))",
        "target_state": "hello"
    }]);
    let refused = admin
        .publish_flow(authed(
            mcp_engine::proto::admin::PublishFlowRequest {
                tenant_id: tenant.clone(),
                definition: flow.to_string(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("nests 3 comprehensions"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_expression_too_costly_for_its_data_fails_the_condition_and_others_are_answered() {
    let engine = start(HashMap::new()).await;
    let (tenant, key) = bystander(&engine).await;
    let (attacker, attacker_key) = named_tenant(&engine, "attacker").await;
    let (mut admin, client) = clients(&engine).await;
    // Fine for short messages; for a long one, each of its characters would
    // copy the message twice over.
    let mut flow = hello_flow();
    flow["flow_id"] = json!("costly");
    flow["states"]["hello"]["transitions"] = json!([{
        "condition": "any_input", "target_state": "check",
        "actions": [{ "type": "set_variable", "name": "said", "expression": "event.text" }]
    }]);
    flow["states"]["check"] = json!({
        "type": "condition",
        "transitions": [
            {
                "condition": "expression",
                "expression": "variables.said.split('').exists(c, (variables.said + variables.said).size() == 0)",
                "target_state": "hello"
            },
            { "condition": "default", "target_state": "hello" }
        ]
    });
    publish(&mut admin, &attacker_key, &attacker, &flow).await;
    let stop = Arc::new(AtomicBool::new(false));
    let talking = tokio::spawn(keep_talking(client.clone(), tenant, key, stop.clone()));

    let mut client = client;
    let short = client
        .process_message(authed(message(&attacker, "c", "hi"), &attacker_key))
        .await
        .unwrap()
        .into_inner();
    assert!(
        short.status.unwrap().success,
        "evaluated for a short message"
    );
    for _ in 0..5 {
        let long = client
            .process_message(authed(
                message(&attacker, "c", &"y".repeat(30_000)),
                &attacker_key,
            ))
            .await
            .unwrap()
            .into_inner();
        let status = long.status.unwrap();
        assert!(!status.success, "{status:?} {:?}", long.current_state);
        assert!(
            status
                .message
                .contains("too costly for this conversation's data"),
            "{status:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert!(talking.await.unwrap() > 0, "the bystander was answered");
}

#[tokio::test]
async fn a_key_over_its_rate_limit_is_told_when_to_retry_and_others_are_answered() {
    let engine = start(HashMap::from([
        // A burst of 3, then next to nothing: the test never sees a refill.
        ("RATE_LIMIT_PER_KEY", "0.001".to_owned()),
        ("RATE_LIMIT_BURST", "3".to_owned()),
    ]))
    .await;
    // Creating the tenants is the operator's: not limited.
    let (tenant, key) = bystander(&engine).await;
    let (other, other_key) = named_tenant(&engine, "other").await;
    let (_, mut client) = clients(&engine).await;
    // Publishing in bystander() took one of the key's three tokens.
    for _ in 0..2 {
        client
            .process_message(authed(message(&tenant, "c-1", "hi"), &key))
            .await
            .unwrap();
    }
    let limited = client
        .process_message(authed(message(&tenant, "c-1", "hi"), &key))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(
        limited
            .message()
            .starts_with("the API key's rate limit is exhausted; retry in "),
        "{limited:?}"
    );
    let retry: u64 = limited
        .metadata()
        .get("retry-after-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    // Another tenant's key has its own bucket.
    greeted(&mut client, &other, "c-1", &other_key).await;
}

/// Uploads `count` distinct copies of a plugin as `tenant`, `parallel` at a
/// time, each retried while the engine says it is busy: (accepted, refused
/// for the quota, busy answers seen).
async fn upload_storm(
    engine: &Engine,
    tenant: &str,
    key: &str,
    count: usize,
    parallel: usize,
) -> (usize, usize, usize) {
    use mcp_engine::proto::admin::UploadPluginRequest;
    let (admin, _) = clients(engine).await;
    let vip = std::fs::read(mcp_example_plugins::VIP_CHECK).unwrap();
    let busy = AtomicUsize::new(0);
    let outcomes: Vec<Result<(), tonic::Status>> = futures::stream::iter(0..count)
        .map(|i| {
            let (mut admin, busy) = (admin.clone(), &busy);
            let component = mcp_testkit::unique_component(vip.clone(), &format!("storm-{i}"));
            async move {
                loop {
                    let request = UploadPluginRequest {
                        tenant_id: tenant.into(),
                        name: format!("storm-{i}"),
                        version: "1".into(),
                        component: component.clone(),
                        ..Default::default()
                    };
                    match admin.upload_plugin(authed(request, key)).await {
                        Err(status)
                            if status.code() == Code::ResourceExhausted
                                && status.message().starts_with("busy: ") =>
                        {
                            busy.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        other => return other.map(|_| ()),
                    }
                }
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    let over_quota = outcomes
        .iter()
        .filter(|o| {
            matches!(o, Err(s) if s.code() == Code::ResourceExhausted && s.message().starts_with("quota: "))
        })
        .count();
    assert_eq!(accepted + over_quota, count, "{outcomes:?}");
    (accepted, over_quota, busy.load(Ordering::Relaxed))
}

fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test]
async fn an_upload_storm_is_bounded_and_what_is_refused_leaves_nothing() {
    let vip = std::fs::metadata(mcp_example_plugins::VIP_CHECK)
        .unwrap()
        .len();
    let engine = start(HashMap::from([
        ("UPLOAD_PARALLEL", "2".to_owned()),
        // Room for three copies (each a few bytes longer), not four.
        ("TENANT_PLUGIN_BYTES", (3 * vip + 1000).to_string()),
    ]))
    .await;
    let (tenant, key) = bystander(&engine).await;
    let (stormer, stormer_key) = named_tenant(&engine, "stormer").await;
    let (mut admin, client) = clients(&engine).await;
    let stop = Arc::new(AtomicBool::new(false));
    let talking = tokio::spawn(keep_talking(
        client,
        tenant.clone(),
        key.clone(),
        stop.clone(),
    ));

    // Twenty uploads, eight at a time, from one tenant: one is checked at a
    // time (the others told busy), and the quota ends it at three.
    let (accepted, over_quota, busy) = upload_storm(&engine, &stormer, &stormer_key, 20, 8).await;
    stop.store(true, Ordering::Relaxed);
    assert!(talking.await.unwrap() > 0, "the bystander was answered");
    assert_eq!((accepted, over_quota), (3, 17));
    assert!(busy > 0, "concurrent uploads of one tenant were told busy");
    let stored = admin
        .list_plugins(authed(
            mcp_engine::proto::admin::ListPluginsRequest {
                tenant_id: stormer.clone(),
            },
            &stormer_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .plugins;
    assert_eq!(stored.len(), 3, "{stored:?}");

    // An upload refused after compiling keeps no compiled code.
    let (_, metrics) = http_get(&engine.http, "/metrics").await;
    let cached = gauge(&metrics, "mcp_compiled_cache_bytes");
    assert!(cached > 0);
    let misfit = mcp_testkit::unique_component(
        std::fs::read(mcp_example_plugins::MISFIT_IMPORT).unwrap(),
        "misfit",
    );
    let refused = admin
        .upload_plugin(authed(
            mcp_engine::proto::admin::UploadPluginRequest {
                tenant_id: tenant.clone(),
                name: "misfit".into(),
                version: "1".into(),
                component: misfit,
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("acme:spy/keylogger"),
        "{refused:?}"
    );
    let (_, metrics) = http_get(&engine.http, "/metrics").await;
    assert_eq!(gauge(&metrics, "mcp_compiled_cache_bytes"), cached);
}

#[tokio::test]
async fn a_revoked_key_ends_its_open_stream() {
    use conversation_stream_request::RequestType;
    use conversation_stream_response::ResponseType;
    let engine = start(HashMap::new()).await;
    let (tenant, key) = bystander(&engine).await;
    let (mut admin, mut client) = clients(&engine).await;
    let (to_engine, requests) = tokio::sync::mpsc::channel(4);
    let requests = futures::stream::unfold(requests, |mut r| async move {
        r.recv().await.map(|request| (request, r))
    });
    to_engine
        .send(ConversationStreamRequest {
            request_type: Some(RequestType::Init(StreamInit {
                tenant_context: common::tenant(&tenant),
                conversation_id: "streamed".into(),
                event_types: vec![],
                metadata: None,
            })),
        })
        .await
        .unwrap();
    let mut replies = client
        .stream_conversation(authed(requests, &key))
        .await
        .unwrap()
        .into_inner();
    let ready = replies.message().await.unwrap().unwrap();
    assert!(matches!(ready.response_type, Some(ResponseType::Ack(_))));

    let key_id = key.split('_').nth(1).unwrap().to_owned();
    admin
        .revoke_api_key(authed(
            mcp_engine::proto::admin::RevokeApiKeyRequest {
                tenant_id: tenant.clone(),
                key_id,
            },
            // The tenant's admin key revokes itself.
            &key,
        ))
        .await
        .unwrap();
    // The stream ends though the client keeps it open and sends nothing.
    let ended = tokio::time::timeout(Duration::from_secs(20), replies.message())
        .await
        .expect("the stream ends after its key is revoked");
    let status = ended.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "the API key was revoked");
    drop(to_engine);
}

#[tokio::test]
async fn health_watches_are_bounded_and_dependencies_are_for_the_operator() {
    use mcp_engine::proto::health::health_client::HealthClient;
    use mcp_engine::proto::health::{DetailedHealthRequest, HealthCheckRequest};
    let engine = start(HashMap::new()).await;
    // Streams spread over connections: one connection carries only so many.
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(HealthClient::new(
            Channel::from_shared(engine.address.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        ));
    }
    let mut open = Vec::new();
    let refused = loop {
        let client = &mut connections[open.len() % 4];
        match client
            .watch(HealthCheckRequest {
                service: String::new(),
                metadata: None,
            })
            .await
        {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                assert!(stream.message().await.unwrap().is_some(), "a first status");
                open.push(stream);
            }
            Err(status) => break status,
        }
        assert!(open.len() <= 256, "more watches than the bound");
    };
    assert_eq!(open.len(), 256);
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("health watches"), "{refused:?}");
    // A closed watch makes room for another.
    drop(open.pop());
    let again = eventually(Duration::from_secs(20), async || {
        connections[0]
            .watch(HealthCheckRequest {
                service: String::new(),
                metadata: None,
            })
            .await
            .is_ok()
    })
    .await;
    assert!(again);

    let detailed = |operator: bool| {
        let mut request = tonic::Request::new(DetailedHealthRequest {
            include_dependencies: true,
            ..Default::default()
        });
        if operator {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {OPERATOR_KEY}").parse().unwrap(),
            );
        }
        request
    };
    let anonymous = connections[1].get_detailed_health(detailed(false)).await;
    let status = anonymous.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let operator = connections[1]
        .get_detailed_health(detailed(true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(operator.dependencies.len(), 2);
}

#[tokio::test]
async fn every_call_is_named_by_a_request_id() {
    let engine = start(HashMap::new()).await;
    let (tenant, key) = bystander(&engine).await;
    let (_, mut client) = clients(&engine).await;
    // Refused before any handler: still named.
    let refused = client
        .process_message(message(&tenant, "c", "hi"))
        .await
        .unwrap_err();
    let made_up = refused
        .metadata()
        .get("x-request-id")
        .expect("a refusal carries its request id")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!made_up.is_empty());
    // The caller's own id comes back; a second call gets another made-up one.
    let mut request = authed(message(&tenant, "c", "hi"), &key);
    request
        .metadata_mut()
        .insert("x-request-id", "chat-svc.42".parse().unwrap());
    let answered = client.process_message(request).await.unwrap();
    assert_eq!(
        answered.metadata().get("x-request-id").unwrap(),
        "chat-svc.42"
    );
    let second = client
        .process_message(message(&tenant, "c", "hi"))
        .await
        .unwrap_err();
    assert_ne!(
        second
            .metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap(),
        made_up
    );
    // An id unfit to repeat (too long) is replaced.
    let mut request = authed(message(&tenant, "c", "hi"), &key);
    request
        .metadata_mut()
        .insert("x-request-id", "x".repeat(200).parse().unwrap());
    let answered = client.process_message(request).await.unwrap();
    assert_ne!(
        answered
            .metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap(),
        "x".repeat(200)
    );
}

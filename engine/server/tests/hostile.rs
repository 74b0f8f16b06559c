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

fn greeting_flow() -> serde_json::Value {
    json!({
        "flow_id": "hello", "name": "Hello", "version": "1", "initial_state": "hello",
        "states": {
            "hello": {
                "type": "response",
                "config": { "response_templates": { "default": "Hello!" } },
                "transitions": [{ "condition": "any_input", "target_state": "hello" }]
            }
        }
    })
}

/// A tenant with a published flow, for the bystander's turns.
async fn bystander(engine: &Engine) -> (String, String) {
    named_tenant(engine, "bystander").await
}

async fn named_tenant(engine: &Engine, name: &str) -> (String, String) {
    let (mut admin, _) = clients(engine).await;
    let (tenant, key) = new_tenant(&mut admin, name, &[]).await;
    publish(&mut admin, &key, &tenant, &greeting_flow()).await;
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
        let reply = client
            .process_message(authed(message(&tenant, "steady", "hi"), &key))
            .await
            .expect("the bystander's turn is answered during the attack");
        assert!(
            reply
                .into_inner()
                .response
                .unwrap()
                .text
                .starts_with("Hello!")
        );
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
    let reply = client
        .process_message(authed(message(&tenant, "steady", "hi"), &key))
        .await
        .unwrap();
    assert!(
        reply
            .into_inner()
            .response
            .unwrap()
            .text
            .starts_with("Hello!")
    );
}

#[tokio::test]
async fn an_expensive_cel_expression_is_refused_at_publish_naming_the_bound() {
    let engine = start(HashMap::new()).await;
    let (tenant, key) = bystander(&engine).await;
    let (mut admin, _) = clients(&engine).await;
    let mut flow = greeting_flow();
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
    let reply = client
        .process_message(authed(message(&other, "c-1", "hi"), &other_key))
        .await
        .unwrap();
    assert!(
        reply
            .into_inner()
            .response
            .unwrap()
            .text
            .starts_with("Hello!")
    );
}

//! Each hostile plugin is stopped by the limit meant for it, with an error
//! naming that limit, and healthy plugins keep working throughout.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{HOST, conversation, install, order_api};
use mcp_example_plugins as built;
use mcp_flow::{PluginCall, PluginError, PluginRuntime, PluginWorld};
use mcp_wasm::{AllowList, LimitOverrides, TenantPolicy};
use serde_json::{Value, json};

/// Installs the hostile tool (and a healthy condition) for `tenant`, with
/// `overrides` on the tool world's limits.
async fn hostile(tenant: &str, overrides: LimitOverrides) {
    HOST.set_policy(
        tenant,
        TenantPolicy {
            allow_list: AllowList::default(),
            limits: HashMap::from([(PluginWorld::Tool, overrides)]),
        },
    );
    install(tenant, "hostile", built::HOSTILE, PluginWorld::Tool).await;
    install(
        tenant,
        "vip-check",
        built::VIP_CHECK,
        PluginWorld::Condition,
    )
    .await;
}

async fn misbehave(tenant: &str, mode: &str) -> Result<Value, PluginError> {
    let c = conversation(tenant);
    let args = json!({ "mode": mode });
    HOST.call_tool(PluginCall {
        tenant_id: tenant,
        plugin: "hostile",
        version: None,
        args: &args,
        conversation: &c,
        event: None,
        timeout: Duration::from_secs(10),
    })
    .await
}

/// Evaluates `plugin` as a condition for a VIP of `tenant`.
async fn evaluate(tenant: &str, plugin: &str) -> Result<bool, PluginError> {
    let mut c = conversation(tenant);
    c.user_profile.insert("vip".into(), json!(true));
    let args = json!({});
    HOST.evaluate_condition(PluginCall {
        tenant_id: tenant,
        plugin,
        version: None,
        args: &args,
        conversation: &c,
        event: None,
        timeout: Duration::from_secs(1),
    })
    .await
}

async fn healthy(tenant: &str) -> bool {
    evaluate(tenant, "vip-check")
        .await
        .expect("the healthy plugin answers")
}

fn limit_of(error: &PluginError) -> &str {
    match error {
        PluginError::LimitExceeded { limit, .. } => limit,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn test_infinite_loop_is_stopped_at_the_deadline() {
    let deadline = Duration::from_millis(300);
    let overrides = LimitOverrides {
        deadline_ms: Some(300),
        fuel: Some(u64::MAX / 2),
        ..Default::default()
    };
    hostile("t-loop", overrides).await;
    assert!(healthy("t-loop").await, "before");

    let started = Instant::now();
    let (looped, during) = tokio::join!(misbehave("t-loop", "loop"), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        healthy("t-loop").await
    });
    let elapsed = started.elapsed();
    assert!(during, "a healthy call during the loop works");
    assert_eq!(
        looped.unwrap_err(),
        PluginError::Timeout {
            plugin: "hostile".into(),
            timeout_ms: 300
        }
    );
    // Epoch ticks are 5 ms; allow for a busy machine on top.
    assert!(elapsed >= deadline, "stopped early: {elapsed:?}");
    assert!(
        elapsed < deadline + Duration::from_millis(400),
        "stopped late: {elapsed:?}"
    );
    assert!(healthy("t-loop").await, "after");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_max_fuel_violated() {
    hostile(
        "t-fuel",
        LimitOverrides {
            fuel: Some(5_000_000),
            ..Default::default()
        },
    )
    .await;
    let error = misbehave("t-fuel", "loop").await.unwrap_err();
    assert_eq!(limit_of(&error), "fuel");
    assert!(healthy("t-fuel").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_max_memory_size_violated() {
    hostile(
        "t-memory",
        LimitOverrides {
            memory_bytes: Some(32 << 20),
            ..Default::default()
        },
    )
    .await;
    let error = misbehave("t-memory", "memory").await.unwrap_err();
    assert_eq!(limit_of(&error), "memory");
    assert_eq!(
        error.to_string(),
        "plugin hostile exceeded its memory limit"
    );
    assert!(healthy("t-memory").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_max_wasm_stack_violated() {
    hostile("t-stack", LimitOverrides::default()).await;
    let error = misbehave("t-stack", "recursion").await.unwrap_err();
    assert_eq!(limit_of(&error), "stack");
    assert!(healthy("t-stack").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_trap_is_an_error_not_a_crash() {
    hostile("t-trap", LimitOverrides::default()).await;
    match misbehave("t-trap", "trap").await.unwrap_err() {
        PluginError::Trap { plugin, message } => {
            assert_eq!(plugin, "hostile");
            assert!(message.contains("unreachable"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(healthy("t-trap").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_max_result_size_violated() {
    hostile(
        "t-huge",
        LimitOverrides {
            result_bytes: Some(1 << 20),
            ..Default::default()
        },
    )
    .await;
    let error = misbehave("t-huge", "huge").await.unwrap_err();
    assert!(limit_of(&error).starts_with("result size ("), "{error}");
    assert!(healthy("t-huge").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_http_to_a_host_not_on_the_allow_list_is_denied() {
    let api = order_api().await;
    HOST.set_policy(
        "t-http",
        TenantPolicy {
            allow_list: AllowList::parse(&[api.to_string()]).unwrap(),
            ..Default::default()
        },
    );
    install("t-http", "hostile", built::HOSTILE, PluginWorld::Tool).await;
    let call = |args: Value| async move {
        HOST.call_tool(PluginCall {
            tenant_id: "t-http",
            plugin: "hostile",
            version: None,
            args: &args,
            conversation: &conversation("t-http"),
            event: None,
            timeout: Duration::from_secs(5),
        })
        .await
    };
    // Another port of the same host is not on the list either.
    let elsewhere = format!("127.0.0.1:{}", api.port() + 1);
    for authority in ["example.com:80", elsewhere.as_str()] {
        let error = call(json!({ "mode": "http", "authority": authority }))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, PluginError::Failed { message, .. } if message.contains("HttpRequestDenied")),
            "{authority}: {error:?}"
        );
    }
    // The allowed one goes through (the API answers 404 for "/").
    let allowed = call(json!({ "mode": "http", "authority": api.to_string() }))
        .await
        .unwrap();
    assert_eq!(allowed, json!(404));
}

#[tokio::test(flavor = "multi_thread")]
async fn test_reading_a_file_fails_inside_the_plugin() {
    hostile("t-file", LimitOverrides::default()).await;
    match misbehave("t-file", "file").await.unwrap_err() {
        PluginError::Failed { message, .. } => assert!(message.starts_with("io: "), "{message}"),
        other => panic!("expected the plugin's own io error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_keeps_crashing_is_cut_off_by_its_breaker() {
    hostile("t-breaker", LimitOverrides::default()).await;
    for _ in 0..5 {
        assert!(matches!(
            misbehave("t-breaker", "trap").await,
            Err(PluginError::Trap { .. })
        ));
    }
    let started = Instant::now();
    let error = misbehave("t-breaker", "ok").await.unwrap_err();
    assert!(
        matches!(error, PluginError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(50), "fails fast");
    assert!(
        healthy("t-breaker").await,
        "other plugins of the tenant are unaffected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_callers_timeout_wins_when_it_is_shorter_than_the_limit() {
    hostile(
        "t-short",
        LimitOverrides {
            fuel: Some(u64::MAX / 2),
            ..Default::default()
        },
    )
    .await;
    let c = conversation("t-short");
    let args = json!({ "mode": "loop" });
    let started = Instant::now();
    let error = HOST
        .call_tool(PluginCall {
            tenant_id: "t-short",
            plugin: "hostile",
            version: None,
            args: &args,
            conversation: &c,
            event: None,
            timeout: Duration::from_millis(200),
        })
        .await
        .unwrap_err();
    assert_eq!(
        error,
        PluginError::Timeout {
            plugin: "hostile".into(),
            timeout_ms: 200
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not the tool's 10 s limit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_a_recorded_turn_sees_each_call_with_its_fuel_and_outcome() {
    hostile(
        "t-ledger",
        LimitOverrides {
            fuel: Some(5_000_000),
            ..Default::default()
        },
    )
    .await;
    let ((answered, stopped), calls) = mcp_wasm::record_calls(async {
        (
            healthy("t-ledger").await,
            misbehave("t-ledger", "loop").await,
        )
    })
    .await;
    assert!(answered);
    assert_eq!(limit_of(&stopped.unwrap_err()), "fuel");

    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].plugin, "vip-check");
    assert_eq!(calls[0].world, PluginWorld::Condition);
    assert_eq!(calls[0].error, None);
    assert!(calls[0].fuel_used > 0);
    assert_eq!(calls[1].plugin, "hostile");
    assert_eq!(calls[1].error, Some("limit"));
    assert_eq!(calls[1].fuel_used, 5_000_000, "the whole budget was burnt");

    // describe(), which the host calls when it installs a tool, is not a
    // call of the turn that installs it.
    let (_, calls) = mcp_wasm::record_calls(install(
        "t-ledger",
        "order-api",
        built::ORDER_API,
        PluginWorld::Tool,
    ))
    .await;
    assert!(calls.is_empty(), "{calls:?}");

    // A plugin the tenant does not have is a failed call of the turn.
    let (missing, calls) = mcp_wasm::record_calls(evaluate("t-ledger", "nope")).await;
    assert!(matches!(missing, Err(PluginError::NotFound { .. })));
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].plugin.as_str(), calls[0].error),
        ("nope", Some("not_found"))
    );

    // Calls outside a recording are not kept for the next one.
    healthy("t-ledger").await;
    let (_, calls) = mcp_wasm::record_calls(async {}).await;
    assert!(calls.is_empty());
}

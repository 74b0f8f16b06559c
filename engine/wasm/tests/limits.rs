//! Each hostile plugin is stopped by the limit meant for it, with an error
//! naming that limit, and healthy plugins keep working throughout.

mod common;

use std::collections::HashMap;
use std::time::Duration;

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
            ..Default::default()
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
    let overrides = LimitOverrides {
        deadline_ms: Some(300),
        fuel: Some(u64::MAX / 2),
        ..Default::default()
    };
    hostile("t-loop", overrides).await;
    assert!(healthy("t-loop").await, "before");

    let ((looped, during), calls) = mcp_wasm::record_calls(async {
        tokio::join!(misbehave("t-loop", "loop"), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            healthy("t-loop").await
        })
    })
    .await;
    assert!(during, "a healthy call during the loop works");
    // The deadline stopped it, not fuel: the budget was far from spent.
    assert_eq!(
        looped.unwrap_err(),
        PluginError::Timeout {
            plugin: "hostile".into(),
            timeout_ms: 300
        }
    );
    let call = calls.iter().find(|c| c.plugin == "hostile").unwrap();
    assert_eq!(call.error, Some("timeout"));
    assert!(call.fuel_used < u64::MAX / 2);
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
            // The trap, not the backtrace or the host's frames.
            assert!(
                !message.contains("backtrace") && !message.contains('\n'),
                "{message}"
            );
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
            allow_list: common::allow_api(api),
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
            matches!(&error, PluginError::Failed { message, .. }
                if message.contains(&format!("egress denied: {authority} is not on the tenant's outbound allow-list"))),
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
    let (error, calls) = mcp_wasm::record_calls(misbehave("t-breaker", "ok")).await;
    let error = error.unwrap_err();
    assert!(
        matches!(&error, PluginError::Unavailable { reason, .. } if reason.contains("failed repeatedly")),
        "{error:?}"
    );
    // Refused without running: no fuel, no instance.
    assert_eq!((calls.len(), calls[0].fuel_used), (1, 0), "{calls:?}");
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
    // timeout_ms is the caller's 200, not the tool's 10 s limit.
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

#[tokio::test(flavor = "multi_thread")]
async fn a_log_flood_is_cut_at_the_call_budget_and_counted() {
    hostile("t-flood", LimitOverrides::default()).await;
    let before = HOST.log_lines_dropped();
    let (flooded, during) = tokio::join!(misbehave("t-flood", "log-flood"), healthy("t-flood"));
    assert_eq!(
        flooded.unwrap(),
        json!({ "flooded": true }),
        "the call itself succeeds"
    );
    assert!(during);
    // 20,000 lines written; a call keeps 100 of them.
    let dropped = HOST.log_lines_dropped() - before;
    let limit = mcp_wasm::log_budget::LINES_PER_CALL as u64;
    assert!(dropped >= 20_000 - limit, "dropped {dropped}");
}

/// A host of its own, with a small pool and a quick breaker.
fn small_host(instances: u32) -> mcp_wasm::PluginHost {
    mcp_wasm::PluginHost::new(mcp_wasm::HostConfig {
        max_instances: instances,
        breaker: mcp_wasm::BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_millis(300),
        },
        ..Default::default()
    })
    .unwrap()
}

async fn call_on(
    host: &mcp_wasm::PluginHost,
    tenant: &str,
    mode: &str,
) -> Result<Value, PluginError> {
    let args = json!({ "mode": mode });
    host.call_tool(PluginCall {
        tenant_id: tenant,
        plugin: "hostile",
        version: None,
        args: &args,
        conversation: &conversation(tenant),
        event: None,
        timeout: Duration::from_secs(10),
    })
    .await
}

async fn install_on(host: &mcp_wasm::PluginHost, tenant: &str, deadline_ms: u64) {
    host.set_policy(
        tenant,
        TenantPolicy {
            limits: HashMap::from([(
                PluginWorld::Tool,
                LimitOverrides {
                    deadline_ms: Some(deadline_ms),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        },
    );
    let bytes = common::bytes(built::HOSTILE);
    host.install(
        tenant,
        "hostile",
        "1.0.0",
        &bytes,
        Some(PluginWorld::Tool),
        Default::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_parked_in_poll_times_out_opens_the_breaker_and_a_good_probe_closes_it() {
    let host = small_host(8);
    install_on(&host, "t-park", 200).await;
    for _ in 0..2 {
        assert_eq!(
            call_on(&host, "t-park", "park").await.unwrap_err(),
            PluginError::Timeout {
                plugin: "hostile".into(),
                timeout_ms: 200
            }
        );
    }
    let refused = call_on(&host, "t-park", "ok").await.unwrap_err();
    assert!(
        matches!(refused, PluginError::Unavailable { .. }),
        "open: {refused:?}"
    );

    // After the cooldown one probe goes through; it answers, so the
    // circuit closes.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        call_on(&host, "t-park", "ok").await.unwrap(),
        json!({ "fine": true })
    );
    assert_eq!(
        call_on(&host, "t-park", "ok").await.unwrap(),
        json!({ "fine": true })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_dropped_by_its_caller_counts_against_the_breaker() {
    let host = small_host(8);
    install_on(&host, "t-dropped", 5_000).await;
    for _ in 0..2 {
        // The caller gives up long before the plugin's own deadline.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(100),
            call_on(&host, "t-dropped", "park"),
        )
        .await;
        assert!(gave_up.is_err());
    }
    let refused = call_on(&host, "t-dropped", "ok").await.unwrap_err();
    assert!(
        matches!(refused, PluginError::Unavailable { .. }),
        "open: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_instance_pool_is_back_pressure_not_a_plugin_failure() {
    let host = small_host(2);
    install_on(&host, "t-pool", 3_000).await;
    let parked = tokio::spawn({
        let host = host.clone();
        async move {
            tokio::join!(
                call_on(&host, "t-pool", "park"),
                call_on(&host, "t-pool", "park")
            )
        }
    });
    // Both instances taken (the pool says so), a third call is refused.
    // Three refusals in a row, past the breaker's threshold of 2: each is
    // still "busy", never "unavailable", since none counts as a failure.
    while host.instances_in_use() != Some(2) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        let busy = call_on(&host, "t-pool", "ok").await.unwrap_err();
        assert!(
            matches!(&busy, PluginError::Busy { reason, .. } if reason.contains("instance pool is full")),
            "{busy:?}"
        );
        assert!(busy.is_transient());
    }
    let (a, b) = parked.await.unwrap();
    assert!(
        matches!(a, Err(PluginError::Timeout { .. }))
            && matches!(b, Err(PluginError::Timeout { .. }))
    );
    // The two timeouts opened it; a probe after the cooldown closes it.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        call_on(&host, "t-pool", "ok").await.unwrap(),
        json!({ "fine": true })
    );
}

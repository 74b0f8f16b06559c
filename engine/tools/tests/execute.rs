//! The one execution path with real plugins and, when REDIS_URL is set
//! (as in CI), the rate limit shared through real Redis by two `Tools`
//! standing for two engine processes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mcp_flow::PluginWorld;
use mcp_store::{ApiKey, ContextSettings, Scope, TokenBuckets, ToolOutcome};
use mcp_tools::{AuditLog, Caller, ToolRequest, Tools, Via};
use mcp_wasm::{HostConfig, PluginHost};
use serde_json::{Value, json};

fn key(tenant: &str, scopes: &[Scope], permissions: &[&str]) -> Caller {
    Caller::Key(ApiKey {
        id: format!("key-{}", permissions.len()),
        tenant_id: tenant.to_owned(),
        name: "test".into(),
        scopes: scopes.iter().copied().collect(),
        permissions: permissions
            .iter()
            .map(|p| p.to_string())
            .collect::<BTreeSet<_>>(),
        created_at_ms: 0,
        revoked_at_ms: None,
    })
}

/// A host with `order-api` (10 calls a second, permission `network`) and a
/// destructive `canned` tool installed for `tenant`.
async fn host(tenant: &str) -> PluginHost {
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let bytes = |path: &str| std::fs::read(path).unwrap();
    host.install(
        tenant,
        "order-api",
        "1",
        &bytes(mcp_example_plugins::ORDER_API),
        Some(PluginWorld::Tool),
        BTreeMap::new(),
    )
    .await
    .unwrap();
    let config = BTreeMap::from([
        ("destructive".to_owned(), "true".to_owned()),
        ("result".to_owned(), r#"{"done":true}"#.to_owned()),
    ]);
    host.install(
        tenant,
        "wipe",
        "1",
        &bytes(mcp_example_plugins::CANNED),
        Some(PluginWorld::Tool),
        config,
    )
    .await
    .unwrap();
    host
}

fn request<'a>(
    tenant: &'a str,
    tool: &'a str,
    args: &'a Value,
    caller: &'a Caller,
) -> ToolRequest<'a> {
    ToolRequest {
        tenant_id: tenant,
        tool,
        version: None,
        args,
        caller,
        via: Via::Grpc,
        confirmed: false,
        timeout: Duration::from_secs(5),
        conversation: None,
    }
}

fn outcome(result: &Result<Value, mcp_tools::ToolError>) -> ToolOutcome {
    match result {
        Ok(_) => ToolOutcome::Ok,
        Err(e) => e.outcome,
    }
}

#[tokio::test]
async fn arguments_permissions_and_confirmation_are_checked_before_the_plugin_runs() {
    let tenant = format!("t-{}", std::process::id());
    let tools = Tools::new(
        host(&tenant).await,
        TokenBuckets::in_process(),
        AuditLog::discard(),
    );
    let granted = key(&tenant, &[Scope::ToolsCall], &["network"]);

    let bad = json!({ "order_id": "ab12" });
    let executed = tools
        .execute(request(&tenant, "order-api", &bad, &granted))
        .await;
    let error = executed.result.unwrap_err();
    assert_eq!(error.outcome, ToolOutcome::InvalidArguments);
    assert!(error.message.contains("/order_id"), "{}", error.message);
    assert_eq!(executed.fuel, 0, "the plugin never ran");

    let good = json!({ "order_id": "AB1234" });
    let ungranted = key(&tenant, &[Scope::ToolsCall], &[]);
    let error = tools
        .execute(request(&tenant, "order-api", &good, &ungranted))
        .await
        .result
        .unwrap_err();
    assert_eq!(error.outcome, ToolOutcome::Denied);
    assert!(
        error.message.contains("permission:network"),
        "{}",
        error.message
    );
    let no_scope = key(&tenant, &[Scope::Messages], &["network"]);
    let error = tools
        .execute(request(&tenant, "order-api", &good, &no_scope))
        .await
        .result
        .unwrap_err();
    assert_eq!(error.outcome, ToolOutcome::Denied);
    assert!(error.message.contains("tools:call"), "{}", error.message);

    // Granted, it runs (and fails inside: no base_url is configured).
    let executed = tools
        .execute(request(&tenant, "order-api", &good, &granted))
        .await;
    assert_eq!(outcome(&executed.result), ToolOutcome::Failed);
    assert!(executed.result.unwrap_err().message.contains("base_url"));

    // A destructive tool: refused unconfirmed, run confirmed; a flow is not asked.
    let args = json!({});
    let error = tools
        .execute(request(&tenant, "wipe", &args, &granted))
        .await
        .result
        .unwrap_err();
    assert_eq!(error.outcome, ToolOutcome::NeedsConfirmation);
    let confirmed = ToolRequest {
        confirmed: true,
        ..request(&tenant, "wipe", &args, &granted)
    };
    assert_eq!(
        tools.execute(confirmed).await.result,
        Ok(json!({ "done": true }))
    );
    let flow = Caller::Flow {
        conversation_id: "c-1".into(),
    };
    assert_eq!(
        tools
            .execute(request(&tenant, "wipe", &args, &flow))
            .await
            .result,
        Ok(json!({ "done": true }))
    );

    // Another tenant's tool does not exist for this one.
    let other = key("someone-else", &[Scope::Admin], &[]);
    let error = tools
        .execute(request("someone-else", "wipe", &args, &other))
        .await
        .result
        .unwrap_err();
    assert_eq!(error.outcome, ToolOutcome::NotFound);

    let listed: Vec<String> = tools.list(&tenant).into_iter().map(|t| t.name).collect();
    assert_eq!(listed, ["order-api", "wipe"]);
    let wipe = tools.list(&tenant).pop().unwrap();
    assert!(wipe.manifest.annotations.requires_confirmation);
    assert_eq!(wipe.manifest.annotations.destructive, Some(true));
}

/// Two processes' worth of `Tools` on one Redis: order-api's 10 a second
/// per caller holds across both, and each caller has a bucket of its own.
#[tokio::test]
async fn the_rate_limit_is_shared_through_redis_per_tenant_tool_and_caller() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        eprintln!("skipped: REDIS_URL is not set");
        return;
    };
    let context = ContextSettings {
        redis_url: Some(url),
        redis_cluster: false,
        lock_timeout: Duration::from_secs(5),
        lock_ttl: Duration::from_secs(3),
        idle_ttl: None,
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(2),
    };
    let tenant = format!(
        "rate-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let processes: Vec<Arc<Tools>> = vec![
        Tools::new(
            host(&tenant).await,
            TokenBuckets::open(&context).await.unwrap(),
            AuditLog::discard(),
        ),
        Tools::new(
            host(&tenant).await,
            TokenBuckets::open(&context).await.unwrap(),
            AuditLog::discard(),
        ),
    ];
    let caller = key(&tenant, &[Scope::ToolsCall], &["network"]);
    let args = json!({ "order_id": "AB1234" });
    let mut limited = Vec::new();
    for i in 0..14 {
        let tools = &processes[i % 2];
        let executed = tools
            .execute(request(&tenant, "order-api", &args, &caller))
            .await;
        if let Err(e) = &executed.result
            && e.outcome == ToolOutcome::RateLimited
        {
            assert!(e.retry_after.is_some_and(|d| d > Duration::ZERO));
            assert!(e.message.contains("retry in"), "{}", e.message);
            limited.push(i);
        }
    }
    // A burst of 10 and a refill of 10 a second: the calls past the tenth
    // are refused (give or take the refill while they ran).
    assert!(!limited.is_empty(), "14 calls at once were never limited");
    assert!(
        limited[0] >= 10,
        "limited before the burst was used: {limited:?}"
    );
    // Another caller has a bucket of its own.
    let other = Caller::Key(ApiKey {
        id: "another-key".into(),
        ..match &caller {
            Caller::Key(k) => k.clone(),
            _ => unreachable!(),
        }
    });
    let executed = processes[0]
        .execute(request(&tenant, "order-api", &args, &other))
        .await;
    assert_ne!(outcome(&executed.result), ToolOutcome::RateLimited);
}

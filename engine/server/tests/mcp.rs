//! Tools for AI agents, end to end through the real binary: `/mcp` with the
//! official MCP Python SDK as the client, its HTTP-level refusals, and the
//! same executions through the Admin service (ExecuteTool, ListToolCalls).

mod common;

use std::collections::HashMap;

use common::*;
use mcp_engine::proto::admin::*;

/// The demo with a second tool (`order-lookup`, the order API again), a
/// destructive one that requires confirmation (`cancel-order`), a
/// narrow key (tools:call without permission:network) and another tenant
/// whose one tool is `hostile`. Returns (engine, demo key, narrow key,
/// other tenant's key).
async fn agents_setup(
    data: &std::path::Path,
    env: HashMap<&str, String>,
) -> (Engine, String, String, String) {
    let (engine, key) = start_demo_with(data, env).await;
    let (mut admin, _) = clients(&engine).await;
    let config = HashMap::from([(
        "base_url".to_owned(),
        format!("http://{}/demo", engine.http),
    )]);
    upload(
        &mut admin,
        &key,
        "demo",
        "order-lookup",
        mcp_example_plugins::ORDER_API,
        config,
    )
    .await;
    let cancel = HashMap::from([
        ("destructive".to_owned(), "true".to_owned()),
        ("result".to_owned(), r#"{"cancelled":true}"#.to_owned()),
    ]);
    upload(
        &mut admin,
        &key,
        "demo",
        "cancel-order",
        mcp_example_plugins::CANNED,
        cancel,
    )
    .await;
    let narrow = admin
        .create_api_key(authed(
            CreateApiKeyRequest {
                tenant_id: "demo".into(),
                name: "agent without network".into(),
                scopes: vec!["tools:call".into()],
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap()
        .token;
    let (other, other_key) = new_tenant(&mut admin, "agents", &[]).await;
    upload(
        &mut admin,
        &other_key,
        &other,
        "hostile",
        mcp_example_plugins::HOSTILE,
        HashMap::new(),
    )
    .await;
    (engine, key, narrow, other_key)
}

/// The official Python SDK (`mcp` 2.x from PyPI), speaking 2025-11-25
/// (initialize) and 2026-07-28 (server/discover): lists the demo's tools
/// with their schemas a page at a time, calls order-api and gets
/// structuredContent, gets isError naming the field for bad arguments, hits
/// the rate limit, is refused a tool whose permission its key lacks, is
/// asked to confirm a destructive tool (elicitation; or confirms in
/// `_meta`), and cannot see or call another tenant's tools.
#[tokio::test]
async fn the_official_python_sdk_lists_and_calls_a_tenants_tools() {
    if !python_has("mcp.client.streamable_http", "mcp==2.3.0") {
        return;
    }
    let data = std::env::temp_dir().join(format!("mcp-agents-py-{}", std::process::id()));
    let env = HashMap::from([("MCP_TOOLS_PAGE_SIZE", "1".to_owned())]);
    let (engine, key, narrow, other_key) = agents_setup(&data, env).await;
    let url = format!("http://{}/mcp", engine.http);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_agent.py");
    for mode in ["legacy", "auto"] {
        let output = tokio::process::Command::new("python3")
            .args([script, &url, &key, &narrow, &other_key, mode])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && text.trim_end().ends_with("ok"),
            "{mode}: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let negotiated = if mode == "legacy" {
            "2025-11-25"
        } else {
            "2026-07-28"
        };
        assert!(
            text.contains(&format!("protocol {negotiated}")),
            "{mode}: {text}"
        );
    }

    // Every call above is in the audit log, with who made it.
    let (mut admin, _) = clients(&engine).await;
    let calls = admin
        .list_tool_calls(authed(
            ListToolCallsRequest {
                tenant_id: "demo".into(),
                tool: "order-api".into(),
                limit: 1000,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .calls;
    let count = |outcome: &str| calls.iter().filter(|c| c.outcome == outcome).count();
    assert!(calls.iter().all(|c| c.via == "mcp"), "{calls:?}");
    assert!(count("ok") >= 2, "{calls:?}");
    assert_eq!(count("invalid_arguments"), 4, "two a mode: {calls:?}");
    assert_eq!(count("denied"), 2, "{calls:?}");
    assert!(count("rate_limited") >= 2, "{calls:?}");
    let denied = calls.iter().find(|c| c.outcome == "denied").unwrap();
    let ok = calls.iter().find(|c| c.outcome == "ok").unwrap();
    assert_ne!(denied.caller, ok.caller, "each call names its key");
    assert_eq!(ok.args_sha256.len(), 64);
    assert!(ok.fuel > 0 && ok.duration_us > 0, "{ok:?}");
    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
}

/// A raw HTTP request to `/mcp`: (status, headers and body as text).
async fn post_mcp(http: &str, extra_headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{extra_headers}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text)
}

/// Before the MCP layer: no key is 401 with a Bearer challenge, an unknown
/// key 401 invalid_token, a key without tools:call 403 insufficient_scope;
/// a foreign Host or a browser Origin not allowed is 403 (DNS rebinding).
#[tokio::test]
async fn the_mcp_endpoint_refuses_what_it_must() {
    let data = std::env::temp_dir().join(format!("mcp-agents-http-{}", std::process::id()));
    let (engine, key) = start_demo_with(&data, HashMap::new()).await;
    let http = engine.http.clone();
    let host = format!("Host: {http}\r\n");

    let (status, text) = post_mcp(&http, &host).await;
    assert_eq!(status, 401, "{text}");
    assert!(
        text.contains("www-authenticate: Bearer realm=\"mcp-engine\""),
        "{text}"
    );

    let (status, text) = post_mcp(
        &http,
        &format!("{host}Authorization: Bearer mcpk_0123456789abcdef_nope\r\n"),
    )
    .await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("error=\"invalid_token\""), "{text}");

    let (mut admin, _) = clients(&engine).await;
    let messages_only = admin
        .create_api_key(authed(
            CreateApiKeyRequest {
                tenant_id: "demo".into(),
                name: "chat only".into(),
                scopes: vec!["messages".into()],
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap()
        .token;
    let (status, text) = post_mcp(
        &http,
        &format!("{host}Authorization: Bearer {messages_only}\r\n"),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("error=\"insufficient_scope\", scope=\"tools:call\""),
        "{text}"
    );

    let authorized = format!("Authorization: Bearer {key}\r\n");
    let (status, text) = post_mcp(&http, &format!("{host}{authorized}")).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("mcp-session-id"),
        "a 2025-11-25 session: {text}"
    );

    let (status, text) = post_mcp(&http, &format!("Host: attacker.example\r\n{authorized}")).await;
    assert_eq!(status, 403, "{text}");
    let (status, text) = post_mcp(
        &http,
        &format!("{host}Origin: https://attacker.example\r\n{authorized}"),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
}

/// ExecuteTool runs the same path as MCP and as a flow's integration: the
/// schema check names the field, a success carries the result, and each
/// execution is audited with the surface it came through.
#[tokio::test]
async fn execute_tool_over_grpc_and_a_flow_take_the_same_path() {
    let data = std::env::temp_dir().join(format!("mcp-agents-grpc-{}", std::process::id()));
    let (engine, key) = start_demo_with(&data, HashMap::new()).await;
    let (mut admin, mut chat) = clients(&engine).await;
    for text in ["hello", "track my order", "AB1234"] {
        chat.process_message(authed(message("demo", "audited", text), &key))
            .await
            .unwrap();
    }
    let execute = |order_id: &str| ExecuteToolRequest {
        tenant_id: "demo".into(),
        tool: "order-api".into(),
        arguments: Some(prost_types::Struct {
            fields: [(
                "order_id".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(order_id.into())),
                },
            )]
            .into(),
        }),
        confirmed: false,
    };
    let ok = admin
        .execute_tool(authed(execute("CD5678"), &key))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.outcome, "ok");
    let result = mcp_engine::convert::from_value(ok.result.as_ref().unwrap());
    assert_eq!(result["status"], "in the oven");
    let bad = admin
        .execute_tool(authed(execute("cd5678"), &key))
        .await
        .unwrap()
        .into_inner();
    assert!(!bad.success);
    assert_eq!(bad.outcome, "invalid_arguments");
    assert!(bad.error.contains("/order_id"), "{}", bad.error);

    let tools = admin
        .list_tools(authed(
            ListToolsRequest {
                tenant_id: "demo".into(),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .tools;
    let order_api = tools.iter().find(|t| t.plugin == "order-api").unwrap();
    assert_eq!(
        order_api.rate_limit,
        Some(RateLimit {
            requests: 10,
            per_seconds: 1
        })
    );
    assert_eq!(order_api.permissions, ["network"]);

    let calls = admin
        .list_tool_calls(authed(
            ListToolCallsRequest {
                tenant_id: "demo".into(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .calls;
    let outcomes: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.via.as_str(), c.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("grpc", "invalid_arguments"),
            ("grpc", "ok"),
            ("flow", "ok")
        ],
        "newest first"
    );
    assert_eq!(
        calls[2].caller, "audited",
        "a flow's call names its conversation"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&data);
}

/// A request to the HTTP port: (status, body).
async fn http_call(
    address: &str,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Seed 002's contract tests' shapes: discovery (server_name, version,
/// tools with object input schemas, capabilities, health_check_url) and
/// execution (`tools: [{tool_slug, arguments}]`, `request_id` →
/// `successful`, `data.results`, `error`), in sequence with the previous
/// result passed forward, and in parallel.
#[tokio::test]
async fn seed_002_discover_and_execute_answer_the_contract() {
    let engine = start(HashMap::new()).await;
    let (mut admin, _) = clients(&engine).await;
    let (tenant, key) = new_tenant(&mut admin, "seed002", &[]).await;
    upload(
        &mut admin,
        &key,
        &tenant,
        "hostile",
        mcp_example_plugins::HOSTILE,
        HashMap::new(),
    )
    .await;
    let http = engine.http.clone();

    let (status, body) = http_call(&http, "GET", "/mcp/discover", &key, "").await;
    assert_eq!(status, 200, "{body}");
    let discovery = json_of(&body);
    assert_eq!(discovery["server_name"], format!("mcp-engine/{tenant}"));
    assert!(discovery["version"].is_string() && discovery["capabilities"].is_array());
    assert_eq!(discovery["health_check_url"], "/healthz");
    let tools = discovery["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["name"], "hostile");
    assert_eq!(tools[0]["input_schema"]["type"], "object");
    assert_eq!(tools[0]["description"], "Misbehaves on request.");

    let sequence = serde_json::json!({
        "request_id": "req-1",
        "tools": [
            { "tool_slug": "hostile", "arguments": { "mode": "ok" } },
            { "tool_slug": "hostile", "arguments": { "mode": "echo" }, "use_previous_result": true }
        ]
    });
    let (status, body) =
        http_call(&http, "POST", "/mcp/execute", &key, &sequence.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["request_id"], "req-1");
    assert_eq!(answer["successful"], true, "{answer}");
    assert!(answer["error"].is_null());
    let results = answer["data"]["results"].as_array().unwrap();
    assert_eq!(results[0]["tool_slug"], "hostile");
    assert_eq!(results[0]["response"], serde_json::json!({ "fine": true }));
    assert_eq!(
        results[1]["response"],
        serde_json::json!({ "mode": "echo", "previous_result": { "fine": true } })
    );

    // A sequence stops at its first failure.
    let stops = serde_json::json!({
        "request_id": "req-2",
        "tools": [
            { "tool_slug": "hostile", "arguments": { "mode": "trap" } },
            { "tool_slug": "hostile", "arguments": { "mode": "ok" } }
        ]
    });
    let (_, body) = http_call(&http, "POST", "/mcp/execute", &key, &stops.to_string()).await;
    let answer = json_of(&body);
    assert_eq!(answer["successful"], false);
    assert!(
        answer["error"].as_str().unwrap().starts_with("hostile: "),
        "{answer}"
    );
    assert_eq!(answer["data"]["results"].as_array().unwrap().len(), 1);

    // In parallel every tool runs, and each says how it went.
    let parallel = serde_json::json!({
        "mode": "parallel",
        "tools": [
            { "tool_slug": "hostile", "arguments": { "mode": "trap" } },
            { "tool_slug": "hostile", "arguments": { "mode": "ok" } },
            { "tool_slug": "nonexistent_tool", "arguments": {} }
        ]
    });
    let (_, body) = http_call(&http, "POST", "/mcp/execute", &key, &parallel.to_string()).await;
    let answer = json_of(&body);
    assert_eq!(answer["request_id"], "unknown");
    assert_eq!(answer["successful"], false);
    let results = answer["data"]["results"].as_array().unwrap();
    let successes: Vec<bool> = results.iter().map(|r| r["success"] == true).collect();
    assert_eq!(successes, [false, true, false], "{answer}");
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("no tool named"),
        "{answer}"
    );

    // Not seed 002's shape: 400, naming what is wrong.
    let (status, body) = http_call(
        &http,
        "POST",
        "/mcp/execute",
        &key,
        r#"{"tools":[{"arguments":{}}]}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("tool_slug"),
        "{body}"
    );
    let (status, _) = http_call(
        &http,
        "GET",
        "/mcp/discover",
        "mcpk_0123456789abcdef_nope",
        "",
    )
    .await;
    assert_eq!(status, 401);
}

/// A flow whose one integration calls `integration_id`: "Your order is
/// <status>." on success, "failed" on an error.
fn remote_order_flow(integration_id: &str) -> serde_json::Value {
    serde_json::json!({
        "flow_id": "remote-orders", "name": "Remote orders", "version": "1",
        "initial_state": "lookup",
        "states": {
            "lookup": {
                "type": "integration",
                "config": {
                    "integration_id": integration_id,
                    "timeout_ms": 10000,
                    "request_mapping": { "order_id": "'AB1234'" },
                    "response_mapping": { "slots.status": "result.status" }
                },
                "transitions": [
                    { "condition": "integration_success", "target_state": "status" },
                    { "condition": "integration_error", "target_state": "failed" }
                ]
            },
            "status": { "type": "end", "config": { "message": "Your order is {{ slots.status }}." } },
            "failed": { "type": "end", "config": { "message": "failed" } }
        }
    })
}

/// The engine as an MCP client: a flow on one engine process calls a tool
/// on a second process's /mcp (the server and its key in the tenant's
/// policy, its host on the allow-list), and lists it among its tools; a
/// tenant whose allow-list lacks the host is refused by the egress policy
/// and its flow routes the error.
#[tokio::test]
async fn an_integration_calls_a_tool_on_another_engines_mcp_endpoint() {
    let data = std::env::temp_dir().join(format!("mcp-agents-remote-{}", std::process::id()));
    let (remote, remote_key) = start_demo_with(&data, HashMap::new()).await;
    let port = remote.http.rsplit(':').next().unwrap().to_owned();
    let engine = start(HashMap::new()).await;
    let (mut admin, chat) = clients(&engine).await;
    let server = RemoteMcpServer {
        url: format!("http://{}/mcp", remote.http),
        token: remote_key,
    };
    let mut tenants = Vec::new();
    for (n, allow_list) in [vec![format!("127.0.0.1/32:{port}")], vec![]]
        .into_iter()
        .enumerate()
    {
        let id = format!("remote-{}-{n}", std::process::id());
        let key = admin
            .create_tenant(authed(
                CreateTenantRequest {
                    tenant_id: id.clone(),
                    name: format!("remote tools {n}"),
                    allow_list,
                    mcp_servers: [("pizza".to_owned(), server.clone())].into(),
                    ..Default::default()
                },
                OPERATOR_KEY,
            ))
            .await
            .unwrap()
            .into_inner()
            .api_key
            .unwrap()
            .token;
        publish(
            &mut admin,
            &key,
            &id,
            &remote_order_flow("mcp:pizza/order-api"),
        )
        .await;
        tenants.push((id, key));
    }
    let reply = |tenant: &str, key: &str| {
        let request = authed(message(tenant, "c-1", "where is my order?"), key);
        let mut chat = chat.clone();
        async move {
            chat.process_message(request)
                .await
                .unwrap()
                .into_inner()
                .response
                .unwrap()
                .text
        }
    };
    let (allowed, allowed_key) = &tenants[0];
    assert_eq!(
        reply(allowed, allowed_key).await,
        "Your order is out for delivery."
    );
    let (refused, refused_key) = &tenants[1];
    assert_eq!(reply(refused, refused_key).await, "failed");
    let calls = admin
        .list_tool_calls(authed(
            ListToolCallsRequest {
                tenant_id: refused.clone(),
                ..Default::default()
            },
            refused_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .calls;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        (calls[0].via.as_str(), calls[0].outcome.as_str()),
        ("flow", "failed")
    );
    assert!(calls[0].error.contains("egress denied"), "{:?}", calls[0]);

    let tools = admin
        .list_tools(authed(
            ListToolsRequest {
                tenant_id: allowed.clone(),
            },
            allowed_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .tools;
    let listed: Vec<&str> = tools.iter().map(|t| t.plugin.as_str()).collect();
    assert!(listed.contains(&"mcp:pizza/order-api"), "{listed:?}");
    drop((engine, remote));
    let _ = std::fs::remove_dir_all(&data);
}

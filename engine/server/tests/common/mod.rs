//! What every end-to-end test needs: the real `mcp-engine` binary started
//! on free ports, and requests that carry a key.
#![allow(dead_code)] // each test binary uses its own share of these

use std::collections::HashMap;
use std::process::Stdio;

use mcp_engine::proto::admin::admin_client::AdminClient;
use mcp_engine::proto::admin::*;
use mcp_engine::proto::common::TenantContext;
use mcp_engine::proto::engine::mcp_engine_client::McpEngineClient;
use mcp_engine::proto::engine::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::Request;
use tonic::transport::Channel;

pub const OPERATOR_KEY: &str = "operator-secret-for-tests";

pub struct Engine {
    pub child: Child,
    pub address: String,
    /// host:port of /metrics and /healthz.
    pub http: String,
    /// REDIS_URL and REDIS_CLUSTER as the engine was given them.
    pub redis_url: Option<String>,
    pub redis_cluster: bool,
    _data: TempDir,
}

pub struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A connection to the engine's Redis (a cluster's too), if it has one.
pub enum RedisOf {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl RedisOf {
    pub async fn query<T: redis::FromRedisValue>(&mut self, command: &redis::Cmd) -> T {
        match self {
            RedisOf::Single(c) => command.query_async(c).await.unwrap(),
            RedisOf::Cluster(c) => command.query_async(c).await.unwrap(),
        }
    }
}

impl Engine {
    pub async fn redis(&self) -> Option<RedisOf> {
        let url = self.redis_url.as_deref()?;
        Some(if self.redis_cluster {
            let client = redis::cluster::ClusterClient::new(url.split(',')).unwrap();
            RedisOf::Cluster(client.get_async_connection().await.unwrap())
        } else {
            let client = redis::Client::open(url).unwrap();
            RedisOf::Single(client.get_multiplexed_async_connection().await.unwrap())
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A PostgreSQL schema of this binary's own, emptied at start.
pub async fn postgres_url(url: &str) -> String {
    postgres_schema_url(url, "mcp_test_e2e").await
}

pub async fn postgres_schema_url(url: &str, schema: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("PostgreSQL reachable");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

pub async fn start(env: HashMap<&str, String>) -> Engine {
    start_with(&["serve"], env).await.0
}

/// Output lines of the engine after the two that say where it listens.
pub type Output = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// Starts `mcp-engine ARGS` (a `serve`) on free ports.
pub async fn start_with(args: &[&str], env: HashMap<&str, String>) -> (Engine, Output) {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data = std::env::temp_dir().join(format!("mcp-e2e-{}-{n}", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcp-engine"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("GRPC_HOST", "127.0.0.1")
        .env("GRPC_PORT", "0")
        .env("HTTP_PORT", "0")
        .env("MCP_DATA_DIR", &data)
        .env("MCP_ADMIN_KEY", OPERATOR_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let redis_url = env.get("REDIS_URL").cloned();
    let redis_cluster = env.get("REDIS_CLUSTER").is_some_and(|v| v == "true");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .next_line()
        .await
        .unwrap()
        .expect("the engine prints where it listens");
    let address = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let http_line = lines
        .next_line()
        .await
        .unwrap()
        .expect("the HTTP port line");
    // Listening on every address (HTTP_HOST=0.0.0.0), it is reached on loopback.
    let http = http_line
        .split_whitespace()
        .find_map(|w| {
            w.strip_prefix("127.0.0.1:")
                .or_else(|| w.strip_prefix("0.0.0.0:"))
        })
        .map(|port| format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("no address in {http_line:?}"));
    let engine = Engine {
        child,
        http,
        redis_url,
        redis_cluster,
        address: format!("http://{address}"),
        _data: TempDir(data),
    };
    (engine, lines)
}

/// `serve --demo` with its data in `data`: the engine and the demo
/// tenant's key.
pub async fn start_demo_with(
    data: &std::path::Path,
    mut env: HashMap<&str, String>,
) -> (Engine, String) {
    env.insert("MCP_DATA_DIR", data.display().to_string());
    let (engine, mut output) = start_with(&["serve", "--demo"], env).await;
    let mut key = None;
    while let Some(line) = output.next_line().await.unwrap() {
        if let Some(k) = line.strip_prefix("Its API key: ") {
            key = Some(k.trim().to_owned());
        }
        if line.contains("chat --tenant demo") {
            break;
        }
    }
    (engine, key.expect("the demo prints its key"))
}

/// A plain HTTP/1.1 GET: (status code, body).
pub async fn http_get(address: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

pub fn authed<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

pub fn tenant(id: &str) -> Option<TenantContext> {
    Some(TenantContext {
        tenant_id: id.into(),
        ..Default::default()
    })
}

pub fn message(tenant_id: &str, conversation: &str, text: &str) -> ProcessMessageRequest {
    ProcessMessageRequest {
        tenant_context: tenant(tenant_id),
        conversation_id: conversation.into(),
        user_id: "user-1".into(),
        content: Some(MessageContent {
            text: text.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Clients for the engine's gRPC services on one connection.
pub async fn clients(engine: &Engine) -> (AdminClient<Channel>, McpEngineClient<Channel>) {
    let channel = Channel::from_shared(engine.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let admin = AdminClient::new(channel.clone()).max_encoding_message_size(64 << 20);
    (admin, McpEngineClient::new(channel))
}

/// A new tenant (id unique to this run: Redis outlives test runs) allowed
/// to call `allow_list`; returns its id and its first key.
pub async fn new_tenant(
    admin: &mut AdminClient<Channel>,
    prefix: &str,
    allow_list: &[String],
) -> (String, String) {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{prefix}-{}-{n}", std::process::id());
    let created = admin
        .create_tenant(authed(
            CreateTenantRequest {
                tenant_id: id.clone(),
                name: prefix.into(),
                allow_list: allow_list.to_vec(),
                ..Default::default()
            },
            OPERATOR_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    (id, created.api_key.unwrap().token)
}

/// Uploads a plugin built from plugins/ as version 1.0.0.
pub async fn upload(
    admin: &mut AdminClient<Channel>,
    key: &str,
    tenant_id: &str,
    name: &str,
    path: &str,
    config: HashMap<String, String>,
) {
    admin
        .upload_plugin(authed(
            UploadPluginRequest {
                tenant_id: tenant_id.into(),
                name: name.into(),
                version: "1.0.0".into(),
                component: std::fs::read(path).unwrap(),
                config,
                ..Default::default()
            },
            key,
        ))
        .await
        .unwrap_or_else(|e| panic!("uploading {name}: {e}"));
}

/// Publishes a flow and makes it the tenant's default.
pub async fn publish(
    admin: &mut AdminClient<Channel>,
    key: &str,
    tenant_id: &str,
    flow: &serde_json::Value,
) {
    admin
        .publish_flow(authed(
            PublishFlowRequest {
                tenant_id: tenant_id.into(),
                definition: flow.to_string(),
                make_default: true,
                ..Default::default()
            },
            key,
        ))
        .await
        .unwrap_or_else(|e| panic!("publishing {}: {e}", flow["flow_id"]));
}

/// Whether python3 can import `module`. Without it the test says so and is
/// skipped, unless `MCP_REQUIRE_PYTHON_GRPC` is set (as CI sets it).
pub fn python_has(module: &str, install: &str) -> bool {
    let available = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            std::env::var("MCP_REQUIRE_PYTHON_GRPC").is_err(),
            "MCP_REQUIRE_PYTHON_GRPC is set but python3 cannot import {module}"
        );
        eprintln!("skipped: pip install {install} to run this test");
    }
    available
}

/// A flow using the vip-check condition and the price action.
pub fn refunds_flow() -> String {
    serde_json::json!({
        "flow_id": "refunds", "name": "Refunds", "version": "1", "initial_state": "ask",
        "states": {
            "ask": {
                "type": "response",
                "config": { "response_templates": { "default": "What did you spend?" } },
                "transitions": [ { "condition": "any_input", "target_state": "check" } ]
            },
            "check": {
                "type": "condition",
                "transitions": [
                    { "condition": "plugin", "plugin": "vip-check", "args": { "min_spent": 500 }, "target_state": "vip", "priority": 1 },
                    { "condition": "default", "target_state": "done" }
                ]
            },
            "vip": {
                "type": "end",
                "entry_actions": [ { "type": "plugin", "plugin": "price", "args": { "discount": 0.5 } } ],
                "config": { "message": "VIP." }
            },
            "done": { "type": "end", "config": { "message": "Done." } }
        }
    })
    .to_string()
}

/// An order API that answers each request only when told to.
pub struct SlowApi {
    pub address: String,
    pub arrived: tokio::sync::mpsc::Receiver<()>,
    pub release: tokio::sync::mpsc::Sender<()>,
}

pub async fn slow_api() -> SlowApi {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (arrived_tx, arrived) = tokio::sync::mpsc::channel(8);
    let (release, mut release_rx) = tokio::sync::mpsc::channel::<()>(8);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
            let _ = arrived_tx.send(()).await;
            release_rx.recv().await;
            let body = r#"{"status":"shipped"}"#;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, response.as_bytes()).await;
        }
    });
    SlowApi {
        address,
        arrived,
        release,
    }
}

pub fn order_flow() -> serde_json::Value {
    serde_json::json!({
        "flow_id": "orders", "name": "Orders", "version": "1", "initial_state": "lookup",
        "states": {
            "lookup": {
                "type": "integration",
                "config": {
                    "integration_id": "order-api",
                    "timeout_ms": 30000,
                    "request_mapping": { "order_id": "'AB1234'" },
                    "response_mapping": { "slots.status": "result.status" }
                },
                "transitions": [
                    { "condition": "integration_success", "target_state": "status" },
                    { "condition": "integration_error", "target_state": "status" }
                ]
            },
            "status": { "type": "end", "config": { "message": "Your order is {{ slots.status }}." } }
        }
    })
}

pub async fn tenant_on_slow_api(engine: &Engine, api: &SlowApi) -> (String, String) {
    let (mut admin, _) = clients(engine).await;
    // The API listens on loopback, which the egress policy refuses unless
    // a range entry opens it: this one opens the API's port only.
    let port = api.address.rsplit(':').next().unwrap();
    let (tenant, key) = new_tenant(&mut admin, "slow", &[format!("127.0.0.1/32:{port}")]).await;
    let config = HashMap::from([("base_url".to_owned(), format!("http://{}", api.address))]);
    upload(
        &mut admin,
        &key,
        &tenant,
        "order-api",
        mcp_example_plugins::ORDER_API,
        config,
    )
    .await;
    publish(&mut admin, &key, &tenant, &order_flow()).await;
    (tenant, key)
}

/// Polls `check` until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: std::time::Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A one-state flow that answers every message with "Hello!".
pub fn hello_flow() -> serde_json::Value {
    serde_json::json!({
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

/// Sends "hi" to a tenant on [`hello_flow`] and checks it is greeted.
pub async fn greeted(
    client: &mut McpEngineClient<Channel>,
    tenant: &str,
    conversation: &str,
    key: &str,
) {
    let reply = client
        .process_message(authed(message(tenant, conversation, "hi"), key))
        .await
        .unwrap_or_else(|status| panic!("{tenant}'s turn is answered: {status:?}"))
        .into_inner();
    let text = reply.response.unwrap().text;
    assert!(text.starts_with("Hello!"), "{text}");
}

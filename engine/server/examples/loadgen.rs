//! A gRPC load generator: many conversations of the demo tenant at once,
//! reporting throughput and latency percentiles, and a bare echo server of
//! the same proto to hold the engine against.
//!
//! ```sh
//! mcp-engine serve --demo                      # prints the demo's key
//! # the engine alone
//! MCP_API_KEY=<key> cargo run --release -p mcp-engine --example loadgen -- \
//!     run --concurrency 32 --conversations 2000
//! # a bare echo of ProcessMessage, then the engine, with the same client
//! MCP_API_KEY=<key> cargo run --release -p mcp-engine --example loadgen -- \
//!     compare --concurrency 16 --conversations 2000
//! # fairness: a second tenant's turn every 100 ms, alone, then while the
//! # demo tenant is under full load (creates that tenant with the operator key)
//! MCP_API_KEY=<key> MCP_ADMIN_KEY=<operator key> cargo run --release -p mcp-engine \
//!     --example loadgen -- fair --concurrency 64 --conversations 100000
//! # a trivial tool, one call at a time: over MCP (the official Rust SDK as
//! # the client) and from a flow's integration state (a turn), side by side
//! MCP_ADMIN_KEY=<operator key> cargo run --release -p mcp-engine --example loadgen -- \
//!     tools --mcp http://127.0.0.1:8002/mcp --calls 2000
//! # one WASM condition a turn, in a tenant of its own (created with the
//! # operator key): the flow of issue 12's figures
//! MCP_ADMIN_KEY=<operator key> cargo run --release -p mcp-engine --example loadgen -- \
//!     compare --flow condition --concurrency 16 --conversations 2000
//! ```
//!
//! Each conversation orders a pizza from the demo's flow (five turns: intent
//! plugin, slots, VIP condition, price action, end state), or with
//! `--flow condition` says five messages to a flow that asks a condition
//! plugin each turn; either way a turn here is a real one: lock, load, step
//! with plugins, save, transcript, analytics.
//! The echo answers each message with its own text and does nothing else:
//! what is left is the cost of gRPC, the client and the machine.

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures::Stream;
use mcp_engine::proto::admin::admin_client::AdminClient;
use mcp_engine::proto::admin::{CreateTenantRequest, PublishFlowRequest, UploadPluginRequest};
use mcp_engine::proto::common::{self, TenantContext};
use mcp_engine::proto::engine::mcp_engine_client::McpEngineClient;
use mcp_engine::proto::engine::mcp_engine_server::{McpEngine, McpEngineServer};
use mcp_engine::proto::engine::*;
use mcp_flow::{ContextError, ContextStore, Conversation, ConversationKey, Write};
use mcp_store::StoreSettings;
use tokio::io::AsyncBufReadExt;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

#[derive(Parser)]
struct Options {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a running engine (or any server of the same proto).
    Run(Load),
    /// Serve a bare echo of ProcessMessage on `--listen` until killed.
    Echo {
        #[arg(long, default_value = "127.0.0.1:50061")]
        listen: SocketAddr,
        /// Also take and commit each message's conversation in this Redis,
        /// through the engine's own context store: a turn's two round trips
        /// and nothing else.
        #[arg(long)]
        context: Option<String>,
    },
    /// Load a bare echo (started as a child process), then the engine at
    /// `--server`, and print both and their ratio.
    Compare {
        #[command(flatten)]
        load: Load,
        /// Between the two, an echo that also takes and commits each
        /// conversation in this Redis (see `echo --context`): the floor of
        /// any turn with its context in Redis.
        #[arg(long)]
        echo_context: Option<String>,
    },
    /// A trivial tool called `--calls` times one at a time over MCP, then
    /// from a flow (one integration state a turn); prints both latencies.
    Tools {
        #[arg(long, env = "MCP_SERVER", default_value = "http://127.0.0.1:50051")]
        server: String,
        /// The engine's MCP endpoint.
        #[arg(long, default_value = "http://127.0.0.1:8002/mcp")]
        mcp: String,
        /// The operator key, to create the tenant the tool belongs to.
        #[arg(long, env = "MCP_ADMIN_KEY", hide_env_values = true)]
        operator_key: String,
        #[arg(long, default_value_t = 2000)]
        calls: usize,
    },
    /// Another tenant's turns every `--interval-ms`: alone, then while this
    /// load runs; prints its latency both ways and the ratio of their p99.
    Fair {
        /// Needs `--operator-key`, to create the other tenant.
        #[command(flatten)]
        load: Load,
        /// The other tenant's turns in each phase.
        #[arg(long, default_value_t = 100)]
        probes: usize,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
}

#[derive(Args, Clone)]
struct Load {
    #[arg(long, env = "MCP_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// The demo tenant's key (`--flow demo`).
    #[arg(long, env = "MCP_API_KEY", hide_env_values = true, default_value = "")]
    key: String,
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// What each conversation runs.
    #[arg(long, value_enum, default_value = "demo")]
    flow: BenchFlow,
    /// The operator key, to create the tenant of `--flow condition`.
    #[arg(long, env = "MCP_ADMIN_KEY", hide_env_values = true)]
    operator_key: Option<String>,
    /// Conversations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Conversations in all, each five turns.
    #[arg(long, default_value_t = 500)]
    conversations: usize,
    /// gRPC connections the workers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum BenchFlow {
    /// The demo tenant's pizza order: intent plugin, slots, a VIP condition,
    /// a price action, an end state.
    Demo,
    /// One WASM condition (vip-check) a turn and a templated reply, in a
    /// tenant of its own: the flow the issue's figures were measured with.
    Condition,
}

/// The flow of `--flow condition`: every message goes back to `check`,
/// which asks the vip-check plugin, then greets and waits.
const CONDITION_FLOW: &str = r#"{
    "flow_id": "condition-bench", "name": "Condition bench", "version": "1",
    "initial_state": "check",
    "states": {
        "check": {
            "type": "condition",
            "transitions": [
                { "condition": "plugin", "plugin": "vip-check", "args": { "min_spent": 100 },
                  "target_state": "vip", "priority": 10 },
                { "condition": "default", "target_state": "regular" }
            ]
        },
        "vip": {
            "type": "response",
            "config": { "response_templates": { "default": "Welcome back, VIP!" } },
            "transitions": [{ "condition": "any_input", "target_state": "check" }]
        },
        "regular": {
            "type": "response",
            "config": { "response_templates": { "default": "Hello, {{ user.id }}!" } },
            "transitions": [{ "condition": "any_input", "target_state": "check" }]
        }
    }
}"#;

/// For `--flow condition`: a new tenant with vip-check and the condition
/// flow, and `load` pointed at it.
async fn prepare(mut load: Load) -> Result<Load, Box<dyn std::error::Error>> {
    if load.flow == BenchFlow::Demo {
        if load.key.is_empty() {
            return Err("--flow demo needs the demo tenant's key (MCP_API_KEY or --key)".into());
        }
        return Ok(load);
    }
    let operator_key = load
        .operator_key
        .clone()
        .ok_or("--flow condition needs the operator key (MCP_ADMIN_KEY or --operator-key)")?;
    let channel = Channel::from_shared(load.server.clone())?.connect().await?;
    let plugin = UploadPluginRequest {
        name: "vip-check".into(),
        version: "1.0.0".into(),
        component: mcp_example_plugins::VIP_CHECK_BYTES.to_vec(),
        ..Default::default()
    };
    let (tenant, key) = bench_tenant(
        channel,
        &operator_key,
        "condition bench",
        plugin,
        CONDITION_FLOW,
    )
    .await?;
    load.key = key;
    load.tenant = tenant;
    Ok(load)
}

/// A new tenant (created with the operator key) with `plugin` installed
/// and `flow` as its default flow; returns its id and key. `name` says
/// what it is for; ids and names get a suffix, as one engine serves many
/// runs and both must be unique.
async fn bench_tenant(
    channel: Channel,
    operator_key: &str,
    name: &str,
    plugin: UploadPluginRequest,
    flow: &str,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let mut admin = AdminClient::new(channel).max_encoding_message_size(64 << 20);
    let suffix = rand_suffix() % 1_000_000_000;
    let tenant = format!("{}-{suffix}", name.replace(' ', "-"));
    let key = admin
        .create_tenant(authorized(
            CreateTenantRequest {
                tenant_id: tenant.clone(),
                name: format!("{name} {suffix}"),
                ..Default::default()
            },
            operator_key,
        ))
        .await?
        .into_inner()
        .api_key
        .ok_or("no key for the new tenant")?
        .token;
    admin
        .upload_plugin(authorized(
            UploadPluginRequest {
                tenant_id: tenant.clone(),
                ..plugin
            },
            &key,
        ))
        .await?;
    admin
        .publish_flow(authorized(
            PublishFlowRequest {
                tenant_id: tenant.clone(),
                definition: flow.into(),
                make_default: true,
                ..Default::default()
            },
            &key,
        ))
        .await?;
    Ok((tenant, key))
}

const SCRIPT: [&str; 5] = [
    "hi",
    "I'd like to order a pizza",
    "large pepperoni",
    "2",
    "yes",
];

/// What one load run measured.
struct Report {
    turns: usize,
    errors: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
}

impl Report {
    fn throughput(&self) -> f64 {
        self.turns as f64 / self.elapsed.as_secs_f64()
    }

    fn at(&self, quantile: f64) -> Duration {
        let last = self.latencies.len().saturating_sub(1);
        self.latencies
            .get(((self.latencies.len() as f64 * quantile) as usize).min(last))
            .copied()
            .unwrap_or_default()
    }

    fn print(&self, name: &str, load: &Load) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name}: {} turns ({} conversations, concurrency {}) in {:.2} s: {:.0} turns/s, {} errors",
            self.turns,
            load.conversations,
            load.concurrency,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.errors
        );
        println!(
            "{name}: latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(self.at(0.50)),
            ms(self.at(0.90)),
            ms(self.at(0.99)),
            ms(self.latencies.last().copied().unwrap_or_default())
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Options::parse().command {
        Command::Run(load) => {
            let load = prepare(load).await?;
            let report = run(&load).await?;
            report.print("engine", &load);
        }
        Command::Echo { listen, context } => {
            let context = match context {
                Some(url) => Some(context_store(&url).await?),
                None => None,
            };
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("echo listening on {}", listener.local_addr()?);
            serve_echo(listener, Echo { context }).await?;
        }
        Command::Compare { load, echo_context } => {
            compare(prepare(load).await?, echo_context.as_deref()).await?
        }
        Command::Tools {
            server,
            mcp,
            operator_key,
            calls,
        } => tools(&server, &mcp, &operator_key, calls).await?,
        Command::Fair {
            load,
            probes,
            interval_ms,
        } => {
            let operator_key = load
                .operator_key
                .clone()
                .ok_or("fair needs the operator key (MCP_ADMIN_KEY or --operator-key)")?;
            fair(
                prepare(load).await?,
                &operator_key,
                probes,
                Duration::from_millis(interval_ms),
            )
            .await?
        }
    }
    Ok(())
}

async fn compare(load: Load, echo_context: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let bare = run_echo(&load, None).await?;
    let floor = match echo_context {
        Some(url) => Some(run_echo(&load, Some(url)).await?),
        None => None,
    };
    let engine = run(&load).await?;
    bare.print("echo", &load);
    if let Some(floor) = &floor {
        floor.print("echo + context", &load);
    }
    engine.print("engine", &load);
    let ratio = |name: &str, of: &Report| {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        println!(
            "{name}/echo: throughput {:.2}, p50 {:.2}, p99 {:.2}",
            ratio(of.throughput(), bare.throughput()),
            ratio(of.at(0.50).as_secs_f64(), bare.at(0.50).as_secs_f64()),
            ratio(of.at(0.99).as_secs_f64(), bare.at(0.99).as_secs_f64()),
        );
    };
    if let Some(floor) = &floor {
        ratio("echo + context", floor);
    }
    ratio("engine", &engine);
    Ok(())
}

/// Loads an echo server started as a child process of this program.
async fn run_echo(
    load: &Load,
    context: Option<&str>,
) -> Result<Report, Box<dyn std::error::Error>> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.args(["echo", "--listen", "127.0.0.1:0"]);
    if let Some(url) = context {
        command.args(["--context", url]);
    }
    let mut echo = command.stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
    let mut lines = tokio::io::BufReader::new(echo.stdout.take().expect("piped")).lines();
    let line = lines
        .next_line()
        .await?
        .ok_or("the echo server did not start")?;
    let address = line
        .strip_prefix("echo listening on ")
        .ok_or_else(|| format!("unexpected line from the echo server: {line}"))?;
    let echo_load = Load {
        server: format!("http://{address}"),
        ..load.clone()
    };
    let report = run(&echo_load).await?;
    echo.kill().await?;
    Ok(report)
}

/// The engine's Redis context store, as `serve` opens it with `REDIS_URL`.
async fn context_store(url: &str) -> Result<Arc<dyn ContextStore>, Box<dyn std::error::Error>> {
    let settings =
        StoreSettings::from_lookup(|name| (name == "REDIS_URL").then(|| url.to_owned()))?;
    Ok(mcp_store::open_context_store(&settings.context).await?)
}

/// A one-state flow: the other tenant's turn costs the engine, not a plugin.
const GREETING_FLOW: &str = r#"{
    "flow_id": "hello", "name": "Hello", "version": "1", "initial_state": "hello",
    "states": { "hello": {
        "type": "response",
        "config": { "response_templates": { "default": "Hello!" } },
        "transitions": [{ "condition": "any_input", "target_state": "hello" }]
    } }
}"#;

async fn fair(
    load: Load,
    operator_key: &str,
    probes: usize,
    interval: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(load.server.clone())?.connect().await?;
    let mut admin = AdminClient::new(channel.clone());
    let other = format!("fair-{}", rand_suffix() % 1_000_000_000);
    let created = admin
        .create_tenant(authorized(
            CreateTenantRequest {
                tenant_id: other.clone(),
                name: "fairness probe".into(),
                ..Default::default()
            },
            operator_key,
        ))
        .await?
        .into_inner();
    let key = created.api_key.ok_or("no key for the new tenant")?.token;
    admin
        .publish_flow(authorized(
            PublishFlowRequest {
                tenant_id: other.clone(),
                definition: GREETING_FLOW.into(),
                make_default: true,
                ..Default::default()
            },
            &key,
        ))
        .await?;
    let client = McpEngineClient::new(channel);
    let probe = |phase: &'static str| {
        let (client, other, key) = (client.clone(), other.clone(), key.clone());
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            // One conversation, as a chat would send it; the first turns
            // (creating it, warming caches) are not counted.
            const WARM_UP: usize = 20;
            for n in 0..probes + WARM_UP {
                let request = authorized(
                    ProcessMessageRequest {
                        tenant_context: Some(TenantContext {
                            tenant_id: other.clone(),
                            ..Default::default()
                        }),
                        conversation_id: phase.into(),
                        user_id: "probe".into(),
                        content: Some(MessageContent {
                            text: "hi".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    &key,
                );
                let sent = Instant::now();
                match client.clone().process_message(request).await {
                    _ if n < WARM_UP => {}
                    Ok(r) if r.get_ref().status.as_ref().is_some_and(|s| s.success) => {
                        latencies.push(sent.elapsed())
                    }
                    _ => errors += 1,
                }
                tokio::time::sleep(interval.saturating_sub(sent.elapsed())).await;
            }
            latencies.sort();
            Report {
                turns: latencies.len(),
                errors,
                elapsed: Duration::ZERO,
                latencies,
            }
        }
    };
    let alone = probe("alone").await;
    let stop = Arc::new(AtomicBool::new(false));
    let loaded_run = {
        let (load, stop) = (load.clone(), stop.clone());
        tokio::spawn(async move { run_until(&load, stop).await.map_err(|e| e.to_string()) })
    };
    // Let the load reach its pace before measuring under it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = probe("loaded").await;
    stop.store(true, Ordering::Relaxed);
    let heavy = loaded_run.await??;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (name, report) in [("alone", &alone), ("under load", &loaded)] {
        println!(
            "{other} {name}: {} turns, {} errors, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            report.turns,
            report.errors,
            ms(report.at(0.50)),
            ms(report.at(0.99)),
            ms(report.latencies.last().copied().unwrap_or_default())
        );
    }
    heavy.print(&format!("{} (load)", load.tenant), &load);
    println!(
        "p99 under load / p99 alone: {:.2}",
        loaded.at(0.99).as_secs_f64() / alone.at(0.99).as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// The flow of `tools`: each message calls the tool, then ends (the next
/// message starts it over).
const TOOL_FLOW: &str = r#"{
    "flow_id": "tool-bench", "name": "Tool bench", "version": "1", "initial_state": "call",
    "states": {
        "call": {
            "type": "integration",
            "config": { "integration_id": "echo-tool", "timeout_ms": 5000 },
            "transitions": [
                { "condition": "integration_success", "target_state": "done" },
                { "condition": "integration_error", "target_state": "done" }
            ]
        },
        "done": { "type": "end", "config": { "message": "done" } }
    }
}"#;

async fn tools(
    server: &str,
    mcp: &str,
    operator_key: &str,
    calls: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let channel = Channel::from_shared(server.to_owned())?.connect().await?;
    let plugin = UploadPluginRequest {
        name: "echo-tool".into(),
        version: "1.0.0".into(),
        component: mcp_example_plugins::CANNED_BYTES.to_vec(),
        config: [("result".to_owned(), r#"{"ok":true}"#.to_owned())].into(),
        ..Default::default()
    };
    let (tenant, key) = bench_tenant(
        channel.clone(),
        operator_key,
        "tool bench",
        plugin,
        TOOL_FLOW,
    )
    .await?;
    // The first calls (sessions, caches) are not counted.
    const WARM_UP: usize = 50;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let summary = |name: &str, mut latencies: Vec<Duration>, errors: usize| {
        latencies.sort();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "{name}: {} calls, {errors} errors, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
            latencies.len(),
            ms(at(0.5)),
            ms(at(0.9)),
            ms(at(0.99))
        );
        at(0.5)
    };

    mcp_tools::install_tls_provider();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(mcp.to_owned()).auth_header(key.clone()),
    );
    let client = ().serve(transport).await?;
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for n in 0..calls + WARM_UP {
        let started = Instant::now();
        let result = client
            .call_tool(CallToolRequestParams::new("echo-tool"))
            .await;
        if !matches!(&result, Ok(r) if r.is_error != Some(true)) {
            errors += 1;
        }
        if n >= WARM_UP {
            latencies.push(started.elapsed());
        }
    }
    client.cancel().await?;
    let over_mcp = summary("tools/call over MCP", latencies, errors);

    let mut engine = McpEngineClient::new(channel);
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for n in 0..calls + WARM_UP {
        let request = authorized(
            ProcessMessageRequest {
                tenant_context: Some(TenantContext {
                    tenant_id: tenant.clone(),
                    ..Default::default()
                }),
                conversation_id: "bench".into(),
                user_id: "bench".into(),
                content: Some(MessageContent {
                    text: "go".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &key,
        );
        let started = Instant::now();
        match engine.process_message(request).await {
            Ok(reply)
                if reply
                    .get_ref()
                    .response
                    .as_ref()
                    .is_some_and(|r| r.text == "done") => {}
            _ => errors += 1,
        }
        if n >= WARM_UP {
            latencies.push(started.elapsed());
        }
    }
    let from_flow = summary("the tool from a flow (a turn)", latencies, errors);
    println!(
        "MCP p50 / flow p50: {:.2}",
        over_mcp.as_secs_f64() / from_flow.as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn authorized<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}")
            .parse()
            .expect("a key is header text"),
    );
    request
}

/// Plays `load.conversations` demo conversations against `load.server`,
/// `load.concurrency` at once.
async fn run(load: &Load) -> Result<Report, Box<dyn std::error::Error>> {
    run_until(load, Arc::default()).await
}

/// [`run`], ending early once `stop` is set.
async fn run_until(
    load: &Load,
    stop: Arc<AtomicBool>,
) -> Result<Report, Box<dyn std::error::Error>> {
    let mut channels = Vec::new();
    for _ in 0..load.connections.max(1) {
        channels.push(Channel::from_shared(load.server.clone())?.connect().await?);
    }
    let run = format!("load-{}-{}", std::process::id(), rand_suffix());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..load.concurrency.max(1) {
        let client = McpEngineClient::new(channels[worker % channels.len()].clone());
        let (next, run, load, stop) = (next.clone(), run.clone(), load.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= load.conversations || stop.load(Ordering::Relaxed) {
                    break;
                }
                for text in SCRIPT {
                    let request = authorized(
                        ProcessMessageRequest {
                            tenant_context: Some(TenantContext {
                                tenant_id: load.tenant.clone(),
                                ..Default::default()
                            }),
                            conversation_id: format!("{run}-{n}"),
                            user_id: "load".into(),
                            content: Some(MessageContent {
                                text: text.into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        &load.key,
                    );
                    let sent = Instant::now();
                    match client.clone().process_message(request).await {
                        Ok(response)
                            if response
                                .get_ref()
                                .status
                                .as_ref()
                                .is_some_and(|s| s.success) =>
                        {
                            latencies.push(sent.elapsed())
                        }
                        _ => errors += 1,
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Report {
        turns: latencies.len(),
        errors,
        elapsed,
        latencies,
    })
}

/// Distinguishes conversation ids of runs in one process.
fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// ProcessMessage answered with the message's own text, nothing else, or
/// with `context` each message's conversation taken and committed there
/// (a counter of its messages), as a turn does.
struct Echo {
    context: Option<Arc<dyn ContextStore>>,
}

impl Echo {
    async fn touch(&self, conversation_id: &str) -> Result<(), Status> {
        let Some(store) = &self.context else {
            return Ok(());
        };
        let unavailable = |e: ContextError| Status::unavailable(e.to_string());
        let key = ConversationKey::new("echo", conversation_id);
        let (lease, snapshot) = store
            .acquire(&key, Duration::from_secs(5))
            .await
            .map_err(unavailable)?;
        let mut conversation = match snapshot.conversation {
            Some(conversation) => conversation,
            None => serde_json::from_value::<Conversation>(serde_json::json!({
                "conversation_id": conversation_id, "tenant_id": "echo",
                "flow_id": "echo", "flow_version": "1", "status": "active",
                "current_state": "echo", "created_at_ms": 0, "updated_at_ms": 0,
            }))
            .map_err(|e| Status::internal(e.to_string()))?,
        };
        conversation.turn += 1;
        let write = Write {
            conversation: Some(&conversation),
            expected: snapshot.version,
            version: snapshot.version + 1,
        };
        store.commit(&lease, write).await.map_err(unavailable)
    }
}

const ECHO_ONLY: &str = "the echo answers ProcessMessage only";

async fn serve_echo(
    listener: tokio::net::TcpListener,
    echo: Echo,
) -> Result<(), tonic::transport::Error> {
    // TCP_NODELAY as the engine sets it, so both answer without waiting on
    // delayed ACKs.
    Server::builder()
        .add_service(McpEngineServer::new(echo))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await
}

type EchoStream = Pin<Box<dyn Stream<Item = Result<ConversationStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl McpEngine for Echo {
    async fn process_message(
        &self,
        request: Request<ProcessMessageRequest>,
    ) -> Result<Response<ProcessMessageResponse>, Status> {
        let request = request.into_inner();
        self.touch(&request.conversation_id).await?;
        Ok(Response::new(ProcessMessageResponse {
            status: Some(common::Status {
                success: true,
                ..Default::default()
            }),
            conversation_id: request.conversation_id,
            response: request.content,
            ..Default::default()
        }))
    }

    async fn get_conversation_state(
        &self,
        _: Request<GetConversationStateRequest>,
    ) -> Result<Response<GetConversationStateResponse>, Status> {
        Err(Status::unimplemented(ECHO_ONLY))
    }

    async fn reset_conversation(
        &self,
        _: Request<ResetConversationRequest>,
    ) -> Result<Response<ResetConversationResponse>, Status> {
        Err(Status::unimplemented(ECHO_ONLY))
    }

    type StreamConversationStream = EchoStream;

    async fn stream_conversation(
        &self,
        _: Request<tonic::Streaming<ConversationStreamRequest>>,
    ) -> Result<Response<EchoStream>, Status> {
        Err(Status::unimplemented(ECHO_ONLY))
    }

    async fn batch_process_messages(
        &self,
        _: Request<BatchProcessMessagesRequest>,
    ) -> Result<Response<BatchProcessMessagesResponse>, Status> {
        Err(Status::unimplemented(ECHO_ONLY))
    }

    async fn health_check(&self, _: Request<()>) -> Result<Response<HealthCheckResponse>, Status> {
        Err(Status::unimplemented(ECHO_ONLY))
    }

    async fn get_metrics(
        &self,
        _: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        Err(Status::unimplemented(ECHO_ONLY))
    }
}

//! `mcp-engine serve`: the store, the context store, the plugin host and the
//! gRPC services, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mcp_registry::{PluginRegistry, UploadLimits, artifact_store};
use mcp_store::{
    Analytics, Database, DurableWriter, Rate, RateLimitSettings, RateLimiter, Store, StoreSettings,
    TokenBuckets, Wakeups, open_context_store,
};
use mcp_tools::{AuditLog, AuditSettings, Tools};
use mcp_wasm::{Egress, HostConfig, PluginHost};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::admin::AdminService;
use crate::auth::{Admits, Authenticated};
use crate::engine::{DataPath, Engine, EngineSettings};
use crate::health::HealthService;
use crate::proto::admin::admin_server::AdminServer;
use crate::proto::engine::mcp_engine_server::McpEngineServer;
use crate::proto::health::health_server::HealthServer;
use crate::service::EngineService;

/// Largest Admin message either way: plugin uploads are the big ones.
pub const MAX_MESSAGE_BYTES: usize = 40 * 1024 * 1024;

/// Largest MCPEngine request: a batch of messages at their field limits.
/// Conversations need no more; only uploads are large.
pub const MAX_TURN_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// MCPEngine methods that need no key.
const OPEN_METHODS: &[&str] = &["HealthCheck"];

/// How often due timeouts (wait states) are looked for: the most a
/// timeout is delivered late.
const TIMEOUT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The server's settings (environment, seed 000 names).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_key: Option<String>,
    pub engine: EngineSettings,
    pub store: StoreSettings,
    /// `PLUGIN_INSTANCES`: plugin instances alive at once; a call beyond
    /// them is refused as busy (back-pressure). Default: twice
    /// MAX_PARALLEL_EXECUTIONS, at least 16.
    pub plugin_instances: u32,
    /// `EGRESS_ALLOW_RANGES`: special-purpose address ranges (CIDR, comma
    /// separated) every tenant's tools may reach. Default: none.
    pub egress_allow_ranges: Vec<mcp_wasm::egress::IpNet>,
    /// `RATE_LIMIT_PER_KEY`, `RATE_LIMIT_PER_TENANT`, `RATE_LIMIT_BURST`.
    pub rate_limits: RateLimitSettings,
    /// `UPLOAD_PARALLEL` (2): uploads checked at once, one per tenant;
    /// `TENANT_PLUGIN_BYTES` (256 MiB): what a tenant's stored versions may
    /// add up to.
    pub upload_limits: UploadLimits,
    /// `COMPILED_CACHE_BYTES` (512 MiB): compiled code kept in memory for
    /// reuse, least recently used out.
    pub compiled_cache_bytes: usize,
    /// `TOOL_AUDIT_RETENTION_DAYS` (30): how long tool executions stay in
    /// the audit log.
    pub audit: AuditSettings,
    /// `MCP_ALLOWED_HOSTS`, `MCP_ALLOWED_ORIGINS`, `MCP_TOOLS_PAGE_SIZE`.
    pub mcp: crate::mcp::McpSettings,
    /// Install the demo tenant at start (`serve --demo`).
    pub demo: bool,
}

impl ServerSettings {
    /// `GRPC_HOST` (0.0.0.0), `GRPC_PORT` (50051; 0 picks a free port),
    /// `MCP_ADMIN_KEY`, `STATE_EXECUTION_TIMEOUT_MS` (10000),
    /// `MAX_PARALLEL_EXECUTIONS` (100), `ENABLE_AB_TESTING` (true), and the store's.
    pub fn from_env() -> Result<ServerSettings, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let host = var("GRPC_HOST").unwrap_or_else(|| "0.0.0.0".into());
        let port: u16 = var("GRPC_PORT")
            .map(|p| {
                p.parse()
                    .map_err(|_| format!("GRPC_PORT={p:?}: must be a port number"))
            })
            .transpose()?
            .unwrap_or(50051);
        let grpc_addr = format!("{host}:{port}")
            .parse()
            .map_err(|_| format!("GRPC_HOST={host:?}: must be an IP address"))?;
        let number = |name: &str, default: u64| -> Result<u64, String> {
            var(name)
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("{name}={v:?}: must be a whole number"))
                })
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        let ab_testing = match var("ENABLE_AB_TESTING").as_deref() {
            None | Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no") => false,
            Some(other) => {
                return Err(format!(
                    "ENABLE_AB_TESTING={other:?}: must be true or false"
                ));
            }
        };
        let http_host = var("HTTP_HOST").unwrap_or_else(|| "127.0.0.1".into());
        let http_ip: std::net::IpAddr = http_host
            .parse()
            .map_err(|_| format!("HTTP_HOST={http_host:?}: must be an IP address"))?;
        let http_port: u16 = var("HTTP_PORT")
            .map(|p| {
                p.parse()
                    .map_err(|_| format!("HTTP_PORT={p:?}: must be a port number"))
            })
            .transpose()?
            .unwrap_or(8002);
        let store = StoreSettings::from_env().map_err(|e| e.to_string())?;
        let max_parallel = number("MAX_PARALLEL_EXECUTIONS", 100)? as usize;
        let plugin_instances = number("PLUGIN_INSTANCES", (2 * max_parallel as u64).max(16))?;
        let plugin_instances = u32::try_from(plugin_instances)
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| format!("PLUGIN_INSTANCES={plugin_instances}: must be 1 to 10000"))?;
        let egress_allow_ranges =
            mcp_wasm::egress::parse_ranges(var("EGRESS_ALLOW_RANGES").as_deref().unwrap_or(""))
                .map_err(|e| format!("EGRESS_ALLOW_RANGES: {e}"))?;
        let per_second = |name: &str| -> Result<Option<f64>, String> {
            var(name)
                .map(|v| match v.parse::<f64>() {
                    Ok(n) if n > 0.0 && n.is_finite() => Ok(n),
                    _ => Err(format!("{name}={v:?}: must be calls per second above 0")),
                })
                .transpose()
        };
        let burst = per_second("RATE_LIMIT_BURST")?;
        let rate = |per_second: Option<f64>| {
            per_second.map(|per_second| Rate {
                per_second,
                burst: burst.unwrap_or((2.0 * per_second).max(1.0)),
            })
        };
        let rate_limits = RateLimitSettings {
            per_key: rate(per_second("RATE_LIMIT_PER_KEY")?),
            per_tenant: rate(per_second("RATE_LIMIT_PER_TENANT")?),
        };
        Ok(ServerSettings {
            grpc_addr,
            http_addr: SocketAddr::new(http_ip, http_port),
            admin_key: var("MCP_ADMIN_KEY"),
            engine: EngineSettings {
                turn_timeout: Duration::from_millis(number("STATE_EXECUTION_TIMEOUT_MS", 10_000)?),
                max_parallel,
                tenant_max_parallel: number(
                    "TENANT_MAX_PARALLEL",
                    default_tenant_max_parallel(max_parallel),
                )? as usize,
                ab_testing,
                idle_ttl: store.context.idle_ttl,
            },
            store,
            plugin_instances,
            egress_allow_ranges,
            rate_limits,
            upload_limits: UploadLimits {
                parallel: number("UPLOAD_PARALLEL", 2)?.max(1) as usize,
                tenant_bytes: number("TENANT_PLUGIN_BYTES", 256 << 20)?,
            },
            compiled_cache_bytes: number("COMPILED_CACHE_BYTES", 512 << 20)? as usize,
            audit: AuditSettings {
                retention: Duration::from_secs(86_400 * number("TOOL_AUDIT_RETENTION_DAYS", 30)?),
                ..AuditSettings::default()
            },
            mcp: mcp_settings(&var, number("MCP_TOOLS_PAGE_SIZE", 100)? as usize)?,
            demo: false,
        })
    }
}

/// `MCP_ALLOWED_HOSTS` (default: the loopback names) and
/// `MCP_ALLOWED_ORIGINS` (default: none), comma separated.
fn mcp_settings(
    var: &dyn Fn(&str) -> Option<String>,
    page_size: usize,
) -> Result<crate::mcp::McpSettings, String> {
    let list = |name: &str| -> Option<Vec<String>> {
        var(name).map(|v| {
            v.split(',')
                .map(|item| item.trim().to_owned())
                .filter(|item| !item.is_empty())
                .collect()
        })
    };
    if page_size == 0 {
        return Err("MCP_TOOLS_PAGE_SIZE=0: must be at least 1".into());
    }
    let defaults = crate::mcp::McpSettings::default();
    Ok(crate::mcp::McpSettings {
        allowed_hosts: list("MCP_ALLOWED_HOSTS").unwrap_or(defaults.allowed_hosts),
        allowed_origins: list("MCP_ALLOWED_ORIGINS").unwrap_or(defaults.allowed_origins),
        page_size,
        ..defaults
    })
}

/// A tenant's turns in flight by default: eight per core, which keeps the
/// cores busy (a turn mostly waits on Redis and plugins) while leaving room
/// for other tenants' turns to run at once rather than queue behind one
/// tenant's load (the `loadgen fair` figures in the README).
fn default_tenant_max_parallel(max_parallel: usize) -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (8 * cores).max(4).min(max_parallel.max(1)) as u64
}

/// How long a stopping process waits for its queued turns to be written.
const SHUTDOWN_FLUSH_WAIT: Duration = Duration::from_secs(10);

pub async fn serve(settings: ServerSettings) -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(not(feature = "demo"))]
    if settings.demo {
        return Err(NO_DEMO.into());
    }
    let stop = shutdown()?;
    let db = Database::connect(&settings.store.database).await?;
    match db.prune_artifacts().await {
        Ok(0) => {}
        Ok(pruned) => tracing::info!(pruned, "compiled code of no stored plugin deleted"),
        Err(e) => tracing::warn!(error = %e, "could not prune compiled plugins"),
    }
    let host = PluginHost::new(HostConfig {
        artifacts: Some(artifact_store(&db)),
        max_instances: settings.plugin_instances,
        compiled_cache_bytes: settings.compiled_cache_bytes,
        egress: Egress {
            allowed_ranges: settings.egress_allow_ranges.clone(),
            ..Egress::default()
        },
        ..HostConfig::default()
    })?;
    let store = Store::open(db.clone()).await?;
    let plugins = PluginRegistry::with_limits(store.clone(), host, settings.upload_limits);
    let data = DataPath {
        contexts: open_context_store(&settings.store.context).await?,
        durable: DurableWriter::start(db, &settings.store.durable),
        analytics: Analytics::open(&settings.store.context).await?,
        wakeups: Wakeups::open(&settings.store.context).await?,
    };
    let durable = data.durable.clone();
    let limiter =
        Arc::new(RateLimiter::open(&settings.rate_limits, &settings.store.context).await?);
    let tools = Tools::new(
        plugins.host().clone(),
        TokenBuckets::open(&settings.store.context).await?,
        AuditLog::start(store.clone(), settings.audit.clone()),
    );
    let engine = Arc::new(Engine::new(
        plugins.clone(),
        data,
        settings.engine.clone(),
        tools,
    ));
    tokio::spawn(engine.clone().run_timeouts(TIMEOUT_POLL_INTERVAL));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<McpEngineServer<EngineService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::DESCRIPTORS)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::DESCRIPTORS)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let health_v2 = HealthServer::new(HealthService::new(
        engine.clone(),
        crate::clock::now_ms(),
        settings.admin_key.as_deref().map(Arc::from),
    ));
    let listener = tokio::net::TcpListener::bind(settings.grpc_addr).await?;
    let bound = listener.local_addr()?;
    let http = tokio::net::TcpListener::bind(settings.http_addr).await?;
    let http_bound = http.local_addr()?;
    // Tests and scripts read these lines to find the ports.
    // Written, not println!'d: a closed stdout must not stop the server.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mcp-engine listening on {bound} (gRPC)");
        let _ = writeln!(
            out,
            "mcp-engine listening on {http_bound} (HTTP: /metrics, /healthz)"
        );
        let _ = out.flush();
    }
    tokio::spawn(crate::http::serve_http(
        http,
        engine.clone(),
        std::time::Instant::now(),
        settings.demo,
        settings.admin_key.as_deref().map(Arc::from),
        crate::http::ToolRoutes {
            settings: crate::mcp::McpSettings {
                call_timeout: settings.engine.turn_timeout,
                ..settings.mcp.clone()
            },
            keys: crate::mcp::KeyCheck {
                store: store.clone(),
                limiter: limiter.clone(),
            },
        },
    ));
    #[cfg(feature = "demo")]
    if settings.demo {
        let key = crate::demo::install(&plugins, http_bound.port()).await?;
        print_demo_help(&key, bound);
    }
    tracing::info!(%bound, backend = %store.db().backend(), "serving");

    Server::builder()
        .add_service(health_service)
        .add_service(health_v2)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(Authenticated::new(
            McpEngineServer::new(EngineService {
                engine: engine.clone(),
            })
            .max_decoding_message_size(MAX_TURN_REQUEST_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
            store.clone(),
            Admits::TenantKeys { open: OPEN_METHODS },
            limiter.clone(),
        ))
        .add_service(Authenticated::new(
            AdminServer::new(AdminService {
                store: store.clone(),
                durable: durable.clone(),
                plugins,
                operator_key: settings.admin_key.clone(),
                engine: engine.clone(),
                tool_timeout: settings.engine.turn_timeout,
            })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
            store,
            Admits::OperatorOrTenantKeys {
                operator_key: settings.admin_key.as_deref().map(Arc::from),
            },
            limiter,
        ))
        // Without TCP_NODELAY a small reply waits for the client's delayed
        // ACK: 40 ms a turn on Linux.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop)
        .await?;
    // Answered turns still queued for the database are written before the
    // process ends; only a crash loses them.
    let backlog = durable.backlog();
    if tokio::time::timeout(SHUTDOWN_FLUSH_WAIT, durable.flush())
        .await
        .is_err()
    {
        tracing::error!(
            backlog = durable.backlog(),
            "stopping with turns not yet in the database"
        );
    } else if backlog > 0 {
        tracing::info!(turns = backlog, "queued turns written");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Why `serve --demo` cannot run in a build without the `demo` feature.
#[cfg(not(feature = "demo"))]
const NO_DEMO: &str = "this mcp-engine was built without the demo (cargo feature `demo`): \
     build it with `cargo build -p mcp-engine`, which has the feature by default";

/// How to talk to the demo tenant, on stdout.
#[cfg(feature = "demo")]
fn print_demo_help(key: &str, grpc: SocketAddr) {
    use std::io::Write;
    let server = match grpc.port() {
        50051 => String::new(),
        port => format!(" --server http://127.0.0.1:{port}"),
    };
    let tenant = crate::demo::TENANT;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nThe demo tenant \"{tenant}\" is ready: Pizza Planet's assistant (examples/demo/pizza_planet.json).\n\
         Its API key: {key}\n\n\
         Talk to it from another terminal:\n\
         \x20   export MCP_API_KEY={key}\n\
         \x20   cargo run --release -p mcp-engine -- chat --tenant {tenant}{server}\n\n\
         Try \"I'd like to order a pizza\", \"where is my order AB1234?\" or \"let's play trivia\".\n"
    );
    let _ = out.flush();
}

/// Resolves on SIGINT or SIGTERM; in-flight calls then finish. The handlers
/// are installed at once, not when the future is first polled: a signal
/// that comes after start-up is announced but before the server runs must
/// not kill the process.
#[cfg(unix)]
fn shutdown() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

//! Tools of remote MCP servers, for flows: `"integration_id":
//! "mcp:<server>/<tool>"`, the server named in the tenant's policy
//! (`mcp_servers`: URL and bearer token). The engine is then an MCP client
//! (the official SDK, rmcp) under the same outbound rules as a tenant's WASM
//! tools: the server's host must be on the tenant's allow-list, it is
//! resolved once, every address is checked by the egress policy, the
//! connection goes to a checked address, and redirects are not followed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use mcp_flow::{PluginError, RemoteMcpServer, ToolManifest};
use mcp_wasm::{AllowList, Egress, PluginHost};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;

use crate::ToolListing;

/// How long a remote server's tool list is kept.
const LIST_TTL: Duration = Duration::from_secs(60);

/// Lists of remote servers' tools, by (tenant, server).
#[derive(Default)]
pub(crate) struct RemoteLists {
    lists: Mutex<HashMap<(String, String), Fetched>>,
}

/// A server's tools and when they were fetched.
type Fetched = (Instant, Vec<ToolListing>);

fn unavailable(name: &str, reason: impl std::fmt::Display) -> PluginError {
    PluginError::Unavailable {
        plugin: name.to_owned(),
        reason: reason.to_string(),
    }
}

/// Connects to a tenant's remote server: checked, pinned to checked
/// addresses, with the tenant's token, under `timeout`.
async fn connect(
    host: &PluginHost,
    tenant: &str,
    server: &str,
    label: &str,
    timeout: Duration,
) -> Result<RunningService<rmcp::RoleClient, ()>, PluginError> {
    let (remote, egress, allow_list) =
        host.remote_server(tenant, server)
            .ok_or_else(|| PluginError::NotFound {
                plugin: label.to_owned(),
            })?;
    let client = checked_client(&remote, &egress, &allow_list, timeout)
        .await
        .map_err(|reason| unavailable(label, reason))?;
    let mut config = StreamableHttpClientTransportConfig::with_uri(remote.url.clone());
    if let Some(token) = remote.token.filter(|t| !t.is_empty()) {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::with_client(client, config);
    tokio::time::timeout(timeout, ().serve(transport))
        .await
        .map_err(|_| PluginError::Timeout {
            plugin: label.to_owned(),
            timeout_ms: timeout.as_millis() as u64,
        })?
        .map_err(|e| {
            unavailable(
                label,
                format!("MCP handshake with {} failed: {e}", remote.url),
            )
        })
}

/// Chooses rustls' ring provider for the process, once: reqwest is built
/// without a provider of its own, so an MCP client (ours, or a tool such
/// as the load generator) needs one before its first connection.
pub fn install_tls_provider() {
    static TLS: Once = Once::new();
    TLS.call_once(|| {
        // Another part of the process may have chosen first; either will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client that can reach only the checked addresses of the
/// server's host, follows no redirect, and gives up after `timeout`.
async fn checked_client(
    remote: &RemoteMcpServer,
    egress: &Egress,
    allow_list: &AllowList,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    install_tls_provider();
    let (https, rest) = match remote.url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        _ => return Err(format!("{} is not an http(s) URL", remote.url)),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let destination = mcp_wasm::egress::decide(egress, allow_list, authority, https)
        .await
        .map_err(|refusal| format!("egress denied: {refusal}"))?;
    let addresses: Vec<SocketAddr> = destination
        .addresses
        .iter()
        .map(|address| SocketAddr::new(*address, destination.port))
        .collect();
    reqwest::Client::builder()
        .resolve_to_addrs(destination.host.trim_matches(['[', ']']), &addresses)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// Calls `tool` of the tenant's `server`: its structured result, else its
/// text (as JSON when it is JSON); a result with `isError` is the tool's
/// failure.
pub(crate) async fn call(
    host: &PluginHost,
    tenant: &str,
    server: &str,
    tool: &str,
    args: &Value,
    timeout: Duration,
) -> Result<Value, PluginError> {
    let label = format!("{}{server}/{tool}", mcp_flow::REMOTE_TOOL_PREFIX);
    let started = Instant::now();
    let client = connect(host, tenant, server, &label, timeout).await?;
    let remaining = timeout.saturating_sub(started.elapsed());
    let mut request = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(arguments) = args {
        request = request.with_arguments(arguments.clone());
    }
    let outcome = tokio::time::timeout(remaining, client.call_tool(request)).await;
    let _ = client.cancel().await;
    let result = outcome
        .map_err(|_| PluginError::Timeout {
            plugin: label.clone(),
            timeout_ms: timeout.as_millis() as u64,
        })?
        .map_err(|e| PluginError::Failed {
            plugin: label.clone(),
            message: e.to_string(),
        })?;
    answer(&label, result)
}

fn answer(label: &str, result: CallToolResult) -> Result<Value, PluginError> {
    let text: String = result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|t| t.text.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    if result.is_error == Some(true) {
        return Err(PluginError::Failed {
            plugin: label.to_owned(),
            message: text,
        });
    }
    Ok(match result.structured_content {
        Some(value) => value,
        None => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    })
}

impl RemoteLists {
    /// The tools of every remote server of a tenant, named as flows call
    /// them; from the cache when fetched in the last minute. A server that
    /// cannot be listed is left out (and logged).
    pub(crate) async fn list(&self, host: &PluginHost, tenant: &str) -> Vec<ToolListing> {
        let mut listed = Vec::new();
        for server in host.remote_servers(tenant) {
            let key = (tenant.to_owned(), server.clone());
            let cached = self
                .lists
                .lock()
                .unwrap()
                .get(&key)
                .filter(|(at, _)| at.elapsed() < LIST_TTL)
                .map(|(_, tools)| tools.clone());
            let tools = match cached {
                Some(tools) => tools,
                None => match fetch(host, tenant, &server).await {
                    Ok(tools) => {
                        self.lists
                            .lock()
                            .unwrap()
                            .insert(key, (Instant::now(), tools.clone()));
                        tools
                    }
                    Err(e) => {
                        tracing::warn!(tenant, server, error = %e, "listing a remote MCP server's tools");
                        Vec::new()
                    }
                },
            };
            listed.extend(tools);
        }
        listed
    }
}

async fn fetch(
    host: &PluginHost,
    tenant: &str,
    server: &str,
) -> Result<Vec<ToolListing>, PluginError> {
    let label = format!("{}{server}", mcp_flow::REMOTE_TOOL_PREFIX);
    let timeout = Duration::from_secs(10);
    let client = connect(host, tenant, server, &label, timeout).await?;
    let tools = tokio::time::timeout(timeout, client.list_all_tools()).await;
    let _ = client.cancel().await;
    let tools = tools
        .map_err(|_| PluginError::Timeout {
            plugin: label.clone(),
            timeout_ms: timeout.as_millis() as u64,
        })?
        .map_err(|e| unavailable(&label, e))?;
    Ok(tools
        .into_iter()
        .map(|tool| ToolListing {
            name: format!("{label}/{}", tool.name),
            version: String::new(),
            manifest: ToolManifest {
                name: tool.name.to_string(),
                description: tool.description.map(|d| d.to_string()).unwrap_or_default(),
                input_schema: Value::Object((*tool.input_schema).clone()),
                output_schema: tool
                    .output_schema
                    .map_or(Value::Null, |schema| Value::Object((*schema).clone())),
                permissions: Vec::new(),
                rate_limit: None,
                annotations: Default::default(),
            },
        })
        .collect())
}

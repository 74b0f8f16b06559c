//! One execution path for a tenant's tool, whoever calls it: a flow's
//! integration state or `call_integration` action, an MCP client, seed 002's
//! `/mcp/execute`, and the Admin service's `ExecuteTool`.
//!
//! Around the plugin host's call, in this order:
//! 1. the tool is resolved (the conversation's pinned version, else the
//!    tenant's active one) with the manifest stored at upload;
//! 2. the caller's key must be granted every permission the manifest
//!    declares (flows run with their tenant's authority);
//! 3. a tool that requires confirmation runs for an agent only when the call
//!    says it was confirmed;
//! 4. the arguments must satisfy the input schema: a failure names the field
//!    and the plugin never runs;
//! 5. the tool's `rate_limit` is taken from the bucket of this tenant, tool
//!    and caller (in Redis when it is configured, so every process shares
//!    it);
//! 6. the plugin runs under its limits; its result must satisfy the output
//!    schema;
//! 7. the execution is written to the audit log, behind the answer.

mod audit;
mod remote;
mod runtime;
mod schemas;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_flow::{Conversation, PluginCall, PluginError, PluginWorld, ToolManifest};
use mcp_store::{ApiKey, Rate, Scope, TokenBuckets, ToolCallRecord, ToolOutcome};
use mcp_wasm::{Manifest, PluginHost};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use audit::{AuditLog, AuditSettings};
pub use remote::install_tls_provider;
pub use runtime::FlowRuntime;
use schemas::Schemas;

/// Who asks for a tool to run.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A tenant's API key (MCP, seed 002, ExecuteTool).
    Key(ApiKey),
    /// The operator key (ExecuteTool on behalf of a tenant).
    Operator,
    /// A conversation's flow: the tenant's own configuration.
    Flow { conversation_id: String },
}

impl Caller {
    /// The name the audit log and the rate limit's bucket give the caller.
    fn id(&self) -> String {
        match self {
            Caller::Key(key) => key.id.clone(),
            Caller::Operator => "operator".to_owned(),
            Caller::Flow { conversation_id } => format!("flow:{conversation_id}"),
        }
    }

    fn is_agent(&self) -> bool {
        !matches!(self, Caller::Flow { .. })
    }
}

/// Which surface a call came in through, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Mcp,
    Seed002,
    Grpc,
    Flow,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Mcp => "mcp",
            Via::Seed002 => "seed-002",
            Via::Grpc => "grpc",
            Via::Flow => "flow",
        }
    }
}

/// One execution to make.
#[derive(Debug, Clone, Copy)]
pub struct ToolRequest<'a> {
    pub tenant_id: &'a str,
    pub tool: &'a str,
    /// The version a conversation is pinned to; `None`: the active one.
    pub version: Option<&'a str>,
    pub args: &'a Value,
    pub caller: &'a Caller,
    pub via: Via,
    /// The caller confirmed a tool that requires confirmation.
    pub confirmed: bool,
    pub timeout: Duration,
    /// The conversation a flow calls for; agents' calls have none.
    pub conversation: Option<&'a Conversation>,
}

/// Why an execution gave no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    pub outcome: ToolOutcome,
    pub message: String,
    /// For a rate limit: when a call may succeed.
    pub retry_after: Option<Duration>,
    /// For a plugin failure: what the host said, for a flow's retries.
    pub plugin_error: Option<PluginError>,
}

impl ToolError {
    fn new(outcome: ToolOutcome, message: impl Into<String>) -> ToolError {
        ToolError {
            outcome,
            message: message.into(),
            retry_after: None,
            plugin_error: None,
        }
    }
}

/// What an execution did.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The plugin version that ran (or would have); empty if none resolved.
    pub version: String,
    pub result: Result<Value, ToolError>,
    pub duration: Duration,
    pub fuel: u64,
}

/// A tool as callers discover it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolListing {
    /// The plugin's name: what flows and agents call it by.
    pub name: String,
    pub version: String,
    pub manifest: ToolManifest,
}

/// The tools of every tenant, run the one way.
pub struct Tools {
    host: PluginHost,
    buckets: TokenBuckets,
    audit: AuditLog,
    schemas: Schemas,
    remote: remote::RemoteLists,
}

impl Tools {
    pub fn new(host: PluginHost, buckets: TokenBuckets, audit: AuditLog) -> Arc<Tools> {
        Arc::new(Tools {
            host,
            buckets,
            audit,
            schemas: Schemas::default(),
            remote: Default::default(),
        })
    }

    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// A tenant's installed tools (active versions), by name.
    pub fn list(&self, tenant_id: &str) -> Vec<ToolListing> {
        let mut tools: Vec<ToolListing> = self
            .host
            .installed(tenant_id)
            .into_iter()
            .filter(|(_, active)| *active)
            .filter_map(|(installed, _)| match &installed.manifest {
                Some(Manifest::Tool(manifest)) => Some(ToolListing {
                    name: installed.name.clone(),
                    version: installed.version.clone(),
                    manifest: manifest.clone(),
                }),
                _ => None,
            })
            .collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    /// The tools of a tenant's remote MCP servers (`mcp:<server>/<tool>`),
    /// which its flows may call; each server's list kept for a minute.
    pub async fn list_remote(&self, tenant_id: &str) -> Vec<ToolListing> {
        self.remote.list(&self.host, tenant_id).await
    }

    /// Runs a tool the one way (see the crate's docs) and audits it.
    pub async fn execute(&self, request: ToolRequest<'_>) -> Executed {
        let started = Instant::now();
        let (version, result, fuel) = self.run(&request).await;
        let executed = Executed {
            version,
            result,
            duration: started.elapsed(),
            fuel,
        };
        self.audit.record(record(&request, &executed));
        executed
    }

    /// (version, result, fuel)
    async fn run(&self, request: &ToolRequest<'_>) -> (String, Result<Value, ToolError>, u64) {
        if let Some(remote) = request.tool.strip_prefix(mcp_flow::REMOTE_TOOL_PREFIX) {
            return (String::new(), self.run_remote(request, remote).await, 0);
        }
        let installed = match request.version {
            Some(version) => self
                .host
                .resolve_version(request.tenant_id, request.tool, version),
            None => self.host.resolve(request.tenant_id, request.tool),
        };
        let Some(installed) = installed.filter(|i| i.world == PluginWorld::Tool) else {
            let message = format!("no tool named \"{}\" for this tenant", request.tool);
            return (
                String::new(),
                Err(ToolError::new(ToolOutcome::NotFound, message)),
                0,
            );
        };
        let version = installed.version.clone();
        let Some(Manifest::Tool(manifest)) = &installed.manifest else {
            let message = format!("tool \"{}\" has no manifest", request.tool);
            return (
                version,
                Err(ToolError::new(ToolOutcome::NotFound, message)),
                0,
            );
        };
        if let Err(e) = self.admit(request, manifest).await {
            return (version, Err(e), 0);
        }
        let schemas = match self.schemas.of(&installed, manifest) {
            Ok(schemas) => schemas,
            Err(message) => {
                return (
                    version,
                    Err(ToolError::new(ToolOutcome::InvalidArguments, message)),
                    0,
                );
            }
        };
        if let Err(problem) = schemas.check_input(request.args) {
            let message = format!("invalid arguments: {problem}");
            return (
                version,
                Err(ToolError::new(ToolOutcome::InvalidArguments, message)),
                0,
            );
        }
        let stand_in;
        let conversation = match request.conversation {
            Some(conversation) => conversation,
            None => {
                stand_in = agent_conversation(request);
                &stand_in
            }
        };
        let call = PluginCall {
            tenant_id: request.tenant_id,
            plugin: request.tool,
            version: Some(&version),
            args: request.args,
            conversation,
            event: None,
            timeout: request.timeout,
        };
        match self.host.call_tool_with_stats(call).await {
            Ok((value, stats)) => match schemas.check_output(&value) {
                Ok(()) => (version, Ok(value), stats.fuel_used),
                Err(problem) => {
                    let message = format!("the tool's result breaks its output schema: {problem}");
                    (
                        version,
                        Err(ToolError::new(ToolOutcome::InvalidResult, message)),
                        stats.fuel_used,
                    )
                }
            },
            Err(e) => {
                let mut error = ToolError::new(ToolOutcome::Failed, e.to_string());
                error.plugin_error = Some(e);
                (version, Err(error), 0)
            }
        }
    }

    /// A remote MCP server's tool: for flows (and the operator) only, so an
    /// agent cannot use the tenant's credentials for another server.
    async fn run_remote(
        &self,
        request: &ToolRequest<'_>,
        remote: &str,
    ) -> Result<Value, ToolError> {
        let not_found = || {
            ToolError::new(
                ToolOutcome::NotFound,
                format!("no tool named \"{}\" for this tenant", request.tool),
            )
        };
        if matches!(request.caller, Caller::Key(_)) {
            return Err(not_found());
        }
        let (server, tool) = mcp_flow::remote_tool(remote).ok_or_else(not_found)?;
        remote::call(
            &self.host,
            request.tenant_id,
            server,
            tool,
            request.args,
            request.timeout,
        )
        .await
        .map_err(|e| {
            let outcome = match e {
                PluginError::NotFound { .. } => ToolOutcome::NotFound,
                _ => ToolOutcome::Failed,
            };
            let mut error = ToolError::new(outcome, e.to_string());
            error.plugin_error = Some(e);
            error
        })
    }

    /// Permissions, confirmation and the rate limit: may this caller run
    /// this tool now?
    async fn admit(
        &self,
        request: &ToolRequest<'_>,
        manifest: &ToolManifest,
    ) -> Result<(), ToolError> {
        if let Caller::Key(key) = request.caller {
            if !key.allows(Scope::ToolsCall) {
                return Err(ToolError::new(
                    ToolOutcome::Denied,
                    "the API key lacks the tools:call scope",
                ));
            }
            let missing: Vec<&str> = manifest
                .permissions
                .iter()
                .filter(|p| !key.grants(p))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                let scopes: Vec<String> = missing
                    .iter()
                    .map(|p| format!("{}{p}", mcp_store::PERMISSION_PREFIX))
                    .collect();
                return Err(ToolError::new(
                    ToolOutcome::Denied,
                    format!(
                        "tool \"{}\" needs the permission(s) {}: the API key lacks the scope(s) {}",
                        request.tool,
                        missing.join(", "),
                        scopes.join(", ")
                    ),
                ));
            }
        }
        if manifest.annotations.requires_confirmation
            && request.caller.is_agent()
            && !request.confirmed
        {
            return Err(ToolError::new(
                ToolOutcome::NeedsConfirmation,
                format!("tool \"{}\" requires the user's confirmation", request.tool),
            ));
        }
        if let Some(limit) = manifest
            .rate_limit
            .filter(|l| l.requests > 0 && l.per_seconds > 0)
        {
            let rate = Rate {
                per_second: f64::from(limit.requests) / f64::from(limit.per_seconds),
                burst: f64::from(limit.requests),
            };
            let bucket = format!(
                "tool:{}:{}:{}",
                request.tenant_id,
                request.tool,
                request.caller.id()
            );
            if let Some(wait) = self.buckets.take(&bucket, rate).await {
                let mut error = ToolError::new(
                    ToolOutcome::RateLimited,
                    format!(
                        "tool \"{}\" allows {} calls per {} s per caller; retry in {} ms",
                        request.tool,
                        limit.requests,
                        limit.per_seconds,
                        wait.as_millis()
                    ),
                );
                error.retry_after = Some(wait);
                return Err(error);
            }
        }
        Ok(())
    }
}

/// What a tool called by an agent sees of "the conversation": its tenant
/// and, as the user, the caller.
fn agent_conversation(request: &ToolRequest<'_>) -> Conversation {
    serde_json::from_value(serde_json::json!({
        "conversation_id": format!("tool-call:{}", request.via.as_str()),
        "tenant_id": request.tenant_id,
        "user_id": request.caller.id(),
        "flow_id": "", "flow_version": "", "status": "new", "current_state": "",
        "created_at_ms": 0, "updated_at_ms": 0
    }))
    .expect("a conversation from its required fields")
}

fn record(request: &ToolRequest<'_>, executed: &Executed) -> ToolCallRecord {
    let args = serde_json::to_string(request.args).unwrap_or_default();
    let (outcome, error) = match &executed.result {
        Ok(_) => (ToolOutcome::Ok, None),
        Err(e) => (e.outcome, Some(e.message.clone())),
    };
    ToolCallRecord {
        tenant_id: request.tenant_id.to_owned(),
        called_at_ms: now_ms(),
        via: request.via.as_str().to_owned(),
        caller: match request.caller {
            Caller::Flow { conversation_id } => conversation_id.clone(),
            other => other.id(),
        },
        tool: request.tool.to_owned(),
        version: executed.version.clone(),
        args_sha256: hex::encode(Sha256::digest(args.as_bytes())),
        outcome,
        error,
        duration_us: executed.duration.as_micros().min(u128::from(u64::MAX)) as u64,
        fuel: executed.fuel,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

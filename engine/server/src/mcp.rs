//! Each tenant's tools over the Model Context Protocol: `/mcp` on the HTTP
//! port, Streamable HTTP, served by the official Rust SDK (rmcp).
//!
//! The tenant is the bearer key's: one URL for every tenant, and a key can
//! only ever reach its own tenant's tools. The key needs the `tools:call`
//! scope; a missing or unknown key is answered 401 with `WWW-Authenticate`
//! before the MCP layer sees the request. Every request is checked on its
//! own key, so a session id learnt by someone else is worth nothing.
//!
//! Protocol revisions: 2025-11-25 and earlier with `initialize` and
//! `Mcp-Session-Id` (a session per client), and 2026-07-28 (`server/discover`,
//! the version in each request's `_meta`, `Mcp-Method`/`Mcp-Name` headers),
//! served without a session; rmcp negotiates which. Host and Origin are
//! checked against MCP_ALLOWED_HOSTS and MCP_ALLOWED_ORIGINS (DNS rebinding):
//! by default only loopback host names, and only pages served from loopback.
//!
//! `tools/list` is in name order, `MCP_TOOLS_PAGE_SIZE` to a page, the
//! cursor naming the last tool sent. `tools/call` runs the tool the one way
//! every caller does (`mcp_tools`), and answers with the result as
//! `structuredContent` and as a text block; a refused or failed call is a
//! result with `isError` and the reason, which the agent can read.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use mcp_store::ToolOutcome;
use mcp_store::{ApiKey, RateLimiter, Scope, Store};
use mcp_tools::{Caller, Executed, ToolListing, ToolRequest, Via};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
    ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema, Implementation,
    InputRequest, InputRequests, InputRequiredResult, JsonObject, ListToolsResult, MetaObject,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use crate::engine::Engine;

/// Who may reach `/mcp`, and how it pages.
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// MCP_ALLOWED_HOSTS: Host header values (without port) accepted.
    pub allowed_hosts: Vec<String>,
    /// MCP_ALLOWED_ORIGINS: browser origins accepted (`https://app.example`,
    /// `http://localhost:*`); a request with any other Origin header is
    /// refused, one without is not (it comes from no browser).
    pub allowed_origins: Vec<String>,
    /// MCP_TOOLS_PAGE_SIZE: tools per `tools/list` page.
    pub page_size: usize,
    /// How long a tool call may run (STATE_EXECUTION_TIMEOUT_MS).
    pub call_timeout: Duration,
}

impl Default for McpSettings {
    fn default() -> Self {
        McpSettings {
            allowed_hosts: ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec(),
            allowed_origins: ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
                .map(String::from)
                .to_vec(),
            page_size: 100,
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// The `/mcp` service: rmcp's Streamable HTTP transport over
/// [`TenantTools`]. Put [`require_tool_key`] in front of it.
pub fn service(
    engine: Arc<Engine>,
    settings: &McpSettings,
) -> StreamableHttpService<TenantTools, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(settings.allowed_hosts.clone())
        .with_allowed_origins(settings.allowed_origins.clone())
        .enforce_origin_validation();
    let handler = TenantTools {
        engine,
        page_size: settings.page_size.max(1),
        call_timeout: settings.call_timeout,
    };
    StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// What the key check needs.
#[derive(Clone)]
pub struct KeyCheck {
    pub store: Store,
    pub limiter: Arc<RateLimiter>,
}

/// The bearer key of a tools request: 401 (with `WWW-Authenticate`) when
/// missing or unknown, 403 without the `tools:call` scope, 429 past the
/// key's or tenant's rate limit; else the key rides in the extensions.
pub async fn require_tool_key(
    State(check): State<KeyCheck>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return challenge(
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"mcp-engine\"",
            "missing authorization: Bearer <api key>",
        );
    };
    let key = match check.store.verify_api_key(token).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            return challenge(
                StatusCode::UNAUTHORIZED,
                "Bearer realm=\"mcp-engine\", error=\"invalid_token\"",
                "the API key is unknown or revoked",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "verifying an API key failed");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the key store is unavailable",
            );
        }
    };
    if !key.allows(Scope::ToolsCall) {
        return challenge(
            StatusCode::FORBIDDEN,
            "Bearer realm=\"mcp-engine\", error=\"insufficient_scope\", scope=\"tools:call\"",
            "the API key lacks the tools:call scope",
        );
    }
    if let Err(limited) = check.limiter.check(&key.id, &key.tenant_id).await {
        let mut response = plain(StatusCode::TOO_MANY_REQUESTS, &limited.to_string());
        let seconds = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    request.extensions_mut().insert(key);
    next.run(request).await
}

fn challenge(status: StatusCode, authenticate: &'static str, message: &str) -> Response {
    let mut response = plain(status, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(authenticate),
    );
    response
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The MCP server of whichever tenant the request's key belongs to.
#[derive(Clone)]
pub struct TenantTools {
    engine: Arc<Engine>,
    page_size: usize,
    call_timeout: Duration,
}

impl TenantTools {
    /// The key [`require_tool_key`] checked for this request.
    fn key(context: &RequestContext<RoleServer>) -> Result<ApiKey, ErrorData> {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<ApiKey>())
            .cloned()
            .ok_or_else(|| ErrorData::invalid_request("no API key on the request", None))
    }
}

impl ServerHandler for TenantTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-engine", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "The tools of the tenant your API key belongs to, run in MCP Engine's \
                 sandbox. Arguments are checked against each tool's input schema; a \
                 refused or failed call is a result with isError and the reason.",
            )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let key = Self::key(&context)?;
        let tools = self
            .engine
            .tenant_tools(&key.tenant_id)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let after = match request.and_then(|r| r.cursor) {
            Some(cursor) => Some(decode_cursor(&cursor).ok_or_else(|| {
                ErrorData::invalid_params("cursor: not one this server gave", None)
            })?),
            None => None,
        };
        let (page, next) = paginate(&tools, after.as_deref(), self.page_size);
        let mut result = ListToolsResult::with_all_items(page.iter().map(mcp_tool).collect());
        result.next_cursor = next.map(encode_cursor);
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let key = Self::key(&context)?;
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let caller = Caller::Key(key);
        let answer = confirmation_answer(&request);
        if answer == Some(false) {
            return Ok(declined(&request.name).into());
        }
        let confirmed = answer == Some(true) || confirmed_in_meta(&request, &context);
        let executed = self
            .execute(&caller, &request.name, &args, confirmed)
            .await?;
        let needs_confirmation = matches!(
            &executed.result,
            Err(e) if e.outcome == ToolOutcome::NeedsConfirmation
        );
        if !needs_confirmation {
            return Ok(call_result(executed).into());
        }
        let elicits = context
            .client_capabilities()
            .is_some_and(|c| c.elicitation.is_some());
        if !elicits {
            return Ok(call_result(executed).into());
        }
        let question = confirmation_question(&request.name, &args);
        // 2026-07-28: the client asks its user and calls again with the
        // answer. Before it: ask now, on the session.
        if context.meta.protocol_version().is_some() {
            let requests = InputRequests::from([(
                CONFIRM_INPUT.to_owned(),
                InputRequest::Elicitation(ElicitRequest::new(question)),
            )]);
            return Ok(InputRequiredResult::new(Some(requests), None).into());
        }
        match context.peer.create_elicitation(question).await {
            Ok(result) if accepted(&result) => {
                let executed = self.execute(&caller, &request.name, &args, true).await?;
                Ok(call_result(executed).into())
            }
            Ok(_) => Ok(declined(&request.name).into()),
            Err(e) => Err(ErrorData::internal_error(
                format!("asking the user to confirm failed: {e}"),
                None,
            )),
        }
    }
}

impl TenantTools {
    async fn execute(
        &self,
        caller: &Caller,
        tool: &str,
        args: &Value,
        confirmed: bool,
    ) -> Result<Executed, ErrorData> {
        let Caller::Key(key) = caller else {
            unreachable!("MCP callers bear keys")
        };
        self.engine
            .execute_tool(ToolRequest {
                tenant_id: &key.tenant_id,
                tool,
                version: None,
                args,
                caller,
                via: Via::Mcp,
                confirmed,
                timeout: self.call_timeout,
                conversation: None,
            })
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }
}

/// The `_meta` key by which a client without elicitation says its user
/// confirmed the call.
pub const CONFIRMED_META: &str = "io.mcp-engine/confirmed";

/// The key of the confirmation question in a 2026-07-28 input request.
const CONFIRM_INPUT: &str = "confirm";

/// rmcp moves a request's `_meta` to its context; look in both.
fn confirmed_in_meta(
    request: &CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> bool {
    request
        .meta
        .as_ref()
        .and_then(|meta| meta.get(CONFIRMED_META))
        .or_else(|| context.meta.get(CONFIRMED_META))
        .and_then(Value::as_bool)
        == Some(true)
}

/// The user's answer to the confirmation question, when the call brings
/// one (2026-07-28 input responses).
fn confirmation_answer(request: &CallToolRequestParams) -> Option<bool> {
    let answer = request.input_responses.as_ref()?.get(CONFIRM_INPUT)?;
    let result: ElicitResult = serde_json::from_value(answer.clone()).ok()?;
    Some(accepted(&result))
}

fn accepted(result: &ElicitResult) -> bool {
    result.action == ElicitationAction::Accept
        && result
            .content
            .as_ref()
            .and_then(|c| c.get("confirm"))
            .and_then(Value::as_bool)
            == Some(true)
}

fn confirmation_question(tool: &str, args: &Value) -> ElicitRequestParams {
    let schema = ElicitationSchema::builder()
        .required_bool_property("confirm", |b| {
            b.title("Run it")
                .description("Yes to run the tool, no to cancel")
        })
        .build()
        .expect("a valid schema");
    ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: format!("Run the tool \"{tool}\" with {args}? It may change or delete data."),
        requested_schema: schema,
    }
}

fn declined(tool: &str) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
        "the user did not confirm the call of \"{tool}\"; it was not run"
    ))]);
    let mut meta = MetaObject::new();
    meta.insert(
        "outcome".into(),
        ToolOutcome::NeedsConfirmation.as_str().into(),
    );
    result.meta = Some(meta);
    result
}

/// The tools after `after` (by name), at most `size`, and the name to
/// continue after if more follow.
fn paginate<'a>(
    tools: &'a [ToolListing],
    after: Option<&str>,
    size: usize,
) -> (&'a [ToolListing], Option<&'a str>) {
    let start = match after {
        Some(after) => tools.partition_point(|t| t.name.as_str() <= after),
        None => 0,
    };
    let end = (start + size).min(tools.len());
    let page = &tools[start..end];
    let next = (end < tools.len())
        .then(|| page.last().map(|t| t.name.as_str()))
        .flatten();
    (page, next)
}

/// Cursors are opaque to clients: the name, hex-encoded.
fn encode_cursor(after: &str) -> String {
    hex::encode(after)
}

fn decode_cursor(cursor: &str) -> Option<String> {
    String::from_utf8(hex::decode(cursor).ok()?).ok()
}

/// A tool as MCP lists it. Schemas that are not objects at the root are
/// what MCP cannot carry: the input becomes "any object", the output is
/// left out.
fn mcp_tool(listing: &ToolListing) -> Tool {
    let manifest = &listing.manifest;
    let input = match &manifest.input_schema {
        Value::Object(schema) if is_object_schema(schema) => schema.clone(),
        _ => serde_json::from_value(serde_json::json!({ "type": "object" })).expect("an object"),
    };
    let mut tool = Tool::new(
        listing.name.clone(),
        manifest.description.clone(),
        Arc::new(input),
    );
    if let Value::Object(schema) = &manifest.output_schema
        && is_object_schema(schema)
    {
        tool = tool.with_raw_output_schema(Arc::new(schema.clone()));
    }
    let hints = &manifest.annotations;
    let mut annotations = ToolAnnotations::new();
    annotations.title = hints.title.clone();
    annotations.read_only_hint = hints.read_only;
    annotations.destructive_hint = hints
        .destructive
        .or(hints.requires_confirmation.then_some(true));
    annotations.idempotent_hint = hints.idempotent;
    annotations.open_world_hint = hints.open_world.or(manifest
        .permissions
        .iter()
        .any(|p| p == "network")
        .then_some(true));
    tool = tool.with_annotations(annotations);
    let mut meta = MetaObject::new();
    meta.insert("version".into(), listing.version.clone().into());
    if !manifest.permissions.is_empty() {
        meta.insert("permissions".into(), manifest.permissions.clone().into());
    }
    if let Some(limit) = manifest.rate_limit {
        meta.insert(
            "rateLimit".into(),
            serde_json::json!({ "requests": limit.requests, "perSeconds": limit.per_seconds }),
        );
    }
    if hints.requires_confirmation {
        meta.insert("requiresConfirmation".into(), true.into());
    }
    tool.meta = Some(meta);
    tool
}

fn is_object_schema(schema: &JsonObject) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
}

/// An execution as MCP answers it: an object result as `structuredContent`
/// and as JSON text; any other as text; a refusal or failure as `isError`
/// with the reason (and, for a rate limit, `retryAfterMs` in `_meta`).
fn call_result(executed: Executed) -> CallToolResult {
    match executed.result {
        Ok(Value::Object(object)) => CallToolResult::structured(Value::Object(object)),
        Ok(Value::String(text)) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Ok(other) => CallToolResult::success(vec![ContentBlock::text(other.to_string())]),
        Err(error) => {
            let text = if error.outcome == ToolOutcome::NeedsConfirmation {
                format!(
                    "{}: ask the user, then call again with _meta {{\"{CONFIRMED_META}\": true}}",
                    error.message
                )
            } else {
                error.message
            };
            let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
            let mut meta = MetaObject::new();
            meta.insert("outcome".into(), error.outcome.as_str().into());
            if let Some(wait) = error.retry_after {
                meta.insert(
                    "retryAfterMs".into(),
                    (wait.as_millis().min(u128::from(u64::MAX)) as u64).into(),
                );
            }
            result.meta = Some(meta);
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(name: &str) -> ToolListing {
        ToolListing {
            name: name.to_owned(),
            version: "1".to_owned(),
            manifest: mcp_flow::ToolManifest {
                name: name.to_owned(),
                description: String::new(),
                input_schema: Value::Null,
                output_schema: Value::Null,
                permissions: vec![],
                rate_limit: None,
                annotations: Default::default(),
            },
        }
    }

    #[test]
    fn pages_follow_each_other_to_the_end_in_name_order() {
        let tools: Vec<ToolListing> = ["a", "b", "c", "d", "e"].map(listing).to_vec();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = paginate(&tools, after.as_deref(), 2);
            seen.extend(page.iter().map(|t| t.name.clone()));
            match next {
                Some(name) => after = decode_cursor(&encode_cursor(name)),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        let (page, next) = paginate(&tools, None, 5);
        assert_eq!(
            (page.len(), next),
            (5, None),
            "no cursor after the last page"
        );
    }

    #[test]
    fn a_cursor_not_made_here_is_refused() {
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
        assert_eq!(
            decode_cursor(&encode_cursor("order-api")).as_deref(),
            Some("order-api")
        );
    }
}

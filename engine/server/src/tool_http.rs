//! Seed 002's tool-server contract, for callers written against it:
//! `GET /mcp/discover` and `POST /mcp/execute` on the HTTP port, behind the
//! same bearer-key check as `/mcp` (the tenant is the key's).
//!
//! `/mcp/execute` runs a batch the way the seed's BatchToolExecutor does:
//! in sequence by default, each result passed to the next tool that asks
//! for it (`use_previous_result`: it arrives as `arguments.previous_result`),
//! stopping at the first failure; or all at once with `"mode": "parallel"`.
//! Every tool runs the one way (`mcp_tools`), audited as `seed-002`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mcp_store::ApiKey;
use mcp_tools::{Caller, ToolListing, ToolRequest, Via};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::Engine;

/// Most tools one `/mcp/execute` may name.
pub const MAX_BATCH: usize = 20;

#[derive(Clone)]
pub struct ToolHttp {
    pub engine: Arc<Engine>,
    pub call_timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    tools: Vec<ToolCall>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    mode: Mode,
    // Seed 002's fields for a workbench; accepted and not used.
    #[serde(default)]
    #[allow(dead_code)]
    sync_response_to_workbench: bool,
    #[serde(default)]
    #[allow(dead_code)]
    thought: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    current_step: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCall {
    tool_slug: String,
    arguments: serde_json::Map<String, Value>,
    /// Sequence mode: add the previous tool's result as `previous_result`.
    #[serde(default)]
    use_previous_result: bool,
    /// The user confirmed this call (tools that require confirmation).
    #[serde(default)]
    confirmed: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Sequence,
    Parallel,
}

/// The tenant's tools as seed 002 describes a server.
pub async fn discover(
    State(state): State<ToolHttp>,
    Extension(key): Extension<ApiKey>,
) -> Response {
    match state.engine.tenant_tools(&key.tenant_id).await {
        Ok(tools) => Json(json!({
            "server_name": format!("mcp-engine/{}", key.tenant_id),
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("The tools of tenant {}, run in MCP Engine's sandbox", key.tenant_id),
            "tools": tools.iter().map(seed_tool).collect::<Vec<_>>(),
            "capabilities": ["tools", "batch", "mcp"],
            "health_check_url": "/healthz",
        }))
        .into_response(),
        Err(e) => failure(StatusCode::SERVICE_UNAVAILABLE, None, &e.to_string()),
    }
}

fn seed_tool(listing: &ToolListing) -> Value {
    let manifest = &listing.manifest;
    json!({
        "name": listing.name,
        "description": manifest.description,
        "version": listing.version,
        "input_schema": manifest.input_schema,
        "output_schema": manifest.output_schema,
        "permissions": manifest.permissions,
        "rate_limit": manifest.rate_limit.map(|r| format!("{}/{}s", r.requests, r.per_seconds)),
        "requires_confirmation": manifest.annotations.requires_confirmation,
    })
}

/// Runs a batch; 400 for a request that is not seed 002's shape.
pub async fn execute(
    State(state): State<ToolHttp>,
    Extension(key): Extension<ApiKey>,
    body: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return failure(StatusCode::BAD_REQUEST, None, &rejection.body_text());
        }
    };
    let request_id = request
        .request_id
        .clone()
        .unwrap_or_else(|| "unknown".into());
    if request.tools.is_empty() || request.tools.len() > MAX_BATCH {
        return failure(
            StatusCode::BAD_REQUEST,
            Some(&request_id),
            &format!("tools: 1 to {MAX_BATCH} tools a request"),
        );
    }
    let caller = Caller::Key(key);
    let results = match request.mode {
        Mode::Parallel => {
            let runs = request
                .tools
                .iter()
                .map(|call| state.run(&caller, call, Value::Object(call.arguments.clone())));
            futures::future::join_all(runs).await
        }
        Mode::Sequence => {
            let mut results: Vec<Result<Value, (String, StatusCode)>> = Vec::new();
            let mut previous: Option<Value> = None;
            for call in &request.tools {
                let mut args = call.arguments.clone();
                if call.use_previous_result
                    && let Some(previous) = &previous
                {
                    args.insert("previous_result".into(), previous.clone());
                }
                let result = state.run(&caller, call, Value::Object(args)).await;
                let failed = result.is_err();
                previous = result.as_ref().ok().cloned();
                results.push(result);
                if failed {
                    break;
                }
            }
            results
        }
    };
    // The engine itself failing (a tenant's plugins not loadable) fails the
    // request; a tool's own failure is the batch's to report.
    if let Some(Err((message, status))) = results
        .iter()
        .find(|r| matches!(r, Err((_, status)) if *status != StatusCode::OK))
    {
        return failure(*status, Some(&request_id), message);
    }
    let error = results.iter().zip(&request.tools).find_map(|(r, call)| {
        r.as_ref()
            .err()
            .map(|(e, _)| format!("{}: {e}", call.tool_slug))
    });
    let entries: Vec<Value> = results
        .into_iter()
        .zip(&request.tools)
        .map(|(result, call)| match result {
            Ok(response) => {
                json!({ "tool_slug": call.tool_slug, "success": true, "response": response })
            }
            Err((error, _)) => {
                json!({ "tool_slug": call.tool_slug, "success": false, "error": error })
            }
        })
        .collect();
    Json(json!({
        "request_id": request_id,
        "successful": error.is_none(),
        "data": { "results": entries },
        "error": error,
    }))
    .into_response()
}

impl ToolHttp {
    /// One tool: its result, or why not (with OK for a tool's own failure,
    /// which the batch reports, else the status the whole request gets).
    async fn run(
        &self,
        caller: &Caller,
        call: &ToolCall,
        args: Value,
    ) -> Result<Value, (String, StatusCode)> {
        let Caller::Key(key) = caller else {
            unreachable!("seed 002's callers bear keys")
        };
        let executed = self
            .engine
            .execute_tool(ToolRequest {
                tenant_id: &key.tenant_id,
                tool: &call.tool_slug,
                version: None,
                args: &args,
                caller,
                via: Via::Seed002,
                confirmed: call.confirmed,
                timeout: self.call_timeout,
                conversation: None,
            })
            .await
            .map_err(|e| (e.to_string(), StatusCode::SERVICE_UNAVAILABLE))?;
        executed.result.map_err(|e| (e.message, StatusCode::OK))
    }
}

fn failure(status: StatusCode, request_id: Option<&str>, error: &str) -> Response {
    (
        status,
        Json(json!({
            "request_id": request_id.unwrap_or("unknown"),
            "successful": false,
            "data": null,
            "error": error,
        })),
    )
        .into_response()
}

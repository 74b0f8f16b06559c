//! A tool plugin: looks an order up in the tenant's order API.
//!
//! The API's base URL is the plugin's `base_url` config (set by the tenant;
//! its host must be on the tenant's outbound allow-list). The tool calls
//! `GET {base_url}/orders/{order_id}` through wasi:http and returns the JSON
//! the API answers.

wit_bindgen::generate!({ path: "../../wit", world: "annotated-tool", generate_all });

use exports::mcp::plugin::tool_annotations::{Guest as Annotated, ToolHints};
use exports::mcp::plugin::tools::Guest;
use mcp::plugin::host::{Level, config, log};
use mcp::plugin::types::{Conversation, Error, RateLimit, ToolManifest};
use serde_json::{Value, json};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

struct OrderApi;

impl Guest for OrderApi {
    fn describe() -> ToolManifest {
        ToolManifest {
            name: "order-api".into(),
            description: "Looks an order up by its id and returns its status and ETA.".into(),
            input_schema: json!({
                "type": "object",
                "required": ["order_id"],
                "properties": { "order_id": { "type": "string", "pattern": "^[A-Z]{2}[0-9]{4}$" } }
            })
            .to_string(),
            output_schema: json!({
                "type": "object",
                "properties": {
                    "status": { "type": "string" },
                    "eta_minutes": { "type": ["integer", "null"] }
                }
            })
            .to_string(),
            permissions: vec!["network".into()],
            rate_limit: Some(RateLimit {
                requests: 10,
                per_seconds: 1,
            }),
        }
    }

    fn call(args: String, _conversation: Conversation) -> Result<String, Error> {
        let args: Value =
            serde_json::from_str(&args).map_err(|e| error("bad-args", e.to_string()))?;
        let id = args["order_id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
            .ok_or_else(|| error("bad-args", "order_id must be letters and digits".into()))?;
        let base = config("base_url")
            .ok_or_else(|| error("config", "base_url is not configured".into()))?;
        let (status, body) = get(&format!("{}/orders/{id}", base.trim_end_matches('/')))?;
        log(Level::Info, &format!("order {id}: HTTP {status}"));
        match status {
            200 => Ok(body),
            404 => Err(error("not-found", format!("order {id} not found"))),
            other => Err(error(
                "upstream",
                format!("the order API answered HTTP {other}"),
            )),
        }
    }
}

fn error(code: &str, message: String) -> Error {
    Error {
        code: code.into(),
        message,
    }
}

/// A blocking GET over wasi:http: (status, body).
fn get(url: &str) -> Result<(u16, String), Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| error("config", format!("not a URL: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let bad = |_| error("http", "invalid request".into());
    request.set_method(&Method::Get).map_err(bad)?;
    request.set_scheme(Some(&scheme)).map_err(bad)?;
    request.set_authority(Some(authority)).map_err(bad)?;
    request.set_path_with_query(Some(path)).map_err(bad)?;

    let pending = outgoing_handler::handle(request, None)
        .map_err(|e| error("http", format!("request refused: {e:?}")))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| error("http", "no response".into()))?
        .map_err(|_| error("http", "response taken twice".into()))?
        .map_err(|e| error("http", format!("request failed: {e:?}")))?;
    let status = response.status();
    let body = response
        .consume()
        .map_err(|_| error("http", "no body".into()))?;
    let stream = body
        .stream()
        .map_err(|_| error("http", "no body stream".into()))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(error("http", format!("reading the body failed: {e:?}"))),
        }
    }
    let text =
        String::from_utf8(bytes).map_err(|_| error("http", "the body is not UTF-8".into()))?;
    Ok((status, text))
}

/// A lookup: it changes nothing, and it calls the tenant's API.
impl Annotated for OrderApi {
    fn hints() -> ToolHints {
        ToolHints {
            title: Some("Order status".into()),
            read_only: Some(true),
            destructive: Some(false),
            idempotent: Some(true),
            open_world: Some(true),
            requires_confirmation: false,
        }
    }
}

export!(OrderApi);

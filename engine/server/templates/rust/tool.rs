//! __NAME__: a tool (integration) plugin for MCP Engine.
//!
//! A flow calls it from an integration state:
//!
//! ```json
//! "quote": { "type": "integration",
//!            "config": { "integration_id": "__NAME__", "request_mapping": { "distance_km": "slots.distance" },
//!                        "response_mapping": { "fee": "result.fee" } },
//!            "transitions": [ { "condition": "integration_success", "target_state": "tell_fee" } ] }
//! ```
//!
//! `describe` is what tool discovery lists (ListTools); `call` gets the
//! mapped request as JSON and returns JSON. This one prices a delivery by
//! distance. A tool may call the tenant's HTTP APIs through `wasi::http`
//! (generated below), to hosts on the tenant's allow-list only; MCP
//! Engine's plugins/order-api shows how.

wit_bindgen::generate!({ path: "wit", world: "tool", generate_all });

use exports::mcp::plugin::tools::Guest;
use mcp::plugin::types::{Conversation, Error, RateLimit, ToolManifest};
use serde_json::{Value, json};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> ToolManifest {
        ToolManifest {
            name: "__NAME__".into(),
            description: "Prices a delivery by distance.".into(),
            input_schema: json!({
                "type": "object",
                "required": ["distance_km"],
                "properties": { "distance_km": { "type": "number", "minimum": 0 } }
            })
            .to_string(),
            output_schema: json!({
                "type": "object",
                "properties": { "fee": { "type": "number" } }
            })
            .to_string(),
            permissions: Vec::new(),
            rate_limit: Some(RateLimit {
                requests: 100,
                per_seconds: 1,
            }),
        }
    }

    fn call(args: String, _conversation: Conversation) -> Result<String, Error> {
        let args: Value = serde_json::from_str(&args).map_err(|e| error("bad-json", e.to_string()))?;
        let distance = args["distance_km"]
            .as_f64()
            .filter(|d| *d >= 0.0)
            .ok_or_else(|| error("bad-args", "distance_km must be a number, 0 or more".into()))?;
        let fee = ((2.0 + 0.5 * distance) * 100.0).round() / 100.0;
        Ok(json!({ "fee": fee }).to_string())
    }
}

fn error(code: &str, message: String) -> Error {
    Error {
        code: code.into(),
        message,
    }
}

// Exported only in the component: the tests call `Plugin` on the host.
#[cfg(target_arch = "wasm32")]
export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

__CONVERSATION__
    #[test]
    fn prices_a_delivery() {
        let result = Plugin::call(r#"{ "distance_km": 4 }"#.into(), conversation("{}", "{}")).unwrap();
        let result: Value = serde_json::from_str(&result).unwrap();
        assert_eq!(result, json!({ "fee": 4.0 }));
    }

    #[test]
    fn refuses_a_negative_distance() {
        let error = Plugin::call(r#"{ "distance_km": -1 }"#.into(), conversation("{}", "{}")).unwrap_err();
        assert_eq!(error.code, "bad-args");
    }

    #[test]
    fn describes_itself_with_json_schemas() {
        let manifest = Plugin::describe();
        assert_eq!(manifest.name, "__NAME__");
        let schema: Value = serde_json::from_str(&manifest.input_schema).unwrap();
        assert_eq!(schema["required"], json!(["distance_km"]));
    }
}

//! A tool that answers what its config says: `result` (JSON text) as its
//! result, or `error` as its error; with `destructive` set to `true` it says
//! it destroys things and must be confirmed. Uploaded under the names a test
//! calls (the MCP conformance suite's `test_simple_text`, say), one upload
//! per answer.

wit_bindgen::generate!({ path: "../../wit", world: "annotated-tool", generate_all });

use exports::mcp::plugin::tool_annotations::{Guest as Annotated, ToolHints};
use exports::mcp::plugin::tools::Guest;
use mcp::plugin::host::config;
use mcp::plugin::types::{Conversation, Error, ToolManifest};

struct Canned;

impl Guest for Canned {
    fn describe() -> ToolManifest {
        ToolManifest {
            name: "canned".into(),
            description: "Answers with the result (or the error) its config sets.".into(),
            input_schema: r#"{"type":"object"}"#.into(),
            output_schema: "{}".into(),
            permissions: vec![],
            rate_limit: None,
        }
    }

    fn call(_args: String, _conversation: Conversation) -> Result<String, Error> {
        if let Some(message) = config("error") {
            return Err(Error {
                code: "canned".into(),
                message,
            });
        }
        Ok(config("result").unwrap_or_else(|| "null".into()))
    }
}

impl Annotated for Canned {
    fn hints() -> ToolHints {
        let destructive = config("destructive").as_deref() == Some("true");
        ToolHints {
            title: Some("Canned answer".into()),
            read_only: Some(!destructive),
            destructive: Some(destructive),
            idempotent: Some(true),
            open_world: Some(false),
            requires_confirmation: destructive,
        }
    }
}

export!(Canned);

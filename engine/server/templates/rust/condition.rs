//! __NAME__: a condition plugin for MCP Engine.
//!
//! A flow uses it on a transition:
//!
//! ```json
//! { "condition": "plugin", "plugin": "__NAME__", "args": { "slot": "email" }, "target_state": "next" }
//! ```
//!
//! This one takes the transition when the slot named in `args.slot` is
//! filled. Change `evaluate` to decide what your flow needs.

wit_bindgen::generate!({ path: "wit", world: "condition" });

use exports::mcp::plugin::conditions::Guest;
use mcp::plugin::types::{Conversation, Error, Event};
use serde_json::Value;

struct Plugin;

impl Guest for Plugin {
    fn evaluate(
        args: String,
        conversation: Conversation,
        _event: Option<Event>,
    ) -> Result<bool, Error> {
        let args = parse("args", &args)?;
        let slot = args["slot"]
            .as_str()
            .ok_or_else(|| error("bad-args", "args.slot must name a slot"))?;
        let slots = parse("slots", &conversation.slots)?;
        Ok(!slots[slot].is_null())
    }
}

fn parse(what: &str, json: &str) -> Result<Value, Error> {
    serde_json::from_str(json).map_err(|e| error("bad-json", &format!("{what} is not JSON: {e}")))
}

fn error(code: &str, message: &str) -> Error {
    Error {
        code: code.into(),
        message: message.into(),
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
    fn takes_the_transition_when_the_slot_is_filled() {
        let args = r#"{ "slot": "email" }"#.to_owned();
        let filled = conversation(r#"{ "email": "ada@example.com" }"#, "{}");
        assert!(Plugin::evaluate(args.clone(), filled, None).unwrap());
        assert!(!Plugin::evaluate(args, conversation("{}", "{}"), None).unwrap());
    }

    #[test]
    fn args_without_a_slot_are_an_error() {
        let error = Plugin::evaluate("{}".into(), conversation("{}", "{}"), None).unwrap_err();
        assert_eq!(error.code, "bad-args");
    }
}

//! __NAME__: an action plugin for MCP Engine.
//!
//! A flow runs it as an entry, exit or transition action:
//!
//! ```json
//! { "type": "plugin", "plugin": "__NAME__", "args": { "greeting": "Welcome back" } }
//! ```
//!
//! This one greets the user by the name in their profile and remembers it
//! did (`variables.greeted`). An action returns updates (variables; keys
//! `slots.<name>` set slots; `null` removes one) and messages for the user.

wit_bindgen::generate!({ path: "wit", world: "action" });

use exports::mcp::plugin::actions::Guest;
use mcp::plugin::types::{Conversation, Effects, Error, Event};
use serde_json::{Value, json};

struct Plugin;

impl Guest for Plugin {
    fn run(args: String, conversation: Conversation, _event: Option<Event>) -> Result<Effects, Error> {
        let args = parse("args", &args)?;
        let profile = parse("user_profile", &conversation.user_profile)?;
        let greeting = args["greeting"].as_str().unwrap_or("Hello");
        let name = profile["name"].as_str().unwrap_or("there");
        Ok(Effects {
            updates: json!({ "greeted": true }).to_string(),
            messages: vec![format!("{greeting}, {name}!")],
        })
    }
}

fn parse(what: &str, json: &str) -> Result<Value, Error> {
    serde_json::from_str(json).map_err(|e| Error {
        code: "bad-json".into(),
        message: format!("{what} is not JSON: {e}"),
    })
}

// Exported only in the component: the tests call `Plugin` on the host.
#[cfg(target_arch = "wasm32")]
export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

__CONVERSATION__
    #[test]
    fn greets_the_user_by_name_and_remembers_it() {
        let effects = Plugin::run(
            r#"{ "greeting": "Welcome back" }"#.into(),
            conversation("{}", r#"{ "name": "Ada" }"#),
            None,
        )
        .unwrap();
        assert_eq!(effects.messages, ["Welcome back, Ada!"]);
        let updates: Value = serde_json::from_str(&effects.updates).unwrap();
        assert_eq!(updates, json!({ "greeted": true }));
    }

    #[test]
    fn a_stranger_is_greeted_too() {
        let effects = Plugin::run("{}".into(), conversation("{}", "{}"), None).unwrap();
        assert_eq!(effects.messages, ["Hello, there!"]);
    }
}

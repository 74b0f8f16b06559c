//! __NAME__: a state-type plugin for MCP Engine: a whole new kind of state.
//!
//! A flow uses it as a state of type `plugin:__NAME__`:
//!
//! ```json
//! "ask": { "type": "plugin:__NAME__", "config": { "question": "Shall I go ahead?" },
//!          "transitions": [ { "condition": "expression", "expression": "state.outcome == 'yes'", "target_state": "go" },
//!                           { "condition": "expression", "expression": "state.outcome == 'no'", "target_state": "stop" } ] }
//! ```
//!
//! `execute` runs when the state is entered (no event) and for each message
//! while it waits for input. This one asks a yes-or-no question and waits
//! until it gets an answer; the outcome is `yes` or `no`.

wit_bindgen::generate!({ path: "wit", world: "state-type" });

use exports::mcp::plugin::state_types::Guest;
use mcp::plugin::types::{Conversation, Effects, Error, Event, StateOutput, StateTypeManifest};
use serde_json::{Value, json};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> StateTypeManifest {
        StateTypeManifest {
            name: "__NAME__".into(),
            description: "Asks a yes-or-no question and waits for the answer.".into(),
            config_schema: json!({
                "type": "object",
                "required": ["question"],
                "properties": { "question": { "type": "string" } }
            })
            .to_string(),
        }
    }

    fn execute(config: String, _conversation: Conversation, event: Option<Event>) -> Result<StateOutput, Error> {
        let config: Value = serde_json::from_str(&config).map_err(|e| Error {
            code: "bad-config".into(),
            message: e.to_string(),
        })?;
        let question = config["question"].as_str().unwrap_or("Yes or no?");
        let Some(event) = event else {
            return Ok(output(vec![question.into()], None));
        };
        let answer = event.text.trim().to_lowercase();
        Ok(match answer.as_str() {
            "yes" | "y" | "sure" | "ok" => output(Vec::new(), Some("yes")),
            "no" | "n" | "nope" => output(Vec::new(), Some("no")),
            _ => output(vec![format!("Please answer yes or no. {question}")], None),
        })
    }
}

/// Waits for more input until there is an outcome.
fn output(messages: Vec<String>, outcome: Option<&str>) -> StateOutput {
    StateOutput {
        effects: Effects {
            updates: "{}".into(),
            messages,
        },
        outcome: outcome.map(str::to_owned),
        wait_for_input: outcome.is_none(),
    }
}

// Exported only in the component: the tests call `Plugin` on the host.
#[cfg(target_arch = "wasm32")]
export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use mcp::plugin::types::EventKind;

__CONVERSATION__
    fn message(text: &str) -> Option<Event> {
        Some(Event {
            kind: EventKind::Message,
            text: text.into(),
            data: "{}".into(),
        })
    }

    const CONFIG: &str = r#"{ "question": "Shall I go ahead?" }"#;

    #[test]
    fn asks_on_entry_and_waits() {
        let entered = Plugin::execute(CONFIG.into(), conversation("{}", "{}"), None).unwrap();
        assert_eq!(entered.effects.messages, ["Shall I go ahead?"]);
        assert!(entered.wait_for_input);
    }

    #[test]
    fn an_answer_is_the_outcome() {
        let yes = Plugin::execute(CONFIG.into(), conversation("{}", "{}"), message("Yes")).unwrap();
        assert_eq!(yes.outcome.as_deref(), Some("yes"));
        assert!(!yes.wait_for_input);
        let unclear = Plugin::execute(CONFIG.into(), conversation("{}", "{}"), message("maybe")).unwrap();
        assert_eq!(unclear.outcome, None);
        assert_eq!(unclear.effects.messages, ["Please answer yes or no. Shall I go ahead?"]);
    }
}

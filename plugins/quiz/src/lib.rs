//! A state-type plugin: asks `question` on entry and waits until the user
//! answers `answer`, or has tried `max_attempts` times. The outcome is
//! `correct` or `failed`, for the flow's transitions (`state.outcome`).
//!
//! ```json
//! "quiz": { "type": "plugin:quiz", "config": { "question": "2 + 2?", "answer": "4", "max_attempts": 3 },
//!           "transitions": [ { "condition": "expression", "expression": "state.outcome == 'correct'", "target_state": "win" } ] }
//! ```

wit_bindgen::generate!({ path: "../../wit", world: "state-type" });

use exports::mcp::plugin::state_types::Guest;
use mcp::plugin::types::{Conversation, Effects, Error, Event, StateOutput, StateTypeManifest};
use serde_json::{Value, json};

struct Quiz;

impl Guest for Quiz {
    fn describe() -> StateTypeManifest {
        StateTypeManifest {
            name: "quiz".into(),
            description: "Asks one question and waits for the right answer.".into(),
            config_schema: json!({
                "type": "object",
                "required": ["question", "answer"],
                "properties": {
                    "question": { "type": "string" },
                    "answer": { "type": "string" },
                    "max_attempts": { "type": "integer", "minimum": 1 }
                }
            })
            .to_string(),
        }
    }

    fn execute(
        config: String,
        conversation: Conversation,
        event: Option<Event>,
    ) -> Result<StateOutput, Error> {
        let config: Value = serde_json::from_str(&config).map_err(|e| bad(e.to_string()))?;
        let question = config["question"]
            .as_str()
            .ok_or_else(|| bad("question is required".into()))?;
        let answer = config["answer"]
            .as_str()
            .ok_or_else(|| bad("answer is required".into()))?;
        let max_attempts = config["max_attempts"].as_u64().unwrap_or(3);
        let Some(event) = event else {
            return Ok(output(
                json!({ "quiz_attempts": 0 }),
                vec![question.into()],
                None,
                true,
            ));
        };
        let variables: Value = serde_json::from_str(&conversation.variables).unwrap_or(Value::Null);
        let attempts = variables["quiz_attempts"].as_u64().unwrap_or(0) + 1;
        if event.text.trim().eq_ignore_ascii_case(answer) {
            return Ok(output(
                json!({ "quiz_attempts": attempts, "quiz_score": 1 }),
                vec!["Correct!".into()],
                Some("correct"),
                false,
            ));
        }
        if attempts >= max_attempts {
            return Ok(output(
                json!({ "quiz_attempts": attempts, "quiz_score": 0 }),
                vec![format!("The answer was {answer}.")],
                Some("failed"),
                false,
            ));
        }
        Ok(output(
            json!({ "quiz_attempts": attempts }),
            vec!["Not quite, try again.".into()],
            None,
            true,
        ))
    }
}

fn output(updates: Value, messages: Vec<String>, outcome: Option<&str>, wait: bool) -> StateOutput {
    StateOutput {
        effects: Effects {
            updates: updates.to_string(),
            messages,
        },
        outcome: outcome.map(str::to_owned),
        wait_for_input: wait,
    }
}

fn bad(message: String) -> Error {
    Error {
        code: "bad-config".into(),
        message,
    }
}

export!(Quiz);

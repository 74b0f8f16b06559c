//! The live state of one conversation, and the events that drive it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Object;

/// Where a conversation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Created; the initial state has not been entered yet.
    New,
    /// Waiting in `current_state` for the next event.
    Active,
    /// Reached an end state; the next message starts the flow over.
    Ended,
}

/// The context of one conversation (seed 000 ExecutionContext), pinned to the
/// flow version it started on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub conversation_id: String,
    pub tenant_id: String,
    #[serde(default)]
    pub user_id: String,
    pub flow_id: String,
    pub flow_version: String,
    pub status: ConversationStatus,
    pub current_state: String,
    #[serde(default)]
    pub previous_states: Vec<String>,
    #[serde(default)]
    pub slots: Object,
    #[serde(default)]
    pub variables: Object,
    #[serde(default)]
    pub user_profile: Object,
    /// The latest intent classification.
    #[serde(default)]
    pub intent: Option<IntentResult>,
    #[serde(default)]
    pub intent_history: Vec<String>,
    /// Latest result of each integration, by integration id.
    #[serde(default)]
    pub integration_results: Object,
    #[serde(default)]
    pub error_count: u32,
    /// Turns processed so far.
    #[serde(default)]
    pub turn: u64,
    /// When the current state was entered (Unix milliseconds).
    #[serde(default)]
    pub state_entered_at_ms: i64,
    /// No-match and no-input counters of the current state.
    #[serde(default)]
    pub unanswered: Unanswered,
    /// Handed to a person: automation is off until resumed or reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    /// The intents a clarification asked the user to choose between.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clarifying: Vec<String>,
    /// States a digression interrupted, the latest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted: Vec<Interruption>,
    /// Progress of the slot-filling state the conversation is in, if any.
    #[serde(default)]
    pub slot_filling: Option<SlotProgress>,
    /// The latest outcome reported by a tenant state type, for transitions.
    #[serde(default)]
    pub state_outcome: Option<String>,
    /// The A/B variant this conversation was allocated, if any.
    #[serde(default)]
    pub ab_variant: Option<String>,
    /// Plugin versions the conversation is pinned to, by plugin name;
    /// plugins not listed resolve to the tenant's active version.
    #[serde(default)]
    pub plugin_versions: std::collections::BTreeMap<String, String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// How the current state's exchange is going: counters of the no-match and
/// no-input handlers (see docs/flows.md), reset when the state is entered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Unanswered {
    /// Messages in a row the state could do nothing with.
    pub no_match: u32,
    /// No-input handlers run in a row.
    pub no_input: u32,
    /// Since when the user has said nothing: the state's entry, their
    /// latest message or the latest no-input handler (Unix milliseconds).
    pub quiet_since_ms: i64,
}

/// Why and since when a person has the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    pub reason: String,
    /// The state that handed it over.
    pub state: String,
    pub since_ms: i64,
}

/// A state a digression interrupted, to come back to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    pub state: String,
    /// The handler's `resume_message`, sent on the way back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_message: Option<String>,
}

/// Which slot is being asked for and how many answers to it were invalid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotProgress {
    pub asking: Option<String>,
    pub retries: u32,
}

/// The outcome of intent classification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentResult {
    /// The intent routed on: the best one when confident, else the state's
    /// fallback intent, else none.
    pub name: Option<String>,
    /// The best-scoring intent, whatever its score.
    pub top: Option<String>,
    pub confidence: f64,
    pub low_confidence: bool,
    /// Entities the classifier was sure enough of, by name.
    #[serde(default, skip_serializing_if = "Object::is_empty")]
    pub entities: Object,
}

/// What happened to a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The user sent a message.
    Message,
    /// A deadline set by the current state passed.
    Timeout,
}

/// An event handed to the state machine (seed 000 StateEvent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(default)]
    pub text: String,
    /// Anything the channel adds: `channel`, `attributes`, `entities`
    /// (slot name → value, filled without asking).
    #[serde(default)]
    pub data: Object,
    #[serde(default)]
    pub timestamp_ms: i64,
    /// What the caller asks of the engine for this message.
    #[serde(default)]
    pub hints: Hints,
}

/// Seed 004's ProcessingHints that reach the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hints {
    /// Hand the conversation to a person without running the flow.
    #[serde(default)]
    pub bypass_automation: bool,
    /// The response template to prefer (a key of `response_templates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_response_type: Option<String>,
}

impl Event {
    /// A user message.
    pub fn message(text: impl Into<String>) -> Event {
        Event {
            kind: EventKind::Message,
            text: text.into(),
            data: Object::new(),
            timestamp_ms: 0,
            hints: Hints::default(),
        }
    }

    /// The current state's deadline passed.
    pub fn timeout() -> Event {
        Event {
            kind: EventKind::Timeout,
            text: String::new(),
            data: Object::new(),
            timestamp_ms: 0,
            hints: Hints::default(),
        }
    }

    pub fn with_hints(mut self, hints: Hints) -> Event {
        self.hints = hints;
        self
    }

    /// The payload of a quick reply or button the user tapped, if any.
    pub fn payload(&self) -> Option<&str> {
        self.data.get("payload").and_then(Value::as_str)
    }

    /// Adds a field to `data`.
    pub fn with_data(mut self, key: &str, value: Value) -> Event {
        self.data.insert(key.to_owned(), value);
        self
    }

    /// The channel the message came from, if the caller said.
    pub fn channel(&self) -> Option<&str> {
        self.data.get("channel").and_then(Value::as_str)
    }

    /// Entities the caller extracted already, by slot name.
    pub fn entities(&self) -> Option<&Object> {
        self.data.get("entities").and_then(Value::as_object)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A conversation that has not yet entered the one state, `end`, of flow
    /// `f` (what `Conversation::new` makes), for unit tests of what reads one.
    pub(crate) fn blank_conversation() -> Conversation {
        serde_json::from_value(serde_json::json!({
            "conversation_id": "c", "tenant_id": "t", "user_id": "u",
            "flow_id": "f", "flow_version": "1", "status": "new", "current_state": "end",
            "created_at_ms": 0, "updated_at_ms": 0
        }))
        .unwrap()
    }
}

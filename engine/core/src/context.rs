//! The live state of one conversation, and the events that drive it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::flow::Flow;
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
}

impl Conversation {
    /// A new conversation on `flow`, with the flow's initial variables.
    pub fn new(
        tenant_id: impl Into<String>,
        conversation_id: impl Into<String>,
        user_id: impl Into<String>,
        flow: &Flow,
        now_ms: i64,
    ) -> Conversation {
        let definition = flow.definition();
        Conversation {
            conversation_id: conversation_id.into(),
            tenant_id: tenant_id.into(),
            user_id: user_id.into(),
            flow_id: definition.flow_id.clone(),
            flow_version: definition.version.clone(),
            status: ConversationStatus::New,
            current_state: definition.initial_state.clone(),
            previous_states: Vec::new(),
            slots: Object::new(),
            variables: definition.variables.clone(),
            user_profile: Object::new(),
            intent: None,
            intent_history: Vec::new(),
            integration_results: Object::new(),
            error_count: 0,
            turn: 0,
            state_entered_at_ms: now_ms,
            slot_filling: None,
            state_outcome: None,
            ab_variant: None,
            plugin_versions: Default::default(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }

    /// Back to the start of `flow`: slots, variables and per-state progress are
    /// cleared; the user's profile and the A/B variant are kept.
    pub fn restart(&mut self, flow: &Flow) {
        let definition = flow.definition();
        self.status = ConversationStatus::New;
        self.current_state = definition.initial_state.clone();
        self.slots.clear();
        self.variables = definition.variables.clone();
        self.intent = None;
        self.integration_results.clear();
        self.slot_filling = None;
        self.state_outcome = None;
    }

    /// Moves the conversation to another flow (a `trigger_flow` action):
    /// the next event enters `target_state`, or the flow's initial state.
    /// Slots, variables and the user's profile go along; variables the new
    /// flow declares and the conversation lacks get the flow's values.
    pub fn switch_flow(
        &mut self,
        flow: &Flow,
        target_state: Option<&str>,
        now_ms: i64,
    ) -> Result<(), String> {
        let definition = flow.definition();
        let target = target_state.unwrap_or(&definition.initial_state);
        if flow.state(target).is_none() {
            return Err(format!(
                "state \"{target}\" is not in flow {} {}",
                definition.flow_id, definition.version
            ));
        }
        if !self.current_state.is_empty() {
            self.previous_states
                .push(std::mem::take(&mut self.current_state));
        }
        self.flow_id = definition.flow_id.clone();
        self.flow_version = definition.version.clone();
        self.status = ConversationStatus::New;
        self.current_state = target.to_owned();
        for (name, value) in &definition.variables {
            self.variables
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        self.slot_filling = None;
        self.state_outcome = None;
        self.state_entered_at_ms = now_ms;
        Ok(())
    }
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
}

impl Event {
    /// A user message.
    pub fn message(text: impl Into<String>) -> Event {
        Event {
            kind: EventKind::Message,
            text: text.into(),
            data: Object::new(),
            timestamp_ms: 0,
        }
    }

    /// The current state's deadline passed.
    pub fn timeout() -> Event {
        Event {
            kind: EventKind::Timeout,
            text: String::new(),
            data: Object::new(),
            timestamp_ms: 0,
        }
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

    /// A conversation on a one-state flow, for unit tests of what reads one.
    pub(crate) fn blank_conversation() -> Conversation {
        let flow = Flow::from_json(
            r#"{"flow_id":"f","name":"f","version":"1","initial_state":"end",
                "states":{"end":{"type":"end"}}}"#,
        )
        .unwrap();
        Conversation::new("t", "c", "u", &flow, 0)
    }
}

//! What a turn hands back: the [`StepResult`] and what it is made of
//! (messages, actions run, errors, logged events, a flow trigger).

use serde::{Deserialize, Serialize};

use crate::context::{Handoff, IntentResult};
use crate::model::{Object, Rich};

/// A message for the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    /// `text` unless the state says otherwise (seed 000 response_type).
    pub response_type: String,
    /// The state that sent it.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    pub typing_indicator: bool,
    /// Quick replies, buttons, cards, media or a location, rendered.
    #[serde(default, skip_serializing_if = "Rich::is_empty")]
    pub rich: Rich,
}

/// One action the turn ran, and whether it worked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// `set_variable`, `plugin`, `global_handler`, ...
    pub kind: String,
    /// What it acted on: the variable, plugin, integration or handler.
    pub target: String,
    pub state: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ActionRecord {
    /// `kind:target`, as listed in a response's actions_performed.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind, self.target)
    }
}

/// What went wrong during a turn. The turn still completes; see docs/flows.md
/// "When things go wrong".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnErrorKind {
    /// The conversation's state, or a transition's target, is not in the flow.
    StateNotFound,
    /// A condition could not be evaluated; the transition was skipped.
    Transition,
    /// An action failed; the others still ran.
    Action,
    /// A template could not be rendered; its message was not sent.
    Template,
    /// An integration failed after its retries.
    Integration,
    /// A tenant state type or intent classifier failed.
    Plugin,
    /// A slot was answered wrongly `max_retries` times.
    SlotRetriesExhausted,
    /// The turn entered more states than `settings.max_steps_per_turn`.
    LoopGuard,
}

/// One problem during a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnError {
    pub kind: TurnErrorKind,
    pub state: String,
    pub message: String,
}

/// An analytics event a `log_event` action recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub event: String,
    pub state: String,
    pub data: Object,
}

/// A `trigger_flow` action's request to move the conversation to another flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowTrigger {
    pub flow_id: String,
    pub target_state: Option<String>,
}

/// Everything one turn did (seed 000 StateExecutionResult).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepResult {
    /// Every message the turn produced, in order.
    pub messages: Vec<Message>,
    /// The state the conversation is in now.
    pub state: String,
    /// States entered during the turn, in order.
    pub visited: Vec<String>,
    pub actions: Vec<ActionRecord>,
    /// Changed slots and variables as `slots.<name>` / `variables.<name>`;
    /// `null` for a removed one.
    pub updates: Object,
    pub errors: Vec<TurnError>,
    /// The conversation reached an end state.
    pub ended: bool,
    /// When the current state's `timeout` transition is due (Unix ms); the
    /// caller delivers a timeout event then.
    pub wake_at_ms: Option<i64>,
    pub trigger_flow: Option<FlowTrigger>,
    pub events: Vec<LoggedEvent>,
    /// The intent classified during this turn, if any.
    pub intent: Option<IntentResult>,
    /// The conversation is with a person: the flow did not run, or handed
    /// it over during this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    pub plugin_calls: u32,
}

impl StepResult {
    /// Adds what a later step of the same turn did (entering the flow a
    /// `trigger_flow` moved the conversation to): its messages, states,
    /// actions, changes and errors follow this one's, and where the
    /// conversation now is comes from it. The trigger that led there stays.
    pub fn absorb(&mut self, later: StepResult) {
        self.messages.extend(later.messages);
        self.state = later.state;
        self.visited.extend(later.visited);
        self.actions.extend(later.actions);
        self.updates.extend(later.updates);
        self.errors.extend(later.errors);
        self.ended = later.ended;
        self.wake_at_ms = later.wake_at_ms;
        self.events.extend(later.events);
        self.intent = later.intent.or(self.intent.take());
        self.handoff = later.handoff.or(self.handoff.take());
        self.plugin_calls += later.plugin_calls;
    }
}

//! The flow format: serde types that read seed 000's JSON as written, plus the
//! documented extensions (intents, recovery state, plugin conditions, actions
//! and state types). `docs/flows.md` is the reference tenants read.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON object.
pub type Object = Map<String, Value>;

/// A conversation flow: a state machine a tenant publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowDefinition {
    /// Stable identifier of the flow within its tenant.
    pub flow_id: String,
    /// Accepted for compatibility with seed 000; the tenant always comes from
    /// the caller's credentials, never from the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Human-readable name.
    pub name: String,
    /// Version label of this definition, e.g. "1.0.0".
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The state a new conversation starts in.
    pub initial_state: String,
    /// The states, by name.
    pub states: IndexMap<String, State>,
    /// Handlers that apply to every message in every state ("restart", "help").
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub global_handlers: IndexMap<String, GlobalHandler>,
    /// Conversation variables and their initial values.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub variables: Object,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Object,
    /// Extension: intents for the built-in matcher, by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub intents: IndexMap<String, IntentDefinition>,
    /// Extension: where the machine goes when a state is missing, a state's
    /// logic fails with no error transition, or slot filling gives up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_state: Option<String>,
    /// Extension: limits of the machine for this flow.
    #[serde(default)]
    pub settings: FlowSettings,
    /// Extension: what a state without its own `no_match` does with a
    /// message it can do nothing with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub no_match: Vec<EventHandler>,
    /// Extension: what a waiting state without its own `no_input` does
    /// when the user says nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_input: Option<NoInput>,
}

/// The answer to the n-th no-match or no-input in a row: handlers are
/// used in order, one per occurrence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventHandler {
    /// Template sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// State to go to; without one the conversation stays where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_state: Option<String>,
    /// When staying, repeat what the state asks after the response.
    #[serde(default = "defaults::yes")]
    pub reprompt: bool,
}

/// Silence: after `timeout_ms` without a message the next handler runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInput {
    #[schemars(range(min = 1000, max = 86_400_000))]
    pub timeout_ms: u64,
    #[schemars(length(min = 1, max = 10))]
    pub handlers: Vec<EventHandler>,
}

/// Limits of the machine for one flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowSettings {
    /// States a single turn may enter before the loop guard stops it.
    #[serde(default = "defaults::max_steps_per_turn")]
    #[schemars(range(min = 1, max = 200))]
    pub max_steps_per_turn: u32,
    /// How many previous states and intents a conversation remembers.
    #[serde(default = "defaults::history_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub history_limit: u32,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            max_steps_per_turn: defaults::max_steps_per_turn(),
            history_limit: defaults::history_limit(),
        }
    }
}

/// An intent the built-in matcher recognises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentDefinition {
    /// Example phrases; a message is scored by word overlap with the closest one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// Regular expressions; a match scores 1.0. Matched case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// What a clarification calls it ("Track an order"); the name, spaced,
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A handler checked against every message before the current state sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalHandler {
    /// Whole messages that trigger the handler, compared case-insensitively
    /// after trimming punctuation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phrases: Vec<String>,
    /// Regular expressions searched in the message, case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// An intent of `intents` that triggers the handler when the built-in
    /// matcher finds it with confidence of at least 0.7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Template sent when the handler fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// State to go to; without one the conversation stays where it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_state: Option<String>,
    /// Clear slots and reset variables to the flow's initial values.
    #[serde(default)]
    pub reset: bool,
    /// When staying, repeat the current state's prompt after the response.
    #[serde(default = "defaults::yes")]
    pub reprompt: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// A digression: the state it interrupts is remembered, and a
    /// transition with `resume` brings the conversation back to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupts: bool,
    /// Template sent when the conversation comes back, before the
    /// interrupted state asks its question again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_message: Option<String>,
}

/// One state of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawState", into = "RawState")]
pub struct State {
    /// Type and type-specific configuration.
    pub config: StateConfig,
    pub transitions: Vec<Transition>,
    pub entry_actions: Vec<Action>,
    pub exit_actions: Vec<Action>,
    /// Handlers for messages the state can do nothing with.
    pub no_match: Vec<EventHandler>,
    /// Handlers for silence while the state waits.
    pub no_input: Option<NoInput>,
    pub metadata: Object,
}

impl State {
    /// The type as written in the flow: a built-in name or `plugin:<name>`.
    pub fn type_name(&self) -> String {
        match &self.config {
            StateConfig::Custom { plugin, .. } => format!("{CUSTOM_TYPE_PREFIX}{plugin}"),
            other => other.builtin_type().expect("built-in").as_str().to_owned(),
        }
    }
}

/// How a state is written in JSON: `config` is read according to `type`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    /// Seed 000 repeats the state's name inside it; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub transitions: Vec<Transition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub no_match: Vec<EventHandler>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_input: Option<NoInput>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Object,
}

impl TryFrom<RawState> for State {
    type Error = String;

    fn try_from(mut raw: RawState) -> Result<Self, String> {
        let config = std::mem::take(&mut raw.config);
        let config = StateConfig::parse(&raw.kind, config).map_err(|e| e.to_string())?;
        Ok(raw.with_config(config))
    }
}

impl RawState {
    /// The state, with its config already read.
    pub(crate) fn with_config(self, config: StateConfig) -> State {
        State {
            config,
            transitions: self.transitions,
            entry_actions: self.entry_actions,
            exit_actions: self.exit_actions,
            no_match: self.no_match,
            no_input: self.no_input,
            metadata: self.metadata,
        }
    }
}

impl From<State> for RawState {
    fn from(state: State) -> Self {
        let kind = state.type_name();
        let config = match state.config {
            StateConfig::Response(c) => serde_json::to_value(c),
            StateConfig::Intent(c) => serde_json::to_value(c),
            StateConfig::SlotFilling(c) => serde_json::to_value(c),
            StateConfig::Integration(c) => serde_json::to_value(c),
            StateConfig::Condition(c) => Ok(Value::Object(c)),
            StateConfig::Wait(c) => serde_json::to_value(c),
            StateConfig::End(c) => serde_json::to_value(c),
            StateConfig::Custom { config, .. } => Ok(Value::Object(config)),
        }
        .expect("configs serialize to JSON");
        RawState {
            name: None,
            kind,
            config,
            transitions: state.transitions,
            entry_actions: state.entry_actions,
            exit_actions: state.exit_actions,
            no_match: state.no_match,
            no_input: state.no_input,
            metadata: state.metadata,
        }
    }
}

/// Prefix of a state type served by a tenant's state-type plugin.
pub const CUSTOM_TYPE_PREFIX: &str = "plugin:";

/// The built-in state types of seed 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateType {
    Response,
    Intent,
    SlotFilling,
    Integration,
    Condition,
    Wait,
    End,
}

impl StateType {
    pub const ALL: [StateType; 7] = [
        StateType::Response,
        StateType::Intent,
        StateType::SlotFilling,
        StateType::Integration,
        StateType::Condition,
        StateType::Wait,
        StateType::End,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateType::Response => "response",
            StateType::Intent => "intent",
            StateType::SlotFilling => "slot_filling",
            StateType::Integration => "integration",
            StateType::Condition => "condition",
            StateType::Wait => "wait",
            StateType::End => "end",
        }
    }

    pub fn from_name(name: &str) -> Option<StateType> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The configuration of a state, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum StateConfig {
    Response(ResponseConfig),
    Intent(IntentConfig),
    SlotFilling(SlotFillingConfig),
    Integration(IntegrationConfig),
    /// A condition state only branches; its config is free-form metadata.
    Condition(Object),
    Wait(WaitConfig),
    End(EndConfig),
    /// A tenant state type: `plugin` names the state-type plugin, `config`
    /// is passed to it unchanged.
    Custom {
        plugin: String,
        config: Object,
    },
}

/// Why a state's config could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    UnknownType(String),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl StateConfig {
    /// Reads `config` as the configuration of a state of type `kind`.
    pub fn parse(kind: &str, config: Value) -> Result<StateConfig, ConfigError> {
        let config = match config {
            Value::Null => Value::Object(Map::new()),
            other => other,
        };
        if let Some(plugin) = kind.strip_prefix(CUSTOM_TYPE_PREFIX) {
            return match config {
                Value::Object(config) => Ok(StateConfig::Custom {
                    plugin: plugin.to_owned(),
                    config,
                }),
                _ => Err(ConfigError::Invalid {
                    path: String::new(),
                    message: "config must be an object".into(),
                }),
            };
        }
        let Some(builtin) = StateType::from_name(kind) else {
            return Err(ConfigError::UnknownType(unknown_type_message(kind)));
        };
        fn read<T: serde::de::DeserializeOwned>(config: Value) -> Result<T, ConfigError> {
            serde_path_to_error::deserialize(config).map_err(|e| ConfigError::Invalid {
                path: e.path().to_string(),
                message: e.into_inner().to_string(),
            })
        }
        Ok(match builtin {
            StateType::Response => StateConfig::Response(read(config)?),
            StateType::Intent => StateConfig::Intent(read(config)?),
            StateType::SlotFilling => StateConfig::SlotFilling(read(config)?),
            StateType::Integration => StateConfig::Integration(read(config)?),
            StateType::Condition => StateConfig::Condition(read(config)?),
            StateType::Wait => StateConfig::Wait(read(config)?),
            StateType::End => StateConfig::End(read(config)?),
        })
    }

    /// The built-in type, or `None` for a tenant state type.
    pub fn builtin_type(&self) -> Option<StateType> {
        Some(match self {
            StateConfig::Response(_) => StateType::Response,
            StateConfig::Intent(_) => StateType::Intent,
            StateConfig::SlotFilling(_) => StateType::SlotFilling,
            StateConfig::Integration(_) => StateType::Integration,
            StateConfig::Condition(_) => StateType::Condition,
            StateConfig::Wait(_) => StateType::Wait,
            StateConfig::End(_) => StateType::End,
            StateConfig::Custom { .. } => return None,
        })
    }
}

pub(crate) fn unknown_type_message(kind: &str) -> String {
    let supported: Vec<&str> = StateType::ALL.iter().map(|t| t.as_str()).collect();
    format!(
        "unknown state type \"{kind}\"; supported types are {}, or \"{CUSTOM_TYPE_PREFIX}<name>\" for a tenant state-type plugin",
        supported.join(", ")
    )
}

/// Sends a message when the state is entered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// Templates by name; see "Choosing a template" in docs/flows.md.
    pub response_templates: IndexMap<String, String>,
    #[serde(default = "defaults::text")]
    pub response_type: String,
    /// Render templates with the conversation's data; off sends them verbatim.
    #[serde(default = "defaults::yes")]
    pub personalization: bool,
    #[serde(default = "defaults::yes")]
    pub typing_indicator: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 5000))]
    pub delay_ms: Option<u64>,
    /// Speak, then wait for the next message. Off (the default), the
    /// message that moved the conversation on from here is handed on to an
    /// intent or slot-filling target: a greeting does not swallow the
    /// request it came with.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_input: bool,
    /// Quick replies, buttons, cards, media or a location sent with the text.
    #[serde(default, skip_serializing_if = "Rich::is_empty")]
    pub rich: Rich,
}

/// Classifies the user's message into an intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentConfig {
    /// Names of intents (from the flow's `intents`) this state considers;
    /// empty means all of them. Ignored when a classifier plugin is used.
    #[serde(default)]
    pub intent_patterns: Vec<String>,
    #[serde(default = "defaults::confidence_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence_threshold: f64,
    /// Intent assumed when the best score is below the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_intent: Option<String>,
    /// Pass the conversation (history, slots) to the classifier plugin.
    #[serde(default = "defaults::yes")]
    pub context_aware: bool,
    /// Extension: an intent-classifier plugin used instead of the built-in matcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
    /// Extension: template sent when the state is entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    /// Extension: when the two best intents are both confident and this
    /// close, ask which one the user meant, with quick replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub clarify_margin: Option<f64>,
    /// Extension: the question asked then (a template); [`CLARIFY_PROMPT`]
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clarify_prompt: Option<String>,
}

/// What an intent state asks when two intents are too close to call, unless
/// its `clarify_prompt` says otherwise.
pub const CLARIFY_PROMPT: &str = "Which did you mean?";

/// Collects named values (slots) from the user, prompting for each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotFillingConfig {
    pub required_slots: Vec<String>,
    #[serde(default)]
    pub optional_slots: Vec<String>,
    /// Rule per slot; see "Validation rules" in docs/flows.md.
    #[serde(default)]
    pub validation_rules: IndexMap<String, String>,
    /// Prompt template per required slot.
    pub prompts: IndexMap<String, Prompt>,
    /// Template sent after an invalid answer, per slot.
    #[serde(default)]
    pub retry_prompts: IndexMap<String, String>,
    /// Invalid answers to one slot before giving up.
    #[serde(default = "defaults::max_retries")]
    #[schemars(range(min = 1, max = 5))]
    pub max_retries: u32,
    /// Extension: regular expressions that find a slot anywhere in a message;
    /// the first capture group (or the whole match) is the value.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub extractors: IndexMap<String, String>,
    /// Extension: where to go when a slot's retries run out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_state: Option<String>,
    /// Extension: a new value for a slot already filled changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrections: Option<Box<Corrections>>,
    /// Extension: a way out of the form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<Box<FormCancel>>,
}

/// How a form takes a correction ("actually make it medium"). The state's
/// own slots are always corrected; these settings add others and say what
/// follows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Corrections {
    /// Slots of other states (filled earlier) a message here may change,
    /// recognised by the rules of the states that ask for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<String>,
    /// Template sent after a correction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// State to go to after a correction (to compute again what depends
    /// on it); without one the state asks its question again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_state: Option<String>,
}

/// Leaving a form: the message that says so, and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormCancel {
    /// Whole messages that cancel, compared as global handlers' phrases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phrases: Vec<String>,
    /// Regular expressions searched in the message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// An intent of `intents` found with confidence of at least 0.7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Template sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    pub target_state: String,
}

/// Calls a tool plugin and maps its result into the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationConfig {
    /// The tool plugin to call.
    pub integration_id: String,
    /// Passed to the tool as `endpoint` unless `request_mapping` sets it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Passed to the tool as `method` unless `request_mapping` sets it.
    #[serde(default = "defaults::method")]
    pub method: String,
    #[serde(default = "defaults::timeout_ms")]
    #[schemars(range(min = 100, max = 30000))]
    pub timeout_ms: u64,
    #[serde(default)]
    pub retry_config: RetryConfig,
    /// Tool argument name → CEL expression over the conversation.
    #[serde(default)]
    pub request_mapping: IndexMap<String, String>,
    /// Variable (or `slots.<name>`) → CEL expression over `result` and the conversation.
    #[serde(default)]
    pub response_mapping: IndexMap<String, String>,
    #[serde(default)]
    pub error_handling: ErrorHandling,
}

/// How an integration call is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    #[serde(default = "defaults::max_attempts", alias = "max_retries")]
    #[schemars(range(min = 1, max = 5))]
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time after.
    #[serde(default = "defaults::backoff_ms")]
    #[schemars(range(max = 10000))]
    pub backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: defaults::max_attempts(),
            backoff_ms: defaults::backoff_ms(),
        }
    }
}

/// What an integration state does when the call fails.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorHandling {
    /// Template sent to the user when the call fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Waits for the user, optionally until a timeout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitConfig {
    /// Template sent when the state is entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    /// Deadline for `timeout` transitions that name none themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 86400000))]
    pub timeout_ms: Option<u64>,
}

/// Ends the conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndConfig {
    /// Template sent when the conversation ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Extension: the conversation is handed to a person, for this reason;
    /// automation stays off until it is resumed or reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<String>,
}

/// Rich content of a message, beside its text (seed 004 MessageContent).
/// Every string is a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rich {
    /// Suggested answers; a tap sends the title as text and the payload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 13))]
    pub quick_replies: Vec<QuickReply>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub buttons: Vec<Button>,
    /// A carousel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub cards: Vec<Card>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

impl Rich {
    pub fn is_empty(&self) -> bool {
        *self == Rich::default()
    }

    /// The same content with every string passed through `render` (the
    /// templates), stopping at the first that fails.
    pub fn render(
        &self,
        mut render: impl FnMut(&str) -> Result<String, String>,
    ) -> Result<Rich, String> {
        let mut out = self.clone();
        out.visit(&mut |s: &mut String| {
            *s = render(s)?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Every string of the content (each a template), for the validator.
    pub fn templates(&self) -> Vec<String> {
        let mut found = Vec::new();
        let _ = self.clone().visit(&mut |s: &mut String| {
            found.push(std::mem::take(s));
            Ok(())
        });
        found
    }

    /// Calls `f` on every string, in order.
    fn visit(
        &mut self,
        f: &mut dyn FnMut(&mut String) -> Result<(), String>,
    ) -> Result<(), String> {
        fn button(
            b: &mut Button,
            f: &mut dyn FnMut(&mut String) -> Result<(), String>,
        ) -> Result<(), String> {
            f(&mut b.title)?;
            for s in [&mut b.payload, &mut b.url, &mut b.phone]
                .into_iter()
                .flatten()
            {
                f(s)?;
            }
            Ok(())
        }
        for reply in &mut self.quick_replies {
            f(&mut reply.title)?;
            if let Some(payload) = &mut reply.payload {
                f(payload)?;
            }
        }
        for b in &mut self.buttons {
            button(b, f)?;
        }
        for card in &mut self.cards {
            f(&mut card.title)?;
            for s in [&mut card.subtitle, &mut card.image_url]
                .into_iter()
                .flatten()
            {
                f(s)?;
            }
            for b in &mut card.buttons {
                button(b, f)?;
            }
        }
        if let Some(media) = &mut self.media {
            f(&mut media.url)?;
            if let Some(alt) = &mut media.alt_text {
                f(alt)?;
            }
        }
        if let Some(location) = &mut self.location {
            for s in [&mut location.name, &mut location.address]
                .into_iter()
                .flatten()
            {
                f(s)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuickReply {
    pub title: String,
    /// What a tap sends as `payload`; the title when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Button {
    /// `postback` (sends `payload`), `url` (opens `url`) or `phone` (calls `phone`).
    #[serde(rename = "type")]
    pub kind: ButtonKind,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ButtonKind {
    #[default]
    Postback,
    Url,
    Phone,
}

impl ButtonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ButtonKind::Postback => "postback",
            ButtonKind::Url => "url",
            ButtonKind::Phone => "phone",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Card {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub buttons: Vec<Button>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Media {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_text: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// What a state asks: a template, or a template with rich content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Rich(Box<RichPrompt>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RichPrompt {
    pub text: String,
    #[serde(default)]
    pub rich: Rich,
}

impl Prompt {
    pub fn text(&self) -> &str {
        match self {
            Prompt::Text(text) => text,
            Prompt::Rich(prompt) => &prompt.text,
        }
    }

    pub fn rich(&self) -> Option<&Rich> {
        match self {
            Prompt::Text(_) => None,
            Prompt::Rich(prompt) => Some(&prompt.rich),
        }
    }
}

/// A possible move out of a state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub condition: TransitionCondition,
    /// The intent for `intent_match`, the slot for `slot_filled`, the
    /// integration for `integration_*`, milliseconds for `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_value: Option<String>,
    /// CEL expression for `expression`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    pub target_state: String,
    /// Lower numbers are tried first.
    #[serde(default = "defaults::priority")]
    #[schemars(range(max = 1000))]
    pub priority: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Extension: the condition plugin for `plugin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Extension: arguments passed to the condition plugin.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub args: Value,
    /// Extension: at the end of a digression, go back to the state it
    /// interrupted instead of `target_state` (which is taken when nothing
    /// was interrupted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resume: bool,
}

/// When a transition may be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransitionCondition {
    AnyInput,
    IntentMatch,
    SlotFilled,
    IntegrationSuccess,
    IntegrationError,
    Expression,
    Timeout,
    LowConfidence,
    /// Extension: a tenant condition plugin decides.
    Plugin,
    /// Extension: always matches; tried after every other transition.
    #[serde(alias = "fallback")]
    Default,
    /// Extension: the user tapped a quick reply or button whose payload is
    /// `condition_value` (any payload without one).
    Payload,
    /// Extension: the user shared a location.
    LocationShared,
    /// Extension: the user submitted a form.
    FormSubmitted,
}

impl TransitionCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionCondition::AnyInput => "any_input",
            TransitionCondition::IntentMatch => "intent_match",
            TransitionCondition::SlotFilled => "slot_filled",
            TransitionCondition::IntegrationSuccess => "integration_success",
            TransitionCondition::IntegrationError => "integration_error",
            TransitionCondition::Expression => "expression",
            TransitionCondition::Timeout => "timeout",
            TransitionCondition::LowConfidence => "low_confidence",
            TransitionCondition::Plugin => "plugin",
            TransitionCondition::Default => "default",
            TransitionCondition::Payload => "payload",
            TransitionCondition::LocationShared => "location_shared",
            TransitionCondition::FormSubmitted => "form_submitted",
        }
    }

    /// Whether the condition needs an event (a message or a timeout) to be
    /// handled by the state; the others can match the moment a state is entered.
    pub fn needs_event(self) -> bool {
        matches!(
            self,
            TransitionCondition::AnyInput
                | TransitionCondition::Timeout
                | TransitionCondition::Payload
                | TransitionCondition::LocationShared
                | TransitionCondition::FormSubmitted
        )
    }
}

/// Something a state or transition does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Send a message (a template).
    SendMessage {
        message: String,
        #[serde(default = "defaults::text")]
        response_type: String,
        #[serde(default, skip_serializing_if = "Rich::is_empty")]
        rich: Rich,
    },
    /// Set a variable (or `slots.<name>`) to a JSON `value` or the result of a
    /// CEL `expression`; exactly one of the two.
    SetVariable {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expression: Option<String>,
    },
    /// Remove a variable (or `slots.<name>`; `slots.*` clears every slot).
    ClearVariable { name: String },
    /// Call a tool plugin without branching on the result.
    CallIntegration {
        integration_id: String,
        #[serde(default)]
        request_mapping: IndexMap<String, String>,
        #[serde(default)]
        response_mapping: IndexMap<String, String>,
        #[serde(default = "defaults::timeout_ms")]
        #[schemars(range(min = 100, max = 30000))]
        timeout_ms: u64,
    },
    /// Record an analytics event; returned in the step result.
    LogEvent {
        event: String,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        data: Object,
    },
    /// Ask the caller to switch the conversation to another flow.
    TriggerFlow {
        flow_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_state: Option<String>,
    },
    /// Extension: run a tenant action plugin.
    Plugin {
        plugin: String,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        args: Value,
    },
}

impl Action {
    /// The action's type as written in the flow.
    pub fn type_name(&self) -> &'static str {
        match self {
            Action::SendMessage { .. } => "send_message",
            Action::SetVariable { .. } => "set_variable",
            Action::ClearVariable { .. } => "clear_variable",
            Action::CallIntegration { .. } => "call_integration",
            Action::LogEvent { .. } => "log_event",
            Action::TriggerFlow { .. } => "trigger_flow",
            Action::Plugin { .. } => "plugin",
        }
    }
}

mod defaults {
    pub fn yes() -> bool {
        true
    }
    pub fn text() -> String {
        "text".into()
    }
    pub fn confidence_threshold() -> f64 {
        0.7
    }
    pub fn max_retries() -> u32 {
        3
    }
    pub fn method() -> String {
        "GET".into()
    }
    pub fn timeout_ms() -> u64 {
        5000
    }
    pub fn priority() -> u32 {
        100
    }
    pub fn max_attempts() -> u32 {
        1
    }
    pub fn backoff_ms() -> u64 {
        200
    }
    pub fn max_steps_per_turn() -> u32 {
        25
    }
    pub fn history_limit() -> u32 {
        50
    }
}

//! The ports the outer crates implement: the plugin runtime (mcp-wasm) and a
//! clock (the server's, or a test's). The storage port is in [`crate::storage`].

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::{Conversation, Event};
use crate::intent::Classification;
use crate::model::Object;

/// The extension points a plugin can serve; one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginWorld {
    Condition,
    Action,
    Tool,
    StateType,
    Intent,
}

impl PluginWorld {
    pub const ALL: [PluginWorld; 5] = [
        PluginWorld::Condition,
        PluginWorld::Action,
        PluginWorld::Tool,
        PluginWorld::StateType,
        PluginWorld::Intent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PluginWorld::Condition => "condition",
            PluginWorld::Action => "action",
            PluginWorld::Tool => "tool",
            PluginWorld::StateType => "state-type",
            PluginWorld::Intent => "intent",
        }
    }
}

impl std::str::FromStr for PluginWorld {
    type Err = String;

    fn from_str(s: &str) -> Result<PluginWorld, String> {
        PluginWorld::ALL
            .into_iter()
            .find(|world| world.as_str() == s)
            .ok_or_else(|| {
                format!("unknown plugin world \"{s}\"; worlds are condition, action, tool, state-type, intent")
            })
    }
}

impl std::fmt::Display for PluginWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a plugin call failed. The machine routes every one of these (error
/// transitions, recovery state); none of them stops the engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin} is not installed for this tenant")]
    NotFound { plugin: String },
    #[error("plugin {plugin} did not answer within {timeout_ms} ms")]
    Timeout { plugin: String, timeout_ms: u64 },
    #[error("plugin {plugin} exceeded its {limit} limit")]
    LimitExceeded { plugin: String, limit: String },
    #[error("plugin {plugin} crashed: {message}")]
    Trap { plugin: String, message: String },
    /// The plugin ran and returned an error of its own.
    #[error("plugin {plugin} failed: {message}")]
    Failed { plugin: String, message: String },
    /// Not called: its circuit breaker is open, or it is disabled.
    #[error("plugin {plugin} is unavailable: {reason}")]
    Unavailable { plugin: String, reason: String },
    /// Not called: the engine has no room for another instance right now.
    /// Back-pressure, not a fault of the plugin.
    #[error("plugin {plugin} was not called: {reason}")]
    Busy { plugin: String, reason: String },
    /// Not called: the call breaks the plugin's contract (arguments against
    /// a tool's input schema) or its result did.
    #[error("plugin {plugin}: {reason}")]
    Rejected { plugin: String, reason: String },
}

impl PluginError {
    /// A short name of what went wrong, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::NotFound { .. } => "not_found",
            PluginError::Timeout { .. } => "timeout",
            PluginError::LimitExceeded { .. } => "limit",
            PluginError::Trap { .. } => "trap",
            PluginError::Failed { .. } => "failed",
            PluginError::Unavailable { .. } => "unavailable",
            PluginError::Busy { .. } => "busy",
            PluginError::Rejected { .. } => "rejected",
        }
    }

    /// Whether trying again may succeed. Limits and missing plugins fail the
    /// same way every time; an open circuit means "stop calling".
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PluginError::Timeout { .. }
                | PluginError::Trap { .. }
                | PluginError::Failed { .. }
                | PluginError::Busy { .. }
        )
    }
}

/// One call into a tenant's plugin.
#[derive(Debug, Clone, Copy)]
pub struct PluginCall<'a> {
    pub tenant_id: &'a str,
    pub plugin: &'a str,
    /// The version the conversation is pinned to; `None` means the
    /// tenant's active version.
    pub version: Option<&'a str>,
    /// Arguments from the flow (condition and action args, tool request,
    /// state config).
    pub args: &'a Value,
    pub conversation: &'a Conversation,
    pub event: Option<&'a Event>,
    /// Wall-clock budget for this call.
    pub timeout: Duration,
}

/// What an action plugin (or a state-type plugin) asks the machine to change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionOutput {
    /// Variables to set (`null` removes one); `slots.<name>` keys set slots.
    #[serde(default)]
    pub updates: Object,
    /// Messages for the user.
    #[serde(default)]
    pub messages: Vec<String>,
}

/// What a tenant state type did with an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateOutput {
    #[serde(default)]
    pub updates: Object,
    #[serde(default)]
    pub messages: Vec<String>,
    /// A word the flow's transitions can test as `state.outcome`.
    #[serde(default)]
    pub outcome: Option<String>,
    /// Stay in this state and hand it the next message too.
    #[serde(default)]
    pub wait_for_input: bool,
}

/// Runs tenant plugins. Implemented by mcp-wasm with wasmtime; tests use fakes.
///
/// Every method names the tenant and plugin, so an implementation can never
/// resolve one tenant's plugin for another.
pub trait PluginRuntime: Send + Sync {
    /// A `plugin` transition condition.
    fn evaluate_condition(
        &self,
        call: PluginCall<'_>,
    ) -> impl Future<Output = Result<bool, PluginError>> + Send;

    /// A `plugin` action.
    fn run_action(
        &self,
        call: PluginCall<'_>,
    ) -> impl Future<Output = Result<ActionOutput, PluginError>> + Send;

    /// A tool (integration); returns the tool's JSON result.
    fn call_tool(
        &self,
        call: PluginCall<'_>,
    ) -> impl Future<Output = Result<Value, PluginError>> + Send;

    /// A tenant state type; `args` is the state's config.
    fn execute_state(
        &self,
        call: PluginCall<'_>,
    ) -> impl Future<Output = Result<StateOutput, PluginError>> + Send;

    /// An intent classifier; `event` carries the text.
    fn classify_intent(
        &self,
        call: PluginCall<'_>,
    ) -> impl Future<Output = Result<Classification, PluginError>> + Send;
}

/// Time, as the machine sees it.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Completes after `duration` (integration timeouts and retry backoff).
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// A runtime for flows that use no plugins: every call is `NotFound`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPlugins;

impl PluginRuntime for NoPlugins {
    async fn evaluate_condition(&self, call: PluginCall<'_>) -> Result<bool, PluginError> {
        Err(not_found(call))
    }
    async fn run_action(&self, call: PluginCall<'_>) -> Result<ActionOutput, PluginError> {
        Err(not_found(call))
    }
    async fn call_tool(&self, call: PluginCall<'_>) -> Result<Value, PluginError> {
        Err(not_found(call))
    }
    async fn execute_state(&self, call: PluginCall<'_>) -> Result<StateOutput, PluginError> {
        Err(not_found(call))
    }
    async fn classify_intent(&self, call: PluginCall<'_>) -> Result<Classification, PluginError> {
        Err(not_found(call))
    }
}

fn not_found(call: PluginCall<'_>) -> PluginError {
    PluginError::NotFound {
        plugin: call.plugin.to_owned(),
    }
}

//! [`Turn`]: one turn in progress, which every part of the machine works on,
//! and the few helpers they all share.

use std::time::Duration;

use serde_json::Value;

use crate::context::{Conversation, Event, Interruption};
use crate::flow::Flow;
use crate::model::Rich;
use crate::ports::{Clock, PluginCall, PluginRuntime};

use super::step_result::{ActionRecord, Message, StepResult, TurnError, TurnErrorKind};

/// The timeout of a call the flow sets none for (conditions, actions, state
/// types, intents): the tenant's limit for the plugin's world decides, and
/// the turn's own deadline bounds the whole.
pub(super) const PLUGINS_OWN_LIMIT: u64 = u64::MAX;

/// The turn's message, handed on from the state that took it to the state
/// its transition entered, which reads it as if it had been waiting there.
#[derive(Clone, Copy)]
pub(super) struct Carry {
    /// A state of this turn already answered the message (a greeting
    /// spoke): a target that cannot make sense of it stays quiet.
    pub(super) answered: bool,
}

/// What a state did with a message.
pub(super) enum Handled {
    /// Try the state's transitions; `failed` if its own logic failed.
    Evaluate {
        failed: bool,
    },
    Stay,
    Goto(String),
}

/// One turn in progress: what it runs against and what it has done so far.
pub(super) struct Turn<'a, R, C> {
    pub(super) plugins: &'a R,
    pub(super) clock: &'a C,
    pub(super) flow: &'a Flow,
    pub(super) event: &'a Event,
    /// The message has not been handed to a state yet. States entered
    /// before it is hold their prompts: the message may answer them.
    pub(super) input_pending: bool,
    /// The message goes on to the state being entered.
    pub(super) carry: Option<Carry>,
    /// The state being entered is one a digression interrupted: the
    /// conversation goes back to its question instead.
    pub(super) resuming: Option<Interruption>,
    pub(super) steps: u32,
    /// The loop guard tripped: nothing more happens this turn.
    pub(super) halted: bool,
    pub(super) result: StepResult,
}

impl<'a, R: PluginRuntime, C: Clock> Turn<'a, R, C> {
    /// The flow's `recovery_state`, where a turn goes when a state fails.
    pub(super) fn recovery(&self) -> Option<&'a str> {
        self.flow.definition().recovery_state.as_deref()
    }

    /// A call to `plugin` for this conversation, at the version it is pinned
    /// to. `timeout_ms` is what the flow asked for; the plugin host keeps the
    /// smaller of it and the tenant's limit for the plugin's world.
    pub(super) fn call<'c>(
        &self,
        c: &'c Conversation,
        plugin: &'c str,
        args: &'c Value,
        event: Option<&'c Event>,
        timeout_ms: u64,
    ) -> PluginCall<'c> {
        PluginCall {
            tenant_id: &c.tenant_id,
            plugin,
            version: c.plugin_versions.get(plugin).map(String::as_str),
            args,
            conversation: c,
            event,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// Sends text a plugin returned, as a plain message of `state`.
    pub(super) fn push_text(&mut self, state: &str, text: String) {
        self.result.messages.push(Message {
            text,
            response_type: "text".into(),
            state: state.to_owned(),
            delay_ms: None,
            typing_indicator: true,
            rich: Rich::default(),
        });
    }

    /// Lists something the turn did in `state` among its actions.
    pub(super) fn record(&mut self, state: &str, kind: &str, target: &str) {
        self.result.actions.push(ActionRecord {
            kind: kind.to_owned(),
            target: target.to_owned(),
            state: state.to_owned(),
            ok: true,
            error: None,
        });
    }

    /// Records (and logs) a problem; the turn carries on.
    pub(super) fn error(&mut self, kind: TurnErrorKind, state: &str, message: String) {
        tracing::warn!(state, ?kind, %message, "turn error");
        self.result.errors.push(TurnError {
            kind,
            state: state.to_owned(),
            message,
        });
    }
}

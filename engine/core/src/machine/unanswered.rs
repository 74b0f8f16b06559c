//! No-match and no-input: what a state does, the first, second, third time
//! in a row, with a message it can do nothing with or with silence.

use crate::context::Conversation;
use crate::model::{EventHandler, State};
use crate::ports::{Clock, PluginRuntime};

use super::turn::Turn;

/// Which counter an occurrence goes to.
#[derive(Clone, Copy)]
pub(super) enum Miss {
    NoMatch,
    NoInput,
}

impl Miss {
    fn as_str(self) -> &'static str {
        match self {
            Miss::NoMatch => "no_match",
            Miss::NoInput => "no_input",
        }
    }
}

impl<R: PluginRuntime, C: Clock> Turn<'_, R, C> {
    /// Counts one more occurrence in the current state and runs its
    /// handler: the state's own, else the flow's. Without any, the state
    /// stays quiet, as it always did.
    pub(super) async fn missed(&mut self, c: &mut Conversation, kind: Miss) {
        let flow = self.flow;
        let name = c.current_state.clone();
        let Some(state) = flow.state(&name) else {
            return;
        };
        let handlers = handlers(flow.definition(), state, kind);
        let count = match kind {
            Miss::NoMatch => &mut c.unanswered.no_match,
            Miss::NoInput => &mut c.unanswered.no_input,
        };
        *count += 1;
        let n = *count as usize;
        if let Miss::NoInput = kind {
            c.unanswered.quiet_since_ms = self.clock.now_ms();
        }
        // Past the last handler, the last one answers again.
        let Some(handler) = handlers.get(n.min(handlers.len()).wrapping_sub(1)) else {
            tracing::debug!(state = %name, kind = kind.as_str(), "nothing handles it; staying");
            return;
        };
        self.record(&name, kind.as_str(), &n.to_string());
        if let Some(response) = &handler.response {
            self.say(c, &name, response, "text");
        }
        match &handler.target_state {
            Some(target) => {
                self.run_actions(c, &name, &state.exit_actions).await;
                self.enter(c, target.clone()).await;
            }
            None if handler.reprompt => self.reprompt(c),
            None => {}
        }
    }

    /// When the current state's next no-input handler is due, if it has one
    /// left to run.
    pub(super) fn no_input_due_at(&self, c: &Conversation) -> Option<i64> {
        no_input_deadline(
            self.flow.definition(),
            self.flow.state(&c.current_state)?,
            c,
        )
    }
}

/// The handlers of `kind` that apply in `state`.
fn handlers<'f>(
    definition: &'f crate::model::FlowDefinition,
    state: &'f State,
    kind: Miss,
) -> &'f [EventHandler] {
    match kind {
        Miss::NoMatch if !state.no_match.is_empty() => &state.no_match,
        Miss::NoMatch => &definition.no_match,
        Miss::NoInput => state
            .no_input
            .as_ref()
            .or(definition.no_input.as_ref())
            .map_or(&[], |n| &n.handlers),
    }
}

/// When silence in `state` next runs a no-input handler: `timeout_ms`
/// after the user last spoke or was last reminded, while handlers remain
/// (silence is answered once per handler, never forever).
pub(super) fn no_input_deadline(
    definition: &crate::model::FlowDefinition,
    state: &State,
    c: &Conversation,
) -> Option<i64> {
    let no_input = state.no_input.as_ref().or(definition.no_input.as_ref())?;
    if c.unanswered.no_input as usize >= no_input.handlers.len() {
        return None;
    }
    Some(
        c.unanswered
            .quiet_since_ms
            .saturating_add(no_input.timeout_ms as i64),
    )
}

//! [`Machine`], which runs one turn of a conversation, and the order a
//! turn goes in.

use serde_json::Value;

use crate::context::{Conversation, ConversationStatus, Event, EventKind, Handoff};
use crate::flow::Flow;
use crate::model::Object;
use crate::ports::{Clock, PluginRuntime};

use super::step_result::{StepResult, TurnErrorKind};
use super::transitions::next_deadline;
use super::turn::Turn;
use super::unanswered::Miss;

/// Runs flows, calling plugins through `R` and reading time from `C`.
#[derive(Debug, Clone)]
pub struct Machine<R, C> {
    plugins: R,
    clock: C,
}

impl<R: PluginRuntime, C: Clock> Machine<R, C> {
    pub fn new(plugins: R, clock: C) -> Self {
        Machine { plugins, clock }
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Enters the first state of a conversation that has not entered its
    /// flow yet (new, or moved by `trigger_flow`) and runs on until the
    /// machine needs input, sending the prompts on the way. No message is
    /// handled and the turn count does not change: this is part of the turn
    /// that led here.
    pub async fn enter(&self, flow: &Flow, conversation: &mut Conversation) -> StepResult {
        let turn = conversation.turn;
        // A timeout event that is not due yet (the state is entered now)
        // hands nothing to any state.
        let result = self.step(flow, conversation, &Event::timeout()).await;
        conversation.turn = turn;
        result
    }

    /// Runs one turn: `event` against `conversation`, which is updated in
    /// place. Never fails; problems are in [`StepResult::errors`].
    pub async fn step(
        &self,
        flow: &Flow,
        conversation: &mut Conversation,
        event: &Event,
    ) -> StepResult {
        let before = (conversation.slots.clone(), conversation.variables.clone());
        let mut turn = Turn {
            plugins: &self.plugins,
            clock: &self.clock,
            flow,
            event,
            input_pending: event.kind == EventKind::Message,
            carry: None,
            resuming: None,
            steps: 0,
            halted: false,
            result: StepResult::default(),
        };
        conversation.turn += 1;
        turn.run(conversation).await;

        let mut result = turn.result;
        result.state = conversation.current_state.clone();
        result.handoff = conversation.handoff.clone();
        result.ended = conversation.status == ConversationStatus::Ended;
        result.wake_at_ms = if result.ended {
            None
        } else {
            next_deadline(flow, conversation)
        };
        result.updates = diff("slots", &before.0, &conversation.slots);
        result
            .updates
            .extend(diff("variables", &before.1, &conversation.variables));
        conversation.error_count += result.errors.len() as u32;
        conversation.updated_at_ms = self.clock.now_ms();
        result
    }
}

impl<R: PluginRuntime, C: Clock> Turn<'_, R, C> {
    /// A whole turn: (re)start, then a deadline that passed, then the message
    /// to a global handler or the current state.
    async fn run(&mut self, c: &mut Conversation) {
        if self.input_pending && self.event.hints.bypass_automation && c.handoff.is_none() {
            c.handoff = Some(Handoff {
                reason: "bypass_automation".into(),
                state: c.current_state.clone(),
                since_ms: self.clock.now_ms(),
            });
        }
        if c.handoff.is_some() {
            // A person has the conversation: the flow does not run.
            return;
        }
        if c.status == ConversationStatus::Ended {
            c.restart(self.flow);
        }
        if c.status == ConversationStatus::New {
            c.status = ConversationStatus::Active;
            // A new conversation starts at the initial state; one moved here
            // by another flow's `trigger_flow` at the state it asked for.
            let first = match self.flow.state(&c.current_state) {
                Some(_) => std::mem::take(&mut c.current_state),
                None => {
                    c.current_state.clear();
                    self.flow.definition().initial_state.clone()
                }
            };
            self.enter(c, first).await;
        } else if self.flow.state(&c.current_state).is_none() {
            let missing = c.current_state.clone();
            self.error(
                TurnErrorKind::StateNotFound,
                &missing,
                format!(
                    "state \"{missing}\" is not in flow {} {}",
                    c.flow_id, c.flow_version
                ),
            );
            let to = self
                .recovery()
                .unwrap_or(&self.flow.definition().initial_state);
            self.enter(c, to.to_owned()).await;
        }
        // An expired deadline happened before this event, so it goes first:
        // a timeout transition, else the silence of a no-input handler.
        if c.status == ConversationStatus::Active && !self.halted {
            if self.due_timeout(c).is_some() {
                self.fire_timeout(c).await;
            } else if self
                .no_input_due_at(c)
                .is_some_and(|at| at <= self.clock.now_ms())
            {
                self.missed(c, Miss::NoInput).await;
            }
        }
        if self.input_pending && !self.halted && c.status == ConversationStatus::Active {
            self.input_pending = false;
            c.unanswered.no_input = 0;
            c.unanswered.quiet_since_ms = self.clock.now_ms();
            if !self.global_handlers(c).await {
                self.handle_input(c).await;
            }
        }
    }
}

/// What changed from `before` to `after`, as `<prefix>.<name>`; `null` for
/// a removed one.
fn diff(prefix: &str, before: &Object, after: &Object) -> Object {
    let mut changes = Object::new();
    for (key, value) in after {
        if before.get(key) != Some(value) {
            changes.insert(format!("{prefix}.{key}"), value.clone());
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            changes.insert(format!("{prefix}.{key}"), Value::Null);
        }
    }
    changes
}

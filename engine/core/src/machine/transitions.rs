//! Picking the transition to take: conditions in priority order, and the
//! deadlines of `timeout` transitions.

use super::turn::PLUGINS_OWN_LIMIT;
use serde_json::Value;

use crate::context::{Conversation, ConversationStatus};
use crate::expr::Scope;
use crate::flow::Flow;
use crate::model::{State, StateConfig, Transition, TransitionCondition};
use crate::ports::{Clock, PluginRuntime};

use super::slot_filling::missing_slot;
use super::step_result::TurnErrorKind;
use super::turn::Turn;
use super::unanswered::no_input_deadline;

/// Why transitions are being tried.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Trigger {
    /// The state was just entered.
    Entry,
    /// A message was handed to the state.
    Input,
    /// A deadline of the state passed.
    Timeout,
}

impl<R: PluginRuntime, C: Clock> Turn<'_, R, C> {
    /// The first transition that matches, in priority order.
    pub(super) async fn pick(
        &mut self,
        c: &Conversation,
        name: &str,
        state: &State,
        trigger: Trigger,
    ) -> Option<usize> {
        let flow = self.flow;
        for &i in &flow.order[name] {
            let t = &state.transitions[i];
            match self.matches(c, name, state, t, trigger).await {
                Ok(true) => return Some(i),
                Ok(false) => {}
                Err(message) => self.error(
                    TurnErrorKind::Transition,
                    name,
                    format!("transition {i} ({}): {message}", t.condition.as_str()),
                ),
            }
        }
        None
    }

    async fn matches(
        &mut self,
        c: &Conversation,
        name: &str,
        state: &State,
        t: &Transition,
        trigger: Trigger,
    ) -> Result<bool, String> {
        use TransitionCondition as When;
        let value = t.condition_value.as_deref().filter(|v| !v.is_empty());
        Ok(match t.condition {
            When::AnyInput => trigger == Trigger::Input,
            When::Payload => {
                trigger == Trigger::Input
                    && self
                        .event
                        .payload()
                        .is_some_and(|payload| value.is_none_or(|value| value == payload))
            }
            When::LocationShared => {
                trigger == Trigger::Input && self.event.data.contains_key("location")
            }
            When::FormSubmitted => {
                trigger == Trigger::Input && self.event.data.contains_key("form")
            }
            When::Default => true,
            When::Timeout => {
                trigger == Trigger::Timeout
                    && timeout_ms(state, t).is_some_and(|ms| {
                        c.state_entered_at_ms.saturating_add(ms as i64) <= self.clock.now_ms()
                    })
            }
            When::IntentMatch => c
                .intent
                .as_ref()
                .and_then(|i| i.name.as_deref())
                .is_some_and(|intent| Some(intent) == value),
            When::LowConfidence => c.intent.as_ref().is_some_and(|i| i.low_confidence),
            When::SlotFilled => match (value, &state.config) {
                (Some(slot), _) => c.slots.get(slot).is_some_and(|v| !v.is_null()),
                (None, StateConfig::SlotFilling(config)) => missing_slot(c, config).is_none(),
                (None, _) => false,
            },
            When::IntegrationSuccess | When::IntegrationError => {
                let id = match (value, &state.config) {
                    (Some(id), _) => id,
                    (None, StateConfig::Integration(config)) => config.integration_id.as_str(),
                    (None, _) => return Ok(false),
                };
                let success = c
                    .integration_results
                    .get(id)
                    .and_then(|r| r.get("success"))
                    .and_then(Value::as_bool);
                match success {
                    Some(success) => success == (t.condition == When::IntegrationSuccess),
                    None => false,
                }
            }
            When::Expression => {
                let source = t.expression.as_deref().unwrap_or_default();
                let event = (trigger != Trigger::Entry).then_some(self.event);
                self.flow.expr(source).eval_bool(&Scope::new(c, event))?
            }
            When::Plugin => {
                let plugin = t.plugin.as_deref().unwrap_or_default();
                self.result.plugin_calls += 1;
                let event = (trigger != Trigger::Entry).then_some(self.event);
                let call = self.call(c, plugin, &t.args, event, PLUGINS_OWN_LIMIT);
                let _ = name;
                self.plugins
                    .evaluate_condition(call)
                    .await
                    .map_err(|e| e.to_string())?
            }
        })
    }

    /// Exit actions of the state left, then the transition's; returns the target.
    pub(super) async fn take(
        &mut self,
        c: &mut Conversation,
        name: &str,
        state: &State,
        i: usize,
    ) -> String {
        let transition = &state.transitions[i];
        self.run_actions(c, name, &state.exit_actions).await;
        self.run_actions(c, name, &transition.actions).await;
        if transition.resume
            && let Some(back) = c.interrupted.pop()
        {
            let state = back.state.clone();
            self.resuming = Some(back);
            return state;
        }
        transition.target_state.clone()
    }

    /// The current state's first `timeout` transition whose deadline passed.
    pub(super) fn due_timeout(&self, c: &Conversation) -> Option<usize> {
        let state = self.flow.state(&c.current_state)?;
        let now = self.clock.now_ms();
        self.flow.order[&c.current_state]
            .iter()
            .copied()
            .find(|&i| {
                timeout_ms(state, &state.transitions[i])
                    .is_some_and(|ms| c.state_entered_at_ms.saturating_add(ms as i64) <= now)
            })
    }

    pub(super) async fn fire_timeout(&mut self, c: &mut Conversation) {
        let flow = self.flow;
        let name = c.current_state.clone();
        let Some(state) = flow.state(&name) else {
            return;
        };
        if let Some(i) = self.pick(c, &name, state, Trigger::Timeout).await {
            let target = self.take(c, &name, state, i).await;
            self.enter(c, target).await;
        }
    }
}

/// A `timeout` transition's delay: its own condition_value, else the wait
/// state's timeout_ms.
fn timeout_ms(state: &State, t: &Transition) -> Option<u64> {
    if t.condition != TransitionCondition::Timeout {
        return None;
    }
    t.condition_value
        .as_deref()
        .and_then(|v| v.trim().parse().ok())
        .or(match &state.config {
            StateConfig::Wait(config) => config.timeout_ms,
            _ => None,
        })
}

/// When the conversation's current state's earliest `timeout` transition
/// or next no-input handler is due (Unix ms); `None` if it has neither, or
/// the conversation is not waiting in a state.
pub fn next_deadline(flow: &Flow, c: &Conversation) -> Option<i64> {
    if c.status != ConversationStatus::Active || c.handoff.is_some() {
        return None;
    }
    let state = flow.state(&c.current_state)?;
    state
        .transitions
        .iter()
        .filter_map(|t| timeout_ms(state, t))
        .map(|ms| c.state_entered_at_ms.saturating_add(ms as i64))
        .chain(no_input_deadline(flow.definition(), state, c))
        .min()
}

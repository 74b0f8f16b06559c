//! Global handlers: phrases, patterns or intents that take over from any
//! state (help, restart, ...), and saying again what the state asked.

use crate::context::{Conversation, Interruption};
use crate::flow::Flow;
use crate::model::{IntentConfig, StateConfig};
use crate::ports::{Clock, PluginRuntime};

use super::slot_filling::missing_slot;
use super::turn::Turn;

/// Digressions within digressions a conversation remembers the way back
/// from; past it the oldest is forgotten.
const MAX_INTERRUPTIONS: usize = 5;

/// Whether `text` is one of `phrases` (ignoring case and punctuation),
/// matches one of `patterns`, or is `intent` to the built-in matcher with
/// confidence of at least 0.7.
pub(super) fn says(
    flow: &Flow,
    text: &str,
    phrases: &[String],
    patterns: &[String],
    intent: Option<&String>,
) -> bool {
    let normalized = crate::intent::normalize(text);
    phrases
        .iter()
        .any(|p| crate::intent::normalize(p) == normalized)
        || patterns.iter().any(|p| flow.regexes[p].is_match(text))
        || intent.is_some_and(|intent| {
            flow.intents
                .classify(text, std::slice::from_ref(intent))
                .intents
                .first()
                .is_some_and(|s| s.confidence >= 0.7)
        })
}

impl<R: PluginRuntime, C: Clock> Turn<'_, R, C> {
    /// Runs the first global handler the message triggers; true if one did.
    pub(super) async fn global_handlers(&mut self, c: &mut Conversation) -> bool {
        let flow = self.flow;
        let text = self.event.text.as_str();
        let found = flow
            .definition()
            .global_handlers
            .iter()
            .find(|(_, h)| says(flow, text, &h.phrases, &h.patterns, h.intent.as_ref()));
        let Some((handler_name, handler)) = found else {
            return false;
        };
        let current = c.current_state.clone();
        self.record(&current, "global_handler", handler_name);
        // Only a question can be come back to: a form's, or a wait
        // state's. From anywhere else a digression is a plain route.
        let asking = flow.state(&current).is_some_and(|s| {
            matches!(s.config, StateConfig::SlotFilling(_) | StateConfig::Wait(_))
        });
        if handler.interrupts
            && asking
            && let Some(target) = &handler.target_state
            && *target != current
        {
            c.interrupted.push(Interruption {
                state: current.clone(),
                resume_message: handler.resume_message.clone(),
            });
            if c.interrupted.len() > MAX_INTERRUPTIONS {
                c.interrupted.remove(0);
            }
        }
        if handler.reset {
            c.interrupted.clear();
            c.slots.clear();
            c.variables = flow.definition().variables.clone();
            c.intent = None;
        }
        self.run_actions(c, &current, &handler.actions).await;
        if let Some(response) = &handler.response {
            self.say(c, &current, response, "text");
        }
        match &handler.target_state {
            Some(target) => {
                if let Some(state) = flow.state(&current) {
                    self.run_actions(c, &current, &state.exit_actions).await;
                }
                self.enter(c, target.clone()).await;
            }
            None if handler.reprompt => self.reprompt(c),
            None => {}
        }
        true
    }

    /// Says again what the current state asks, after a global handler or
    /// a no-match or no-input handler.
    pub(super) fn reprompt(&mut self, c: &mut Conversation) {
        let flow = self.flow;
        let name = c.current_state.clone();
        let Some(state) = flow.state(&name) else {
            return;
        };
        match &state.config {
            StateConfig::Response(config) => self.respond(c, &name, config),
            StateConfig::Intent(IntentConfig {
                prompt: Some(prompt),
                ..
            }) => self.prompt(c, &name, prompt),
            StateConfig::Wait(config) => {
                if let Some(prompt) = &config.prompt {
                    self.prompt(c, &name, prompt);
                }
            }
            StateConfig::SlotFilling(config) => {
                if let Some(slot) = missing_slot(c, config) {
                    self.ask(c, &name, config, &slot, None);
                }
            }
            _ => {}
        }
    }
}

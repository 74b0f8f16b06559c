//! Global handlers: phrases, patterns or intents that take over from any
//! state (help, restart, ...), and saying again what the state asked.

use crate::context::Conversation;
use crate::model::{IntentConfig, StateConfig};
use crate::ports::{Clock, PluginRuntime};

use super::slot_filling::missing_slot;
use super::step_result::ActionRecord;
use super::turn::Turn;

impl<R: PluginRuntime, C: Clock> Turn<'_, R, C> {
    /// Runs the first global handler the message triggers; true if one did.
    pub(super) async fn global_handlers(&mut self, c: &mut Conversation) -> bool {
        let flow = self.flow;
        let text = self.event.text.as_str();
        let normalized = crate::intent::normalize(text);
        let found = flow.definition().global_handlers.iter().find(|(_, h)| {
            h.phrases
                .iter()
                .any(|p| crate::intent::normalize(p) == normalized)
                || h.patterns.iter().any(|p| flow.regexes[p].is_match(text))
                || h.intent.as_ref().is_some_and(|intent| {
                    flow.intents
                        .classify(text, std::slice::from_ref(intent))
                        .first()
                        .is_some_and(|s| s.confidence >= 0.7)
                })
        });
        let Some((handler_name, handler)) = found else {
            return false;
        };
        let current = c.current_state.clone();
        self.result.actions.push(ActionRecord {
            kind: "global_handler".into(),
            target: handler_name.clone(),
            state: current.clone(),
            ok: true,
            error: None,
        });
        if handler.reset {
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
            }) => self.say(c, &name, prompt, "text"),
            StateConfig::Wait(config) => {
                if let Some(prompt) = &config.prompt {
                    self.say(c, &name, prompt, "text");
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

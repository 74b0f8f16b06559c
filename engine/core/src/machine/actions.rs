//! Running a state's or transition's actions, each recorded whether or not
//! it worked.

use super::turn::PLUGINS_OWN_LIMIT;
use crate::context::Conversation;
use crate::expr::Scope;
use crate::model::{Action, Object, RetryConfig};
use crate::ports::{Clock, PluginRuntime};

use super::integrations::IntegrationCall;
use super::step_result::{ActionRecord, FlowTrigger, LoggedEvent, Message, TurnErrorKind};
use super::turn::Turn;
use super::variables::{apply_updates, assign};

impl<R: PluginRuntime, C: Clock> Turn<'_, R, C> {
    /// Runs actions in order; a failing one is recorded and the rest still run.
    pub(super) async fn run_actions(
        &mut self,
        c: &mut Conversation,
        state: &str,
        actions: &[Action],
    ) {
        for action in actions {
            let (target, outcome) = self.run_action(c, state, action).await;
            if let Err(message) = &outcome {
                self.error(
                    TurnErrorKind::Action,
                    state,
                    format!("{} {target}: {message}", action.type_name()),
                );
            }
            self.result.actions.push(ActionRecord {
                kind: action.type_name().to_owned(),
                target,
                state: state.to_owned(),
                ok: outcome.is_ok(),
                error: outcome.err(),
            });
        }
    }

    async fn run_action(
        &mut self,
        c: &mut Conversation,
        state: &str,
        action: &Action,
    ) -> (String, Result<(), String>) {
        match action {
            Action::SendMessage {
                message,
                response_type,
                rich,
            } => {
                let templates = &self.flow.templates;
                let rendered = templates
                    .render(message, c, Some(self.event))
                    .and_then(|text| {
                        let rich = rich.render(|s| templates.render(s, c, Some(self.event)))?;
                        Ok((text, rich))
                    });
                let outcome = rendered.map(|(text, rich)| {
                    self.result.messages.push(Message {
                        text,
                        response_type: response_type.clone(),
                        state: state.to_owned(),
                        delay_ms: None,
                        typing_indicator: true,
                        rich,
                    })
                });
                ("message".into(), outcome)
            }
            Action::SetVariable {
                name,
                value,
                expression,
            } => {
                let value = match (value, expression) {
                    (Some(value), _) => Ok(value.clone()),
                    (None, Some(source)) => self
                        .flow
                        .expr(source)
                        .eval(&Scope::new(c, Some(self.event))),
                    (None, None) => Err("no value".into()),
                };
                let outcome = value.map(|value| assign(c, name, value));
                (name.clone(), outcome)
            }
            Action::ClearVariable { name } => {
                match name.as_str() {
                    "slots.*" => c.slots.clear(),
                    _ => match name.strip_prefix("slots.") {
                        Some(slot) => {
                            c.slots.shift_remove(slot);
                        }
                        None => {
                            c.variables.shift_remove(name);
                        }
                    },
                }
                (name.clone(), Ok(()))
            }
            Action::CallIntegration {
                integration_id,
                request_mapping,
                response_mapping,
                timeout_ms,
            } => {
                let retry = RetryConfig {
                    max_attempts: 1,
                    backoff_ms: 0,
                };
                let call = IntegrationCall {
                    integration_id,
                    defaults: Object::new(),
                    request_mapping,
                    response_mapping,
                    timeout_ms: *timeout_ms,
                    retry: &retry,
                };
                let outcome = self.integrate(c, state, call).await;
                (integration_id.clone(), outcome)
            }
            Action::LogEvent { event, data } => {
                self.result.events.push(LoggedEvent {
                    event: event.clone(),
                    state: state.to_owned(),
                    data: data.clone(),
                });
                (event.clone(), Ok(()))
            }
            Action::TriggerFlow {
                flow_id,
                target_state,
            } => {
                self.result.trigger_flow = Some(FlowTrigger {
                    flow_id: flow_id.clone(),
                    target_state: target_state.clone(),
                });
                (flow_id.clone(), Ok(()))
            }
            Action::Plugin { plugin, args } => {
                self.result.plugin_calls += 1;
                let call = self.call(c, plugin, args, Some(self.event), PLUGINS_OWN_LIMIT);
                let outcome = match self.plugins.run_action(call).await {
                    Ok(output) => {
                        apply_updates(c, output.updates);
                        for text in output.messages {
                            self.push_text(state, text);
                        }
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                };
                (plugin.clone(), outcome)
            }
        }
    }
}

//! Entering states and handing them messages: what each state type does,
//! and following transitions through states that need no input.

use super::turn::PLUGINS_OWN_LIMIT;
use serde_json::{Value, json};

use crate::context::{
    Conversation, ConversationStatus, Handoff, IntentResult, Interruption, SlotProgress, Unanswered,
};
use crate::intent::{Classification, IntentScore};
use crate::model::{
    CLARIFY_PROMPT, IntentConfig, Object, Prompt, QuickReply, ResponseConfig, Rich, State,
    StateConfig,
};
use crate::ports::{Clock, PluginRuntime};

use super::integrations::IntegrationCall;
use super::slot_filling::missing_slot;
use super::step_result::{Message, TurnErrorKind};
use super::transitions::Trigger;
use super::turn::{Carry, Handled, Turn};
use super::unanswered::Miss;
use super::variables::apply_updates;

/// What a state did when entered.
enum Arrival {
    /// Hand control back to the user.
    Wait,
    /// Try the state's transitions now; `failed` if its own logic failed,
    /// `input` if it was handed the turn's message.
    Evaluate { failed: bool, input: bool },
    /// The conversation is over.
    End,
}

impl<R: PluginRuntime, C: Clock> Turn<'_, R, C> {
    /// Enters `name`, then keeps going through states that need no input.
    pub(super) async fn enter(&mut self, c: &mut Conversation, mut name: String) {
        let flow = self.flow;
        loop {
            if self.halted {
                return;
            }
            let carried = self.carry.take();
            if let Some(back) = self.resuming.take()
                && flow.state(&back.state).is_some()
            {
                self.come_back(c, back);
                return;
            }
            self.steps += 1;
            if self.steps > flow.definition().settings.max_steps_per_turn {
                self.halted = true;
                let limit = flow.definition().settings.max_steps_per_turn;
                self.error(
                    TurnErrorKind::LoopGuard,
                    &name,
                    format!("stopped after entering {limit} states in one turn"),
                );
                return;
            }
            let Some(state) = flow.state(&name) else {
                self.error(
                    TurnErrorKind::StateNotFound,
                    &c.current_state.clone(),
                    format!("target state \"{name}\" is not in the flow"),
                );
                match self.recovery() {
                    Some(recovery) if recovery != name => {
                        name = recovery.to_owned();
                        continue;
                    }
                    _ => return,
                }
            };
            self.move_to(c, &name);
            self.run_actions(c, &name, &state.entry_actions).await;
            let next = match self.arrive(c, &name, state, carried).await {
                Arrival::Wait => return,
                Arrival::End => {
                    c.status = ConversationStatus::Ended;
                    return;
                }
                Arrival::Evaluate { failed, input } => {
                    let trigger = if input {
                        Trigger::Input
                    } else {
                        Trigger::Entry
                    };
                    match self.pick(c, &name, state, trigger).await {
                        Some(i) => {
                            let target = self.take(c, &name, state, i).await;
                            if input {
                                self.carry = self.hand_on(state, &target, false);
                            }
                            target
                        }
                        None => match self.recovery() {
                            Some(recovery) if failed && recovery != name => recovery.to_owned(),
                            _ => {
                                // The message handed on here led nowhere.
                                if input {
                                    Box::pin(self.missed(c, Miss::NoMatch)).await;
                                }
                                return;
                            }
                        },
                    }
                }
            };
            name = next;
        }
    }

    /// Back in a state a digression interrupted: no entry actions, the
    /// resume message, and the state's question again.
    fn come_back(&mut self, c: &mut Conversation, back: Interruption) {
        self.move_to(c, &back.state);
        if let Some(StateConfig::SlotFilling(_)) = self.flow.state(&back.state).map(|s| &s.config) {
            c.slot_filling = Some(SlotProgress {
                asking: None,
                retries: 0,
            });
        }
        if let Some(message) = &back.resume_message {
            self.say(c, &back.state, message, "text");
        }
        self.reprompt(c);
    }

    fn move_to(&mut self, c: &mut Conversation, name: &str) {
        let limit = self.flow.definition().settings.history_limit as usize;
        let previous = std::mem::replace(&mut c.current_state, name.to_owned());
        if !previous.is_empty() {
            c.previous_states.push(previous);
        }
        if c.previous_states.len() > limit {
            let excess = c.previous_states.len() - limit;
            c.previous_states.drain(..excess);
        }
        c.state_entered_at_ms = self.clock.now_ms();
        c.unanswered = Unanswered {
            quiet_since_ms: c.state_entered_at_ms,
            ..Unanswered::default()
        };
        c.slot_filling = None;
        c.state_outcome = None;
        c.clarifying.clear();
        self.result.visited.push(name.to_owned());
    }

    pub(super) async fn handle_input(&mut self, c: &mut Conversation) {
        let flow = self.flow;
        let name = c.current_state.clone();
        let Some(state) = flow.state(&name) else {
            return;
        };
        let handled = match &state.config {
            StateConfig::Intent(config) => {
                if self.classify(c, &name, config).await {
                    Handled::Evaluate { failed: false }
                } else {
                    Handled::Stay
                }
            }
            StateConfig::SlotFilling(config) => self.fill_slots(c, &name, config),
            StateConfig::Custom { plugin, config } => {
                match self.custom_state(c, &name, plugin, config, true).await {
                    Some(true) => Handled::Stay,
                    Some(false) => Handled::Evaluate { failed: false },
                    None => Handled::Evaluate { failed: true },
                }
            }
            _ => Handled::Evaluate { failed: false },
        };
        let target = match handled {
            Handled::Stay => {
                // The state took something from the message.
                c.unanswered.no_match = 0;
                return;
            }
            Handled::Goto(target) => {
                self.run_actions(c, &name, &state.exit_actions).await;
                target
            }
            Handled::Evaluate { failed } => {
                match self.pick(c, &name, state, Trigger::Input).await {
                    Some(i) => {
                        let target = self.take(c, &name, state, i).await;
                        // Entered this turn, the state has spoken already.
                        let answered = self.result.visited.contains(&name);
                        self.carry = self.hand_on(state, &target, answered);
                        target
                    }
                    None => match self.recovery() {
                        Some(recovery) if failed && recovery != name => {
                            self.run_actions(c, &name, &state.exit_actions).await;
                            recovery.to_owned()
                        }
                        _ => {
                            self.missed(c, Miss::NoMatch).await;
                            return;
                        }
                    },
                }
            }
        };
        self.enter(c, target).await;
    }

    /// Whether `to` is handed the message `from` took: a response that
    /// does not wait hands it to an intent or slot-filling state, an intent
    /// state to a slot-filling one. Nothing else passes a message on, so it
    /// reaches each of these at most once a turn.
    fn hand_on(&self, from: &State, to: &str, answered: bool) -> Option<Carry> {
        let to = self.flow.state(to)?;
        let handed = match (&from.config, &to.config) {
            (
                StateConfig::Response(config),
                StateConfig::Intent(_) | StateConfig::SlotFilling(_),
            ) => !config.wait_for_input,
            (StateConfig::Intent(_), StateConfig::SlotFilling(_)) => true,
            _ => false,
        };
        handed.then_some(Carry { answered })
    }

    async fn arrive(
        &mut self,
        c: &mut Conversation,
        name: &str,
        state: &State,
        carried: Option<Carry>,
    ) -> Arrival {
        match &state.config {
            StateConfig::Response(config) => {
                self.respond(c, name, config);
                Arrival::Evaluate {
                    failed: false,
                    input: false,
                }
            }
            StateConfig::Intent(config) if carried.is_some() => {
                let answered = carried.is_some_and(|carry| carry.answered);
                if !self.classify(c, name, config).await {
                    return Arrival::Wait;
                }
                let unclear = c.intent.as_ref().is_some_and(|i| i.low_confidence);
                if unclear && answered {
                    // The greeting that took the message asked what the
                    // user wants; its question stands as the answer.
                    Arrival::Wait
                } else {
                    Arrival::Evaluate {
                        failed: false,
                        input: true,
                    }
                }
            }
            StateConfig::Intent(config) => {
                if let Some(prompt) = &config.prompt
                    && !self.input_pending
                {
                    self.prompt(c, name, prompt);
                }
                Arrival::Wait
            }
            StateConfig::SlotFilling(config) => {
                c.slot_filling = Some(SlotProgress {
                    asking: None,
                    retries: 0,
                });
                if carried.is_some() {
                    self.read_slots(c, name, config, None);
                }
                match missing_slot(c, config) {
                    None => Arrival::Evaluate {
                        failed: false,
                        input: carried.is_some(),
                    },
                    Some(_) if self.input_pending => Arrival::Wait,
                    Some(slot) => {
                        self.ask(c, name, config, &slot, None);
                        Arrival::Wait
                    }
                }
            }
            StateConfig::Integration(config) => {
                let mut request = Object::new();
                if !config.endpoint.is_empty() {
                    request.insert("endpoint".into(), json!(config.endpoint));
                }
                request.insert("method".into(), json!(config.method.to_uppercase()));
                let call = IntegrationCall {
                    integration_id: &config.integration_id,
                    defaults: request,
                    request_mapping: &config.request_mapping,
                    response_mapping: &config.response_mapping,
                    timeout_ms: config.timeout_ms,
                    retry: &config.retry_config,
                };
                let failed = match self.integrate(c, name, call).await {
                    Ok(()) => false,
                    Err(message) => {
                        self.error(TurnErrorKind::Integration, name, message);
                        if let Some(template) = &config.error_handling.message {
                            self.say(c, name, template, "text");
                        }
                        true
                    }
                };
                Arrival::Evaluate {
                    failed,
                    input: false,
                }
            }
            StateConfig::Condition(_) => Arrival::Evaluate {
                failed: false,
                input: false,
            },
            StateConfig::Wait(config) => {
                if let Some(prompt) = &config.prompt
                    && !self.input_pending
                {
                    self.prompt(c, name, prompt);
                }
                Arrival::Wait
            }
            StateConfig::End(config) => {
                if let Some(message) = &config.message {
                    self.say(c, name, message, "text");
                }
                if let Some(reason) = &config.handoff {
                    c.handoff = Some(Handoff {
                        reason: reason.clone(),
                        state: name.to_owned(),
                        since_ms: self.clock.now_ms(),
                    });
                }
                Arrival::End
            }
            StateConfig::Custom { plugin, config } => {
                match self.custom_state(c, name, plugin, config, false).await {
                    Some(true) => Arrival::Wait,
                    Some(false) => Arrival::Evaluate {
                        failed: false,
                        input: false,
                    },
                    None => Arrival::Evaluate {
                        failed: true,
                        input: false,
                    },
                }
            }
        }
    }

    pub(super) fn respond(&mut self, c: &Conversation, name: &str, config: &ResponseConfig) {
        let templates = &config.response_templates;
        let key = [
            self.event.hints.expected_response_type.as_deref(),
            c.ab_variant.as_deref(),
            self.event.channel(),
            Some("default"),
        ]
        .into_iter()
        .flatten()
        .find(|key| templates.contains_key(*key));
        let Some(template) = key
            .and_then(|key| templates.get(key))
            .or_else(|| templates.values().next())
        else {
            return;
        };
        let templates = &self.flow.templates;
        let rendered = if config.personalization {
            templates
                .render(template, c, Some(self.event))
                .and_then(|text| {
                    let rich = config
                        .rich
                        .render(|s| templates.render(s, c, Some(self.event)))?;
                    Ok((text, rich))
                })
        } else {
            Ok((template.clone(), config.rich.clone()))
        };
        let (text, rich) = match rendered {
            Ok(rendered) => rendered,
            Err(e) => {
                self.error(TurnErrorKind::Template, name, e);
                return;
            }
        };
        self.result.messages.push(Message {
            text,
            response_type: config.response_type.clone(),
            state: name.to_owned(),
            delay_ms: config.delay_ms,
            typing_indicator: config.typing_indicator,
            rich,
        });
    }

    /// Sends what a state asks, with its rich content if any.
    pub(super) fn prompt(&mut self, c: &Conversation, name: &str, prompt: &Prompt) {
        let Some(rich) = prompt.rich() else {
            self.say(c, name, prompt.text(), "text");
            return;
        };
        let templates = &self.flow.templates;
        let rendered = templates
            .render(prompt.text(), c, Some(self.event))
            .and_then(|text| {
                let rich = rich.render(|s| templates.render(s, c, Some(self.event)))?;
                Ok((text, rich))
            });
        match rendered {
            Ok((text, rich)) => self.result.messages.push(Message {
                text,
                response_type: "text".into(),
                state: name.to_owned(),
                delay_ms: None,
                typing_indicator: true,
                rich,
            }),
            Err(e) => self.error(TurnErrorKind::Template, name, e),
        }
    }

    /// Renders a template and sends it; a failure is reported, not sent.
    pub(super) fn say(
        &mut self,
        c: &Conversation,
        name: &str,
        template: &str,
        response_type: &str,
    ) {
        match self.flow.templates.render(template, c, Some(self.event)) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => self.result.messages.push(Message {
                text,
                response_type: response_type.to_owned(),
                state: name.to_owned(),
                delay_ms: None,
                typing_indicator: true,
                rich: Rich::default(),
            }),
            Err(e) => self.error(TurnErrorKind::Template, name, e),
        }
    }

    /// Classifies the message into `c.intent`. False if, instead, the two
    /// best intents were too close to call and the user was asked which.
    async fn classify(&mut self, c: &mut Conversation, name: &str, config: &IntentConfig) -> bool {
        // The answer to a clarification: the intent tapped or named.
        let asked = std::mem::take(&mut c.clarifying);
        let text = self.event.text.as_str();
        let chosen = asked.into_iter().find(|intent| {
            self.event.payload() == Some(intent.as_str())
                || crate::intent::normalize(text)
                    == crate::intent::normalize(&self.intent_title(intent))
        });
        let found = match (chosen, &config.classifier) {
            (Some(intent), _) => Classification {
                intents: vec![IntentScore {
                    intent,
                    confidence: 1.0,
                }],
                entities: Vec::new(),
            },
            (None, None) => self.flow.intents.classify(text, &config.intent_patterns),
            (None, Some(plugin)) => {
                self.result.plugin_calls += 1;
                let args = json!({ "context_aware": config.context_aware });
                let call = self.call(c, plugin, &args, Some(self.event), PLUGINS_OWN_LIMIT);
                match self.plugins.classify_intent(call).await {
                    Ok(mut found) => {
                        found
                            .intents
                            .sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
                        found
                    }
                    Err(e) => {
                        self.error(TurnErrorKind::Plugin, name, e.to_string());
                        Classification::default()
                    }
                }
            }
        };
        if let (Some(margin), [first, second, ..]) = (config.clarify_margin, &found.intents[..])
            && second.confidence >= config.confidence_threshold
            && first.confidence - second.confidence <= margin
        {
            self.ask_which(c, name, config, [&first.intent, &second.intent]);
            return false;
        }
        let entities = found
            .entities
            .into_iter()
            .filter(|e| e.confidence >= config.confidence_threshold)
            .map(|e| (e.name, e.value))
            .collect();
        let best = found.intents.first();
        let confidence = best.map_or(0.0, |s| s.confidence);
        let confident = best.is_some() && confidence >= config.confidence_threshold;
        let intent = IntentResult {
            name: if confident {
                best.map(|s| s.intent.clone())
            } else {
                config.fallback_intent.clone()
            },
            top: best.map(|s| s.intent.clone()),
            confidence,
            low_confidence: !confident,
            entities,
        };
        if let Some(name) = &intent.name {
            c.intent_history.push(name.clone());
            let limit = self.flow.definition().settings.history_limit as usize;
            if c.intent_history.len() > limit {
                let excess = c.intent_history.len() - limit;
                c.intent_history.drain(..excess);
            }
        }
        self.result.intent = Some(intent.clone());
        c.intent = Some(intent);
        true
    }

    /// Asks which of two intents the user meant, one quick reply each
    /// (the intent's title; its name as the payload).
    fn ask_which(
        &mut self,
        c: &mut Conversation,
        name: &str,
        config: &IntentConfig,
        intents: [&String; 2],
    ) {
        c.clarifying = intents.iter().map(|i| (*i).clone()).collect();
        self.record(name, "clarify", &c.clarifying.join("|"));
        let quick_replies = intents
            .iter()
            .map(|intent| QuickReply {
                title: self.intent_title(intent),
                payload: Some((*intent).clone()),
            })
            .collect();
        let question = config.clarify_prompt.as_deref().unwrap_or(CLARIFY_PROMPT);
        match self.flow.templates.render(question, c, Some(self.event)) {
            Ok(text) => self.result.messages.push(Message {
                text,
                response_type: "text".into(),
                state: name.to_owned(),
                delay_ms: None,
                typing_indicator: true,
                rich: Rich {
                    quick_replies,
                    ..Rich::default()
                },
            }),
            Err(e) => self.error(TurnErrorKind::Template, name, e),
        }
    }

    /// What the user is shown for `intent`: its `title`, else its name
    /// with spaces ("track_order" → "Track order").
    fn intent_title(&self, intent: &str) -> String {
        if let Some(title) = self
            .flow
            .definition()
            .intents
            .get(intent)
            .and_then(|i| i.title.clone())
        {
            return title;
        }
        let spaced = intent.replace(['_', '-'], " ");
        let mut chars = spaced.chars();
        chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect())
            .unwrap_or_default()
    }

    /// Runs a tenant state type. `Some(wait)` on success, `None` on failure.
    async fn custom_state(
        &mut self,
        c: &mut Conversation,
        name: &str,
        plugin: &str,
        config: &Object,
        with_input: bool,
    ) -> Option<bool> {
        self.result.plugin_calls += 1;
        let args = Value::Object(config.clone());
        let event = with_input.then_some(self.event);
        let call = self.call(c, plugin, &args, event, PLUGINS_OWN_LIMIT);
        match self.plugins.execute_state(call).await {
            Ok(output) => {
                apply_updates(c, output.updates);
                for text in output.messages {
                    self.push_text(name, text);
                }
                c.state_outcome = output.outcome;
                Some(output.wait_for_input)
            }
            Err(e) => {
                self.error(TurnErrorKind::Plugin, name, e.to_string());
                None
            }
        }
    }
}

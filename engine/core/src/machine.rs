//! The state machine: one event in, one turn of the conversation out.
//!
//! docs/flows.md "How a turn runs" is the tenant-facing description of what
//! this module does; keep the two in step.

use std::time::Duration;

use futures::future::{Either, select};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::context::{
    Conversation, ConversationStatus, Event, EventKind, IntentResult, SlotProgress,
};
use crate::expr::Scope;
use crate::flow::Flow;
use crate::model::{
    Action, IntentConfig, Object, ResponseConfig, RetryConfig, SlotFillingConfig, State,
    StateConfig, Transition, TransitionCondition,
};
use crate::ports::{Clock, PluginCall, PluginError, PluginRuntime};
use crate::slots::Rule;

/// A message for the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    /// `text` unless the state says otherwise (seed 000 response_type).
    pub response_type: String,
    /// The state that sent it.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    pub typing_indicator: bool,
}

/// One action the turn ran, and whether it worked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// `set_variable`, `plugin`, `global_handler`, ...
    pub kind: String,
    /// What it acted on: the variable, plugin, integration or handler.
    pub target: String,
    pub state: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ActionRecord {
    /// `kind:target`, as listed in a response's actions_performed.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind, self.target)
    }
}

/// What went wrong during a turn. The turn still completes; see docs/flows.md
/// "When things go wrong".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnErrorKind {
    /// The conversation's state, or a transition's target, is not in the flow.
    StateNotFound,
    /// A condition could not be evaluated; the transition was skipped.
    Transition,
    /// An action failed; the others still ran.
    Action,
    /// A template could not be rendered; its message was not sent.
    Template,
    /// An integration failed after its retries.
    Integration,
    /// A tenant state type or intent classifier failed.
    Plugin,
    /// A slot was answered wrongly `max_retries` times.
    SlotRetriesExhausted,
    /// The turn entered more states than `settings.max_steps_per_turn`.
    LoopGuard,
}

/// One problem during a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnError {
    pub kind: TurnErrorKind,
    pub state: String,
    pub message: String,
}

/// An analytics event a `log_event` action recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub event: String,
    pub state: String,
    pub data: Object,
}

/// A `trigger_flow` action's request to move the conversation to another flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowTrigger {
    pub flow_id: String,
    pub target_state: Option<String>,
}

/// Everything one turn did (seed 000 StateExecutionResult).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepResult {
    /// Every message the turn produced, in order.
    pub messages: Vec<Message>,
    /// The state the conversation is in now.
    pub state: String,
    /// States entered during the turn, in order.
    pub visited: Vec<String>,
    pub actions: Vec<ActionRecord>,
    /// Changed slots and variables as `slots.<name>` / `variables.<name>`;
    /// `null` for a removed one.
    pub updates: Object,
    pub errors: Vec<TurnError>,
    /// The conversation reached an end state.
    pub ended: bool,
    /// When the current state's `timeout` transition is due (Unix ms); the
    /// caller delivers a timeout event then.
    pub wake_at_ms: Option<i64>,
    pub trigger_flow: Option<FlowTrigger>,
    pub events: Vec<LoggedEvent>,
    /// The intent classified during this turn, if any.
    pub intent: Option<IntentResult>,
    pub plugin_calls: u32,
}

impl StepResult {
    /// Adds what a later step of the same turn did (entering the flow a
    /// `trigger_flow` moved the conversation to): its messages, states,
    /// actions, changes and errors follow this one's, and where the
    /// conversation now is comes from it. The trigger that led there stays.
    pub fn absorb(&mut self, later: StepResult) {
        self.messages.extend(later.messages);
        self.state = later.state;
        self.visited.extend(later.visited);
        self.actions.extend(later.actions);
        self.updates.extend(later.updates);
        self.errors.extend(later.errors);
        self.ended = later.ended;
        self.wake_at_ms = later.wake_at_ms;
        self.events.extend(later.events);
        self.intent = later.intent.or(self.intent.take());
        self.plugin_calls += later.plugin_calls;
    }
}

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
            machine: self,
            flow,
            event,
            input_pending: event.kind == EventKind::Message,
            steps: 0,
            halted: false,
            result: StepResult::default(),
        };
        conversation.turn += 1;
        turn.run(conversation).await;

        let mut result = turn.result;
        result.state = conversation.current_state.clone();
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

/// What a state did when entered.
enum Arrival {
    /// Hand control back to the user.
    Wait,
    /// Try the state's transitions now; `failed` if its own logic failed.
    Evaluate { failed: bool },
    /// The conversation is over.
    End,
}

/// What a state did with a message.
enum Handled {
    /// Try the state's transitions; `failed` if its own logic failed.
    Evaluate {
        failed: bool,
    },
    Stay,
    Goto(String),
}

/// Why transitions are being tried.
#[derive(Clone, Copy, PartialEq)]
enum Trigger {
    /// The state was just entered.
    Entry,
    /// A message was handed to the state.
    Input,
    /// A deadline of the state passed.
    Timeout,
}

struct Turn<'a, R, C> {
    machine: &'a Machine<R, C>,
    flow: &'a Flow,
    event: &'a Event,
    /// The message has not been handed to a state yet. States entered
    /// before it is hold their prompts: the message may answer them.
    input_pending: bool,
    steps: u32,
    /// The loop guard tripped: nothing more happens this turn.
    halted: bool,
    result: StepResult,
}

impl<'a, R: PluginRuntime, C: Clock> Turn<'a, R, C> {
    async fn run(&mut self, c: &mut Conversation) {
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
        // An expired deadline happened before this event, so it goes first.
        if c.status == ConversationStatus::Active && !self.halted && self.due_timeout(c).is_some() {
            self.fire_timeout(c).await;
        }
        if self.input_pending && !self.halted && c.status == ConversationStatus::Active {
            self.input_pending = false;
            if !self.global_handlers(c).await {
                self.handle_input(c).await;
            }
        }
    }

    // ---- moving between states -------------------------------------------

    /// Enters `name`, then keeps going through states that need no input.
    async fn enter(&mut self, c: &mut Conversation, mut name: String) {
        let flow = self.flow;
        loop {
            if self.halted {
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
            let next = match self.arrive(c, &name, state).await {
                Arrival::Wait => return,
                Arrival::End => {
                    c.status = ConversationStatus::Ended;
                    return;
                }
                Arrival::Evaluate { failed } => {
                    match self.pick(c, &name, state, Trigger::Entry).await {
                        Some(i) => self.take(c, &name, state, i).await,
                        None => match self.recovery() {
                            Some(recovery) if failed && recovery != name => recovery.to_owned(),
                            _ => return,
                        },
                    }
                }
            };
            name = next;
        }
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
        c.state_entered_at_ms = self.machine.clock.now_ms();
        c.slot_filling = None;
        c.state_outcome = None;
        self.result.visited.push(name.to_owned());
    }

    /// Exit actions of the state left, then the transition's; returns the target.
    async fn take(&mut self, c: &mut Conversation, name: &str, state: &State, i: usize) -> String {
        let transition = &state.transitions[i];
        self.run_actions(c, name, &state.exit_actions).await;
        self.run_actions(c, name, &transition.actions).await;
        transition.target_state.clone()
    }

    async fn handle_input(&mut self, c: &mut Conversation) {
        let flow = self.flow;
        let name = c.current_state.clone();
        let Some(state) = flow.state(&name) else {
            return;
        };
        let handled = match &state.config {
            StateConfig::Intent(config) => {
                self.classify(c, &name, config).await;
                Handled::Evaluate { failed: false }
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
            Handled::Stay => return,
            Handled::Goto(target) => {
                self.run_actions(c, &name, &state.exit_actions).await;
                target
            }
            Handled::Evaluate { failed } => {
                match self.pick(c, &name, state, Trigger::Input).await {
                    Some(i) => self.take(c, &name, state, i).await,
                    None => match self.recovery() {
                        Some(recovery) if failed && recovery != name => {
                            self.run_actions(c, &name, &state.exit_actions).await;
                            recovery.to_owned()
                        }
                        _ => {
                            tracing::debug!(state = %name, "no transition matched the message; staying");
                            return;
                        }
                    },
                }
            }
        };
        self.enter(c, target).await;
    }

    /// The current state's first `timeout` transition whose deadline passed.
    fn due_timeout(&self, c: &Conversation) -> Option<usize> {
        let state = self.flow.state(&c.current_state)?;
        let now = self.machine.clock.now_ms();
        self.flow.order[&c.current_state]
            .iter()
            .copied()
            .find(|&i| {
                timeout_ms(state, &state.transitions[i])
                    .is_some_and(|ms| c.state_entered_at_ms.saturating_add(ms as i64) <= now)
            })
    }

    async fn fire_timeout(&mut self, c: &mut Conversation) {
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

    fn recovery(&self) -> Option<&'a str> {
        self.flow.definition().recovery_state.as_deref()
    }

    // ---- what each state type does ----------------------------------------

    async fn arrive(&mut self, c: &mut Conversation, name: &str, state: &State) -> Arrival {
        match &state.config {
            StateConfig::Response(config) => {
                self.respond(c, name, config);
                Arrival::Evaluate { failed: false }
            }
            StateConfig::Intent(config) => {
                if let Some(prompt) = &config.prompt
                    && !self.input_pending
                {
                    self.say(c, name, prompt, "text");
                }
                Arrival::Wait
            }
            StateConfig::SlotFilling(config) => {
                c.slot_filling = Some(SlotProgress {
                    asking: None,
                    retries: 0,
                });
                match missing_slot(c, config) {
                    None => Arrival::Evaluate { failed: false },
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
                Arrival::Evaluate { failed }
            }
            StateConfig::Condition(_) => Arrival::Evaluate { failed: false },
            StateConfig::Wait(config) => {
                if let Some(prompt) = &config.prompt
                    && !self.input_pending
                {
                    self.say(c, name, prompt, "text");
                }
                Arrival::Wait
            }
            StateConfig::End(config) => {
                if let Some(message) = &config.message {
                    self.say(c, name, message, "text");
                }
                Arrival::End
            }
            StateConfig::Custom { plugin, config } => {
                match self.custom_state(c, name, plugin, config, false).await {
                    Some(true) => Arrival::Wait,
                    Some(false) => Arrival::Evaluate { failed: false },
                    None => Arrival::Evaluate { failed: true },
                }
            }
        }
    }

    fn respond(&mut self, c: &Conversation, name: &str, config: &ResponseConfig) {
        let templates = &config.response_templates;
        let key = [
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
        let text = if config.personalization {
            match self.flow.templates.render(template, c, Some(self.event)) {
                Ok(text) => text,
                Err(e) => {
                    self.error(TurnErrorKind::Template, name, e);
                    return;
                }
            }
        } else {
            template.clone()
        };
        self.result.messages.push(Message {
            text,
            response_type: config.response_type.clone(),
            state: name.to_owned(),
            delay_ms: config.delay_ms,
            typing_indicator: config.typing_indicator,
        });
    }

    /// Renders a template and sends it; a failure is reported, not sent.
    fn say(&mut self, c: &Conversation, name: &str, template: &str, response_type: &str) {
        match self.flow.templates.render(template, c, Some(self.event)) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => self.result.messages.push(Message {
                text,
                response_type: response_type.to_owned(),
                state: name.to_owned(),
                delay_ms: None,
                typing_indicator: true,
            }),
            Err(e) => self.error(TurnErrorKind::Template, name, e),
        }
    }

    /// Sends the prompt for `slot`, or its retry prompt after a bad answer.
    fn ask(
        &mut self,
        c: &mut Conversation,
        name: &str,
        config: &SlotFillingConfig,
        slot: &str,
        invalid: Option<String>,
    ) {
        if let Some(progress) = c.slot_filling.as_mut() {
            progress.asking = Some(slot.to_owned());
        }
        let Some(prompt) = config.prompts.get(slot) else {
            return;
        };
        match (invalid, config.retry_prompts.get(slot)) {
            (None, _) => self.say(c, name, prompt, "text"),
            (Some(_), Some(retry)) => self.say(c, name, retry, "text"),
            (Some(reason), None) => {
                self.result.messages.push(Message {
                    text: format!("Sorry, I need {reason}."),
                    response_type: "text".into(),
                    state: name.to_owned(),
                    delay_ms: None,
                    typing_indicator: true,
                });
                self.say(c, name, prompt, "text");
            }
        }
    }

    /// Seed 000 handle_slot_filling: extract, validate, store, ask for the next.
    fn fill_slots(
        &mut self,
        c: &mut Conversation,
        name: &str,
        config: &SlotFillingConfig,
    ) -> Handled {
        let flow = self.flow;
        let event = self.event;
        let text = event.text.as_str();
        let rule = |slot: &str| flow.rules.get(&(name.to_owned(), slot.to_owned()));
        let asking = c
            .slot_filling
            .get_or_insert(SlotProgress {
                asking: None,
                retries: 0,
            })
            .asking
            .clone();
        let slots: Vec<&String> = config
            .required_slots
            .iter()
            .chain(&config.optional_slots)
            .collect();

        // Values the channel already extracted.
        if let Some(entities) = event.entities() {
            for slot in &slots {
                let Some(value) = entities.get(slot.as_str()) else {
                    continue;
                };
                let accepted = match rule(slot) {
                    Some(rule) => rule.accept(value, c),
                    None => Ok(value.clone()),
                };
                if let Ok(value) = accepted {
                    c.slots.insert((*slot).clone(), value);
                }
            }
        }
        // Values found anywhere in the message, for slots not yet filled.
        for slot in &slots {
            if c.slots.contains_key(slot.as_str()) || asking.as_deref() == Some(slot.as_str()) {
                continue;
            }
            let found = match config.extractors.get(slot.as_str()) {
                Some(pattern) => flow.regexes[pattern].captures(text).and_then(|captures| {
                    let raw = captures.get(1).or_else(|| captures.get(0))?.as_str();
                    match rule(slot) {
                        Some(rule) => rule.extract(raw, c).ok(),
                        None => Some(json!(raw)),
                    }
                }),
                None => rule(slot).and_then(|rule| rule.find_unprompted(text)),
            };
            if let Some(value) = found {
                c.slots.insert((*slot).clone(), value);
            }
        }
        // The answer to the question asked.
        let mut invalid = None;
        if let Some(slot) = asking.as_deref()
            && !c.slots.contains_key(slot)
        {
            let extracted = match (config.extractors.get(slot), rule(slot)) {
                (Some(pattern), rule) => match flow.regexes[pattern].captures(text) {
                    Some(captures) => {
                        let raw = captures
                            .get(1)
                            .or_else(|| captures.get(0))
                            .map_or("", |m| m.as_str());
                        rule.map_or(Ok(json!(raw)), |rule| rule.extract(raw, c))
                    }
                    None => Err(rule.map_or("an answer".to_owned(), Rule::describe)),
                },
                (None, Some(rule)) => rule.extract(text, c),
                (None, None) => Rule::Text.extract(text, c),
            };
            match extracted {
                Ok(value) => {
                    c.slots.insert(slot.to_owned(), value);
                }
                Err(reason) => {
                    tracing::debug!(state = %name, slot, %reason, "slot answer rejected");
                    invalid = Some(rule(slot).map_or("an answer".to_owned(), Rule::describe));
                }
            }
        }

        let progress = c.slot_filling.as_mut().expect("set above");
        if invalid.is_some() {
            progress.retries += 1;
        } else {
            progress.retries = 0;
        }
        if progress.retries >= config.max_retries {
            let slot = asking.clone().unwrap_or_default();
            self.error(
                TurnErrorKind::SlotRetriesExhausted,
                name,
                format!(
                    "no valid answer for slot \"{slot}\" after {} tries",
                    config.max_retries
                ),
            );
            let fallback = config.fallback_state.as_deref().or(self.recovery());
            if let Some(target) = fallback {
                return Handled::Goto(target.to_owned());
            }
            // Nowhere to go: start the count again and keep asking.
            progress.retries = 0;
            invalid = None;
        }
        match missing_slot(c, config) {
            None => {
                c.slot_filling = Some(SlotProgress {
                    asking: None,
                    retries: 0,
                });
                Handled::Evaluate { failed: false }
            }
            Some(slot) => {
                let invalid = invalid.filter(|_| asking.as_deref() == Some(slot.as_str()));
                self.ask(c, name, config, &slot, invalid);
                Handled::Stay
            }
        }
    }

    async fn classify(&mut self, c: &mut Conversation, name: &str, config: &IntentConfig) {
        let text = self.event.text.as_str();
        let scores = match &config.classifier {
            None => self.flow.intents.classify(text, &config.intent_patterns),
            Some(plugin) => {
                self.result.plugin_calls += 1;
                let args = json!({ "context_aware": config.context_aware });
                let call = self.call(c, plugin, &args, Some(self.event), 5000);
                match self.machine.plugins.classify_intent(call).await {
                    Ok(mut scores) => {
                        scores.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
                        scores
                    }
                    Err(e) => {
                        self.error(TurnErrorKind::Plugin, name, e.to_string());
                        Vec::new()
                    }
                }
            }
        };
        let best = scores.first();
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
        let call = self.call(c, plugin, &args, event, 5000);
        match self.machine.plugins.execute_state(call).await {
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

    /// Says again what the current state asks, after a global handler.
    fn reprompt(&mut self, c: &mut Conversation) {
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

    // ---- transitions ------------------------------------------------------

    /// The first transition that matches, in priority order.
    async fn pick(
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
            When::Default => true,
            When::Timeout => {
                trigger == Trigger::Timeout
                    && timeout_ms(state, t).is_some_and(|ms| {
                        c.state_entered_at_ms.saturating_add(ms as i64)
                            <= self.machine.clock.now_ms()
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
                let call = self.call(c, plugin, &t.args, event, 1000);
                let _ = name;
                self.machine
                    .plugins
                    .evaluate_condition(call)
                    .await
                    .map_err(|e| e.to_string())?
            }
        })
    }

    // ---- global handlers --------------------------------------------------

    /// Runs the first global handler the message triggers; true if one did.
    async fn global_handlers(&mut self, c: &mut Conversation) -> bool {
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

    // ---- actions ----------------------------------------------------------

    /// Runs actions in order; a failing one is recorded and the rest still run.
    async fn run_actions(&mut self, c: &mut Conversation, state: &str, actions: &[Action]) {
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
            } => {
                let rendered = self.flow.templates.render(message, c, Some(self.event));
                let outcome = rendered.map(|text| {
                    self.result.messages.push(Message {
                        text,
                        response_type: response_type.clone(),
                        state: state.to_owned(),
                        delay_ms: None,
                        typing_indicator: true,
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
                let call = self.call(c, plugin, args, Some(self.event), 1000);
                let outcome = match self.machine.plugins.run_action(call).await {
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

    // ---- integrations -----------------------------------------------------

    /// Seed 000 execute_integration: build the request from the mapping, call
    /// the tool with a timeout and retries, map the response into the
    /// conversation, and record the result under the integration's id.
    async fn integrate(
        &mut self,
        c: &mut Conversation,
        state: &str,
        call: IntegrationCall<'_>,
    ) -> Result<(), String> {
        let flow = self.flow;
        let id = call.integration_id;
        let started = self.machine.clock.now_ms();
        let mut request = call.defaults;
        for (key, source) in call.request_mapping {
            match flow.expr(source).eval(&Scope::new(c, Some(self.event))) {
                Ok(value) => {
                    request.insert(key.clone(), value);
                }
                Err(e) => {
                    let message = format!("request_mapping.{key}: {e}");
                    record_integration(c, id, Err(&message), 0, 0);
                    return Err(message);
                }
            }
        }
        let args = Value::Object(request);
        let timeout = Duration::from_millis(call.timeout_ms);
        let mut backoff = Duration::from_millis(call.retry.backoff_ms);
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            self.result.plugin_calls += 1;
            let plugin_call = self.call(c, id, &args, Some(self.event), call.timeout_ms);
            let tool = self.machine.plugins.call_tool(plugin_call);
            let deadline = self.machine.clock.sleep(timeout);
            futures::pin_mut!(tool, deadline);
            let outcome = match select(tool, deadline).await {
                Either::Left((outcome, _)) => outcome,
                Either::Right(((), _)) => Err(PluginError::Timeout {
                    plugin: id.to_owned(),
                    timeout_ms: call.timeout_ms,
                }),
            };
            match outcome {
                Err(e) if e.is_transient() && attempts < call.retry.max_attempts => {
                    tracing::debug!(state, integration = id, attempts, error = %e, "retrying");
                    self.machine.clock.sleep(backoff).await;
                    backoff *= 2;
                }
                other => break other,
            }
        };
        let elapsed = self.machine.clock.now_ms() - started;
        let result = match outcome {
            Ok(result) => result,
            Err(e) => {
                let message = e.to_string();
                record_integration(c, id, Err(&message), attempts, elapsed);
                return Err(message);
            }
        };
        for (key, source) in call.response_mapping {
            let scope = Scope::new(c, Some(self.event)).with("result", &result);
            match flow.expr(source).eval(&scope) {
                Ok(value) => assign(c, key, value),
                Err(e) => {
                    let message = format!("response_mapping.{key}: {e}");
                    record_integration(c, id, Err(&message), attempts, elapsed);
                    return Err(message);
                }
            }
        }
        record_integration(c, id, Ok(result), attempts, elapsed);
        Ok(())
    }

    // ---- small helpers ----------------------------------------------------

    fn call<'c>(
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

    fn push_text(&mut self, state: &str, text: String) {
        self.result.messages.push(Message {
            text,
            response_type: "text".into(),
            state: state.to_owned(),
            delay_ms: None,
            typing_indicator: true,
        });
    }

    fn error(&mut self, kind: TurnErrorKind, state: &str, message: String) {
        tracing::warn!(state, ?kind, %message, "turn error");
        self.result.errors.push(TurnError {
            kind,
            state: state.to_owned(),
            message,
        });
    }
}

struct IntegrationCall<'a> {
    integration_id: &'a str,
    /// Arguments the request mapping may override (endpoint, method).
    defaults: Object,
    request_mapping: &'a indexmap::IndexMap<String, String>,
    response_mapping: &'a indexmap::IndexMap<String, String>,
    timeout_ms: u64,
    retry: &'a RetryConfig,
}

fn record_integration(
    c: &mut Conversation,
    id: &str,
    outcome: Result<Value, &str>,
    attempts: u32,
    elapsed_ms: i64,
) {
    let record = match outcome {
        Ok(data) => {
            json!({ "success": true, "data": data, "attempts": attempts, "duration_ms": elapsed_ms })
        }
        Err(error) => {
            json!({ "success": false, "error": error, "attempts": attempts, "duration_ms": elapsed_ms })
        }
    };
    c.integration_results.insert(id.to_owned(), record);
}

/// The first required slot without a value.
fn missing_slot(c: &Conversation, config: &SlotFillingConfig) -> Option<String> {
    config
        .required_slots
        .iter()
        .find(|slot| c.slots.get(slot.as_str()).is_none_or(Value::is_null))
        .cloned()
}

/// Sets a variable, or a slot when the name is `slots.<name>`.
fn assign(c: &mut Conversation, name: &str, value: Value) {
    match name.strip_prefix("slots.") {
        Some(slot) => c.slots.insert(slot.to_owned(), value),
        None => c.variables.insert(name.to_owned(), value),
    };
}

/// Applies a plugin's updates: `null` removes.
fn apply_updates(c: &mut Conversation, updates: Object) {
    for (name, value) in updates {
        if value.is_null() {
            match name.strip_prefix("slots.") {
                Some(slot) => c.slots.shift_remove(slot),
                None => c.variables.shift_remove(&name),
            };
        } else {
            assign(c, &name, value);
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
/// is due (Unix ms); `None` if it has none, or the conversation is not
/// waiting in a state.
pub fn next_deadline(flow: &Flow, c: &Conversation) -> Option<i64> {
    if c.status != ConversationStatus::Active {
        return None;
    }
    let state = flow.state(&c.current_state)?;
    state
        .transitions
        .iter()
        .filter_map(|t| timeout_ms(state, t))
        .map(|ms| c.state_entered_at_ms.saturating_add(ms as i64))
        .min()
}

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

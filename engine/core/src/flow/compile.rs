//! Validating a flow and compiling what the machine needs (expressions,
//! templates, rules, intents) once, before the first turn.

use std::collections::{HashMap, HashSet};

use regex::{Regex, RegexBuilder};

use crate::expr::Expr;
use crate::intent::IntentMatcher;
use crate::model::{
    Action, ButtonKind, CLARIFY_PROMPT, EventHandler, FlowDefinition, NoInput, Prompt, Rich, State,
    StateConfig, TransitionCondition,
};
use crate::ports::PluginWorld;
use crate::slots::Rule;
use crate::template::Templates;

use super::cycles::automatic_cycles;
use super::plugins::{PluginRef, REMOTE_TOOL_PREFIX, is_plugin_name, remote_tool};
use super::report::Report;
use super::validated::Flow;

impl Flow {
    /// Validates and compiles a flow already in memory.
    pub fn compile(definition: FlowDefinition) -> Result<Flow, Report> {
        build(definition, &HashSet::new(), Report::default())
    }
}

/// Checks `definition` and, if nothing blocks it, compiles it into a [`Flow`].
/// `unreadable` states are already in `report`.
pub(super) fn build(
    definition: FlowDefinition,
    unreadable: &HashSet<String>,
    report: Report,
) -> Result<Flow, Report> {
    let compiled = Compiler::new(&definition, unreadable, report).finish()?;
    let order = definition
        .states
        .iter()
        .map(|(name, state)| (name.clone(), transition_order(state)))
        .collect();
    Ok(Flow {
        definition,
        exprs: compiled.exprs,
        templates: compiled.templates,
        rules: compiled.rules,
        regexes: compiled.regexes,
        intents: compiled.intents,
        order,
        plugins: compiled.plugins,
        warnings: compiled.report.issues,
    })
}

/// No-match or no-input handlers a list may hold: one per occurrence in a
/// row, the last repeating.
const MAX_HANDLERS: usize = 10;

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// What compiling produced, apart from the definition itself.
struct Compiled {
    exprs: HashMap<String, Expr>,
    templates: Templates,
    rules: HashMap<(String, String), Rule>,
    regexes: HashMap<String, Regex>,
    intents: IntentMatcher,
    plugins: Vec<PluginRef>,
    report: Report,
}

/// Builds a [`Flow`], checking as it goes.
struct Compiler<'a> {
    definition: &'a FlowDefinition,
    /// States that exist but could not be read (already reported).
    unreadable: &'a HashSet<String>,
    out: Compiled,
}

impl<'a> Compiler<'a> {
    fn new(
        definition: &'a FlowDefinition,
        unreadable: &'a HashSet<String>,
        report: Report,
    ) -> Self {
        Compiler {
            definition,
            unreadable,
            out: Compiled {
                exprs: HashMap::new(),
                templates: Templates::default(),
                rules: HashMap::new(),
                regexes: HashMap::new(),
                intents: IntentMatcher::default(),
                plugins: Vec::new(),
                report,
            },
        }
    }

    /// Runs every check; on success the compiled parts, with the warnings.
    fn finish(mut self) -> Result<Compiled, Report> {
        self.check_header();
        self.check_intents();
        for (name, handler) in &self.definition.global_handlers {
            let path = format!("global_handlers.{name}");
            self.message_matcher(
                &path,
                &handler.phrases,
                &handler.patterns,
                handler.intent.as_ref(),
            );
            if let Some(message) = &handler.resume_message {
                self.template(format!("{path}.resume_message"), message);
            }
            if handler.interrupts {
                match &handler.target_state {
                    None => self.out.report.error(
                        format!("{path}.interrupts"),
                        "a digression needs a target_state to go to",
                    ),
                    Some(target) if !resumes_from(self.definition, target) => {
                        self.out.report.error(
                            format!("{path}.target_state"),
                            format!(
                                "a digression without a way back: no transition with \"resume\": true can be reached from \"{target}\""
                            ),
                        )
                    }
                    Some(_) => {}
                }
            }
            if let Some(response) = &handler.response {
                self.template(format!("{path}.response"), response);
            }
            if let Some(target) = &handler.target_state {
                self.target(format!("{path}.target_state"), target);
            }
            self.actions(&path, "actions", &handler.actions);
        }
        let d = self.definition;
        self.unanswered("", &d.no_match, d.no_input.as_ref());
        for (name, state) in &self.definition.states {
            self.check_state(name, state);
            let path = format!("states.{name}.");
            self.unanswered(&path, &state.no_match, state.no_input.as_ref());
            let handled = !state.no_match.is_empty() || state.no_input.is_some();
            if handled && matches!(state.config, StateConfig::End(_)) {
                self.out.report.warning(
                    format!("states.{name}"),
                    "an end state never waits: its no_match and no_input never run",
                );
            }
        }
        self.check_graph();
        if self.out.report.has_errors() {
            return Err(self.out.report);
        }
        Ok(self.out)
    }

    /// No-match and no-input handlers, under `base` (`""` for the flow's).
    fn unanswered(&mut self, base: &str, no_match: &[EventHandler], no_input: Option<&NoInput>) {
        let mut handlers = vec![(format!("{base}no_match"), no_match)];
        if let Some(no_input) = no_input {
            let path = format!("{base}no_input");
            if !(1_000..=86_400_000).contains(&no_input.timeout_ms) {
                self.out.report.error(
                    format!("{path}.timeout_ms"),
                    "must be between 1000 and 86400000",
                );
            }
            if no_input.handlers.is_empty() {
                self.out
                    .report
                    .error(format!("{path}.handlers"), "needs at least one handler");
            }
            handlers.push((format!("{path}.handlers"), &no_input.handlers));
        }
        for (path, list) in handlers {
            if list.len() > MAX_HANDLERS {
                self.out.report.error(
                    &path,
                    format!("at most {MAX_HANDLERS} handlers (one per occurrence in a row)"),
                );
            }
            for (i, handler) in list.iter().enumerate() {
                let path = format!("{path}[{i}]");
                if handler.response.is_none() && handler.target_state.is_none() {
                    self.out
                        .report
                        .error(&path, "a handler needs a response or a target_state");
                }
                if let Some(response) = &handler.response {
                    self.template(format!("{path}.response"), response);
                }
                if let Some(target) = &handler.target_state {
                    self.target(format!("{path}.target_state"), target);
                }
            }
        }
    }

    fn exists(&self, state: &str) -> bool {
        self.definition.states.contains_key(state) || self.unreadable.contains(state)
    }

    fn check_header(&mut self) {
        let d = self.definition;
        for (field, value) in [
            ("flow_id", &d.flow_id),
            ("name", &d.name),
            ("version", &d.version),
        ] {
            if value.trim().is_empty() {
                self.out.report.error(field, "must not be empty");
            }
        }
        if !self.exists(&d.initial_state) {
            self.out.report.error(
                "initial_state",
                format!(
                    "initial state \"{}\" is not one of the flow's states",
                    d.initial_state
                ),
            );
        }
        if let Some(recovery) = &d.recovery_state {
            self.target("recovery_state".into(), recovery);
        }
        let settings = &d.settings;
        if !(1..=200).contains(&settings.max_steps_per_turn) {
            self.out
                .report
                .error("settings.max_steps_per_turn", "must be between 1 and 200");
        }
        if !(1..=1000).contains(&settings.history_limit) {
            self.out
                .report
                .error("settings.history_limit", "must be between 1 and 1000");
        }
    }

    fn check_intents(&mut self) {
        for (name, intent) in &self.definition.intents {
            let path = format!("intents.{name}");
            if intent.examples.is_empty() && intent.patterns.is_empty() {
                self.out
                    .report
                    .error(&path, "an intent needs at least one example or pattern");
            }
            if let Err(message) = self.out.intents.add(name, intent) {
                self.out.report.error(format!("{path}.patterns"), message);
            }
        }
    }

    fn check_state(&mut self, name: &str, state: &State) {
        let path = format!("states.{name}");
        match &state.config {
            StateConfig::Response(c) => {
                let config = format!("{path}.config");
                if c.response_templates.is_empty() {
                    self.out.report.error(
                        format!("{config}.response_templates"),
                        "a response state needs at least one template",
                    );
                }
                if c.personalization {
                    for (key, template) in &c.response_templates {
                        self.template(format!("{config}.response_templates.{key}"), template);
                    }
                    self.rich(format!("{config}.rich"), &c.rich);
                }
                if c.delay_ms.is_some_and(|d| d > 5000) {
                    self.out
                        .report
                        .error(format!("{config}.delay_ms"), "must be at most 5000");
                }
            }
            StateConfig::Intent(c) => {
                let config = format!("{path}.config");
                if !(0.0..=1.0).contains(&c.confidence_threshold) {
                    self.out.report.error(
                        format!("{config}.confidence_threshold"),
                        "must be between 0 and 1",
                    );
                }
                if let Some(prompt) = &c.prompt {
                    self.prompt(format!("{config}.prompt"), prompt);
                }
                if c.clarify_margin.is_some_and(|m| !(0.0..=0.5).contains(&m)) {
                    self.out.report.error(
                        format!("{config}.clarify_margin"),
                        "must be between 0 and 0.5",
                    );
                }
                if c.clarify_margin.is_some() {
                    let question = c.clarify_prompt.as_deref().unwrap_or(CLARIFY_PROMPT);
                    self.template(format!("{config}.clarify_prompt"), question);
                }
                match &c.classifier {
                    Some(plugin) => self.plugin(
                        PluginWorld::Intent,
                        format!("{config}.classifier"),
                        plugin,
                    ),
                    None if self.definition.intents.is_empty() => self.out.report.error(
                        &config,
                        "an intent state needs intents defined in the flow's `intents` or a `classifier` plugin",
                    ),
                    None => {
                        for (i, intent) in c.intent_patterns.iter().enumerate() {
                            if !self.definition.intents.contains_key(intent) {
                                self.out.report.error(
                                    format!("{config}.intent_patterns[{i}]"),
                                    format!("intent \"{intent}\" is not defined in `intents`"),
                                );
                            }
                        }
                    }
                }
            }
            StateConfig::SlotFilling(c) => self.check_slot_filling(&path, name, c),
            StateConfig::Integration(c) => {
                let config = format!("{path}.config");
                self.plugin(
                    PluginWorld::Tool,
                    format!("{config}.integration_id"),
                    &c.integration_id,
                );
                if !METHODS.contains(&c.method.to_uppercase().as_str()) {
                    self.out.report.error(
                        format!("{config}.method"),
                        format!(
                            "unknown method \"{}\"; use one of {}",
                            c.method,
                            METHODS.join(", ")
                        ),
                    );
                }
                self.timeout(format!("{config}.timeout_ms"), c.timeout_ms);
                if !(1..=5).contains(&c.retry_config.max_attempts) {
                    self.out.report.error(
                        format!("{config}.retry_config.max_attempts"),
                        "must be between 1 and 5",
                    );
                }
                if c.retry_config.backoff_ms > 10_000 {
                    self.out.report.error(
                        format!("{config}.retry_config.backoff_ms"),
                        "must be at most 10000",
                    );
                }
                self.mappings(&config, &c.request_mapping, &c.response_mapping);
                if let Some(message) = &c.error_handling.message {
                    self.template(format!("{config}.error_handling.message"), message);
                }
            }
            StateConfig::Condition(_) => {}
            StateConfig::Wait(c) => {
                if let Some(prompt) = &c.prompt {
                    self.prompt(format!("{path}.config.prompt"), prompt);
                }
                if let Some(timeout) = c.timeout_ms
                    && !(100..=86_400_000).contains(&timeout)
                {
                    self.out.report.error(
                        format!("{path}.config.timeout_ms"),
                        "must be between 100 and 86400000 (one day)",
                    );
                }
            }
            StateConfig::End(c) => {
                if let Some(message) = &c.message {
                    self.template(format!("{path}.config.message"), message);
                }
            }
            StateConfig::Custom { plugin, .. } => {
                self.plugin(PluginWorld::StateType, format!("{path}.type"), plugin);
            }
        }
        self.actions(&path, "entry_actions", &state.entry_actions);
        self.actions(&path, "exit_actions", &state.exit_actions);
        for (i, transition) in state.transitions.iter().enumerate() {
            self.check_transition(&format!("{path}.transitions[{i}]"), state, transition);
        }
        if state.transitions.is_empty() && !matches!(state.config, StateConfig::End(_)) {
            self.out.report.error(
                format!("{path}.transitions"),
                format!(
                    "state \"{name}\" has no way out: add a transition or make it an end state"
                ),
            );
        }
    }

    fn check_slot_filling(&mut self, path: &str, name: &str, c: &crate::model::SlotFillingConfig) {
        let config = format!("{path}.config");
        if c.required_slots.is_empty() {
            self.out.report.error(
                format!("{config}.required_slots"),
                "a slot-filling state needs at least one required slot",
            );
        }
        let slots: Vec<&String> = c.required_slots.iter().chain(&c.optional_slots).collect();
        for (i, slot) in c.optional_slots.iter().enumerate() {
            if c.required_slots.contains(slot) {
                self.out.report.error(
                    format!("{config}.optional_slots[{i}]"),
                    format!("slot \"{slot}\" is both required and optional"),
                );
            }
        }
        for slot in &c.required_slots {
            match c.prompts.get(slot) {
                Some(prompt) => self.prompt(format!("{config}.prompts.{slot}"), prompt),
                None => self.out.report.error(
                    format!("{config}.prompts"),
                    format!("required slot \"{slot}\" has no prompt"),
                ),
            }
        }
        let known = |slot: &String| slots.contains(&slot);
        for (slot, rule) in &c.validation_rules {
            let rule_path = format!("{config}.validation_rules.{slot}");
            if !known(slot) {
                self.out.report.error(
                    &rule_path,
                    format!("\"{slot}\" is not a slot of this state"),
                );
            }
            match Rule::parse(rule) {
                Ok(rule) => {
                    self.out.rules.insert((name.to_owned(), slot.clone()), rule);
                }
                Err(message) => self.out.report.error(rule_path, message),
            }
        }
        let prompted = c.prompts.keys().map(|slot| ("prompts", slot, None));
        let retried = c
            .retry_prompts
            .iter()
            .map(|(slot, template)| ("retry_prompts", slot, Some(template)));
        for (field, slot, template) in prompted.chain(retried) {
            let p = format!("{config}.{field}.{slot}");
            if !known(slot) {
                self.out
                    .report
                    .error(&p, format!("\"{slot}\" is not a slot of this state"));
            } else if let Some(template) = template {
                self.template(p, template);
            }
        }
        for (slot, pattern) in &c.extractors {
            let p = format!("{config}.extractors.{slot}");
            if !known(slot) {
                self.out
                    .report
                    .error(&p, format!("\"{slot}\" is not a slot of this state"));
            }
            self.regex(p, pattern);
        }
        if !(1..=5).contains(&c.max_retries) {
            self.out
                .report
                .error(format!("{config}.max_retries"), "must be between 1 and 5");
        }
        if let Some(fallback) = &c.fallback_state {
            self.target(format!("{config}.fallback_state"), fallback);
        }
        if let Some(cancel) = &c.cancel {
            let p = format!("{config}.cancel");
            self.message_matcher(
                &p,
                &cancel.phrases,
                &cancel.patterns,
                cancel.intent.as_ref(),
            );
            if let Some(response) = &cancel.response {
                self.template(format!("{p}.response"), response);
            }
            self.target(format!("{p}.target_state"), &cancel.target_state);
        }
        if let Some(corrections) = &c.corrections {
            let p = format!("{config}.corrections");
            let d = self.definition;
            for (i, slot) in corrections.slots.iter().enumerate() {
                let asked_somewhere = d.states.values().any(|s| match &s.config {
                    StateConfig::SlotFilling(c) => {
                        c.required_slots.contains(slot) || c.optional_slots.contains(slot)
                    }
                    _ => false,
                });
                if !asked_somewhere {
                    self.out.report.error(
                        format!("{p}.slots[{i}]"),
                        format!("no slot-filling state of the flow has a slot \"{slot}\""),
                    );
                }
            }
            if let Some(response) = &corrections.response {
                self.template(format!("{p}.response"), response);
            }
            if let Some(target) = &corrections.target_state {
                self.target(format!("{p}.target_state"), target);
            }
        }
    }

    /// What recognises a message (global handlers, a form's cancel): at
    /// least one of phrases, patterns and an intent, each valid.
    fn message_matcher(
        &mut self,
        path: &str,
        phrases: &[String],
        patterns: &[String],
        intent: Option<&String>,
    ) {
        if phrases.is_empty() && patterns.is_empty() && intent.is_none() {
            self.out
                .report
                .error(path, "needs phrases, patterns or an intent");
        }
        for (i, pattern) in patterns.iter().enumerate() {
            self.regex(format!("{path}.patterns[{i}]"), pattern);
        }
        if let Some(intent) = intent
            && !self.definition.intents.contains_key(intent)
        {
            self.out.report.error(
                format!("{path}.intent"),
                format!("intent \"{intent}\" is not defined in `intents`"),
            );
        }
    }

    fn check_transition(&mut self, path: &str, state: &State, t: &crate::model::Transition) {
        use TransitionCondition as C;
        self.target(format!("{path}.target_state"), &t.target_state);
        if t.priority > 1000 {
            self.out
                .report
                .error(format!("{path}.priority"), "must be between 0 and 1000");
        }
        let value = t
            .condition_value
            .as_deref()
            .filter(|v| !v.trim().is_empty());
        let is = |kind| state.config.builtin_type() == Some(kind);
        match t.condition {
            C::Expression => match &t.expression {
                Some(source) if !source.trim().is_empty() => {
                    self.expr(format!("{path}.expression"), source)
                }
                _ => self.out.report.error(
                    format!("{path}.expression"),
                    "an `expression` transition needs an expression",
                ),
            },
            C::IntentMatch => match value {
                None => self.out.report.error(
                    format!("{path}.condition_value"),
                    "an `intent_match` transition needs the intent in condition_value",
                ),
                Some(intent) => {
                    let classifier =
                        matches!(&state.config, StateConfig::Intent(c) if c.classifier.is_some());
                    if !classifier
                        && !self.definition.intents.is_empty()
                        && !self.definition.intents.contains_key(intent)
                    {
                        self.out.report.warning(
                            format!("{path}.condition_value"),
                            format!("intent \"{intent}\" is not defined in `intents`, so the built-in matcher never finds it"),
                        );
                    }
                }
            },
            C::SlotFilled => {
                if value.is_none() && !is(crate::model::StateType::SlotFilling) {
                    self.out.report.error(
                        format!("{path}.condition_value"),
                        "outside a slot-filling state, `slot_filled` needs the slot in condition_value",
                    );
                }
            }
            C::IntegrationSuccess | C::IntegrationError => {
                if value.is_none() && !is(crate::model::StateType::Integration) {
                    self.out.report.error(
                        format!("{path}.condition_value"),
                        format!(
                            "outside an integration state, `{}` needs the integration id in condition_value",
                            t.condition.as_str()
                        ),
                    );
                }
            }
            C::Timeout => {
                let state_timeout =
                    matches!(&state.config, StateConfig::Wait(w) if w.timeout_ms.is_some());
                match value {
                    Some(ms) => match ms.trim().parse::<u64>() {
                        Ok(ms) if (100..=86_400_000).contains(&ms) => {}
                        _ => self.out.report.error(
                            format!("{path}.condition_value"),
                            "a timeout is milliseconds between 100 and 86400000",
                        ),
                    },
                    None if state_timeout => {}
                    None => self.out.report.error(
                        format!("{path}.condition_value"),
                        "a `timeout` transition needs milliseconds in condition_value (or a wait state's timeout_ms)",
                    ),
                }
            }
            C::Plugin => match &t.plugin {
                Some(plugin) => {
                    self.plugin(PluginWorld::Condition, format!("{path}.plugin"), plugin)
                }
                None => self.out.report.error(
                    format!("{path}.plugin"),
                    "a `plugin` transition needs the condition plugin's name in `plugin`",
                ),
            },
            C::AnyInput
            | C::LowConfidence
            | C::Default
            | C::Payload
            | C::LocationShared
            | C::FormSubmitted => {}
        }
        if t.condition != C::Expression && t.expression.is_some() {
            self.out.report.warning(
                format!("{path}.expression"),
                format!(
                    "ignored: the condition is `{}`, not `expression`",
                    t.condition.as_str()
                ),
            );
        }
        self.actions(path, "actions", &t.actions);
    }

    fn actions(&mut self, base: &str, field: &str, actions: &[Action]) {
        for (i, action) in actions.iter().enumerate() {
            let path = format!("{base}.{field}[{i}]");
            match action {
                Action::SendMessage { message, rich, .. } => {
                    self.template(format!("{path}.message"), message);
                    self.rich(format!("{path}.rich"), rich);
                }
                Action::SetVariable {
                    name,
                    value,
                    expression,
                } => {
                    self.assignable(format!("{path}.name"), name);
                    match (value, expression) {
                        (Some(_), None) => {}
                        (None, Some(source)) => self.expr(format!("{path}.expression"), source),
                        _ => self.out.report.error(
                            &path,
                            "set_variable needs exactly one of `value` and `expression`",
                        ),
                    }
                }
                Action::ClearVariable { name } => {
                    if name != "slots.*" {
                        self.assignable(format!("{path}.name"), name);
                    }
                }
                Action::CallIntegration {
                    integration_id,
                    request_mapping,
                    response_mapping,
                    timeout_ms,
                } => {
                    self.plugin(
                        PluginWorld::Tool,
                        format!("{path}.integration_id"),
                        integration_id,
                    );
                    self.timeout(format!("{path}.timeout_ms"), *timeout_ms);
                    self.mappings(&path, request_mapping, response_mapping);
                }
                Action::LogEvent { event, .. } => {
                    if event.trim().is_empty() {
                        self.out
                            .report
                            .error(format!("{path}.event"), "must name the event");
                    }
                }
                Action::TriggerFlow { flow_id, .. } => {
                    if flow_id.trim().is_empty() {
                        self.out
                            .report
                            .error(format!("{path}.flow_id"), "must name the flow");
                    }
                }
                Action::Plugin { plugin, .. } => {
                    self.plugin(PluginWorld::Action, format!("{path}.plugin"), plugin)
                }
            }
        }
    }

    fn mappings(
        &mut self,
        base: &str,
        request: &indexmap::IndexMap<String, String>,
        response: &indexmap::IndexMap<String, String>,
    ) {
        for (key, source) in request {
            self.expr(format!("{base}.request_mapping.{key}"), source);
        }
        for (key, source) in response {
            let path = format!("{base}.response_mapping.{key}");
            self.assignable(path.clone(), key);
            self.expr(path, source);
        }
    }

    fn assignable(&mut self, path: String, name: &str) {
        let bare = name.strip_prefix("slots.").unwrap_or(name);
        if bare.is_empty() || bare.contains(char::is_whitespace) {
            self.out.report.error(
                path,
                format!("\"{name}\" is not a variable name (or slots.<name>)"),
            );
        }
    }

    fn timeout(&mut self, path: String, ms: u64) {
        if !(100..=30_000).contains(&ms) {
            self.out.report.error(path, "must be between 100 and 30000");
        }
    }

    fn target(&mut self, path: String, target: &str) {
        if !self.exists(target) {
            self.out.report.error(
                path,
                format!("target state \"{target}\" is not one of the flow's states"),
            );
        }
    }

    fn expr(&mut self, path: String, source: &str) {
        if self.out.exprs.contains_key(source) {
            return;
        }
        match Expr::compile(source) {
            Ok(expr) => {
                self.out.exprs.insert(source.to_owned(), expr);
            }
            Err(e) => self
                .out
                .report
                .error(path, format!("expression does not compile: {e}")),
        }
    }

    fn prompt(&mut self, path: String, prompt: &Prompt) {
        self.template(path.clone(), prompt.text());
        if let Some(rich) = prompt.rich() {
            self.rich(format!("{path}.rich"), rich);
        }
    }

    /// Rich content: its strings are templates; a button has what its
    /// type needs.
    fn rich(&mut self, path: String, rich: &Rich) {
        for source in rich.templates() {
            self.template(path.clone(), &source);
        }
        let buttons = rich
            .buttons
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("{path}.buttons[{i}]"), b))
            .chain(rich.cards.iter().enumerate().flat_map(|(i, card)| {
                let path = &path;
                card.buttons
                    .iter()
                    .enumerate()
                    .map(move |(j, b)| (format!("{path}.cards[{i}].buttons[{j}]"), b))
            }));
        let problems: Vec<(String, String)> = buttons
            .filter_map(|(p, b)| {
                let needed = match b.kind {
                    ButtonKind::Postback => b.payload.is_none().then_some("payload"),
                    ButtonKind::Url => b.url.is_none().then_some("url"),
                    ButtonKind::Phone => b.phone.is_none().then_some("phone"),
                }?;
                Some((p, format!("a {} button needs `{needed}`", b.kind.as_str())))
            })
            .collect();
        for (p, message) in problems {
            self.out.report.error(p, message);
        }
    }

    fn template(&mut self, path: String, source: &str) {
        if let Err(e) = self.out.templates.add(source) {
            self.out
                .report
                .error(path, format!("template does not compile: {e}"));
        }
    }

    fn regex(&mut self, path: String, pattern: &str) {
        if self.out.regexes.contains_key(pattern) {
            return;
        }
        match RegexBuilder::new(pattern).case_insensitive(true).build() {
            Ok(regex) => {
                self.out.regexes.insert(pattern.to_owned(), regex);
            }
            Err(e) => self
                .out
                .report
                .error(path, format!("not a valid regular expression: {e}")),
        }
    }

    fn plugin(&mut self, world: PluginWorld, path: String, name: &str) {
        // A remote MCP server's tool: checked against the tenant's servers
        // when it is called, not against its plugins.
        if world == PluginWorld::Tool
            && let Some(remote) = name.strip_prefix(REMOTE_TOOL_PREFIX)
        {
            if remote_tool(remote).is_none() {
                self.out.report.error(
                    &path,
                    format!("\"{name}\" is not a remote tool: use \"mcp:<server>/<tool>\""),
                );
            }
            return;
        }
        if !is_plugin_name(name) {
            self.out.report.error(
                &path,
                format!(
                    "\"{name}\" is not a plugin name: use 1 to 64 lowercase letters, digits, '-' or '_'"
                ),
            );
            return;
        }
        self.out.plugins.push(PluginRef {
            world,
            name: name.to_owned(),
            path,
        });
    }

    /// Reachability, dead ends that loop without input, ambiguous priorities.
    fn check_graph(&mut self) {
        let d = self.definition;
        let mut reachable = HashSet::new();
        let mut stack: Vec<&str> = vec![d.initial_state.as_str()];
        stack.extend(d.recovery_state.as_deref());
        stack.extend(
            d.global_handlers
                .values()
                .filter_map(|h| h.target_state.as_deref()),
        );
        stack.extend(handler_targets(&d.no_match, d.no_input.as_ref()));
        while let Some(name) = stack.pop() {
            if !reachable.insert(name) {
                continue;
            }
            if let Some(state) = d.states.get(name) {
                stack.extend(targets(state));
            }
        }
        let resumed = d
            .states
            .values()
            .any(|s| s.transitions.iter().any(|t| t.resume));
        let digressions = d.global_handlers.values().any(|h| h.interrupts);
        if resumed && !digressions {
            for (name, state) in &d.states {
                for (i, t) in state.transitions.iter().enumerate() {
                    if t.resume {
                        self.out.report.warning(
                            format!("states.{name}.transitions[{i}].resume"),
                            "no global handler interrupts (\"interrupts\": true): there is never anything to resume",
                        );
                    }
                }
            }
        }
        for name in d.states.keys() {
            if !reachable.contains(name.as_str()) {
                self.out.report.warning(
                    format!("states.{name}"),
                    format!("state \"{name}\" cannot be reached from the initial state"),
                );
            }
        }

        for cycle in automatic_cycles(d) {
            self.out.report.error(
                format!("states.{}.transitions", cycle[0]),
                format!(
                    "states {} can loop without waiting for input; put a state that waits for the user (intent, slot_filling, wait) in the cycle",
                    cycle.join(" → ")
                ),
            );
        }

        for (name, state) in &d.states {
            let t = &state.transitions;
            for i in 0..t.len() {
                for j in i + 1..t.len() {
                    if t[i].priority == t[j].priority && !exclusive(&t[i], &t[j]) {
                        self.out.report.warning(
                            format!("states.{name}.transitions[{j}].priority"),
                            format!(
                                "transitions {i} and {j} have the same priority ({}) and can both match; the one written first wins. Give them different priorities",
                                t[i].priority
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// The states `state` can lead to: transitions, its form's fallback,
/// cancel and corrections, and its no-match and no-input handlers.
fn targets(state: &State) -> impl Iterator<Item = &str> {
    let form = match &state.config {
        StateConfig::SlotFilling(c) => [
            c.fallback_state.as_deref(),
            c.cancel.as_ref().map(|c| c.target_state.as_str()),
            c.corrections
                .as_ref()
                .and_then(|c| c.target_state.as_deref()),
        ],
        _ => [None; 3],
    };
    state
        .transitions
        .iter()
        .map(|t| t.target_state.as_str())
        .chain(form.into_iter().flatten())
        .chain(handler_targets(&state.no_match, state.no_input.as_ref()))
}

fn handler_targets<'a>(
    no_match: &'a [EventHandler],
    no_input: Option<&'a NoInput>,
) -> impl Iterator<Item = &'a str> {
    no_match
        .iter()
        .chain(no_input.into_iter().flat_map(|n| &n.handlers))
        .filter_map(|h| h.target_state.as_deref())
}

/// Whether a transition with `resume` can be reached from `start`.
fn resumes_from(d: &FlowDefinition, start: &str) -> bool {
    let mut seen = HashSet::new();
    let mut stack = vec![start];
    while let Some(name) = stack.pop() {
        if !seen.insert(name) {
            continue;
        }
        let Some(state) = d.states.get(name) else {
            continue;
        };
        if state.transitions.iter().any(|t| t.resume) {
            return true;
        }
        stack.extend(targets(state));
    }
    false
}

/// Whether two transitions can never both match, so their order is moot.
fn exclusive(a: &crate::model::Transition, b: &crate::model::Transition) -> bool {
    use TransitionCondition as C;
    match (a.condition, b.condition) {
        (C::Default, _) | (_, C::Default) => true,
        (C::IntentMatch, C::IntentMatch) => a.condition_value != b.condition_value,
        (C::IntentMatch, C::LowConfidence) | (C::LowConfidence, C::IntentMatch) => true,
        (C::IntegrationSuccess, C::IntegrationError)
        | (C::IntegrationError, C::IntegrationSuccess) => a.condition_value == b.condition_value,
        (C::AnyInput, C::Timeout) | (C::Timeout, C::AnyInput) => true,
        _ => false,
    }
}

/// The order transitions are tried in: by priority (lower first, ties in
/// the order written), `default` ones last.
fn transition_order(state: &State) -> Vec<usize> {
    let mut order: Vec<usize> = (0..state.transitions.len()).collect();
    order.sort_by_key(|&i| {
        let t = &state.transitions[i];
        (t.condition == TransitionCondition::Default, t.priority)
    });
    order
}

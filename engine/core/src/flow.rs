//! Reading a flow, validating it, and compiling what the machine needs
//! (expressions, templates, rules, intents) once, before the first turn.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::Serialize;
use serde_json::Value;

use crate::expr::Expr;
use crate::intent::IntentMatcher;
use crate::model::{
    Action, ConfigError, FlowDefinition, RawState, State, StateConfig, TransitionCondition,
};
use crate::ports::PluginWorld;
use crate::slots::Rule;
use crate::template::Templates;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The flow cannot be published.
    Error,
    /// Worth a look; does not block publishing.
    Warning,
}

/// One problem found in a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub severity: Severity,
    /// Where, as a path into the flow's JSON: `states.order.transitions[1].target_state`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.path.is_empty() {
            write!(f, "{severity}: {}", self.message)
        } else {
            write!(f, "{severity}: {}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a flow, in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub issues: Vec<Issue>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Issue> {
        self.issues
            .iter()
            .filter(|i| i.severity == Severity::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path.into(), message.into());
    }

    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, path.into(), message.into());
    }

    fn push(&mut self, severity: Severity, path: String, message: String) {
        self.issues.push(Issue {
            severity,
            path,
            message,
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// A plugin a flow uses, for checking against what the tenant has installed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PluginRef {
    pub world: PluginWorld,
    pub name: String,
    /// Where the flow names it.
    pub path: String,
}

/// A validated flow with everything the machine needs compiled.
#[derive(Debug)]
pub struct Flow {
    definition: FlowDefinition,
    pub(crate) exprs: HashMap<String, Expr>,
    pub(crate) templates: Templates,
    /// Slot rules by (state, slot).
    pub(crate) rules: HashMap<(String, String), Rule>,
    /// Slot extractors and handler patterns, by source.
    pub(crate) regexes: HashMap<String, Regex>,
    pub(crate) intents: IntentMatcher,
    /// Transition indices of each state in the order they are tried.
    pub(crate) order: HashMap<String, Vec<usize>>,
    plugins: Vec<PluginRef>,
    warnings: Vec<Issue>,
}

impl Flow {
    /// Reads and validates a flow from JSON text.
    pub fn from_json(text: &str) -> Result<Flow, Report> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            let mut report = Report::default();
            report.error("", format!("not valid JSON: {e}"));
            report
        })?;
        Flow::from_value(value)
    }

    /// Reads and validates a flow from a JSON value, reporting every state
    /// that cannot be read along with every other problem.
    pub fn from_value(value: Value) -> Result<Flow, Report> {
        let mut report = Report::default();
        let Value::Object(mut top) = value else {
            report.error("", "a flow must be a JSON object");
            return Err(report);
        };
        let raw_states = match top.insert("states".into(), Value::Object(Default::default())) {
            Some(Value::Object(states)) => states,
            Some(_) => {
                report.error("states", "must be an object of states by name");
                Default::default()
            }
            None => {
                report.error("states", "missing field `states`");
                Default::default()
            }
        };
        let header: Option<FlowDefinition> =
            match serde_path_to_error::deserialize(Value::Object(top)) {
                Ok(definition) => Some(definition),
                Err(e) => {
                    let path = e.path().to_string();
                    let path = if path == "." { String::new() } else { path };
                    report.error(path, e.into_inner().to_string());
                    None
                }
            };
        let mut states = indexmap::IndexMap::new();
        let mut unreadable = HashSet::new();
        for (name, raw) in raw_states {
            match read_state(&name, raw) {
                Ok(state) => {
                    states.insert(name, state);
                }
                Err((path, message)) => {
                    report.error(path, message);
                    unreadable.insert(name);
                }
            }
        }
        let Some(mut definition) = header else {
            return Err(report);
        };
        definition.states = states;
        build(definition, &unreadable, report)
    }

    /// Validates and compiles a flow already in memory.
    pub fn compile(definition: FlowDefinition) -> Result<Flow, Report> {
        build(definition, &HashSet::new(), Report::default())
    }

    pub fn definition(&self) -> &FlowDefinition {
        &self.definition
    }

    /// A state by name.
    pub fn state(&self, name: &str) -> Option<&State> {
        self.definition.states.get(name)
    }

    /// Problems that did not block compiling.
    pub fn warnings(&self) -> &[Issue] {
        &self.warnings
    }

    /// Every plugin the flow names, with where it names it.
    pub fn plugins(&self) -> &[PluginRef] {
        &self.plugins
    }

    /// The distinct (world, name) pairs the tenant must have installed.
    pub fn required_plugins(&self) -> BTreeSet<(PluginWorld, String)> {
        self.plugins
            .iter()
            .map(|p| (p.world, p.name.clone()))
            .collect()
    }

    pub(crate) fn expr(&self, source: &str) -> &Expr {
        &self.exprs[source]
    }
}

/// Validates a flow and returns every problem, warnings included.
pub fn validate(value: Value) -> Report {
    match Flow::from_value(value) {
        Ok(flow) => Report {
            issues: flow.warnings,
        },
        Err(report) => report,
    }
}

fn build(
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

fn read_state(name: &str, raw: Value) -> Result<State, (String, String)> {
    let base = format!("states.{name}");
    let mut raw: RawState = serde_path_to_error::deserialize(raw).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." {
            base.clone()
        } else {
            format!("{base}.{inner}")
        };
        (path, e.into_inner().to_string())
    })?;
    let config = std::mem::take(&mut raw.config);
    let config = StateConfig::parse(&raw.kind, config).map_err(|e| match e {
        ConfigError::UnknownType(message) => (format!("{base}.type"), message),
        ConfigError::Invalid { path, message } if path.is_empty() || path == "." => {
            (format!("{base}.config"), message)
        }
        ConfigError::Invalid { path, message } => (format!("{base}.config.{path}"), message),
    })?;
    Ok(raw.with_config(config))
}

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
            if handler.phrases.is_empty() && handler.patterns.is_empty() && handler.intent.is_none()
            {
                self.out.report.error(
                    &path,
                    "a global handler needs phrases, patterns or an intent",
                );
            }
            for (i, pattern) in handler.patterns.iter().enumerate() {
                self.regex(format!("{path}.patterns[{i}]"), pattern);
            }
            if let Some(intent) = &handler.intent
                && !self.definition.intents.contains_key(intent)
            {
                self.out.report.error(
                    format!("{path}.intent"),
                    format!("intent \"{intent}\" is not defined in `intents`"),
                );
            }
            if let Some(response) = &handler.response {
                self.template(format!("{path}.response"), response);
            }
            if let Some(target) = &handler.target_state {
                self.target(format!("{path}.target_state"), target);
            }
            self.actions(&path, "actions", &handler.actions);
        }
        for (name, state) in &self.definition.states {
            self.check_state(name, state);
        }
        self.check_graph();
        if self.out.report.has_errors() {
            return Err(self.out.report);
        }
        Ok(self.out)
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
                    self.template(format!("{config}.prompt"), prompt);
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
                    self.template(format!("{path}.config.prompt"), prompt);
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
                Some(prompt) => self.template(format!("{config}.prompts.{slot}"), prompt),
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
        for (field, map) in [("prompts", &c.prompts), ("retry_prompts", &c.retry_prompts)] {
            for (slot, template) in map {
                let p = format!("{config}.{field}.{slot}");
                if !known(slot) {
                    self.out
                        .report
                        .error(&p, format!("\"{slot}\" is not a slot of this state"));
                } else if field == "retry_prompts" {
                    self.template(p, template);
                }
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
            C::AnyInput | C::LowConfidence | C::Default => {}
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
                Action::SendMessage { message, .. } => {
                    self.template(format!("{path}.message"), message)
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
        while let Some(name) = stack.pop() {
            if !reachable.insert(name) {
                continue;
            }
            let Some(state) = d.states.get(name) else {
                continue;
            };
            stack.extend(state.transitions.iter().map(|t| t.target_state.as_str()));
            if let StateConfig::SlotFilling(c) = &state.config {
                stack.extend(c.fallback_state.as_deref());
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

/// Whether a state hands control back to the user as soon as it is entered.
pub(crate) fn waits_on_entry(config: &StateConfig) -> bool {
    matches!(
        config,
        StateConfig::Intent(_)
            | StateConfig::SlotFilling(_)
            | StateConfig::Wait(_)
            | StateConfig::Custom { .. }
    )
}

/// Cycles of states that can follow each other within one turn without
/// input: through states that do not wait on entry, by transitions that do
/// not need an event. Each cycle is listed once, starting at its first state
/// in the flow's order.
fn automatic_cycles(d: &FlowDefinition) -> Vec<Vec<String>> {
    let names: Vec<&String> = d.states.keys().collect();
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = d
        .states
        .values()
        .map(|state| {
            if waits_on_entry(&state.config) {
                return Vec::new();
            }
            state
                .transitions
                .iter()
                .filter(|t| !t.condition.needs_event())
                .filter_map(|t| index.get(t.target_state.as_str()).copied())
                .collect()
        })
        .collect();
    // Tarjan's strongly connected components; any with a cycle is reported.
    struct Tarjan<'e> {
        edges: &'e [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.edges[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
    let n = names.len();
    let mut tarjan = Tarjan {
        edges: &edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }
    let mut cycles: Vec<Vec<String>> = tarjan
        .components
        .into_iter()
        .filter(|c| c.len() > 1 || edges[c[0]].contains(&c[0]))
        .map(|mut c| {
            c.sort_unstable();
            let mut names: Vec<String> = c.iter().map(|&i| names[i].clone()).collect();
            names.push(names[0].clone());
            names
        })
        .collect();
    cycles.sort();
    cycles
}

/// Plugin names: what the store and the wasm registry accept.
pub fn is_plugin_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

//! [`Flow`]: a flow definition that passed validation, with what the machine
//! needs compiled, and what the rest of the engine may ask of it.

use std::collections::{BTreeSet, HashMap};

use regex::Regex;

use crate::expr::Expr;
use crate::intent::IntentMatcher;
use crate::model::{FlowDefinition, State};
use crate::ports::PluginWorld;
use crate::slots::Rule;
use crate::template::Templates;

use super::plugins::PluginRef;
use super::report::Issue;

/// A validated flow with everything the machine needs compiled.
#[derive(Debug)]
pub struct Flow {
    pub(super) definition: FlowDefinition,
    pub(crate) exprs: HashMap<String, Expr>,
    pub(crate) templates: Templates,
    /// Slot rules by (state, slot).
    pub(crate) rules: HashMap<(String, String), Rule>,
    /// Slot extractors and handler patterns, by source.
    pub(crate) regexes: HashMap<String, Regex>,
    pub(crate) intents: IntentMatcher,
    /// Transition indices of each state in the order they are tried.
    pub(crate) order: HashMap<String, Vec<usize>>,
    pub(super) plugins: Vec<PluginRef>,
    pub(super) warnings: Vec<Issue>,
}

impl Flow {
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

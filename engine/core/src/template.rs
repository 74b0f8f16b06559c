//! Message templates (minijinja), compiled once per flow.

use std::collections::{HashMap, HashSet};

use minijinja::{Environment, UndefinedBehavior, Value, context};

use crate::context::{Conversation, Event};

/// Instructions one render may spend, so a template cannot stall a turn.
const RENDER_FUEL: u64 = 50_000;

/// The templates of one flow, keyed by their source text.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    /// The top-level names each template reads: only those are converted
    /// for a render, which keeps a turn within its time budget.
    reads: HashMap<String, HashSet<String>>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        // A missing key renders as nothing rather than failing the turn:
        // `{{ user.name }}` for an anonymous user is an empty string.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(32);
        Templates {
            env,
            reads: HashMap::new(),
        }
    }
}

impl Templates {
    /// Compiles `source`; the error names the line and the problem.
    pub fn add(&mut self, source: &str) -> Result<(), String> {
        if self.reads.contains_key(source) {
            return Ok(());
        }
        self.env
            .add_template_owned(source.to_owned(), source.to_owned())
            .map_err(|e| describe(&e))?;
        let reads = self
            .env
            .get_template(source)
            .map_err(|e| describe(&e))?
            .undeclared_variables(false);
        self.reads.insert(source.to_owned(), reads);
        Ok(())
    }

    /// Renders a template added before, with the conversation's names bound.
    pub fn render(
        &self,
        source: &str,
        conversation: &Conversation,
        event: Option<&Event>,
    ) -> Result<String, String> {
        let template = self.env.get_template(source).map_err(|e| describe(&e))?;
        let Some(reads) = self.reads.get(source) else {
            return Err(format!("template was not compiled: {source}"));
        };
        if reads.is_empty() {
            return template.render(()).map_err(|e| describe(&e));
        }
        let c = conversation;
        let names = reads.iter().filter_map(|name| {
            let value = match name.as_str() {
                "slots" => Value::from_serialize(&c.slots),
                "variables" => Value::from_serialize(&c.variables),
                "user" => {
                    let mut user = c.user_profile.clone();
                    user.entry("id").or_insert_with(|| c.user_id.clone().into());
                    Value::from_serialize(&user)
                }
                "event" => context! {
                    text => event.map_or("", |e| e.text.as_str()),
                    data => Value::from_serialize(event.map(|e| &e.data)),
                },
                "intent" => context! {
                    name => c.intent.as_ref().and_then(|i| i.name.clone()),
                    confidence => c.intent.as_ref().map_or(0.0, |i| i.confidence),
                    entities => Value::from_serialize(c.intent.as_ref().map(|i| &i.entities)),
                },
                "state" => context! {
                    name => c.current_state.as_str(),
                    outcome => c.state_outcome.as_deref(),
                    no_match => c.unanswered.no_match,
                    no_input => c.unanswered.no_input,
                },
                "integrations" => Value::from_serialize(&c.integration_results),
                _ => return None,
            };
            Some((name.as_str(), value))
        });
        let ctx: std::collections::BTreeMap<&str, Value> = names.collect();
        template.render(ctx).map_err(|e| describe(&e))
    }
}

fn describe(error: &minijinja::Error) -> String {
    match (error.line(), error.detail()) {
        (Some(line), Some(detail)) => format!("{} (line {line}): {detail}", error.kind()),
        (Some(line), None) => format!("{} (line {line})", error.kind()),
        (None, Some(detail)) => format!("{}: {detail}", error.kind()),
        (None, None) => error.kind().to_string(),
    }
}

//! Message templates (minijinja), compiled once per flow.

use minijinja::{Environment, UndefinedBehavior, Value, context};

use crate::context::{Conversation, Event};

/// Instructions one render may spend, so a template cannot stall a turn.
const RENDER_FUEL: u64 = 50_000;

/// The templates of one flow, keyed by their source text.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        // A missing key renders as nothing rather than failing the turn:
        // `{{ user.name }}` for an anonymous user is an empty string.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_recursion_limit(32);
        Templates { env }
    }
}

impl Templates {
    /// Compiles `source`; the error names the line and the problem.
    pub fn add(&mut self, source: &str) -> Result<(), String> {
        if self.env.get_template(source).is_ok() {
            return Ok(());
        }
        self.env
            .add_template_owned(source.to_owned(), source.to_owned())
            .map_err(|e| describe(&e))
    }

    /// Renders a template added before, with the conversation's names bound.
    pub fn render(
        &self,
        source: &str,
        conversation: &Conversation,
        event: Option<&Event>,
    ) -> Result<String, String> {
        let template = self.env.get_template(source).map_err(|e| describe(&e))?;
        let mut user = conversation.user_profile.clone();
        user.entry("id")
            .or_insert_with(|| conversation.user_id.clone().into());
        let intent = conversation.intent.as_ref();
        let ctx = context! {
            slots => Value::from_serialize(&conversation.slots),
            variables => Value::from_serialize(&conversation.variables),
            user => Value::from_serialize(&user),
            event => context! {
                text => event.map_or("", |e| e.text.as_str()),
                data => Value::from_serialize(event.map(|e| &e.data)),
            },
            intent => context! {
                name => intent.and_then(|i| i.name.clone()),
                confidence => intent.map_or(0.0, |i| i.confidence),
            },
            state => context! {
                name => conversation.current_state.as_str(),
                outcome => conversation.state_outcome.as_deref(),
            },
            integrations => Value::from_serialize(&conversation.integration_results),
        };
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

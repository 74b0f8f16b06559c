//! CEL expressions: transition conditions, slot rules and data mappings.

use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program};
use serde_json::{Value, json};

use crate::context::{Conversation, Event};

/// The standard library plus the strings, lists and math extensions
/// (`lowerAscii`, `replace`, `split`, `math.least`, ...).
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    for extension in [
        cel::extensions::strings,
        cel::extensions::lists,
        cel::extensions::math,
    ] {
        env.add_extension(extension)
            .expect("the standard extensions do not conflict");
    }
    Arc::new(env)
});

/// The names every expression can read, as docs/flows.md lists them.
pub const SCOPE_NAMES: [&str; 7] = [
    "slots",
    "variables",
    "event",
    "intent",
    "user",
    "state",
    "integrations",
];

/// A compiled CEL expression.
#[derive(Debug)]
pub struct Expr {
    source: String,
    program: Program,
    /// Which names the expression reads, so evaluation binds only those.
    reads: Vec<&'static str>,
}

impl Expr {
    /// Compiles `source`; the error is the parser's message.
    pub fn compile(source: &str) -> Result<Expr, String> {
        let program = ENV.compile(source).map_err(|e| e.to_string())?;
        let references = program.references();
        let reads = SCOPE_NAMES
            .into_iter()
            .chain(["value", "result"])
            .filter(|name| references.has_variable(name))
            .collect();
        Ok(Expr {
            source: source.to_owned(),
            program,
            reads,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to JSON.
    pub fn eval(&self, scope: &Scope<'_>) -> Result<Value, String> {
        let mut context = Context::with_env(ENV.clone());
        for name in &self.reads {
            context.add_variable_from_value(*name, scope.to_cel(name));
        }
        let value = self.program.execute(&context).map_err(|e| e.to_string())?;
        value
            .json()
            .map_err(|e| format!("result cannot be represented as JSON: {e}"))
    }

    /// Evaluates to a boolean; any other result is an error.
    pub fn eval_bool(&self, scope: &Scope<'_>) -> Result<bool, String> {
        match self.eval(scope)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("expected a boolean, got {other}")),
        }
    }
}

/// What an expression sees of a conversation.
pub struct Scope<'a> {
    pub conversation: &'a Conversation,
    pub event: Option<&'a Event>,
    /// `value` in slot rules, `result` in response mappings.
    pub extra: Option<(&'static str, &'a Value)>,
}

impl<'a> Scope<'a> {
    pub fn new(conversation: &'a Conversation, event: Option<&'a Event>) -> Scope<'a> {
        Scope {
            conversation,
            event,
            extra: None,
        }
    }

    pub fn with(mut self, name: &'static str, value: &'a Value) -> Scope<'a> {
        self.extra = Some((name, value));
        self
    }

    /// Borrowed maps are converted without cloning them first.
    fn to_cel(&self, name: &str) -> cel::Value {
        let c = self.conversation;
        match name {
            "slots" => object_to_cel(&c.slots),
            "variables" => object_to_cel(&c.variables),
            "integrations" => object_to_cel(&c.integration_results),
            _ => json_to_cel(&self.lookup(name)),
        }
    }

    /// The value bound to one of the scope's names.
    pub fn lookup(&self, name: &str) -> Value {
        let c = self.conversation;
        if let Some((extra, value)) = self.extra
            && extra == name
        {
            return value.clone();
        }
        match name {
            "slots" => Value::Object(c.slots.clone()),
            "variables" => Value::Object(c.variables.clone()),
            "user" => {
                let mut user = c.user_profile.clone();
                user.entry("id").or_insert_with(|| json!(c.user_id));
                Value::Object(user)
            }
            "event" => match self.event {
                Some(event) => json!({
                    "type": event.kind,
                    "text": event.text,
                    "data": event.data,
                }),
                None => json!({ "type": "none", "text": "", "data": {} }),
            },
            "intent" => match &c.intent {
                Some(intent) => json!({
                    "name": intent.name.clone().unwrap_or_default(),
                    "top": intent.top.clone().unwrap_or_default(),
                    "confidence": intent.confidence,
                    "low_confidence": intent.low_confidence,
                }),
                None => {
                    json!({ "name": "", "top": "", "confidence": 0.0, "low_confidence": false })
                }
            },
            "state" => json!({
                "name": c.current_state,
                "outcome": c.state_outcome.clone().unwrap_or_default(),
                "retries": c.slot_filling.as_ref().map_or(0, |p| p.retries),
            }),
            "integrations" => Value::Object(c.integration_results.clone()),
            _ => Value::Null,
        }
    }
}

/// JSON to CEL. Whole numbers become `int` whenever they fit, so
/// `slots.quantity * 2` works: JSON has no unsigned type, and CEL does not
/// mix `int` and `uint` in arithmetic.
fn json_to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        Value::Object(map) => object_to_cel(map),
    }
}

fn object_to_cel(map: &serde_json::Map<String, Value>) -> cel::Value {
    let map: std::collections::HashMap<cel::objects::Key, cel::Value> = map
        .iter()
        .map(|(k, v)| {
            (
                cel::objects::Key::String(Arc::new(k.clone())),
                json_to_cel(v),
            )
        })
        .collect();
    cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Conversation {
        let mut c = crate::context::tests::blank_conversation();
        c.slots.insert("size".into(), json!("large"));
        c.variables.insert("total".into(), json!(21.5));
        c.user_profile.insert("vip".into(), json!(true));
        c
    }

    #[test]
    fn evaluates_over_slots_variables_user_and_event() {
        let c = conversation();
        let event = Event::message("hello");
        let scope = Scope::new(&c, Some(&event));
        let expr = Expr::compile(
            "slots.size == 'large' && variables.total > 20.0 && user.vip && event.text == 'hello'",
        )
        .unwrap();
        assert!(expr.eval_bool(&scope).unwrap());
    }

    #[test]
    fn a_non_boolean_condition_is_an_error() {
        let c = conversation();
        let expr = Expr::compile("variables.total").unwrap();
        let err = expr.eval_bool(&Scope::new(&c, None)).unwrap_err();
        assert!(err.contains("expected a boolean"), "{err}");
    }

    #[test]
    fn a_missing_key_is_an_error_not_a_crash() {
        let c = conversation();
        let expr = Expr::compile("slots.missing == 1").unwrap();
        assert!(expr.eval_bool(&Scope::new(&c, None)).is_err());
        let guarded = Expr::compile("has(slots.missing) && slots.missing == 1").unwrap();
        assert!(!guarded.eval_bool(&Scope::new(&c, None)).unwrap());
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        assert!(Expr::compile("slots.size ==").is_err());
    }

    #[test]
    fn extra_names_bind_value_and_result() {
        let c = conversation();
        let result = json!({"order": {"id": 42}});
        let expr = Expr::compile("result.order.id + 1").unwrap();
        let scope = Scope::new(&c, None).with("result", &result);
        assert_eq!(expr.eval(&scope).unwrap(), json!(43));
    }
}

//! CEL expressions: transition conditions, slot rules and data mappings.

use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr as Node};
use cel::{Context, Env, IdedExpr, Program};
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

/// What an expression may be, checked when a flow is validated: no
/// expression a flow can hold is expensive to compile or to walk.
pub mod bounds {
    /// Longest source text, in bytes.
    pub const MAX_SOURCE_BYTES: usize = 4096;
    /// Most nodes of the compiled tree (macros expanded).
    pub const MAX_NODES: usize = 512;
    /// Deepest nesting of the tree.
    pub const MAX_DEPTH: usize = 32;
    /// Comprehensions (`all`, `exists`, `map`, `filter`...) inside one another.
    pub const MAX_COMPREHENSION_NESTING: u32 = 2;
    /// Steps an evaluation may take, estimated before it starts from the
    /// data it reads: the tree's size times the largest list, map or string
    /// it could iterate, once per level of comprehension nesting, times what
    /// one step may copy (a step per [`STRING_STEP_BYTES`] of its longest
    /// string: concatenating large strings in a loop is what costs).
    pub const STEP_BUDGET: u64 = 2_000_000;
    /// Bytes of string one step may copy.
    pub const STRING_STEP_BYTES: usize = 1024;
}

/// The shape of a compiled tree, for the bounds above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Shape {
    nodes: usize,
    depth: usize,
    comprehension_nesting: u32,
}

impl Shape {
    fn of(root: &IdedExpr) -> Shape {
        let mut shape = Shape::default();
        shape.visit(root, 1, 0);
        shape
    }

    fn visit(&mut self, node: &IdedExpr, depth: usize, nesting: u32) {
        self.nodes += 1;
        self.depth = self.depth.max(depth);
        self.comprehension_nesting = self.comprehension_nesting.max(nesting);
        let mut child = |n: &IdedExpr, nesting: u32| self.visit(n, depth + 1, nesting);
        match &node.expr {
            Node::Call(call) => {
                if let Some(target) = &call.target {
                    child(target, nesting);
                }
                call.args.iter().for_each(|a| child(a, nesting));
            }
            Node::Comprehension(c) => {
                child(&c.iter_range, nesting);
                child(&c.accu_init, nesting);
                for per_item in [&c.loop_cond, &c.loop_step, &c.result] {
                    child(per_item, nesting + 1);
                }
            }
            Node::List(list) => list.elements.iter().for_each(|e| child(e, nesting)),
            Node::Map(map) => map.entries.iter().for_each(|e| match &e.expr {
                EntryExpr::MapEntry(entry) => {
                    child(&entry.key, nesting);
                    child(&entry.value, nesting);
                }
                EntryExpr::StructField(field) => child(&field.value, nesting),
            }),
            Node::Struct(st) => st.entries.iter().for_each(|e| match &e.expr {
                EntryExpr::MapEntry(entry) => {
                    child(&entry.key, nesting);
                    child(&entry.value, nesting);
                }
                EntryExpr::StructField(field) => child(&field.value, nesting),
            }),
            Node::Select(select) => child(&select.operand, nesting),
            Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
        }
    }

    /// The first bound this shape breaks.
    fn check(&self) -> Result<(), String> {
        use bounds::*;
        if self.nodes > MAX_NODES {
            return Err(format!(
                "the expression is too large: {} nodes, the limit is {MAX_NODES}",
                self.nodes
            ));
        }
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "the expression nests too deeply: {} levels, the limit is {MAX_DEPTH}",
                self.depth
            ));
        }
        if self.comprehension_nesting > MAX_COMPREHENSION_NESTING {
            return Err(format!(
                "the expression nests {} comprehensions (all, exists, map, filter...) inside one another; the limit is {MAX_COMPREHENSION_NESTING}",
                self.comprehension_nesting
            ));
        }
        Ok(())
    }

    /// Steps an evaluation over data of this extent may take.
    fn steps(&self, extent: Extent) -> u64 {
        let per_level = (extent.items as u64).max(1);
        let per_step = 1 + (extent.string_bytes / bounds::STRING_STEP_BYTES) as u64;
        (self.nodes as u64)
            .saturating_mul(per_level.saturating_pow(self.comprehension_nesting))
            .saturating_mul(per_step)
    }
}

/// How large the data an expression reads is, for its cost estimate.
#[derive(Debug, Clone, Copy, Default)]
struct Extent {
    /// The most items a comprehension could iterate: the largest list or
    /// map, or the longest string (which `split` could turn into a list).
    items: usize,
    /// The longest string, in bytes: what one step may copy.
    string_bytes: usize,
}

impl Extent {
    fn max(self, other: Extent) -> Extent {
        Extent {
            items: self.items.max(other.items),
            string_bytes: self.string_bytes.max(other.string_bytes),
        }
    }

    fn of(value: &Value) -> Extent {
        match value {
            Value::String(s) => Extent {
                items: s.len(),
                string_bytes: s.len(),
            },
            Value::Array(items) => items.iter().map(Extent::of).fold(
                Extent {
                    items: items.len(),
                    string_bytes: 0,
                },
                Extent::max,
            ),
            Value::Object(map) => Extent::of_map(map),
            _ => Extent::default(),
        }
    }

    fn of_map(map: &serde_json::Map<String, Value>) -> Extent {
        map.values().map(Extent::of).fold(
            Extent {
                items: map.len(),
                string_bytes: 0,
            },
            Extent::max,
        )
    }
}

/// A compiled CEL expression.
#[derive(Debug)]
pub struct Expr {
    source: String,
    program: Program,
    /// Which names the expression reads, so evaluation binds only those.
    reads: Vec<&'static str>,
    shape: Shape,
}

impl Expr {
    /// Compiles `source`; the error is the parser's message, or the bound
    /// (size, depth, comprehension nesting) it breaks.
    pub fn compile(source: &str) -> Result<Expr, String> {
        if source.len() > bounds::MAX_SOURCE_BYTES {
            return Err(format!(
                "the expression is {} bytes; the limit is {}",
                source.len(),
                bounds::MAX_SOURCE_BYTES
            ));
        }
        let program = ENV.compile(source).map_err(|e| e.to_string())?;
        let shape = Shape::of(program.expression());
        shape.check()?;
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
            shape,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to JSON. An expression with comprehensions is first
    /// costed against the data it reads ([`bounds::STEP_BUDGET`]); one that
    /// could run too long is refused before it starts, so no evaluation
    /// holds a worker for long.
    pub fn eval(&self, scope: &Scope<'_>) -> Result<Value, String> {
        if self.shape.comprehension_nesting > 0 {
            let extent = self
                .reads
                .iter()
                .map(|name| scope.extent(name))
                .fold(Extent::default(), Extent::max);
            let steps = self.shape.steps(extent);
            if steps > bounds::STEP_BUDGET {
                return Err(format!(
                    "the expression is too costly for this conversation's data: about {steps} steps over collections of up to {} items and strings of up to {} bytes, the budget is {}",
                    extent.items,
                    extent.string_bytes,
                    bounds::STEP_BUDGET
                ));
            }
        }
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

    /// How large the data bound to `name` is.
    fn extent(&self, name: &str) -> Extent {
        let c = self.conversation;
        match name {
            "slots" => Extent::of_map(&c.slots),
            "variables" => Extent::of_map(&c.variables),
            "integrations" => Extent::of_map(&c.integration_results),
            _ => Extent::of(&self.lookup(name)),
        }
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
                    "entities": intent.entities,
                }),
                None => json!({
                    "name": "", "top": "", "confidence": 0.0, "low_confidence": false,
                    "entities": {},
                }),
            },
            "state" => json!({
                "name": c.current_state,
                "outcome": c.state_outcome.clone().unwrap_or_default(),
                "retries": c.slot_filling.as_ref().map_or(0, |p| p.retries),
                "no_match": c.unanswered.no_match,
                "no_input": c.unanswered.no_input,
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
    fn expressions_beyond_the_bounds_are_refused_at_compile_time_naming_the_bound() {
        let long = format!("slots.size == '{}'", "x".repeat(bounds::MAX_SOURCE_BYTES));
        assert!(
            Expr::compile(&long)
                .unwrap_err()
                .contains("bytes; the limit is 4096")
        );
        let deep = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        let deep = format!("{deep} + {}", vec!["1"; 40].join(" + "));
        assert!(
            Expr::compile(&deep)
                .unwrap_err()
                .contains("nests too deeply")
        );
        let nested = "[1].all(a, [2].all(b, [3].all(c, a < b)))";
        assert!(
            Expr::compile(nested)
                .unwrap_err()
                .contains("nests 3 comprehensions")
        );
        assert!(
            Expr::compile("[1].all(a, [2].all(b, a < b))").is_ok(),
            "two levels are fine"
        );
    }

    #[test]
    fn an_expensive_evaluation_is_refused_before_it_starts() {
        let mut c = conversation();
        let expr =
            Expr::compile("variables.items.all(a, variables.items.exists(b, a == b))").unwrap();
        c.variables
            .insert("items".into(), json!((0..100).collect::<Vec<_>>()));
        assert!(
            expr.eval_bool(&Scope::new(&c, None)).unwrap(),
            "small data: evaluated"
        );

        c.variables
            .insert("items".into(), json!((0..5_000).collect::<Vec<_>>()));
        let refused = expr.eval_bool(&Scope::new(&c, None)).unwrap_err();
        assert!(
            refused.contains("too costly for this conversation's data"),
            "{refused}"
        );
        assert!(refused.contains("up to 5000 items"), "{refused}");
        // Strings count: split could make a list of one.
        let split =
            Expr::compile("slots.text.split('').all(a, slots.text.split('').exists(b, a == b))")
                .unwrap();
        c.slots.insert("text".into(), json!("y".repeat(5_000)));
        assert!(split.eval_bool(&Scope::new(&c, None)).is_err());

        // Few items, but each step copies long strings: ten concatenations
        // of 30 KB per item is seconds of copying over 30,000 items.
        let copying = Expr::compile(&format!(
            "variables.items.exists(x, ({}slots.text).size() == 0)",
            "slots.text + ".repeat(10)
        ))
        .unwrap();
        c.variables
            .insert("items".into(), json!((0..2_000).collect::<Vec<_>>()));
        c.slots.insert("text".into(), json!("y".repeat(100)));
        assert!(
            copying.eval_bool(&Scope::new(&c, None)).is_ok(),
            "short strings: evaluated"
        );
        c.slots.insert("text".into(), json!("y".repeat(30_000)));
        let refused = copying.eval_bool(&Scope::new(&c, None)).unwrap_err();
        assert!(
            refused.contains("strings of up to 30000 bytes"),
            "{refused}"
        );
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

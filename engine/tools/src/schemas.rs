//! A tool's input and output schemas, compiled once per installed version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use mcp_flow::ToolManifest;
use mcp_wasm::Installed;
use serde_json::Value;

/// How many compiled pairs are kept; past it the map starts over (versions
/// come and go far less often than calls).
const KEPT: usize = 1024;

#[derive(Default)]
pub(crate) struct Schemas {
    compiled: Mutex<HashMap<String, Arc<Compiled>>>,
}

pub(crate) struct Compiled {
    input: Option<Validator>,
    output: Option<Validator>,
}

impl Schemas {
    /// The compiled schemas of an installed tool version. A schema that is
    /// not an object (absent, `{}`, or text describe() gave) checks nothing.
    pub(crate) fn of(
        &self,
        installed: &Installed,
        manifest: &ToolManifest,
    ) -> Result<Arc<Compiled>, String> {
        let key = format!(
            "{}\n{}\n{}\n{}",
            installed.tenant, installed.name, installed.version, installed.sha256
        );
        if let Some(compiled) = self.compiled.lock().unwrap().get(&key) {
            return Ok(compiled.clone());
        }
        let compiled = Arc::new(Compiled {
            input: compile(&manifest.input_schema)
                .map_err(|e| format!("the tool's input schema is not valid JSON Schema: {e}"))?,
            output: compile(&manifest.output_schema)
                .map_err(|e| format!("the tool's output schema is not valid JSON Schema: {e}"))?,
        });
        let mut kept = self.compiled.lock().unwrap();
        if kept.len() >= KEPT {
            kept.clear();
        }
        kept.insert(key, compiled.clone());
        Ok(compiled)
    }
}

impl Compiled {
    pub(crate) fn check_input(&self, args: &Value) -> Result<(), String> {
        check(self.input.as_ref(), args)
    }

    pub(crate) fn check_output(&self, result: &Value) -> Result<(), String> {
        check(self.output.as_ref(), result)
    }
}

fn compile(schema: &Value) -> Result<Option<Validator>, String> {
    match schema {
        Value::Object(fields) if !fields.is_empty() => jsonschema::validator_for(schema)
            .map(Some)
            .map_err(|e| e.to_string()),
        _ => Ok(None),
    }
}

/// Every problem, each led by where it is (`/order_id`, or `(root)`).
fn check(validator: Option<&Validator>, value: &Value) -> Result<(), String> {
    let Some(validator) = validator else {
        return Ok(());
    };
    let problems: Vec<String> = validator
        .iter_errors(value)
        .take(5)
        .map(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() {
                "(root)".to_owned()
            } else {
                path
            };
            format!("{at}: {e}")
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_problem_is_named_by_where_it_is() {
        let schema = json!({
            "type": "object",
            "required": ["order_id"],
            "properties": {
                "order_id": { "type": "string", "pattern": "^[A-Z]{2}[0-9]{4}$" },
                "count": { "type": "integer" }
            }
        });
        let validator = compile(&schema).unwrap();
        assert_eq!(
            check(validator.as_ref(), &json!({ "order_id": "AB1234" })),
            Ok(())
        );
        let problems = check(validator.as_ref(), &json!({ "count": "two" })).unwrap_err();
        assert!(
            problems.contains("(root): \"order_id\" is a required property"),
            "{problems}"
        );
        assert!(problems.contains("/count: "), "{problems}");
    }

    #[test]
    fn a_schema_that_is_not_an_object_checks_nothing_and_a_broken_one_is_refused() {
        assert!(compile(&json!({})).unwrap().is_none());
        assert!(compile(&Value::String("text".into())).unwrap().is_none());
        assert!(compile(&json!({ "type": "no-such-type" })).is_err());
    }
}

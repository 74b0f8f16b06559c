//! Reading a flow from JSON: every state that cannot be read is reported
//! along with the problems validation finds in the rest.

use std::collections::HashSet;

use serde_json::Value;

use crate::model::{ConfigError, FlowDefinition, RawState, State, StateConfig};

use super::compile::build;
use super::report::Report;
use super::validated::Flow;

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

/// Reads one state and its `config`, which its `type` decides; on failure,
/// where (a path into the flow) and what.
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

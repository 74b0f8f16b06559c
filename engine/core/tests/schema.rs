//! The published JSON Schema matches the types, and accepts real flows.

use std::path::PathBuf;

use mcp_flow::schema::flow_schema;
use serde_json::{Value, json};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn the_committed_schema_is_up_to_date() {
    let generated = serde_json::to_string_pretty(&flow_schema()).unwrap() + "\n";
    let path = repo("schema/flow.schema.json");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schema/flow.schema.json is stale; regenerate it with UPDATE_SCHEMA=1 cargo test -p mcp-flow --test schema"
    );
}

#[test]
fn the_example_flows_satisfy_the_schema() {
    let validator = jsonschema::validator_for(&flow_schema()).unwrap();
    for name in ["greeting", "pizza_order", "order_status"] {
        let text = std::fs::read_to_string(repo(&format!("examples/flows/{name}.json"))).unwrap();
        let flow: Value = serde_json::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&flow)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
}

#[test]
fn the_schema_rejects_what_the_validator_rejects() {
    let validator = jsonschema::validator_for(&flow_schema()).unwrap();
    let base = json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "a",
        "states": { "a": { "type": "end" } }
    });
    assert!(validator.is_valid(&base));
    let cases = [
        ("type", json!("respnse")),
        ("config", json!({ "message": 5 })),
        (
            "transitions",
            json!([{ "condition": "sometimes", "target_state": "a" }]),
        ),
        (
            "transitions",
            json!([{ "condition": "any_input", "target_state": "a", "priority": 2000 }]),
        ),
        ("entry_actions", json!([{ "type": "set_variable" }])),
    ];
    for (field, value) in cases {
        let mut flow = base.clone();
        flow["states"]["a"][field] = value.clone();
        assert!(
            !validator.is_valid(&flow),
            "{field} = {value} should be rejected"
        );
    }
    let mut custom = base.clone();
    custom["states"]["a"]["type"] = json!("plugin:quiz");
    assert!(validator.is_valid(&custom));
}

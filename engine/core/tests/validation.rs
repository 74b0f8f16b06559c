//! Invalid flows get every one of their problems reported, with paths.

use mcp_flow::{Flow, PluginWorld, Severity, validate};
use serde_json::json;

/// (path, part of the message) for every error, in report order.
fn errors(value: serde_json::Value) -> Vec<(String, String)> {
    let report = validate(value);
    report
        .errors()
        .map(|i| (i.path.clone(), i.message.clone()))
        .collect()
}

fn assert_reported(found: &[(String, String)], path: &str, needle: &str) {
    assert!(
        found.iter().any(|(p, m)| p == path && m.contains(needle)),
        "expected an error at {path} containing {needle:?}; got:\n{}",
        found
            .iter()
            .map(|(p, m)| format!("  {p}: {m}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_problem_in_a_broken_flow_is_reported_in_one_pass() {
    let flow = json!({
        "flow_id": "broken",
        "name": "Broken",
        "version": "1",
        "initial_state": "start",
        "states": {
            "greet": {
                "type": "respnse",
                "config": {}
            },
            "ask": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["size", "qty"],
                    "prompts": { "size": "Size?" },
                    "validation_rules": { "qty": "integer:9..1", "colour": "one_of:red" },
                    "max_retries": 9
                },
                "transitions": [
                    { "condition": "slot_filled", "target_state": "nowhere" },
                    { "condition": "expression", "target_state": "ask" },
                    { "condition": "expression", "expression": "slots.size ==", "target_state": "also_missing" },
                    { "condition": "intent_match", "target_state": "ask", "priority": 5000 }
                ]
            },
            "call": {
                "type": "integration",
                "config": {
                    "integration_id": "Order API",
                    "endpoint": "/x",
                    "method": "FETCH",
                    "timeout_ms": 50,
                    "request_mapping": { "id": "slots.(" },
                    "response_mapping": {}
                },
                "transitions": [ { "condition": "integration_success", "target_state": "done" } ]
            },
            "say": {
                "type": "response",
                "config": { "response_templates": { "default": "Hi {{ user.name" }, "delay_ms": 9000 },
                "transitions": []
            },
            "classify": {
                "type": "intent",
                "config": { "confidence_threshold": 1.5 },
                "transitions": [ { "condition": "any_input", "target_state": "done" } ]
            },
            "done": { "type": "end" }
        }
    });
    let found = errors(flow);
    assert_reported(
        &found,
        "initial_state",
        "initial state \"start\" is not one of the flow's states",
    );
    assert_reported(
        &found,
        "states.greet.type",
        "unknown state type \"respnse\"; supported types are response, intent, slot_filling, integration, condition, wait, end",
    );
    assert_reported(
        &found,
        "states.ask.config.prompts",
        "required slot \"qty\" has no prompt",
    );
    assert_reported(
        &found,
        "states.ask.config.validation_rules.qty",
        "minimum is above the maximum",
    );
    assert_reported(
        &found,
        "states.ask.config.validation_rules.colour",
        "\"colour\" is not a slot of this state",
    );
    assert_reported(&found, "states.ask.config.max_retries", "between 1 and 5");
    assert_reported(
        &found,
        "states.ask.transitions[0].target_state",
        "\"nowhere\"",
    );
    assert_reported(
        &found,
        "states.ask.transitions[1].expression",
        "needs an expression",
    );
    assert_reported(
        &found,
        "states.ask.transitions[2].expression",
        "does not compile",
    );
    assert_reported(
        &found,
        "states.ask.transitions[2].target_state",
        "\"also_missing\"",
    );
    assert_reported(
        &found,
        "states.ask.transitions[3].priority",
        "between 0 and 1000",
    );
    assert_reported(
        &found,
        "states.ask.transitions[3].condition_value",
        "needs the intent",
    );
    assert_reported(
        &found,
        "states.call.config.integration_id",
        "is not a plugin name",
    );
    assert_reported(
        &found,
        "states.call.config.method",
        "unknown method \"FETCH\"",
    );
    assert_reported(
        &found,
        "states.call.config.timeout_ms",
        "between 100 and 30000",
    );
    assert_reported(
        &found,
        "states.call.config.request_mapping.id",
        "does not compile",
    );
    assert_reported(
        &found,
        "states.say.config.response_templates.default",
        "template does not compile",
    );
    assert_reported(&found, "states.say.config.delay_ms", "at most 5000");
    assert_reported(&found, "states.say.transitions", "has no way out");
    assert_reported(
        &found,
        "states.classify.config.confidence_threshold",
        "between 0 and 1",
    );
    assert_reported(&found, "states.classify.config", "needs intents");
    assert_eq!(found.len(), 21, "{found:#?}");
}

#[test]
fn config_fields_of_the_wrong_type_are_reported_with_their_path() {
    let found = errors(json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "a",
        "states": {
            "a": { "type": "response", "config": { "response_templates": { "default": "x" }, "delay_ms": "soon" },
                   "transitions": [ { "condition": "any_input", "target_state": "b" } ] },
            "b": { "type": "end", "transitions": [ { "condition": "sometimes", "target_state": "a" } ] },
            "c": { "type": "wait", "config": { "prompt": "?", "timeot_ms": 5 } }
        }
    }));
    assert_reported(&found, "states.a.config.delay_ms", "invalid type");
    assert_reported(
        &found,
        "states.b.transitions[0].condition",
        "unknown variant `sometimes`",
    );
    assert_reported(
        &found,
        "states.c.config.timeot_ms",
        "unknown field `timeot_ms`",
    );
    // States that could not be read still count as existing: no knock-on errors.
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn automatic_cycles_are_errors_and_waiting_states_break_them() {
    let looping = json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "a",
        "states": {
            "a": { "type": "condition", "transitions": [ { "condition": "expression", "expression": "variables.n < 3", "target_state": "b" },
                                                         { "condition": "default", "target_state": "end" } ] },
            "b": { "type": "response", "config": { "response_templates": { "default": "again" } },
                   "transitions": [ { "condition": "default", "target_state": "a" } ] },
            "end": { "type": "end" }
        }
    });
    let found = errors(looping.clone());
    assert_reported(
        &found,
        "states.a.transitions",
        "states a → b → a can loop without waiting for input",
    );

    // The same loop through a response that waits for any input is fine.
    let mut waiting = looping;
    waiting["states"]["b"]["transitions"][0]["condition"] = json!("any_input");
    assert_eq!(errors(waiting), []);
}

#[test]
fn unreachable_states_and_ambiguous_priorities_are_warnings_only() {
    let flow = Flow::from_value(json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "a",
        "intents": { "yes": { "examples": ["yes"] } },
        "states": {
            "a": { "type": "intent", "config": {},
                   "transitions": [
                       { "condition": "intent_match", "condition_value": "yes", "target_state": "end" },
                       { "condition": "any_input", "target_state": "end" },
                       { "condition": "default", "target_state": "end" }
                   ] },
            "orphan": { "type": "end" },
            "end": { "type": "end" }
        }
    }))
    .expect("warnings do not block");
    let warnings: Vec<(&str, &str)> = flow
        .warnings()
        .iter()
        .map(|w| (w.path.as_str(), w.message.as_str()))
        .collect();
    assert!(
        flow.warnings()
            .iter()
            .all(|w| w.severity == Severity::Warning)
    );
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert_eq!(warnings[0].0, "states.orphan");
    assert!(warnings[0].1.contains("cannot be reached"));
    assert_eq!(warnings[1].0, "states.a.transitions[1].priority");
    assert!(
        warnings[1]
            .1
            .contains("transitions 0 and 1 have the same priority (100)")
    );
}

#[test]
fn plugins_referenced_are_collected_by_world() {
    let flow = Flow::from_value(json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "quiz",
        "states": {
            "quiz": { "type": "plugin:quiz", "config": { "question": "2+2?" },
                      "entry_actions": [ { "type": "plugin", "plugin": "price" } ],
                      "transitions": [ { "condition": "plugin", "plugin": "is-vip", "target_state": "nlu" },
                                       { "condition": "default", "target_state": "nlu" } ] },
            "nlu": { "type": "intent", "config": { "classifier": "nlu" },
                     "transitions": [ { "condition": "any_input", "target_state": "lookup" } ] },
            "lookup": { "type": "integration", "config": { "integration_id": "order-api" },
                        "transitions": [ { "condition": "default", "target_state": "end" } ] },
            "end": { "type": "end" }
        }
    }))
    .unwrap();
    let required: Vec<(PluginWorld, String)> = flow.required_plugins().into_iter().collect();
    assert_eq!(
        required,
        [
            (PluginWorld::Condition, "is-vip".to_owned()),
            (PluginWorld::Action, "price".to_owned()),
            (PluginWorld::Tool, "order-api".to_owned()),
            (PluginWorld::StateType, "quiz".to_owned()),
            (PluginWorld::Intent, "nlu".to_owned()),
        ]
    );
    let quiz = flow.plugins().iter().find(|p| p.name == "quiz").unwrap();
    assert_eq!(quiz.path, "states.quiz.type");
}

#[test]
fn not_json_and_missing_fields_are_reported() {
    let report = Flow::from_json("{ \"flow_id\": ").unwrap_err();
    assert!(
        report.issues[0].message.starts_with("not valid JSON"),
        "{report}"
    );

    let found =
        errors(json!({ "flow_id": "f", "version": "1", "initial_state": "a", "states": {} }));
    assert_reported(&found, "", "missing field `name`");
}

#[test]
fn the_example_flows_are_valid_without_warnings() {
    for name in ["greeting", "pizza_order", "order_status"] {
        let path = format!(
            "{}/../../examples/flows/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let flow = Flow::from_json(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|report| panic!("{name}:\n{report}"));
        assert_eq!(flow.warnings(), [], "{name}");
    }
}

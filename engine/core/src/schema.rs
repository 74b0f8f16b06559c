//! The JSON Schema of the flow format, generated from the types so editors
//! can complete and check flows. `schema/flow.schema.json` is this, written out.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use crate::model::{
    Action, CUSTOM_TYPE_PREFIX, EndConfig, FlowDefinition, IntegrationConfig, IntentConfig,
    ResponseConfig, SlotFillingConfig, State, StateType, Transition, WaitConfig,
};

/// The schema of a flow document, as JSON.
pub fn flow_schema() -> Value {
    let mut schema = schemars::schema_for!(FlowDefinition);
    schema.insert(
        "$id".into(),
        json!("https://mcp-engine.dev/schema/flow.schema.json"),
    );
    schema.insert("title".into(), json!("MCP Engine flow"));
    schema.to_value()
}

impl JsonSchema for State {
    fn schema_name() -> Cow<'static, str> {
        "State".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let transitions = generator.subschema_for::<Vec<Transition>>();
        let actions = generator.subschema_for::<Vec<Action>>();
        let object = json!({ "type": "object" });
        let configs = [
            (
                StateType::Response,
                generator.subschema_for::<ResponseConfig>().to_value(),
            ),
            (
                StateType::Intent,
                generator.subschema_for::<IntentConfig>().to_value(),
            ),
            (
                StateType::SlotFilling,
                generator.subschema_for::<SlotFillingConfig>().to_value(),
            ),
            (
                StateType::Integration,
                generator.subschema_for::<IntegrationConfig>().to_value(),
            ),
            (StateType::Condition, object.clone()),
            (
                StateType::Wait,
                generator.subschema_for::<WaitConfig>().to_value(),
            ),
            (
                StateType::End,
                generator.subschema_for::<EndConfig>().to_value(),
            ),
        ];
        let by_type: Vec<Value> = configs
            .into_iter()
            .map(|(kind, config)| {
                json!({
                    "if": { "properties": { "type": { "const": kind.as_str() } } },
                    "then": { "properties": { "config": config } }
                })
            })
            .collect();
        let builtin: Vec<&str> = StateType::ALL.iter().map(|t| t.as_str()).collect();
        let custom = format!("^{CUSTOM_TYPE_PREFIX}[a-z0-9_-]{{1,64}}$");
        json_schema!({
            "type": "object",
            "description": "A state: `config` is read according to `type`.",
            "required": ["type"],
            "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "description": "Ignored; the key in `states` names the state." },
                "type": {
                    "description": "A built-in type, or plugin:<name> for a tenant state-type plugin.",
                    "anyOf": [
                        { "enum": builtin },
                        { "type": "string", "pattern": custom }
                    ]
                },
                "config": object,
                "transitions": transitions,
                "entry_actions": actions,
                "exit_actions": actions,
                "metadata": { "type": "object" }
            },
            "allOf": by_type
        })
    }
}

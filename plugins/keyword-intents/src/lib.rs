//! An intent classifier plugin: scores intents by the keywords they share
//! with the text. The tenant sets the keywords in the plugin's `intents`
//! config (JSON: intent → keywords); without it, a support desk's defaults.
//! It finds entities too: the `entities` config (JSON: entity → values)
//! names the values to look for, and the first one in the text is found.

wit_bindgen::generate!({ path: "../../wit", world: "entity-intent", generate_all });

use exports::mcp::plugin::intent_entities::{self, Analysis, Entity};
use exports::mcp::plugin::intents::Guest;
use mcp::plugin::host::config;
use mcp::plugin::types::{Conversation, Error, IntentScore};
use serde_json::Value;

struct KeywordIntents;

const DEFAULTS: &str = r#"{
    "refund": ["refund", "money back", "reimburse"],
    "complaint": ["angry", "terrible", "complain", "awful"],
    "order_status": ["where", "status", "track", "late"]
}"#;

impl Guest for KeywordIntents {
    fn classify(text: String, _conversation: Conversation) -> Result<Vec<IntentScore>, Error> {
        let table = json_config("intents")?
            .unwrap_or_else(|| serde_json::from_str(DEFAULTS).expect("the defaults are JSON"));
        let text = text.to_lowercase();
        let mut scores = Vec::new();
        for (intent, keywords) in table.as_object().into_iter().flatten() {
            let keywords: Vec<&str> = keywords
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let hits = keywords.iter().filter(|k| text.contains(*k)).count();
            if hits > 0 {
                // One keyword is a fair guess; two make it near certain.
                let confidence = (0.55 + 0.2 * hits as f64).min(0.99);
                scores.push(IntentScore {
                    intent: intent.clone(),
                    confidence,
                });
            }
        }
        Ok(scores)
    }
}

impl intent_entities::Guest for KeywordIntents {
    fn analyze(text: String, conversation: Conversation) -> Result<Analysis, Error> {
        let intents = <Self as Guest>::classify(text.clone(), conversation)?;
        let table = json_config("entities")?.unwrap_or_default();
        let lowered = text.to_lowercase();
        let mut entities = Vec::new();
        for (name, values) in table.as_object().into_iter().flatten() {
            let found = values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|value| Some((lowered.find(&value.to_lowercase())?, value)))
                .min();
            if let Some((_, value)) = found {
                entities.push(Entity {
                    name: name.clone(),
                    value: Value::from(value).to_string(),
                    confidence: 0.9,
                });
            }
        }
        Ok(Analysis { intents, entities })
    }
}

/// The plugin's config value for `key`, parsed as JSON.
fn json_config(key: &str) -> Result<Option<Value>, Error> {
    config(key)
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| Error {
                code: "bad-config".into(),
                message: format!("the {key} config is not JSON: {e}"),
            })
        })
        .transpose()
}

export!(KeywordIntents);

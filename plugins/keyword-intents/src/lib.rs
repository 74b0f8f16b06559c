//! An intent classifier plugin: scores intents by the keywords they share
//! with the text. The tenant sets the keywords in the plugin's `intents`
//! config (JSON: intent → keywords); without it, a support desk's defaults.

wit_bindgen::generate!({ path: "../../wit", world: "intent" });

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
        let table = config("intents").unwrap_or_else(|| DEFAULTS.to_owned());
        let table: Value = serde_json::from_str(&table).map_err(|e| Error {
            code: "bad-config".into(),
            message: format!("the intents config is not JSON: {e}"),
        })?;
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

export!(KeywordIntents);

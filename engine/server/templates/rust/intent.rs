//! __NAME__: an intent classifier plugin for MCP Engine.
//!
//! A flow's intent state names it as its classifier:
//!
//! ```json
//! "route": { "type": "intent", "config": { "classifier": "__NAME__", "confidence_threshold": 0.6 },
//!            "transitions": [ { "condition": "intent_match", "condition_value": "greeting", "target_state": "hello" } ] }
//! ```
//!
//! `classify` scores the user's text against intents; the engine routes on
//! the best score above the state's threshold. This one matches keywords;
//! put your model or rules here.

wit_bindgen::generate!({ path: "wit", world: "intent" });

use exports::mcp::plugin::intents::Guest;
use mcp::plugin::types::{Conversation, Error, IntentScore};

struct Plugin;

/// Each intent and the words that suggest it.
const KEYWORDS: [(&str, &[&str]); 2] = [
    ("greeting", &["hello", "hi", "hey"]),
    ("goodbye", &["bye", "goodbye", "see you"]),
];

impl Guest for Plugin {
    fn classify(text: String, _conversation: Conversation) -> Result<Vec<IntentScore>, Error> {
        let text = text.to_lowercase();
        let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric()).collect();
        Ok(KEYWORDS
            .iter()
            .filter_map(|(intent, keywords)| {
                let hits = keywords
                    .iter()
                    .filter(|k| words.contains(*k) || (k.contains(' ') && text.contains(**k)))
                    .count();
                (hits > 0).then(|| IntentScore {
                    intent: (*intent).into(),
                    confidence: (0.6 + 0.2 * hits as f64).min(0.99),
                })
            })
            .collect())
    }
}

// Exported only in the component: the tests call `Plugin` on the host.
#[cfg(target_arch = "wasm32")]
export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

__CONVERSATION__
    #[test]
    fn scores_the_intents_it_recognises() {
        let scores = Plugin::classify("Hello there!".into(), conversation("{}", "{}")).unwrap();
        assert_eq!(scores.len(), 1);
        assert_eq!(scores[0].intent, "greeting");
        assert!(scores[0].confidence >= 0.6);
    }

    #[test]
    fn knows_nothing_of_other_texts() {
        let scores = Plugin::classify("what's the weather".into(), conversation("{}", "{}")).unwrap();
        assert!(scores.is_empty());
    }
}

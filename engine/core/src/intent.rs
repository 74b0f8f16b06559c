//! The built-in intent matcher: regular expressions and example phrases.
//!
//! It is deliberately simple and predictable: a pattern that matches scores
//! 1.0, an example equal to the message (ignoring case and punctuation)
//! scores 1.0, and otherwise the score is the Dice overlap of content words
//! with the closest example. Tenants who need real NLU use a classifier plugin.

use std::collections::HashSet;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::model::IntentDefinition;

/// An intent and how sure the classifier is of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentScore {
    pub intent: String,
    pub confidence: f64,
}

/// A value a classifier found in the text, for the slot of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub name: String,
    pub value: serde_json::Value,
    pub confidence: f64,
}

/// What a classifier made of a text: intents best first, and entities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub intents: Vec<IntentScore>,
    pub entities: Vec<Entity>,
}

/// Words too common to say anything about intent.
const STOPWORDS: [&str; 32] = [
    "a", "an", "the", "i", "i'd", "im", "me", "my", "to", "for", "of", "please", "can", "could",
    "would", "you", "is", "it", "do", "want", "like", "some", "and", "or", "in", "on", "with",
    "be", "we", "us", "this", "that",
];

#[derive(Debug)]
struct CompiledIntent {
    name: String,
    patterns: Vec<Regex>,
    /// Each example normalised, and its content words.
    examples: Vec<(String, HashSet<String>)>,
}

/// The intents of one flow, ready to score messages.
#[derive(Debug, Default)]
pub struct IntentMatcher {
    intents: Vec<CompiledIntent>,
}

impl IntentMatcher {
    /// Adds an intent; the error names the pattern that does not compile.
    pub fn add(&mut self, name: &str, definition: &IntentDefinition) -> Result<(), String> {
        let patterns = definition
            .patterns
            .iter()
            .map(|p| {
                RegexBuilder::new(p)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| format!("pattern \"{p}\" is not a valid regular expression: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let examples = definition
            .examples
            .iter()
            .map(|e| (normalize(e), content_words(e)))
            .collect();
        self.intents.push(CompiledIntent {
            name: name.to_owned(),
            patterns,
            examples,
        });
        Ok(())
    }

    /// Scores `text` against the intents named in `only` (all when empty),
    /// best first; intents that score zero are left out. The named groups
    /// of the patterns that match are its entities, sure ones.
    pub fn classify(&self, text: &str, only: &[String]) -> Classification {
        let normalized = normalize(text);
        let words = content_words(text);
        let considered = || {
            self.intents
                .iter()
                .filter(|i| only.is_empty() || only.contains(&i.name))
        };
        let mut intents: Vec<IntentScore> = considered()
            .map(|i| IntentScore {
                intent: i.name.clone(),
                confidence: i.score(text, &normalized, &words),
            })
            .filter(|s| s.confidence > 0.0)
            .collect();
        // Stable: on equal scores the intent defined first wins.
        intents.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        let mut entities = Vec::new();
        for pattern in considered().flat_map(|i| &i.patterns) {
            let Some(captures) = pattern.captures(text) else {
                continue;
            };
            for name in pattern.capture_names().flatten() {
                if let Some(found) = captures.name(name)
                    && !entities.iter().any(|e: &Entity| e.name == name)
                {
                    entities.push(Entity {
                        name: name.to_owned(),
                        value: found.as_str().into(),
                        confidence: 1.0,
                    });
                }
            }
        }
        Classification { intents, entities }
    }
}

impl CompiledIntent {
    fn score(&self, text: &str, normalized: &str, words: &HashSet<String>) -> f64 {
        if self.patterns.iter().any(|p| p.is_match(text)) {
            return 1.0;
        }
        self.examples
            .iter()
            .map(|(example, example_words)| {
                if example == normalized {
                    return 1.0;
                }
                let total = example_words.len() + words.len();
                if total == 0 {
                    return 0.0;
                }
                let common = example_words.intersection(words).count();
                2.0 * common as f64 / total as f64
            })
            .fold(0.0, f64::max)
    }
}

pub(crate) fn normalize(text: &str) -> String {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn content_words(text: &str) -> HashSet<String> {
    normalize(text)
        .split(' ')
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(w))
        .map(|w| w.trim_end_matches("'s").to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> IntentMatcher {
        let mut m = IntentMatcher::default();
        m.add(
            "order_pizza",
            &IntentDefinition {
                examples: vec!["I want to order a pizza".into(), "pizza please".into()],
                patterns: vec![r"\bpizzas?\b".into()],
                title: None,
            },
        )
        .unwrap();
        m.add(
            "check_order",
            &IntentDefinition {
                examples: vec!["where is my order".into(), "order status".into()],
                patterns: vec![],
                title: None,
            },
        )
        .unwrap();
        m
    }

    #[test]
    fn patterns_score_full_confidence() {
        let scores = matcher().classify("Two PIZZAS now", &[]).intents;
        assert_eq!(scores[0].intent, "order_pizza");
        assert_eq!(scores[0].confidence, 1.0);
    }

    #[test]
    fn examples_score_by_word_overlap() {
        let scores = matcher()
            .classify("what's the status of my order?", &[])
            .intents;
        assert_eq!(scores[0].intent, "check_order");
        assert!(
            scores[0].confidence >= 0.5 && scores[0].confidence < 1.0,
            "{scores:?}"
        );
        let exact = matcher().classify("Where is my order?!", &[]).intents;
        assert_eq!(exact[0].confidence, 1.0);
    }

    #[test]
    fn unrelated_text_scores_nothing_and_filters_apply() {
        assert!(matcher().classify("tell me a joke", &[]).intents.is_empty());
        let only = matcher().classify("pizza", &["check_order".into()]).intents;
        assert!(only.is_empty());
    }

    #[test]
    fn a_bad_pattern_is_reported() {
        let err = IntentMatcher::default()
            .add(
                "x",
                &IntentDefinition {
                    examples: vec![],
                    patterns: vec!["(".into()],
                    title: None,
                },
            )
            .unwrap_err();
        assert!(err.contains("pattern \"(\""), "{err}");
    }
}

//! A/B experiments (seed 000 ExperimentConfig): deterministic allocation of
//! conversations to variants.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Object;

/// An experiment splitting a tenant's conversations between variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExperimentConfig {
    pub experiment_id: String,
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub start_date: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<DateTime<Utc>>,
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub metrics: Vec<String>,
    /// Only `hash` is supported (`random` is read as `hash`): the same
    /// conversation always lands in the same variant, on every engine process.
    #[serde(default = "hash")]
    pub allocation_method: String,
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Variant {
    pub name: String,
    /// Share of conversations, 0 to 100; an experiment's shares sum to 100.
    pub percentage: f64,
    /// What the variant changes, e.g. `{"flow_id": "...", "flow_version": "..."}`.
    #[serde(default)]
    pub modifications: Object,
    #[serde(default)]
    pub metadata: Object,
}

fn yes() -> bool {
    true
}

fn hash() -> String {
    "hash".into()
}

/// Buckets per 100%: shares are honoured to a hundredth of a percent.
const BUCKETS: u64 = 10_000;

impl ExperimentConfig {
    /// Every problem with the experiment, each as `(path, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.experiment_id.trim().is_empty() {
            problems.push(("experiment_id".into(), "must not be empty".into()));
        }
        if self.variants.is_empty() {
            problems.push((
                "variants".into(),
                "an experiment needs at least one variant".into(),
            ));
        }
        for (i, variant) in self.variants.iter().enumerate() {
            if !(0.0..=100.0).contains(&variant.percentage) {
                problems.push((
                    format!("variants[{i}].percentage"),
                    "must be between 0 and 100".into(),
                ));
            }
            if variant.name.trim().is_empty() {
                problems.push((format!("variants[{i}].name"), "must not be empty".into()));
            }
            if self.variants[..i].iter().any(|v| v.name == variant.name) {
                problems.push((
                    format!("variants[{i}].name"),
                    format!("variant \"{}\" appears twice", variant.name),
                ));
            }
        }
        let total: f64 = self.variants.iter().map(|v| v.percentage).sum();
        if !self.variants.is_empty() && (total - 100.0).abs() > 1e-6 {
            problems.push((
                "variants".into(),
                format!("percentages must sum to 100, not {total}"),
            ));
        }
        if let Some(end) = self.end_date
            && end <= self.start_date
        {
            problems.push(("end_date".into(), "must be after start_date".into()));
        }
        if !matches!(self.allocation_method.as_str(), "hash" | "random") {
            problems.push((
                "allocation_method".into(),
                format!(
                    "unknown allocation method \"{}\"; use hash",
                    self.allocation_method
                ),
            ));
        }
        problems
    }

    /// Whether the experiment allocates conversations at `now`.
    pub fn is_running(&self, now: DateTime<Utc>) -> bool {
        self.enabled && now >= self.start_date && self.end_date.is_none_or(|end| now < end)
    }

    /// The variant of a conversation: the same answer for the same
    /// (experiment, conversation) everywhere, in proportion to the shares.
    /// `None` when the experiment is not running at `now`.
    pub fn allocate(&self, conversation_id: &str, now: DateTime<Utc>) -> Option<&Variant> {
        if !self.is_running(now) {
            return None;
        }
        let bucket = fnv1a(&[
            self.experiment_id.as_bytes(),
            b":",
            conversation_id.as_bytes(),
        ]) % BUCKETS;
        let mut upper = 0.0;
        for variant in &self.variants {
            upper += variant.percentage * (BUCKETS as f64 / 100.0);
            if (bucket as f64) < upper.round() {
                return Some(variant);
            }
        }
        // Rounding can leave the last bucket uncovered; it belongs to the last variant.
        self.variants.iter().rev().find(|v| v.percentage > 0.0)
    }
}

/// FNV-1a, 64 bit: stable across processes, versions and platforms, unlike
/// the standard library's hasher.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(shares: &[(&str, f64)]) -> ExperimentConfig {
        ExperimentConfig {
            experiment_id: "greeting-test".into(),
            name: "Greeting test".into(),
            enabled: true,
            start_date: "2026-01-01T00:00:00Z".parse().unwrap(),
            end_date: Some("2027-01-01T00:00:00Z".parse().unwrap()),
            variants: shares
                .iter()
                .map(|(name, percentage)| Variant {
                    name: (*name).into(),
                    percentage: *percentage,
                    modifications: Object::new(),
                    metadata: Object::new(),
                })
                .collect(),
            metrics: vec![],
            allocation_method: "hash".into(),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn allocation_is_deterministic_and_follows_the_shares() {
        let e = experiment(&[("control", 70.0), ("friendly", 30.0)]);
        assert!(e.validate().is_empty());
        let mut control = 0;
        for i in 0..10_000 {
            let id = format!("conversation-{i}");
            let v = e.allocate(&id, now()).unwrap();
            assert_eq!(e.allocate(&id, now()).unwrap().name, v.name);
            if v.name == "control" {
                control += 1;
            }
        }
        assert!(
            (6_800..=7_200).contains(&control),
            "control got {control} of 10000"
        );
    }

    #[test]
    fn a_zero_share_variant_never_gets_a_conversation() {
        let e = experiment(&[("a", 100.0), ("b", 0.0)]);
        assert!((0..2_000).all(|i| e.allocate(&i.to_string(), now()).unwrap().name == "a"));
    }

    #[test]
    fn shares_must_sum_to_100_and_names_be_unique() {
        let problems = experiment(&[("a", 60.0), ("a", 30.0)]).validate();
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["variants[1].name", "variants"], "{problems:?}");
        assert!(problems[1].1.contains("sum to 100, not 90"));
    }

    #[test]
    fn nothing_is_allocated_outside_the_dates_or_when_disabled() {
        let mut e = experiment(&[("a", 100.0)]);
        assert!(
            e.allocate("c", "2025-12-31T00:00:00Z".parse().unwrap())
                .is_none()
        );
        assert!(
            e.allocate("c", "2027-01-01T00:00:00Z".parse().unwrap())
                .is_none()
        );
        e.enabled = false;
        assert!(e.allocate("c", now()).is_none());
    }
}

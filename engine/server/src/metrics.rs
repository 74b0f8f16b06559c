//! The engine's figures: counters and latency histograms by tenant, served
//! as Prometheus text on HTTP_PORT `/metrics` and by GetMetrics over gRPC.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), f64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
}

/// One series, for GetMetrics.
pub struct Sample {
    pub name: String,
    pub kind: &'static str,
    pub labels: Labels,
    pub value: f64,
}

const HELP: [(&str, &str, &str); 10] = [
    (
        "mcp_turns_total",
        "counter",
        "Turns processed, by tenant and outcome.",
    ),
    (
        "mcp_turn_errors_total",
        "counter",
        "Errors reported by turns, by tenant and kind.",
    ),
    (
        "mcp_timeouts_delivered_total",
        "counter",
        "Timeout turns run for wait states whose deadline passed, by tenant.",
    ),
    (
        "mcp_plugin_calls_total",
        "counter",
        "Plugin calls made by turns, by tenant, plugin and outcome (ok or the error kind).",
    ),
    (
        "mcp_plugin_errors_total",
        "counter",
        "Plugin calls that failed, by tenant and plugin.",
    ),
    (
        "mcp_plugin_fuel_total",
        "counter",
        "Fuel (wasm instructions) burnt by plugin calls, by tenant and plugin.",
    ),
    (
        "mcp_plugin_call_duration_seconds",
        "histogram",
        "Time of one plugin call, by tenant and plugin.",
    ),
    (
        "mcp_turn_duration_seconds",
        "histogram",
        "Time to process a turn, lock wait included.",
    ),
    (
        "mcp_lock_wait_seconds",
        "histogram",
        "Time a turn waited for its conversation's lock.",
    ),
    (
        "mcp_uptime_seconds",
        "gauge",
        "Seconds since the engine started.",
    ),
];

impl Metrics {
    pub fn add(&self, name: &'static str, labels: Labels, by: f64) {
        *self
            .counters
            .lock()
            .unwrap()
            .entry((name, labels))
            .or_default() += by;
    }

    pub fn observe(&self, name: &'static str, labels: Labels, value: Duration) {
        let seconds = value.as_secs_f64();
        let mut histograms = self.histograms.lock().unwrap();
        let histogram = histograms.entry((name, labels)).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                histogram.counts[i] += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// Counters, and each histogram's count and sum.
    pub fn samples(&self) -> Vec<Sample> {
        let mut samples: Vec<Sample> = self
            .counters
            .lock()
            .unwrap()
            .iter()
            .map(|((name, labels), value)| Sample {
                name: (*name).to_owned(),
                kind: "counter",
                labels: labels.clone(),
                value: *value,
            })
            .collect();
        for ((name, labels), histogram) in self.histograms.lock().unwrap().iter() {
            samples.push(Sample {
                name: format!("{name}_count"),
                kind: "histogram",
                labels: labels.clone(),
                value: histogram.count as f64,
            });
            samples.push(Sample {
                name: format!("{name}_sum"),
                kind: "histogram",
                labels: labels.clone(),
                value: histogram.sum,
            });
        }
        samples
    }

    /// The Prometheus text exposition format.
    pub fn render(&self, uptime: Duration) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().unwrap();
        let histograms = self.histograms.lock().unwrap();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if name == "mcp_uptime_seconds" {
                let _ = writeln!(out, "{name} {}", uptime.as_secs_f64());
            }
            for ((_, labels), value) in counters.iter().filter(|((n, _), _)| *n == name) {
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels, None));
            }
            for ((_, labels), h) in histograms.iter().filter(|((n, _), _)| *n == name) {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        render_labels(labels, Some(&bound.to_string())),
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    render_labels(labels, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", render_labels(labels, None), h.sum);
                let _ = writeln!(
                    out,
                    "{name}_count{} {}",
                    render_labels(labels, None),
                    h.count
                );
            }
        }
        out
    }
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let metrics = Metrics::default();
        metrics.add(
            "mcp_turns_total",
            vec![("tenant", "a\"b".into()), ("outcome", "ok".into())],
            2.0,
        );
        metrics.observe(
            "mcp_turn_duration_seconds",
            vec![("tenant", "a".into())],
            Duration::from_millis(3),
        );
        metrics.observe(
            "mcp_turn_duration_seconds",
            vec![("tenant", "a".into())],
            Duration::from_millis(300),
        );
        let text = metrics.render(Duration::from_secs(1));
        assert!(
            text.contains("mcp_turns_total{tenant=\"a\\\"b\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mcp_turn_duration_seconds_bucket{tenant=\"a\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcp_turn_duration_seconds_bucket{tenant=\"a\",le=\"0.5\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mcp_turn_duration_seconds_bucket{tenant=\"a\",le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mcp_turn_duration_seconds_count{tenant=\"a\"} 2"),
            "{text}"
        );
        assert_eq!(metrics.samples().len(), 3);
    }
}

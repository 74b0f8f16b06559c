//! The engine's figures: counters and latency histograms by tenant, served
//! as Prometheus text on HTTP_PORT `/metrics` and by GetMetrics over gRPC.
//!
//! The series live in a `prometheus::Registry` of the engine's own (tests
//! run several engines in one process); a turn's updates are atomic adds on
//! the series' cells, with no lock shared by all turns. The text is written
//! here rather than by `prometheus::TextEncoder`, so that labels keep the
//! order they are declared in (`tenant` first) and every family keeps its
//! HELP and TYPE lines even before its first series.

use std::fmt::Write;
use std::time::Duration;

use prometheus::proto::{LabelPair, Metric, MetricFamily};
use prometheus::{CounterVec, Gauge, HistogramOpts, HistogramVec, Opts, Registry};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Histogram,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric family: its name, kind, help text and label names, in the
/// order they are rendered.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [&'static str],
}

const UPTIME: &str = "mcp_uptime_seconds";

/// Every family, in the order `/metrics` shows them.
static FAMILIES: [Family; 10] = [
    Family {
        name: "mcp_turns_total",
        kind: Kind::Counter,
        help: "Turns processed, by tenant and outcome.",
        labels: &["tenant", "outcome"],
    },
    Family {
        name: "mcp_turn_errors_total",
        kind: Kind::Counter,
        help: "Errors reported by turns, by tenant and kind.",
        labels: &["tenant", "kind"],
    },
    Family {
        name: "mcp_timeouts_delivered_total",
        kind: Kind::Counter,
        help: "Timeout turns run for wait states whose deadline passed, by tenant.",
        labels: &["tenant"],
    },
    Family {
        name: "mcp_plugin_calls_total",
        kind: Kind::Counter,
        help: "Plugin calls made by turns, by tenant, plugin and outcome (ok or the error kind).",
        labels: &["tenant", "plugin", "outcome"],
    },
    Family {
        name: "mcp_plugin_errors_total",
        kind: Kind::Counter,
        help: "Plugin calls that failed, by tenant and plugin.",
        labels: &["tenant", "plugin"],
    },
    Family {
        name: "mcp_plugin_fuel_total",
        kind: Kind::Counter,
        help: "Fuel (wasm instructions) burnt by plugin calls, by tenant and plugin.",
        labels: &["tenant", "plugin"],
    },
    Family {
        name: "mcp_plugin_call_duration_seconds",
        kind: Kind::Histogram,
        help: "Time of one plugin call, by tenant and plugin.",
        labels: &["tenant", "plugin"],
    },
    Family {
        name: "mcp_turn_duration_seconds",
        kind: Kind::Histogram,
        help: "Time to process a turn, lock wait included.",
        labels: &["tenant"],
    },
    Family {
        name: "mcp_lock_wait_seconds",
        kind: Kind::Histogram,
        help: "Time a turn waited for its conversation's lock.",
        labels: &["tenant"],
    },
    Family {
        name: UPTIME,
        kind: Kind::Gauge,
        help: "Seconds since the engine started.",
        labels: &[],
    },
];

/// The collector behind one family.
enum Series {
    Counter(CounterVec),
    Histogram(HistogramVec),
    Gauge(Gauge),
}

pub struct Metrics {
    registry: Registry,
    /// One per entry of `FAMILIES`, in the same order.
    series: Vec<Series>,
}

/// One series, for GetMetrics.
pub struct Sample {
    pub name: String,
    pub kind: &'static str,
    pub labels: Labels,
    pub value: f64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let registry = Registry::new();
        let series = FAMILIES
            .iter()
            .map(|family| {
                let series = match family.kind {
                    Kind::Counter => Series::Counter(
                        CounterVec::new(Opts::new(family.name, family.help), family.labels)
                            .expect("a valid counter"),
                    ),
                    Kind::Histogram => Series::Histogram(
                        HistogramVec::new(
                            HistogramOpts::new(family.name, family.help).buckets(BUCKETS.to_vec()),
                            family.labels,
                        )
                        .expect("a valid histogram"),
                    ),
                    Kind::Gauge => {
                        Series::Gauge(Gauge::new(family.name, family.help).expect("a valid gauge"))
                    }
                };
                let collector: Box<dyn prometheus::core::Collector> = match &series {
                    Series::Counter(c) => Box::new(c.clone()),
                    Series::Histogram(h) => Box::new(h.clone()),
                    Series::Gauge(g) => Box::new(g.clone()),
                };
                registry
                    .register(collector)
                    .expect("each family registered once");
                series
            })
            .collect();
        Metrics { registry, series }
    }
}

impl Metrics {
    /// The registry that holds every series, for exporters to come.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds `by` to the counter `name` (one of `FAMILIES`) with `labels`
    /// (its label names, each once).
    pub fn add(&self, name: &'static str, labels: Labels, by: f64) {
        if let Some((family, Series::Counter(counters))) = self.find(name, Kind::Counter)
            && let Some(values) = label_values(family, &labels)
        {
            counters.with_label_values(&values).inc_by(by);
        }
    }

    /// Records `value` in the histogram `name` (one of `FAMILIES`).
    pub fn observe(&self, name: &'static str, labels: Labels, value: Duration) {
        if let Some((family, Series::Histogram(histograms))) = self.find(name, Kind::Histogram)
            && let Some(values) = label_values(family, &labels)
        {
            histograms
                .with_label_values(&values)
                .observe(value.as_secs_f64());
        }
    }

    fn find(&self, name: &str, kind: Kind) -> Option<(&'static Family, &Series)> {
        let found = FAMILIES
            .iter()
            .zip(&self.series)
            .find(|(family, _)| family.name == name && family.kind == kind);
        debug_assert!(found.is_some(), "no {} named {name}", kind.as_str());
        found
    }

    /// Counters, and each histogram's count and sum.
    pub fn samples(&self) -> Vec<Sample> {
        let gathered = self.registry.gather();
        let mut samples = Vec::new();
        for kind in [Kind::Counter, Kind::Histogram] {
            let mut families: Vec<&Family> = FAMILIES.iter().filter(|f| f.kind == kind).collect();
            families.sort_by_key(|f| f.name);
            for family in families {
                for (labels, metric) in series_of(family, &gathered) {
                    if kind == Kind::Counter {
                        samples.push(Sample {
                            name: family.name.to_owned(),
                            kind: "counter",
                            labels,
                            value: metric.get_counter().get_value(),
                        });
                        continue;
                    }
                    let histogram = metric.get_histogram();
                    samples.push(Sample {
                        name: format!("{}_count", family.name),
                        kind: "histogram",
                        labels: labels.clone(),
                        value: histogram.get_sample_count() as f64,
                    });
                    samples.push(Sample {
                        name: format!("{}_sum", family.name),
                        kind: "histogram",
                        labels,
                        value: histogram.get_sample_sum(),
                    });
                }
            }
        }
        samples
    }

    /// The Prometheus text exposition format.
    pub fn render(&self, uptime: Duration) -> String {
        for series in &self.series {
            if let Series::Gauge(gauge) = series {
                gauge.set(uptime.as_secs_f64());
            }
        }
        let gathered = self.registry.gather();
        let mut out = String::new();
        for family in &FAMILIES {
            let name = family.name;
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} {}",
                family.help,
                family.kind.as_str()
            );
            if name == UPTIME {
                // Written from `uptime` itself, not read back from the
                // gauge: a concurrent render may have set it since.
                let _ = writeln!(out, "{name} {}", uptime.as_secs_f64());
                continue;
            }
            for (labels, metric) in series_of(family, &gathered) {
                if family.kind == Kind::Counter {
                    let value = metric.get_counter().get_value();
                    let _ = writeln!(out, "{name}{} {value}", render_labels(&labels, None));
                    continue;
                }
                let h = metric.get_histogram();
                for bucket in h.get_bucket() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        render_labels(&labels, Some(&bucket.upper_bound().to_string())),
                        bucket.cumulative_count()
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    render_labels(&labels, Some("+Inf")),
                    h.get_sample_count()
                );
                let _ = writeln!(
                    out,
                    "{name}_sum{} {}",
                    render_labels(&labels, None),
                    h.get_sample_sum()
                );
                let _ = writeln!(
                    out,
                    "{name}_count{} {}",
                    render_labels(&labels, None),
                    h.get_sample_count()
                );
            }
        }
        out
    }
}

/// The values of `labels` in the order of the family's label names; none
/// (and a panic in debug builds) if the names are not exactly those.
fn label_values<'a>(family: &Family, labels: &'a Labels) -> Option<Vec<&'a str>> {
    let values: Option<Vec<&str>> = family
        .labels
        .iter()
        .map(|name| {
            labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        })
        .collect();
    let values = values.filter(|_| labels.len() == family.labels.len());
    debug_assert!(
        values.is_some(),
        "{}: labels {:?}, expected {:?}",
        family.name,
        labels.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        family.labels
    );
    values
}

/// The family's series, each with its labels in declared order, sorted by
/// those labels' values.
fn series_of<'a>(family: &Family, gathered: &'a [MetricFamily]) -> Vec<(Labels, &'a Metric)> {
    let Some(found) = gathered.iter().find(|f| f.name() == family.name) else {
        return Vec::new();
    };
    let mut series: Vec<(Labels, &Metric)> = found
        .get_metric()
        .iter()
        .map(|metric| (declared_order(family, metric.get_label()), metric))
        .collect();
    series.sort_by(|(a, _), (b, _)| a.cmp(b));
    series
}

fn declared_order(family: &Family, pairs: &[LabelPair]) -> Labels {
    family
        .labels
        .iter()
        .map(|name| {
            let value = pairs
                .iter()
                .find(|pair| pair.name() == *name)
                .map(|pair| pair.value().to_owned())
                .unwrap_or_default();
            (*name, value)
        })
        .collect()
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

    #[test]
    fn keeps_declared_label_order_every_family_and_the_buckets() {
        let metrics = Metrics::default();
        let labels = |tenant: &str, plugin: &str, outcome: &str| {
            vec![
                ("tenant", tenant.to_owned()),
                ("plugin", plugin.to_owned()),
                ("outcome", outcome.to_owned()),
            ]
        };
        metrics.add("mcp_plugin_calls_total", labels("b", "p", "ok"), 1.0);
        metrics.add("mcp_plugin_calls_total", labels("a", "q", "trap"), 1.0);
        metrics.add("mcp_plugin_calls_total", labels("a", "q", "trap"), 1.0);
        metrics.observe(
            "mcp_plugin_call_duration_seconds",
            vec![("tenant", "a".into()), ("plugin", "q".into())],
            Duration::from_secs(10),
        );
        let text = metrics.render(Duration::from_millis(1500));

        // Every family keeps its HELP and TYPE, series or not.
        for family in &FAMILIES {
            assert!(
                text.contains(&format!(
                    "# HELP {} {}\n# TYPE {} {}\n",
                    family.name,
                    family.help,
                    family.name,
                    family.kind.as_str()
                )),
                "{text}"
            );
        }
        assert!(text.contains("\nmcp_uptime_seconds 1.5\n"), "{text}");
        // Labels in declared order, series sorted by them.
        let a = "mcp_plugin_calls_total{tenant=\"a\",plugin=\"q\",outcome=\"trap\"} 2\n";
        let b = "mcp_plugin_calls_total{tenant=\"b\",plugin=\"p\",outcome=\"ok\"} 1\n";
        assert!(text.find(a).unwrap() < text.find(b).unwrap(), "{text}");
        // Every bucket, then +Inf, sum and count; 10 s is past the last.
        let name = "mcp_plugin_call_duration_seconds";
        let mut expected = String::new();
        for bound in ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025"] {
            expected += &format!("{name}_bucket{{tenant=\"a\",plugin=\"q\",le=\"{bound}\"}} 0\n");
        }
        for bound in ["0.05", "0.1", "0.25", "0.5", "1", "5"] {
            expected += &format!("{name}_bucket{{tenant=\"a\",plugin=\"q\",le=\"{bound}\"}} 0\n");
        }
        expected += &format!("{name}_bucket{{tenant=\"a\",plugin=\"q\",le=\"+Inf\"}} 1\n");
        expected += &format!("{name}_sum{{tenant=\"a\",plugin=\"q\"}} 10\n");
        expected += &format!("{name}_count{{tenant=\"a\",plugin=\"q\"}} 1\n");
        assert!(text.contains(&expected), "{text}");

        let samples: Vec<(String, Vec<&str>, f64)> = metrics
            .samples()
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.labels.iter().map(|(k, _)| *k).collect(),
                    s.value,
                )
            })
            .collect();
        assert_eq!(
            samples,
            vec![
                (
                    "mcp_plugin_calls_total".to_owned(),
                    vec!["tenant", "plugin", "outcome"],
                    2.0
                ),
                (
                    "mcp_plugin_calls_total".to_owned(),
                    vec!["tenant", "plugin", "outcome"],
                    1.0
                ),
                (
                    "mcp_plugin_call_duration_seconds_count".to_owned(),
                    vec!["tenant", "plugin"],
                    1.0
                ),
                (
                    "mcp_plugin_call_duration_seconds_sum".to_owned(),
                    vec!["tenant", "plugin"],
                    10.0
                ),
            ]
        );
    }

    #[test]
    fn each_engine_has_its_own_series() {
        let one = Metrics::default();
        let two = Metrics::default();
        one.add(
            "mcp_timeouts_delivered_total",
            vec![("tenant", "a".into())],
            1.0,
        );
        assert_eq!(one.samples().len(), 1);
        assert!(two.samples().is_empty());
        assert!(
            !two.render(Duration::ZERO)
                .contains("mcp_timeouts_delivered_total{")
        );
    }

    #[test]
    fn turns_on_many_threads_all_count() {
        let metrics = std::sync::Arc::new(Metrics::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = metrics.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        metrics.add(
                            "mcp_turns_total",
                            vec![("tenant", "a".into()), ("outcome", "ok".into())],
                            1.0,
                        );
                        metrics.observe(
                            "mcp_turn_duration_seconds",
                            vec![("tenant", "a".into())],
                            Duration::from_millis(1),
                        );
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = metrics.render(Duration::ZERO);
        assert!(
            text.contains("mcp_turns_total{tenant=\"a\",outcome=\"ok\"} 4000\n"),
            "{text}"
        );
        assert!(
            text.contains("mcp_turn_duration_seconds_bucket{tenant=\"a\",le=\"0.001\"} 4000\n"),
            "{text}"
        );
        assert!(
            text.contains("mcp_turn_duration_seconds_count{tenant=\"a\"} 4000\n"),
            "{text}"
        );
    }
}

//! The engine's figures: counters and latency histograms by tenant, served
//! as Prometheus text on HTTP_PORT `/metrics` and by GetMetrics over gRPC.
//!
//! The series live in a `prometheus::Registry` of the engine's own (tests
//! run several engines in one process). A turn's updates are atomic adds on
//! its series, found under a read lock of their family (no lock is shared
//! by all turns, none is exclusive); the crate's encoder writes the text.

use std::time::Duration;

use prometheus::proto::{LabelPair, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Every series the engine keeps. Label values go in the order of the
/// names in each field's comment.
pub struct Metrics {
    registry: Registry,
    /// `mcp_turns_total`: tenant, outcome (`ok`, `turn_errors`, `failed`).
    pub turns: IntCounterVec,
    /// `mcp_turn_errors_total`: tenant, kind.
    pub turn_errors: IntCounterVec,
    /// `mcp_timeouts_delivered_total`: tenant.
    pub timeouts_delivered: IntCounterVec,
    /// `mcp_plugin_calls_total`: tenant, plugin, outcome (`ok` or the error kind).
    pub plugin_calls: IntCounterVec,
    /// `mcp_plugin_errors_total`: tenant, plugin.
    pub plugin_errors: IntCounterVec,
    /// `mcp_plugin_fuel_total`: tenant, plugin.
    pub plugin_fuel: IntCounterVec,
    /// `mcp_plugin_call_duration_seconds`: tenant, plugin.
    pub plugin_call_duration: HistogramVec,
    /// `mcp_turn_duration_seconds`: tenant.
    pub turn_duration: HistogramVec,
    /// `mcp_lock_wait_seconds`: tenant.
    pub lock_wait: HistogramVec,
    /// `mcp_conversations_resumed_total`: tenant. Conversations the
    /// context store had lost, resumed from their durable copy.
    pub resumed: IntCounterVec,
    uptime: Gauge,
    /// Read from the data path's writers at each scrape.
    data_path: DataPathGauges,
}

/// What the writers behind the reply report (see [`DataPathFigures`]).
struct DataPathGauges {
    durable_backlog: IntGauge,
    durable_failing: IntGauge,
    durable_batches: IntGauge,
    durable_dropped: IntGauge,
    analytics_lost: IntGauge,
    egress_allowed: IntGauge,
    egress_denied: prometheus::IntGaugeVec,
    plugin_log_lines_dropped: IntGauge,
    key_lookups: IntGauge,
    compiled_cache_bytes: IntGauge,
}

/// The figures of the writers behind the reply, at one moment.
#[derive(Debug, Clone, Default)]
pub struct DataPathFigures {
    /// Turns queued for the database and not yet committed: what a crash
    /// would lose with CONTEXT_DURABILITY=async.
    pub durable_backlog: u64,
    /// Whether the durable writer's last attempt failed.
    pub durable_failing: bool,
    pub durable_batches: u64,
    /// Turns the database refused for good.
    pub durable_dropped: u64,
    pub analytics_lost: u64,
    /// Plugins' outbound requests let out by the egress policy.
    pub egress_allowed: u64,
    /// Those it refused, by reason (`not_listed`, `loopback`, `private`…).
    pub egress_denied: Vec<(&'static str, u64)>,
    /// Plugin log lines dropped over the log limits.
    pub plugin_log_lines_dropped: u64,
    /// API keys looked up in the database (cache misses).
    pub key_lookups: u64,
    /// Compiled plugin code the in-memory cache keeps.
    pub compiled_cache_bytes: u64,
}

/// One series, for GetMetrics: a counter, or a histogram's count or sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub kind: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter =
                IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
            registry
                .register(Box::new(counter.clone()))
                .expect("each series registered once");
            counter
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
            let histogram = HistogramVec::new(opts, labels).expect("a valid histogram");
            registry
                .register(Box::new(histogram.clone()))
                .expect("each series registered once");
            histogram
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("a valid gauge");
            registry
                .register(Box::new(gauge.clone()))
                .expect("each series registered once");
            gauge
        };
        let metrics = Metrics {
            turns: counter(
                "mcp_turns_total",
                "Turns processed, by tenant and outcome.",
                &["tenant", "outcome"],
            ),
            turn_errors: counter(
                "mcp_turn_errors_total",
                "Errors reported by turns, by tenant and kind.",
                &["tenant", "kind"],
            ),
            timeouts_delivered: counter(
                "mcp_timeouts_delivered_total",
                "Timeout turns run for wait states whose deadline passed, by tenant.",
                &["tenant"],
            ),
            plugin_calls: counter(
                "mcp_plugin_calls_total",
                "Plugin calls made by turns, by tenant, plugin and outcome (ok or the error kind).",
                &["tenant", "plugin", "outcome"],
            ),
            plugin_errors: counter(
                "mcp_plugin_errors_total",
                "Plugin calls that failed, by tenant and plugin.",
                &["tenant", "plugin"],
            ),
            plugin_fuel: counter(
                "mcp_plugin_fuel_total",
                "Fuel (wasm instructions) burnt by plugin calls, by tenant and plugin.",
                &["tenant", "plugin"],
            ),
            plugin_call_duration: histogram(
                "mcp_plugin_call_duration_seconds",
                "Time of one plugin call, by tenant and plugin.",
                &["tenant", "plugin"],
            ),
            turn_duration: histogram(
                "mcp_turn_duration_seconds",
                "Time to process a turn, lock wait included.",
                &["tenant"],
            ),
            lock_wait: histogram(
                "mcp_lock_wait_seconds",
                "Time a turn waited for its conversation's lock.",
                &["tenant"],
            ),
            resumed: counter(
                "mcp_conversations_resumed_total",
                "Conversations the context store had lost, resumed from the database, by tenant.",
                &["tenant"],
            ),
            uptime: Gauge::new("mcp_uptime_seconds", "Seconds since the engine started.")
                .expect("a valid gauge"),
            data_path: DataPathGauges {
                durable_backlog: gauge(
                    "mcp_durable_backlog_turns",
                    "Turns committed and queued for the database, not yet written: what a crash would lose.",
                ),
                durable_failing: gauge(
                    "mcp_durable_failing",
                    "1 while the durable writer cannot reach the database.",
                ),
                durable_batches: gauge(
                    "mcp_durable_batches",
                    "Transactions the durable writer has committed.",
                ),
                durable_dropped: gauge(
                    "mcp_durable_dropped_turns",
                    "Turns the database refused for good (their tenant was deleted).",
                ),
                analytics_lost: gauge(
                    "mcp_analytics_lost_events",
                    "Analytics events dropped: queue full or refused by Redis.",
                ),
                egress_allowed: gauge(
                    "mcp_egress_allowed_requests",
                    "Plugins' outbound HTTP requests the egress policy let out.",
                ),
                egress_denied: {
                    let vec = prometheus::IntGaugeVec::new(
                        Opts::new(
                            "mcp_egress_denied_requests",
                            "Plugins' outbound HTTP requests the egress policy refused, by reason.",
                        ),
                        &["reason"],
                    )
                    .expect("a valid gauge");
                    registry
                        .register(Box::new(vec.clone()))
                        .expect("each series registered once");
                    vec
                },
                plugin_log_lines_dropped: gauge(
                    "mcp_plugin_log_lines_dropped",
                    "Plugin log lines dropped over the per-call and per-plugin log limits.",
                ),
                key_lookups: gauge(
                    "mcp_api_key_lookups",
                    "API keys looked up in the database: cache misses of well-formed keys.",
                ),
                compiled_cache_bytes: gauge(
                    "mcp_compiled_cache_bytes",
                    "Compiled plugin code kept in memory for reuse (COMPILED_CACHE_BYTES bounds it).",
                ),
            },
            registry,
        };
        metrics
            .registry
            .register(Box::new(metrics.uptime.clone()))
            .expect("each series registered once");
        metrics
    }
}

impl Metrics {
    /// The Prometheus text exposition format, uptime and the data path's
    /// figures included.
    pub fn render(&self, uptime: Duration, data_path: DataPathFigures) -> String {
        self.uptime.set(uptime.as_secs_f64());
        let gauges = &self.data_path;
        gauges.durable_backlog.set(data_path.durable_backlog as i64);
        gauges
            .durable_failing
            .set(i64::from(data_path.durable_failing));
        gauges.durable_batches.set(data_path.durable_batches as i64);
        gauges.durable_dropped.set(data_path.durable_dropped as i64);
        gauges.analytics_lost.set(data_path.analytics_lost as i64);
        gauges.egress_allowed.set(data_path.egress_allowed as i64);
        for (reason, count) in &data_path.egress_denied {
            gauges
                .egress_denied
                .with_label_values(&[*reason])
                .set(*count as i64);
        }
        gauges
            .plugin_log_lines_dropped
            .set(data_path.plugin_log_lines_dropped as i64);
        gauges.key_lookups.set(data_path.key_lookups as i64);
        gauges
            .compiled_cache_bytes
            .set(data_path.compiled_cache_bytes as i64);
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }

    /// Counters, and each histogram's count and sum, by name.
    pub fn samples(&self) -> Vec<Sample> {
        self.registry.gather().iter().flat_map(samples_of).collect()
    }
}

fn samples_of(family: &MetricFamily) -> Vec<Sample> {
    let name = family.name();
    let labels = |pairs: &[LabelPair]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|p| (p.name().to_owned(), p.value().to_owned()))
            .collect()
    };
    let mut samples = Vec::new();
    for metric in family.get_metric() {
        let labels = labels(metric.get_label());
        match family.get_field_type() {
            MetricType::COUNTER => samples.push(Sample {
                name: name.to_owned(),
                kind: "counter",
                labels,
                value: metric.get_counter().get_value(),
            }),
            MetricType::HISTOGRAM => {
                let histogram = metric.get_histogram();
                samples.push(Sample {
                    name: format!("{name}_count"),
                    kind: "histogram",
                    labels: labels.clone(),
                    value: histogram.get_sample_count() as f64,
                });
                samples.push(Sample {
                    name: format!("{name}_sum"),
                    kind: "histogram",
                    labels,
                    value: histogram.get_sample_sum(),
                });
            }
            _ => {}
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let metrics = Metrics::default();
        metrics.turns.with_label_values(&["a\"b", "ok"]).inc_by(2);
        let turn = metrics.turn_duration.with_label_values(&["a"]);
        turn.observe(Duration::from_millis(3).as_secs_f64());
        turn.observe(Duration::from_millis(300).as_secs_f64());
        let text = metrics.render(Duration::from_secs(1), DataPathFigures::default());
        assert!(
            text.contains("mcp_turns_total{outcome=\"ok\",tenant=\"a\\\"b\"} 2"),
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
        assert!(text.contains("\nmcp_uptime_seconds 1\n"), "{text}");
        assert_eq!(metrics.samples().len(), 3);
    }

    #[test]
    fn samples_are_counters_and_histogram_counts_and_sums_with_their_labels() {
        let metrics = Metrics::default();
        metrics
            .plugin_calls
            .with_label_values(&["a", "q", "trap"])
            .inc_by(2);
        metrics
            .plugin_call_duration
            .with_label_values(&["a", "q"])
            .observe(0.25);
        metrics.render(Duration::from_secs(3), DataPathFigures::default());
        let samples = metrics.samples();
        let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            samples,
            [
                Sample {
                    name: "mcp_plugin_call_duration_seconds_count".into(),
                    kind: "histogram",
                    labels: labels(&[("plugin", "q"), ("tenant", "a")]),
                    value: 1.0,
                },
                Sample {
                    name: "mcp_plugin_call_duration_seconds_sum".into(),
                    kind: "histogram",
                    labels: labels(&[("plugin", "q"), ("tenant", "a")]),
                    value: 0.25,
                },
                Sample {
                    name: "mcp_plugin_calls_total".into(),
                    kind: "counter",
                    labels: labels(&[("outcome", "trap"), ("plugin", "q"), ("tenant", "a")]),
                    value: 2.0,
                },
            ],
            "the uptime gauge is no sample"
        );
    }

    #[test]
    fn each_engine_has_its_own_series() {
        let one = Metrics::default();
        let two = Metrics::default();
        one.timeouts_delivered.with_label_values(&["a"]).inc();
        assert_eq!(one.samples().len(), 1);
        assert!(two.samples().is_empty());
        assert!(
            !two.render(Duration::ZERO, DataPathFigures::default())
                .contains("mcp_timeouts_delivered_total{")
        );
    }

    #[test]
    fn turns_on_many_threads_all_count() {
        let metrics = Metrics::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        metrics.turns.with_label_values(&["a", "ok"]).inc();
                        metrics.lock_wait.with_label_values(&["a"]).observe(0.001);
                    }
                });
            }
        });
        let text = metrics.render(Duration::ZERO, DataPathFigures::default());
        assert!(
            text.contains("mcp_turns_total{outcome=\"ok\",tenant=\"a\"} 4000"),
            "{text}"
        );
        assert!(
            text.contains("mcp_lock_wait_seconds_count{tenant=\"a\"} 4000"),
            "{text}"
        );
    }
}

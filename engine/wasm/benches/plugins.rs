//! Plugin call cost, against a native closure, and compile vs cache hits.
//! Run: cargo bench -p mcp-wasm --bench plugins

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_example_plugins as built;
use mcp_flow::{Conversation, Flow, PluginCall, PluginRuntime};
use mcp_wasm::{CacheStatus, DirArtifactStore, HostConfig, PluginHost};
use serde_json::{Value, json};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn conversation() -> Conversation {
    let flow = Flow::from_json(
        r#"{"flow_id":"f","name":"f","version":"1","initial_state":"end","states":{"end":{"type":"end"}}}"#,
    )
    .unwrap();
    let mut c = Conversation::new("bench", "c", "u", &flow, 0);
    c.user_profile.insert("spent".into(), json!(650));
    c
}

fn call<'a>(c: &'a Conversation, plugin: &'a str, args: &'a Value) -> PluginCall<'a> {
    PluginCall {
        tenant_id: "bench",
        plugin,
        version: None,
        args,
        conversation: c,
        event: None,
        timeout: Duration::from_secs(1),
    }
}

fn condition_calls(c: &mut Criterion) {
    let rt = runtime();
    let host = PluginHost::new(HostConfig::default()).unwrap();
    let conv = conversation();
    let args = json!({ "min_spent": 500 });
    let mut group = c.benchmark_group("condition");

    rt.block_on(host.install(
        "bench",
        "vip-rust",
        "1",
        &std::fs::read(built::VIP_CHECK).unwrap(),
        None,
        BTreeMap::new(),
    ))
    .unwrap();
    group.bench_function("rust_plugin_instantiate_and_call", |b| {
        b.iter(|| {
            rt.block_on(host.evaluate_condition(call(&conv, "vip-rust", black_box(&args))))
                .unwrap()
        })
    });

    if let Some(path) = built::PYTHON_VIP_CHECK {
        rt.block_on(host.install(
            "bench",
            "vip-python",
            "1",
            &std::fs::read(path).unwrap(),
            None,
            BTreeMap::new(),
        ))
        .unwrap();
        group.bench_function("python_plugin_instantiate_and_call", |b| {
            b.iter(|| {
                rt.block_on(host.evaluate_condition(call(&conv, "vip-python", black_box(&args))))
                    .unwrap()
            })
        });
    }

    // The same logic as a native closure, with the same JSON in and out.
    let native = |args: &Value, c: &Conversation| -> bool {
        let args: Value = serde_json::from_str(&args.to_string()).unwrap();
        let profile: Value =
            serde_json::from_str(&Value::Object(c.user_profile.clone()).to_string()).unwrap();
        let min = args["min_spent"].as_f64().unwrap_or(100.0);
        profile["vip"].as_bool().unwrap_or(false) || profile["spent"].as_f64().unwrap_or(0.0) >= min
    };
    group.bench_function("native_closure", |b| {
        b.iter(|| native(black_box(&args), &conv))
    });
    group.finish();
}

fn compiles(c: &mut Criterion) {
    let rt = runtime();
    let mut plugins = vec![
        ("vip-check", built::VIP_CHECK),
        ("price", built::PRICE),
        ("order-api", built::ORDER_API),
        ("quiz", built::QUIZ),
        ("keyword-intents", built::KEYWORD_INTENTS),
    ];
    plugins.extend(built::PYTHON_VIP_CHECK.map(|p| ("vip-check-python", p)));
    let dir = std::env::temp_dir().join(format!("mcp-bench-artifacts-{}", std::process::id()));
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for (name, path) in plugins {
        let bytes = std::fs::read(path).unwrap();
        group.bench_function(format!("{name}/first_compile"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let host = PluginHost::new(HostConfig {
                        pooling: false,
                        ..HostConfig::default()
                    })
                    .unwrap();
                    let started = Instant::now();
                    let inspected = rt.block_on(host.inspect(&bytes)).unwrap();
                    total += started.elapsed();
                    assert_eq!(inspected.cache, CacheStatus::Compiled);
                }
                total
            })
        });
        let stored = HostConfig {
            pooling: false,
            artifacts: Some(Arc::new(DirArtifactStore::new(&dir))),
            ..HostConfig::default()
        };
        rt.block_on(PluginHost::new(stored.clone()).unwrap().inspect(&bytes))
            .unwrap();
        group.bench_function(format!("{name}/stored_artifact_hit"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let host = PluginHost::new(stored.clone()).unwrap();
                    let started = Instant::now();
                    let inspected = rt.block_on(host.inspect(&bytes)).unwrap();
                    total += started.elapsed();
                    assert_eq!(inspected.cache, CacheStatus::Stored);
                }
                total
            })
        });
        let warm = PluginHost::new(HostConfig {
            pooling: false,
            ..HostConfig::default()
        })
        .unwrap();
        rt.block_on(warm.inspect(&bytes)).unwrap();
        group.bench_function(format!("{name}/memory_hit"), |b| {
            b.iter(|| rt.block_on(warm.inspect(black_box(&bytes))).unwrap())
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, condition_calls, compiles);
criterion_main!(benches);

//! What the context store adds to a turn: acquire (lock and load) and
//! commit (save and unlock) of one conversation, in-process and (when REDIS_URL is set) in Redis; and what a
//! new conversation's flow lookup costs once cached.
//!
//! `REDIS_URL=redis://127.0.0.1:6379 cargo bench -p mcp-store --bench context`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_flow::{ContextStore, Conversation, ConversationKey, Flow, Write};
use mcp_store::{
    Database, DatabaseSettings, PolicySettings, PublishOptions, Store, StoreSettings,
    open_context_store,
};

fn flow() -> Flow {
    Flow::from_json(include_str!("../../../examples/flows/pizza_order.json")).unwrap()
}

fn turn_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut settings = StoreSettings::default().context;
    let mut backends = vec![("in_process", settings.clone())];
    if let Ok(url) = std::env::var("REDIS_URL") {
        settings.redis_url = Some(url);
        backends.push(("redis", settings));
    }
    let flow = flow();
    let mut group = c.benchmark_group("context");
    for (name, settings) in backends {
        let store: Arc<dyn ContextStore> = runtime.block_on(open_context_store(&settings)).unwrap();
        let key = ConversationKey::new(format!("bench-{}", std::process::id()), "c-1");
        let conversation = Conversation::new(&key.tenant_id, &key.conversation_id, "u", &flow, 0);
        group.bench_function(format!("{name}/acquire_commit"), |b| {
            b.to_async(&runtime).iter(|| async {
                let (lease, loaded) = store.acquire(&key, Duration::from_secs(5)).await.unwrap();
                let write = Write {
                    conversation: Some(&conversation),
                    expected: loaded.version,
                    version: loaded.version + 1,
                };
                store.commit(&lease, write).await.unwrap();
            })
        });
    }
    group.finish();
}

fn flow_lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("mcp-bench-{}", std::process::id()));
    let store = runtime.block_on(async {
        let db = Database::connect(&DatabaseSettings {
            url: None,
            data_dir: dir.clone(),
            ..StoreSettings::default().database
        })
        .await
        .unwrap();
        let store = Store::open(db).await.unwrap();
        store
            .create_tenant(Some("bench"), "Bench", PolicySettings::default())
            .await
            .unwrap();
        store
            .publish_flow(
                "bench",
                include_str!("../../../examples/flows/pizza_order.json"),
                PublishOptions::default(),
            )
            .await
            .unwrap();
        store
    });
    c.bench_function("flows/default_flow_cached", |b| {
        b.to_async(&runtime)
            .iter(|| async { store.default_flow("bench").await.unwrap() })
    });
    c.bench_function("flows/pinned_version_cached", |b| {
        b.to_async(&runtime).iter(|| async {
            store
                .published_flow("bench", "pizza_order", Some("1.0.0"))
                .await
                .unwrap()
        })
    });
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = turn_overhead, flow_lookup
}
criterion_main!(benches);

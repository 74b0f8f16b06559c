//! The context stores, in-process always and Redis when REDIS_URL is set:
//! one writer per conversation, fenced writes, resets, idle expiry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use mcp_flow::{
    ContextError, ContextStore, Conversation, ConversationKey, Event, Flow, Machine, NoPlugins,
    SystemClock,
};
use mcp_store::{ContextSettings, open_context_store};
use serde_json::json;

use common::{context_backends, tenant_id};

async fn open(settings: &ContextSettings) -> Arc<dyn ContextStore> {
    open_context_store(settings)
        .await
        .expect("REDIS_URL is set but Redis cannot be reached")
}

/// Every message adds one to `variables.count`.
fn counter_flow() -> Flow {
    Flow::from_value(json!({
        "flow_id": "counter", "name": "Counter", "version": "1", "initial_state": "count",
        "variables": { "count": 0 },
        "states": {
            "count": {
                "type": "response",
                "config": { "response_templates": { "default": "{{ variables.count }}" } },
                "transitions": [ {
                    "condition": "any_input", "target_state": "count",
                    "actions": [ { "type": "set_variable", "name": "count", "expression": "variables.count + 1" } ]
                } ]
            }
        }
    }))
    .unwrap()
}

fn conversation(key: &ConversationKey) -> Conversation {
    Conversation::new(
        &key.tenant_id,
        &key.conversation_id,
        "user",
        &counter_flow(),
        0,
    )
}

#[tokio::test]
async fn a_turn_locks_loads_saves_and_unlocks() {
    for (name, settings) in context_backends() {
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("ctx"), "c-1");

        let peeked = store.peek(&key).await.unwrap();
        assert_eq!((peeked.conversation, peeked.version), (None, 0), "{name}");

        let lease = store.lock(&key).await.unwrap();
        let loaded = store.load(&lease).await.unwrap();
        assert_eq!(loaded.version, 0);
        let mut conv = conversation(&key);
        assert_eq!(store.save(&lease, &conv, 0).await.unwrap(), 1, "{name}");
        conv.turn = 1;
        assert_eq!(store.save(&lease, &conv, 1).await.unwrap(), 2, "{name}");
        // Saving against a version that is no longer current is refused.
        let stale = store.save(&lease, &conv, 1).await;
        assert!(
            matches!(
                stale,
                Err(ContextError::Conflict {
                    expected: 1,
                    found: 2,
                    ..
                })
            ),
            "{name}: {stale:?}"
        );
        store.unlock(lease).await.unwrap();

        let peeked = store.peek(&key).await.unwrap();
        assert_eq!(peeked.version, 2, "{name}");
        assert_eq!(peeked.conversation.unwrap().turn, 1, "{name}");

        // A reset forgets the context but not the version, so a holder
        // that read before the reset cannot write after it.
        let lease = store.lock(&key).await.unwrap();
        store.delete(&lease, 2).await.unwrap();
        let after = store.load(&lease).await.unwrap();
        assert_eq!(
            (after.conversation.is_none(), after.version),
            (true, 3),
            "{name}"
        );
        assert!(
            matches!(
                store.save(&lease, &conv, 2).await,
                Err(ContextError::Conflict { .. })
            ),
            "{name}"
        );
        assert_eq!(store.save(&lease, &conv, 3).await.unwrap(), 4, "{name}");
        store.unlock(lease).await.unwrap();
    }
}

#[tokio::test]
async fn a_hundred_concurrent_turns_on_one_conversation_all_count() {
    for (name, settings) in context_backends() {
        let store = open(&settings).await;
        let flow = Arc::new(counter_flow());
        let key = ConversationKey::new(tenant_id("busy"), "hot");
        let turns = (0..100).map(|i| {
            let (store, flow, key) = (store.clone(), flow.clone(), key.clone());
            tokio::spawn(async move {
                let machine = Machine::new(NoPlugins, SystemClock);
                let lease = store.lock(&key).await.unwrap();
                let loaded = store.load(&lease).await.unwrap();
                let mut conv = loaded.conversation.unwrap_or_else(|| {
                    Conversation::new(&key.tenant_id, &key.conversation_id, "user", &flow, 0)
                });
                let turn = machine
                    .step(&flow, &mut conv, &Event::message(format!("message {i}")))
                    .await;
                assert!(turn.errors.is_empty(), "{:?}", turn.errors);
                store.save(&lease, &conv, loaded.version).await.unwrap();
                store.unlock(lease).await.unwrap();
            })
        });
        for turn in futures::future::join_all(turns).await {
            turn.unwrap();
        }
        let stored = store.peek(&key).await.unwrap();
        let conv = stored.conversation.unwrap();
        assert_eq!(
            conv.variables["count"],
            json!(100),
            "{name}: every turn counted once"
        );
        assert_eq!(conv.turn, 100, "{name}");
        assert_eq!(stored.version, 100, "{name}");
    }
}

#[tokio::test]
async fn a_writer_whose_lock_expired_is_refused() {
    for (name, mut settings) in context_backends() {
        settings.lock_ttl = Duration::from_millis(100);
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("fence"), "c");

        // A takes the lock, reads, then stalls past its lease.
        let a = store.lock(&key).await.unwrap();
        let read_by_a = store.load(&a).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;

        // B gets the lock; while B holds it, A's write is refused.
        let b = store.lock(&key).await.unwrap();
        let mut conv = conversation(&key);
        conv.variables.insert("writer".into(), json!("a"));
        let refused = store.save(&a, &conv, read_by_a.version).await;
        assert!(
            matches!(refused, Err(ContextError::LockLost { .. })),
            "{name}: {refused:?}"
        );

        // B writes. A's unlock must not release B's lock.
        conv.variables.insert("writer".into(), json!("b"));
        store.save(&b, &conv, 0).await.unwrap();
        store.unlock(a.clone()).await.unwrap();
        let mut contender = settings.clone();
        contender.lock_timeout = Duration::from_millis(30);
        let other = open(&contender).await;
        if name == "redis" {
            let busy = other.lock(&key).await;
            assert!(
                matches!(busy, Err(ContextError::LockTimeout { .. })),
                "{name}: B's lock survived A's unlock: {busy:?}"
            );
        }
        let busy = tokio::time::timeout(Duration::from_millis(30), store.lock(&key)).await;
        assert!(
            busy.is_err() || busy.unwrap().is_err(),
            "{name}: B still holds the lock"
        );
        store.unlock(b).await.unwrap();

        // Once B's lease is gone too, A's stale write still cannot land:
        // the version it read is no longer current.
        let again = store.lock(&key).await.unwrap();
        let refused = store.save(&a, &conv, read_by_a.version).await;
        assert!(
            matches!(refused, Err(ContextError::LockLost { .. })),
            "{name}: {refused:?}"
        );
        let stored = store.load(&again).await.unwrap();
        assert_eq!(
            stored.conversation.unwrap().variables["writer"],
            json!("b"),
            "{name}"
        );
        store.unlock(again).await.unwrap();
    }
}

#[tokio::test]
async fn a_busy_conversation_times_out_waiting() {
    for (name, mut settings) in context_backends() {
        settings.lock_timeout = Duration::from_millis(50);
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("wait"), "c");
        let held = store.lock(&key).await.unwrap();
        let waited = store.lock(&key).await;
        assert!(
            matches!(waited, Err(ContextError::LockTimeout { .. })),
            "{name}: {waited:?}"
        );
        store.unlock(held).await.unwrap();
        let next = store.lock(&key).await.unwrap();
        store.unlock(next).await.unwrap();
        // Another conversation of the same tenant is never blocked.
        let held = store.lock(&key).await.unwrap();
        store
            .unlock(
                store
                    .lock(&ConversationKey::new(&key.tenant_id, "other"))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
        store.unlock(held).await.unwrap();
    }
}

#[tokio::test]
async fn tenants_have_separate_conversations_and_keys_are_checked() {
    for (name, settings) in context_backends() {
        let store = open(&settings).await;
        let a = ConversationKey::new(tenant_id("iso-a"), "same-id");
        let b = ConversationKey::new(tenant_id("iso-b"), "same-id");
        let lease = store.lock(&a).await.unwrap();
        store.save(&lease, &conversation(&a), 0).await.unwrap();
        store.unlock(lease).await.unwrap();
        assert!(
            store.peek(&b).await.unwrap().conversation.is_none(),
            "{name}"
        );
        let lease_b = store.lock(&b).await.unwrap();
        assert!(
            matches!(
                store.save(&lease_b, &conversation(&b), 1).await,
                Err(ContextError::Conflict { .. })
            ),
            "{name}"
        );
        store.unlock(lease_b).await.unwrap();

        for bad in [
            ConversationKey::new("a:b", "c"),
            ConversationKey::new("t", ""),
            ConversationKey::new("t", "x".repeat(300)),
        ] {
            assert!(
                matches!(store.lock(&bad).await, Err(ContextError::BadKey { .. })),
                "{name}: {bad}"
            );
            assert!(
                matches!(store.peek(&bad).await, Err(ContextError::BadKey { .. })),
                "{name}: {bad}"
            );
        }
    }
}

#[tokio::test]
async fn idle_conversations_expire() {
    for (name, mut settings) in context_backends() {
        settings.idle_ttl = Some(Duration::from_millis(150));
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("idle"), "c");
        let lease = store.lock(&key).await.unwrap();
        store.save(&lease, &conversation(&key), 0).await.unwrap();
        store.unlock(lease).await.unwrap();
        assert!(
            store.peek(&key).await.unwrap().conversation.is_some(),
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let gone = store.peek(&key).await.unwrap();
        assert_eq!((gone.conversation, gone.version), (None, 0), "{name}");
    }
}

#[tokio::test]
async fn redis_keys_share_a_hash_tag_per_conversation() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return;
    };
    let store = open(&common::context_settings(true)).await;
    let key = ConversationKey::new(tenant_id("tag"), "conv-7");
    let lease = store.lock(&key).await.unwrap();
    let mut redis = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let tag = format!("{{{}:conv-7}}", key.tenant_id);
    let lock_holder: Option<String> = redis::cmd("GET")
        .arg(format!("lock:conversation:{tag}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(lock_holder.as_deref(), Some(lease.token.as_str()));
    store.save(&lease, &conversation(&key), 0).await.unwrap();
    let version: Option<u64> = redis::cmd("HGET")
        .arg(format!("conversation:{tag}"))
        .arg("version")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(version, Some(1));
    let slot = |k: String| async move {
        let mut redis = redis::Client::open(std::env::var("REDIS_URL").unwrap())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(k)
            .query_async::<i64>(&mut redis)
            .await
            .ok()
    };
    // Where the server knows CLUSTER KEYSLOT, both keys land in one slot.
    if let (Some(a), Some(b)) = (
        slot(format!("conversation:{tag}")).await,
        slot(format!("lock:conversation:{tag}")).await,
    ) {
        assert_eq!(a, b);
    }
    store.unlock(lease).await.unwrap();
    let released: Option<String> = redis::cmd("GET")
        .arg(format!("lock:conversation:{tag}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(released, None);
}

#[tokio::test]
async fn analytics_events_are_kept_per_tenant_in_process() {
    let analytics = mcp_store::Analytics::open(&common::context_settings(false))
        .await
        .unwrap();
    analytics.publish("t1", &json!({ "n": 1 })).await;
    analytics.publish("t2", &json!({ "n": 2 })).await;
    analytics.publish("t1", &json!({ "n": 3 })).await;
    assert_eq!(
        analytics.recent("t1"),
        [json!({ "n": 1 }), json!({ "n": 3 })]
    );
    assert_eq!(analytics.recent("t2"), [json!({ "n": 2 })]);
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_are_scheduled_rescheduled_cleared_and_claimed_once() {
    for (name, settings) in context_backends() {
        eprintln!("-- on {name}");
        let wakeups = Arc::new(mcp_store::Wakeups::open(&settings).await.unwrap());
        let tenant = tenant_id("wake");
        let key = |id: &str| ConversationKey::new(&tenant, id);
        // Far in the past, so other tests' entries (due now) come after.
        let base = 1_000;
        wakeups.schedule(&key("a"), Some(base + 10)).await.unwrap();
        wakeups
            .schedule(&key("b:with:colons"), Some(base + 20))
            .await
            .unwrap();
        wakeups.schedule(&key("c"), Some(base + 30)).await.unwrap();
        wakeups
            .schedule(&key("c"), Some(base + 5_000_000))
            .await
            .unwrap();
        wakeups.schedule(&key("a"), None).await.unwrap();

        let mine = |keys: Vec<ConversationKey>| {
            keys.into_iter()
                .filter(|k| k.tenant_id == tenant)
                .map(|k| k.conversation_id)
                .collect::<Vec<_>>()
        };
        let lease = Duration::from_millis(1_000);
        let claim = |at: i64| {
            let wakeups = wakeups.clone();
            async move { mine(wakeups.claim_due(at, 100, lease).await.unwrap()) }
        };
        assert!(claim(base).await.is_empty(), "nothing due yet");
        // Two claimers at once: each due conversation goes to one of them.
        let (first, second) = tokio::join!(claim(base + 100), claim(base + 100));
        let claimed: Vec<String> = first.into_iter().chain(second).collect();
        assert_eq!(
            claimed,
            ["b:with:colons"],
            "a was cleared and c moved later"
        );
        assert!(claim(base + 100).await.is_empty(), "b is leased");
        // A lease that runs out with no turn to clear it: b is due again.
        assert_eq!(claim(base + 100 + 1_000).await, ["b:with:colons"]);
        // The turn that delivers it clears it.
        wakeups.schedule(&key("b:with:colons"), None).await.unwrap();
        assert!(claim(base + 100_000).await.is_empty());
        assert_eq!(claim(base + 5_000_000).await, ["c"]);
        wakeups.schedule(&key("c"), None).await.unwrap();
    }
}

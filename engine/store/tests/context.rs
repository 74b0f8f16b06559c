//! The context stores, in-process always and Redis when REDIS_URL is set:
//! one writer per conversation, fenced writes, leases that expire unless
//! renewed, resets, idle expiry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use mcp_flow::{
    ContextError, ContextStore, Conversation, ConversationKey, Event, Flow, Machine, NoPlugins,
    SystemClock, Write,
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

/// A write of `conversation` over `expected`, as the next version.
fn next(conversation: Option<&Conversation>, expected: u64) -> Write<'_> {
    Write {
        conversation,
        expected,
        version: expected + 1,
    }
}

const WAIT: Duration = Duration::from_secs(5);
const NO_WAIT: Duration = Duration::from_millis(30);

#[tokio::test]
async fn a_turn_acquires_then_commits_and_unlocks() {
    let backends = context_backends();
    for (name, settings) in backends.iter() {
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("ctx"), "c-1");

        let peeked = store.peek(&key).await.unwrap();
        assert_eq!((peeked.conversation, peeked.version), (None, 0), "{name}");

        let (lease, loaded) = store.acquire(&key, WAIT).await.unwrap();
        assert_eq!((loaded.conversation.is_none(), loaded.version), (true, 0));
        let mut conv = conversation(&key);
        store.commit(&lease, next(Some(&conv), 0)).await.unwrap();

        // The commit released the lock: the next turn takes it at once and
        // reads what was written.
        let (lease, loaded) = store.acquire(&key, NO_WAIT).await.unwrap();
        assert_eq!(loaded.version, 1, "{name}");
        assert_eq!(loaded.conversation.as_ref().unwrap().turn, 0, "{name}");
        conv.turn = 1;
        // Committing over a version that is no longer current is refused,
        // and lets go of the lock all the same.
        let stale = store.commit(&lease, next(Some(&conv), 0)).await;
        assert!(
            matches!(
                stale,
                Err(ContextError::Conflict {
                    expected: 0,
                    found: 1,
                    ..
                })
            ),
            "{name}: {stale:?}"
        );
        let (lease, loaded) = store.acquire(&key, NO_WAIT).await.unwrap();
        store
            .commit(&lease, next(Some(&conv), loaded.version))
            .await
            .unwrap();

        let peeked = store.peek(&key).await.unwrap();
        assert_eq!(peeked.version, 2, "{name}");
        assert_eq!(peeked.conversation.unwrap().turn, 1, "{name}");

        // A reset forgets the context but not the version, so a holder
        // that read before the reset cannot write after it.
        let (lease, _) = store.acquire(&key, WAIT).await.unwrap();
        store.commit(&lease, next(None, 2)).await.unwrap();
        let (lease, after) = store.acquire(&key, WAIT).await.unwrap();
        assert_eq!(
            (after.conversation.is_none(), after.version),
            (true, 3),
            "{name}"
        );
        // A write may continue from a later version (a conversation resumed
        // from its durable copy); versions never go back.
        let jump = Write {
            conversation: Some(&conv),
            expected: 3,
            version: 10,
        };
        store.commit(&lease, jump).await.unwrap();
        assert_eq!(store.peek(&key).await.unwrap().version, 10, "{name}");
    }
}

#[tokio::test]
async fn a_turn_that_writes_nothing_releases_its_lock() {
    let backends = context_backends();
    for (name, settings) in backends.iter() {
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("release"), "c");
        let (lease, _) = store.acquire(&key, WAIT).await.unwrap();
        let busy = store.acquire(&key, NO_WAIT).await;
        assert!(
            matches!(busy, Err(ContextError::LockTimeout { .. })),
            "{name}: {busy:?}"
        );
        store.release(lease).await.unwrap();
        let (lease, loaded) = store.acquire(&key, NO_WAIT).await.unwrap();
        assert_eq!(loaded.version, 0, "{name}: nothing was written");
        store.release(lease).await.unwrap();
    }
}

#[tokio::test]
async fn a_hundred_concurrent_turns_on_one_conversation_all_count() {
    let backends = context_backends();
    for (name, settings) in backends.iter() {
        let store = open(&settings).await;
        let flow = Arc::new(counter_flow());
        let key = ConversationKey::new(tenant_id("busy"), "hot");
        let turns = (0..100).map(|i| {
            let (store, flow, key) = (store.clone(), flow.clone(), key.clone());
            tokio::spawn(async move {
                let machine = Machine::new(NoPlugins, SystemClock);
                let (lease, loaded) = store.acquire(&key, WAIT).await.unwrap();
                let mut conv = loaded.conversation.unwrap_or_else(|| {
                    Conversation::new(&key.tenant_id, &key.conversation_id, "user", &flow, 0)
                });
                let turn = machine
                    .step(&flow, &mut conv, &Event::message(format!("message {i}")))
                    .await;
                assert!(turn.errors.is_empty(), "{:?}", turn.errors);
                store
                    .commit(&lease, next(Some(&conv), loaded.version))
                    .await
                    .unwrap();
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
async fn a_writer_whose_lease_expired_is_refused() {
    let backends = context_backends();
    for (name, mut settings) in backends.iter() {
        settings.lock_ttl = Duration::from_millis(200);
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("fence"), "c");

        // A takes the lock, reads, then stalls past its lease.
        let (a, read_by_a) = store.acquire(&key, WAIT).await.unwrap();
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(
            matches!(store.renew(&a).await, Err(ContextError::LockLost { .. })),
            "{name}: an expired lease cannot be renewed"
        );

        // B gets the lock; while B holds it, A's write is refused.
        let (b, read_by_b) = store.acquire(&key, WAIT).await.unwrap();
        let mut conv = conversation(&key);
        conv.variables.insert("writer".into(), json!("a"));
        let refused = store.commit(&a, next(Some(&conv), read_by_a.version)).await;
        assert!(
            matches!(refused, Err(ContextError::LockLost { .. })),
            "{name}: {refused:?}"
        );
        // A's release must not release B's lock either.
        store.release(a.clone()).await.unwrap();
        let busy = store.acquire(&key, NO_WAIT).await;
        assert!(
            matches!(busy, Err(ContextError::LockTimeout { .. })),
            "{name}: B's lock survived A's release: {busy:?}"
        );

        // B writes, then A's stale write still cannot land.
        conv.variables.insert("writer".into(), json!("b"));
        store
            .commit(&b, next(Some(&conv), read_by_b.version))
            .await
            .unwrap();
        let refused = store.commit(&a, next(Some(&conv), read_by_a.version)).await;
        assert!(
            matches!(refused, Err(ContextError::LockLost { .. })),
            "{name}: {refused:?}"
        );
        let stored = store.peek(&key).await.unwrap();
        assert_eq!(
            stored.conversation.unwrap().variables["writer"],
            json!("b"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_renewed_lease_outlives_its_time_to_live() {
    let backends = context_backends();
    for (name, mut settings) in backends.iter() {
        settings.lock_ttl = Duration::from_millis(150);
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("renew"), "c");
        let (lease, loaded) = store.acquire(&key, WAIT).await.unwrap();
        // Three times its TTL, renewed every third of it.
        for _ in 0..9 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.renew(&lease).await.unwrap();
            let contender = store.acquire(&key, Duration::ZERO).await;
            assert!(
                matches!(contender, Err(ContextError::LockTimeout { .. })),
                "{name}: the renewed lease was taken: {contender:?}"
            );
        }
        store
            .commit(&lease, next(Some(&conversation(&key)), loaded.version))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn another_conversation_is_never_blocked() {
    let backends = context_backends();
    for (name, settings) in backends.iter() {
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("wait"), "c");
        let (held, _) = store.acquire(&key, WAIT).await.unwrap();
        let (other, _) = store
            .acquire(&ConversationKey::new(&key.tenant_id, "other"), NO_WAIT)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        store.release(other).await.unwrap();
        store.release(held).await.unwrap();
    }
}

#[tokio::test]
async fn tenants_have_separate_conversations_and_keys_are_checked() {
    let backends = context_backends();
    for (name, settings) in backends.iter() {
        let store = open(&settings).await;
        let a = ConversationKey::new(tenant_id("iso-a"), "same-id");
        let b = ConversationKey::new(tenant_id("iso-b"), "same-id");
        let (lease, _) = store.acquire(&a, WAIT).await.unwrap();
        store
            .commit(&lease, next(Some(&conversation(&a)), 0))
            .await
            .unwrap();
        assert!(
            store.peek(&b).await.unwrap().conversation.is_none(),
            "{name}"
        );
        let (lease_b, loaded_b) = store.acquire(&b, WAIT).await.unwrap();
        assert_eq!(loaded_b.version, 0, "{name}");
        assert!(
            matches!(
                store
                    .commit(&lease_b, next(Some(&conversation(&b)), 1))
                    .await,
                Err(ContextError::Conflict { .. })
            ),
            "{name}"
        );

        for bad in [
            ConversationKey::new("a:b", "c"),
            ConversationKey::new("t", ""),
            ConversationKey::new("t", "x".repeat(300)),
        ] {
            assert!(
                matches!(
                    store.acquire(&bad, WAIT).await,
                    Err(ContextError::BadKey { .. })
                ),
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
    let backends = context_backends();
    for (name, mut settings) in backends.iter() {
        settings.idle_ttl = Some(Duration::from_millis(150));
        let store = open(&settings).await;
        let key = ConversationKey::new(tenant_id("idle"), "c");
        let (lease, _) = store.acquire(&key, WAIT).await.unwrap();
        store
            .commit(&lease, next(Some(&conversation(&key)), 0))
            .await
            .unwrap();
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
    let (lease, _) = store.acquire(&key, WAIT).await.unwrap();
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
    store
        .commit(&lease, next(Some(&conversation(&key)), 0))
        .await
        .unwrap();
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
    // The commit released the lock.
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
    analytics.publish("t1", &json!({ "n": 1 }));
    analytics.publish("t2", &json!({ "n": 2 }));
    analytics.publish("t1", &json!({ "n": 3 }));
    assert_eq!(
        analytics.recent("t1"),
        [json!({ "n": 1 }), json!({ "n": 3 })]
    );
    assert_eq!(analytics.recent("t2"), [json!({ "n": 2 })]);
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_are_scheduled_rescheduled_cleared_and_claimed_once() {
    let backends = context_backends();
    for (name, settings) in backends.iter() {
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

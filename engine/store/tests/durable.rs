//! The durable writer on SQLite and (with DATABASE_URL) PostgreSQL: turns
//! land in order, once, in batches; the queue is bounded; a row the
//! database refuses does not hold back the others.

mod common;

use std::sync::atomic::Ordering;

use mcp_flow::{Conversation, ConversationKey, Flow};
use mcp_store::{Durability, DurableSettings, DurableWriter, StoreError, TurnRecord, TurnWrite};
use serde_json::json;

use common::{databases, new_tenant, store};

fn flow() -> Flow {
    Flow::from_json(&common::plain_flow("hello", "1")).unwrap()
}

/// Turn `n` of a conversation, as the engine writes it after committing
/// version `n`.
fn turn(key: &ConversationKey, n: u64) -> TurnWrite {
    let mut conversation = Conversation::new(&key.tenant_id, &key.conversation_id, "u", &flow(), 7);
    conversation.turn = n;
    TurnWrite {
        key: key.clone(),
        version: n,
        conversation: Some(conversation),
        updated_at_ms: 1_000 + n as i64,
        transcript: Some(TurnRecord {
            conversation_id: key.conversation_id.clone(),
            started_at_ms: 7,
            turn: n,
            flow_id: "hello".into(),
            flow_version: "1".into(),
            state_before: "hello".into(),
            state_after: "bye".into(),
            input: json!({ "text": format!("message {n}") }),
            output: json!({}),
            received_at_ms: 1_000 + n as i64,
            duration_us: 5,
        }),
    }
}

fn settings(durability: Durability) -> DurableSettings {
    DurableSettings {
        durability,
        ..DurableSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_land_in_order_once_and_the_latest_context_wins() {
    for backend in databases() {
        let name = backend.name;
        let store = store(&backend).await;
        let tenant = new_tenant(&store, "durable").await;
        let writer = DurableWriter::start(store.db().clone(), &settings(Durability::Sync));
        let key = ConversationKey::new(&tenant, "c-1");

        for n in 1..=20 {
            let reservation = writer.reserve().unwrap();
            writer.write(reservation, turn(&key, n)).await;
        }
        // A batch retried after a lost reply, and a late write of an older
        // version: neither changes anything.
        for n in [20, 5] {
            writer.write(writer.reserve().unwrap(), turn(&key, n)).await;
        }
        let durable = writer.load(&key, None).await.unwrap();
        assert_eq!(durable.version, 20, "{name}");
        assert_eq!(durable.conversation.unwrap().turn, 20, "{name}");
        let transcript = store.transcript(&tenant, "c-1", 100).await.unwrap();
        let turns: Vec<u64> = transcript.iter().map(|t| t.turn).collect();
        assert_eq!(turns, (1..=20).collect::<Vec<_>>(), "{name}");
        assert_eq!(writer.backlog(), 0, "{name}");

        // A reset keeps the version and forgets the context.
        let reset = TurnWrite {
            conversation: None,
            transcript: None,
            ..turn(&key, 21)
        };
        writer.write(writer.reserve().unwrap(), reset).await;
        let durable = writer.load(&key, None).await.unwrap();
        assert_eq!(
            (durable.version, durable.conversation),
            (21, None),
            "{name}"
        );

        // A copy older than the idle cut-off is not offered for resuming.
        let other = ConversationKey::new(&tenant, "c-2");
        writer
            .write(writer.reserve().unwrap(), turn(&other, 1))
            .await;
        assert_eq!(writer.load(&other, Some(1_002)).await.unwrap().version, 0);
        assert_eq!(writer.load(&other, Some(1_000)).await.unwrap().version, 1);
        let never = ConversationKey::new(&tenant, "never");
        assert_eq!(writer.load(&never, None).await.unwrap().version, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn async_writes_are_batched_behind_the_caller() {
    for backend in databases() {
        let name = backend.name;
        let store = store(&backend).await;
        let tenant = new_tenant(&store, "batched").await;
        let writer = DurableWriter::start(store.db().clone(), &settings(Durability::Async));
        // Two hundred conversations of three turns, queued without waiting.
        for n in 1..=3 {
            for c in 0..200 {
                let key = ConversationKey::new(&tenant, format!("c-{c}"));
                writer.write(writer.reserve().unwrap(), turn(&key, n)).await;
            }
        }
        // A flush returns once everything queued before it is written.
        writer.flush().await;
        assert_eq!(
            writer.backlog(),
            0,
            "{name}: turns still queued after a flush"
        );
        assert_eq!(
            writer.stats().written.load(Ordering::Relaxed),
            600,
            "{name}"
        );
        let batches = writer.stats().batches.load(Ordering::Relaxed);
        assert!(
            batches < 600,
            "{name}: 600 turns took {batches} transactions: nothing was batched"
        );
        for c in [0, 199] {
            let key = ConversationKey::new(&tenant, format!("c-{c}"));
            assert_eq!(writer.load(&key, None).await.unwrap().version, 3, "{name}");
            let transcript = store.transcript(&tenant, &key.conversation_id, 10).await;
            assert_eq!(transcript.unwrap().len(), 3, "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_refuses_before_anything_is_written() {
    for backend in databases() {
        let store = store(&backend).await;
        let settings = DurableSettings {
            queue_max: 2,
            ..settings(Durability::Async)
        };
        let writer = DurableWriter::start(store.db().clone(), &settings);
        let first = writer.reserve().unwrap();
        let _second = writer.reserve().unwrap();
        let refused = writer.reserve();
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(reason)) if reason.contains("queue is full")),
            "{}: {:?}",
            backend.name,
            refused.err()
        );
        drop(first);
        assert!(
            writer.reserve().is_ok(),
            "{}: a place came free",
            backend.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_the_database_refuses_does_not_hold_back_the_rest() {
    for backend in databases() {
        let name = backend.name;
        let store = store(&backend).await;
        let tenant = new_tenant(&store, "refused").await;
        let writer = DurableWriter::start(store.db().clone(), &settings(Durability::Async));
        let good = ConversationKey::new(&tenant, "good");
        // No such tenant: its rows break a foreign key.
        let orphan = ConversationKey::new(format!("{tenant}-gone"), "orphan");
        let queued = [turn(&good, 1), turn(&orphan, 1), turn(&good, 2)];
        for write in queued {
            writer.write(writer.reserve().unwrap(), write).await;
        }
        let drained = common::eventually(std::time::Duration::from_secs(30), || async {
            writer.backlog() == 0
        })
        .await;
        assert!(drained, "{name}");
        assert_eq!(writer.stats().dropped.load(Ordering::Relaxed), 1, "{name}");
        assert_eq!(writer.load(&good, None).await.unwrap().version, 2, "{name}");
        assert_eq!(
            store.transcript(&tenant, "good", 10).await.unwrap().len(),
            2,
            "{name}"
        );
    }
}

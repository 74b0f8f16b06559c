//! Conversations that outlive the context store: each turn's context and
//! transcript entry, written to the database behind the reply.
//!
//! The context store (Redis, or this process) is where a turn reads and
//! writes; it may forget (a restart of a Redis that keeps nothing on disk, a
//! flush, an eviction, an engine restart on the embedded defaults). So every
//! commit is also queued here, and one task writes what has queued as one
//! transaction: the `conversations` row (latest context and version) and the
//! `transcripts` row of each turn. A batch is whatever queued while the
//! previous one committed, up to `batch_max`, so the delay is one commit and
//! the database sees one transaction however many turns ran meanwhile
//! (group commit).
//!
//! - **In order**: one writer, first in first out, so a conversation's turns
//!   land in the order they ran.
//! - **Idempotent**: a context row is replaced only by a higher version and a
//!   transcript row is never written twice, so a batch retried after a lost
//!   reply changes nothing twice.
//! - **Bounded**: the queue holds `queue_max` turns. A turn reserves its place
//!   before it runs, so when the database has been away long enough to fill
//!   the queue, turns are refused before they change anything rather than
//!   acknowledged and then lost.
//! - **Durability**: `async` replies before the batch commits (a crash loses
//!   at most what is queued: [`DurableWriter::backlog`]); `sync` replies after
//!   it commits, so no acknowledged turn is lost.
//!
//! While the database is down the writer retries the batch in hand with
//! backoff and the queue fills; when it returns, the queue drains in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mcp_flow::{Conversation, ConversationKey, Snapshot};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::db::Database;
use crate::error::StoreError;
use crate::tenants::{json, parse_json};
use crate::transcripts::TurnRecord;

/// Whether a reply waits for its turn to be in the database
/// (`CONTEXT_DURABILITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The reply goes at once; a crash loses what is still queued.
    Async,
    /// The reply waits for the commit of its batch.
    Sync,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DurableSettings {
    pub durability: Durability,
    /// Turns queued at most (`DURABLE_QUEUE_MAX`).
    pub queue_max: usize,
    /// Turns written in one transaction at most (`DURABLE_BATCH_MAX`).
    pub batch_max: usize,
}

impl Default for DurableSettings {
    fn default() -> Self {
        DurableSettings {
            durability: Durability::Async,
            queue_max: 10_000,
            batch_max: 256,
        }
    }
}

/// One committed turn, as the database keeps it.
#[derive(Debug, Clone)]
pub struct TurnWrite {
    pub key: ConversationKey,
    /// The context store's version of this commit.
    pub version: u64,
    /// The conversation after the turn; `None` for a reset.
    pub conversation: Option<Conversation>,
    pub updated_at_ms: i64,
    /// The transcript entry; a reset has none.
    pub transcript: Option<TurnRecord>,
}

struct Queued {
    /// The turn; none for a flush, which only marks a place in the queue.
    write: Option<TurnWrite>,
    /// Told when the write is in the database (sync durability), or when
    /// everything queued before the flush is.
    committed: Option<oneshot::Sender<()>>,
}

/// A place in the writer's queue, taken before a turn runs.
pub struct Reservation(mpsc::OwnedPermit<Queued>);

/// What the writer has done, for metrics and health.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Turns queued and not yet committed: what a crash would lose.
    pub backlog: AtomicU64,
    pub batches: AtomicU64,
    pub written: AtomicU64,
    /// Batches that failed and were tried again.
    pub retries: AtomicU64,
    /// Turns the database refused for good (a tenant deleted meanwhile).
    pub dropped: AtomicU64,
    /// Whether the last attempt to write failed: the database is away.
    pub failing: AtomicBool,
}

/// A handle on the writer; clones share it, and its task ends when the
/// last clone is dropped and the queue has drained.
#[derive(Clone)]
pub struct DurableWriter {
    queue: mpsc::Sender<Queued>,
    durability: Durability,
    stats: Arc<WriterStats>,
    db: Database,
}

/// Rows per INSERT statement, well under both databases' bind limits.
const ROWS_PER_STATEMENT: usize = 64;

impl DurableWriter {
    /// Starts the writing task; it ends when the writer is dropped and the
    /// queue has drained.
    pub fn start(db: Database, settings: &DurableSettings) -> DurableWriter {
        let (queue, queued) = mpsc::channel(settings.queue_max.max(1));
        let stats = Arc::new(WriterStats::default());
        tokio::spawn(write_batches(
            db.clone(),
            queued,
            settings.batch_max.max(1),
            stats.clone(),
        ));
        DurableWriter {
            queue,
            durability: settings.durability,
            stats,
            db,
        }
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Turns queued and not yet committed.
    pub fn backlog(&self) -> u64 {
        self.stats.backlog.load(Ordering::Relaxed)
    }

    /// A place in the queue for one turn, or `Unavailable` if the queue is
    /// full (the database has been away too long).
    pub fn reserve(&self) -> Result<Reservation, StoreError> {
        self.queue
            .clone()
            .try_reserve_owned()
            .map(Reservation)
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "the durable writer's queue is full ({} turns wait for the database)",
                    self.backlog()
                ))
            })
    }

    /// Queues the turn in its reserved place; with sync durability, waits
    /// until it is committed.
    pub async fn write(&self, reservation: Reservation, write: TurnWrite) {
        self.stats.backlog.fetch_add(1, Ordering::Relaxed);
        match self.durability {
            Durability::Async => {
                reservation.0.send(Queued {
                    write: Some(write),
                    committed: None,
                });
            }
            Durability::Sync => {
                let (committed, done) = oneshot::channel();
                reservation.0.send(Queued {
                    write: Some(write),
                    committed: Some(committed),
                });
                // The writer keeps going until it has written it.
                let _ = done.await;
            }
        }
    }

    /// Waits until every turn queued before the call is in the database
    /// (or refused by it for good): what a reader of transcripts, or a
    /// process about to stop, needs before it goes on.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        let marker = Queued {
            write: None,
            committed: Some(done),
        };
        if self.queue.send(marker).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// The durable copy of a conversation: its version and context (none
    /// after a reset), or version 0 if there is none or it idled out before
    /// `idle_since_ms`.
    pub async fn load(
        &self,
        key: &ConversationKey,
        idle_since_ms: Option<i64>,
    ) -> Result<Snapshot, StoreError> {
        let row = sqlx::query(
            "SELECT version, context, updated_at FROM conversations \
             WHERE tenant_id = $1 AND conversation_id = $2",
        )
        .bind(&key.tenant_id)
        .bind(&key.conversation_id)
        .fetch_optional(self.db.pool()?)
        .await?;
        let Some(row) = row else {
            return Ok(Snapshot {
                conversation: None,
                version: 0,
            });
        };
        let updated_at: i64 = row.try_get("updated_at")?;
        if idle_since_ms.is_some_and(|since| updated_at < since) {
            return Ok(Snapshot {
                conversation: None,
                version: 0,
            });
        }
        let context: Option<String> = row.try_get("context")?;
        Ok(Snapshot {
            conversation: context.as_deref().map(parse_json).transpose()?,
            version: row.try_get::<i64, _>("version")? as u64,
        })
    }
}

/// Writes what queued, batch by batch, until every sender is gone.
async fn write_batches(
    db: Database,
    mut queued: mpsc::Receiver<Queued>,
    batch_max: usize,
    stats: Arc<WriterStats>,
) {
    let mut batch = Vec::with_capacity(batch_max);
    while queued.recv_many(&mut batch, batch_max).await > 0 {
        let mut backoff = Duration::from_millis(50);
        loop {
            match write_batch(&db, &batch).await {
                Ok(()) => break,
                Err(e) if is_refusal(&e) => {
                    // One bad row must not hold back the rest.
                    write_one_by_one(&db, &batch, &stats).await;
                    break;
                }
                Err(e) => {
                    if !stats.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, turns = batch.len(), "durable writer: database unavailable; retrying");
                    }
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        if stats.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("durable writer: database back");
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        let turns = batch.iter().filter(|e| e.write.is_some()).count() as u64;
        stats.written.fetch_add(turns, Ordering::Relaxed);
        stats.backlog.fetch_sub(turns, Ordering::Relaxed);
        for entry in batch.drain(..) {
            if let Some(committed) = entry.committed {
                let _ = committed.send(());
            }
        }
    }
}

/// The database answered and said no (a constraint): retrying cannot help.
/// A database error that says the server is going away, out of resources or
/// busy (PostgreSQL classes 08, 40, 53, 57 and 58; SQLite BUSY and LOCKED)
/// is a passing failure, not a refusal: a stopping server reports
/// `admin_shutdown` to the transaction it interrupts.
fn is_refusal(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = e else {
        return false;
    };
    let Some(code) = error.code() else {
        return true;
    };
    let passing_postgres = ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class));
    let passing_sqlite = code
        .parse::<u32>()
        .is_ok_and(|extended| matches!(extended & 0xff, 5 | 6));
    !(passing_postgres || passing_sqlite)
}

async fn write_one_by_one(db: &Database, batch: &[Queued], stats: &WriterStats) {
    for entry in batch {
        let Some(write) = &entry.write else {
            continue;
        };
        // A refusal is for good; anything else is a passing failure (the
        // database may be stopping as this runs), tried again until it passes.
        let mut backoff = Duration::from_millis(50);
        loop {
            match write_batch(db, std::slice::from_ref(entry)).await {
                Ok(()) => break,
                Err(e) if is_refusal(&e) => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(conversation = %write.key, version = write.version, error = %e, "durable writer: turn not kept");
                    break;
                }
                Err(_) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// One transaction: each conversation's latest context, and every
/// transcript entry.
async fn write_batch(db: &Database, batch: &[Queued]) -> Result<(), sqlx::Error> {
    // A statement may not touch one row twice: keep each conversation's
    // latest write (the last, as the queue is in order).
    let mut latest: HashMap<&ConversationKey, &TurnWrite> = HashMap::new();
    let writes = || batch.iter().filter_map(|e| e.write.as_ref());
    if writes().next().is_none() {
        return Ok(());
    }
    for write in writes() {
        latest.insert(&write.key, write);
    }
    let contexts: Vec<&TurnWrite> = latest.into_values().collect();
    let transcripts: Vec<(&str, &TurnRecord)> = writes()
        .filter_map(|w| w.transcript.as_ref().map(|t| (w.key.tenant_id.as_str(), t)))
        .collect();

    let mut tx = db.begin_unchecked().await?;
    for chunk in contexts.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO conversations (tenant_id, conversation_id, version, context, updated_at) \
             VALUES {} ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET \
             version = excluded.version, context = excluded.context, updated_at = excluded.updated_at \
             WHERE conversations.version < excluded.version",
            placeholders(chunk.len(), 5)
        );
        // Only placeholders are generated; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for write in chunk {
            query = query
                .bind(&write.key.tenant_id)
                .bind(&write.key.conversation_id)
                .bind(write.version as i64)
                .bind(write.conversation.as_ref().map(json))
                .bind(write.updated_at_ms);
        }
        query.execute(&mut *tx).await?;
    }
    for chunk in transcripts.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO transcripts (tenant_id, conversation_id, started_at, turn, flow_id, \
             flow_version, state_before, state_after, input, output, received_at, duration_us) \
             VALUES {} ON CONFLICT (tenant_id, conversation_id, started_at, turn) DO NOTHING",
            placeholders(chunk.len(), 12)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (tenant, turn) in chunk {
            query = crate::transcripts::bind_turn(query, tenant, turn);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// `($1, $2), ($3, $4)` for two rows of two columns.
fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let list: Vec<String> = (1..=columns)
                .map(|column| format!("${}", row * columns + column))
                .collect();
            format!("({})", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(placeholders(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(1, 3), "($1, $2, $3)");
    }
}

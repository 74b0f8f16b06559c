//! The audit log's writer: executions are queued and written behind the
//! answer, many to a transaction, so a tool call never waits on the
//! database and a database outage never fails one. The queue is bounded;
//! what does not fit (or cannot be written after retries) is counted and
//! dropped, and the count is a metric.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mcp_store::{Store, ToolCallRecord};
use tokio::sync::mpsc;

/// TOOL_AUDIT_RETENTION_DAYS and the writer's bounds.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Rows older than this are deleted (at start and hourly).
    pub retention: Duration,
    /// Executions waiting to be written, at most.
    pub queue: usize,
    /// Rows per transaction, at most.
    pub batch: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention: Duration::from_secs(30 * 24 * 3600),
            queue: 10_000,
            batch: 500,
        }
    }
}

/// How often old rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Attempts to write one batch before it is dropped.
const ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct AuditLog {
    queue: Option<mpsc::Sender<ToolCallRecord>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Queued or in a transaction.
    pending: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
}

impl AuditLog {
    /// Starts the writer (and the pruning) on the current runtime.
    pub fn start(store: Store, settings: AuditSettings) -> AuditLog {
        let (sender, receiver) = mpsc::channel(settings.queue.max(1));
        let counts = Arc::new(Counts::default());
        tokio::spawn(write(
            store.clone(),
            receiver,
            settings.batch.max(1),
            counts.clone(),
        ));
        tokio::spawn(prune(store, settings.retention));
        AuditLog {
            queue: Some(sender),
            counts,
        }
    }

    /// A log that keeps nothing (tools run outside an engine: tests, tools).
    pub fn discard() -> AuditLog {
        AuditLog {
            queue: None,
            counts: Arc::default(),
        }
    }

    pub(crate) fn record(&self, record: ToolCallRecord) {
        let Some(queue) = &self.queue else { return };
        self.counts.pending.fetch_add(1, Ordering::Relaxed);
        if queue.try_send(record).is_err() {
            self.counts.pending.fetch_sub(1, Ordering::Relaxed);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Executions written since start.
    pub fn written(&self) -> u64 {
        self.counts.written.load(Ordering::Relaxed)
    }

    /// Executions never written: the queue was full, or the database
    /// refused their batch too many times.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Waits until nothing is queued or being written (tests, and an
    /// orderly shutdown).
    pub async fn flushed(&self) {
        while self.counts.pending.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn write(
    store: Store,
    mut receiver: mpsc::Receiver<ToolCallRecord>,
    batch_max: usize,
    counts: Arc<Counts>,
) {
    let mut batch = Vec::with_capacity(batch_max);
    while receiver.recv_many(&mut batch, batch_max).await > 0 {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match store.record_tool_calls(&batch).await {
                Ok(()) => {
                    counts
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(error = %e, rows = batch.len(), attempt, "writing the tool audit log");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, rows = batch.len(), "tool audit rows dropped");
                    counts
                        .dropped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
            }
        }
        counts
            .pending
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        batch.clear();
    }
}

async fn prune(store: Store, retention: Duration) {
    loop {
        let before = crate::now_ms() - retention.as_millis().min(i64::MAX as u128) as i64;
        match store.prune_tool_calls(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "tool audit rows past retention deleted"),
            Err(e) => tracing::warn!(error = %e, "pruning the tool audit log"),
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

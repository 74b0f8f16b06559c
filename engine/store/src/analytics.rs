//! Analytics events (one per processed turn) for whoever consumes them: a
//! Redis stream shared by every engine process, or, with no Redis, a
//! bounded buffer in this process.
//!
//! Events go to Redis behind the reply: `publish` queues the event and a
//! background task sends what has queued as one pipeline, so a turn never
//! waits for its analytics and a burst of turns costs one round trip.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use serde_json::Value;

use crate::redis_connection::RedisConnection;
use crate::settings::ContextSettings;

/// The Redis stream events go to; trimmed to about this many entries.
pub const STREAM: &str = "mcp:analytics";
const STREAM_MAX_LEN: usize = 100_000;
const IN_PROCESS_MAX: usize = 10_000;
/// Events waiting for Redis; more are dropped (and counted).
const QUEUE_MAX: usize = 10_000;
/// Events sent in one pipeline at most.
const BATCH_MAX: usize = 512;

pub enum Analytics {
    Redis {
        queue: mpsc::Sender<(String, String)>,
        /// Events dropped because the queue was full or Redis refused them.
        lost: std::sync::Arc<AtomicU64>,
    },
    InProcess(Mutex<VecDeque<(String, Value)>>),
}

impl Analytics {
    /// Redis if `REDIS_URL` is set (and answers), else in process.
    pub async fn open(settings: &ContextSettings) -> Result<Analytics, String> {
        match &settings.redis_url {
            None => Ok(Analytics::InProcess(Mutex::new(VecDeque::new()))),
            Some(_) => {
                let connection = RedisConnection::connect(settings).await?;
                let (queue, events) = mpsc::channel(QUEUE_MAX);
                let lost = std::sync::Arc::new(AtomicU64::new(0));
                tokio::spawn(send_events(connection, events, lost.clone()));
                Ok(Analytics::Redis { queue, lost })
            }
        }
    }

    /// Events lost so far: dropped on a full queue or refused by Redis.
    pub fn lost(&self) -> u64 {
        match self {
            Analytics::Redis { lost, .. } => lost.load(Ordering::Relaxed),
            Analytics::InProcess(_) => 0,
        }
    }

    /// Publishes an event of a tenant, without waiting. Losing one is
    /// counted and logged, never a failed turn: analytics must not take
    /// conversations down with them.
    pub fn publish(&self, tenant_id: &str, event: &Value) {
        match self {
            Analytics::Redis { queue, lost } => {
                if queue
                    .try_send((tenant_id.to_owned(), event.to_string()))
                    .is_err()
                {
                    lost.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(tenant = tenant_id, "analytics queue full: event lost");
                }
            }
            Analytics::InProcess(buffer) => {
                let mut buffer = buffer.lock().unwrap();
                if buffer.len() == IN_PROCESS_MAX {
                    buffer.pop_front();
                }
                buffer.push_back((tenant_id.to_owned(), event.clone()));
            }
        }
    }

    /// The latest in-process events of a tenant, oldest first (empty for Redis:
    /// read the stream there).
    pub fn recent(&self, tenant_id: &str) -> Vec<Value> {
        match self {
            Analytics::Redis { .. } => Vec::new(),
            Analytics::InProcess(buffer) => buffer
                .lock()
                .unwrap()
                .iter()
                .filter(|(tenant, _)| tenant == tenant_id)
                .map(|(_, event)| event.clone())
                .collect(),
        }
    }
}

/// Sends queued events to the stream until every sender is gone: whatever
/// has queued (up to a batch) goes as one pipeline.
async fn send_events(
    mut connection: RedisConnection,
    mut events: mpsc::Receiver<(String, String)>,
    lost: std::sync::Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while events.recv_many(&mut batch, BATCH_MAX).await > 0 {
        let mut pipeline = redis::pipe();
        for (tenant, event) in &batch {
            pipeline
                .cmd("XADD")
                .arg(STREAM)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_MAX_LEN)
                .arg("*")
                .arg("tenant")
                .arg(tenant)
                .arg("event")
                .arg(event)
                .ignore();
        }
        if let Err(e) = pipeline.query_async::<()>(&mut connection).await {
            lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::warn!(events = batch.len(), error = %e, "analytics events lost");
        }
        batch.clear();
    }
}

//! Analytics events (one per processed turn) for whoever consumes them: a
//! Redis stream shared by every engine process, or, with no Redis, a
//! bounded buffer in this process.

use std::collections::VecDeque;
use std::sync::Mutex;

use redis::aio::ConnectionManager;
use serde_json::Value;

use crate::settings::ContextSettings;

/// The Redis stream events go to; trimmed to about this many entries.
pub const STREAM: &str = "mcp:analytics";
const STREAM_MAX_LEN: usize = 100_000;
const IN_PROCESS_MAX: usize = 10_000;

pub enum Analytics {
    Redis(ConnectionManager),
    InProcess(Mutex<VecDeque<(String, Value)>>),
}

/// A connection to `url` under the context settings' timeouts, made now so
/// a wrong `REDIS_URL` fails at start-up.
pub(crate) async fn redis_connection(
    url: &str,
    settings: &ContextSettings,
) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout));
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| format!("connecting to Redis: {e}"))
}

impl Analytics {
    /// Redis if `REDIS_URL` is set (and answers), else in process.
    pub async fn open(settings: &ContextSettings) -> Result<Analytics, String> {
        match &settings.redis_url {
            None => Ok(Analytics::InProcess(Mutex::new(VecDeque::new()))),
            Some(url) => Ok(Analytics::Redis(redis_connection(url, settings).await?)),
        }
    }

    /// Publishes an event of a tenant. Losing one is logged, never a failed
    /// turn: analytics must not take conversations down with them.
    pub async fn publish(&self, tenant_id: &str, event: &Value) {
        match self {
            Analytics::Redis(connection) => {
                let added: Result<String, _> = redis::cmd("XADD")
                    .arg(STREAM)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_MAX_LEN)
                    .arg("*")
                    .arg("tenant")
                    .arg(tenant_id)
                    .arg("event")
                    .arg(event.to_string())
                    .query_async(&mut connection.clone())
                    .await;
                if let Err(e) = added {
                    tracing::warn!(tenant = tenant_id, error = %e, "analytics event lost");
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
            Analytics::Redis(_) => Vec::new(),
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

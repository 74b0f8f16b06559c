//! Context in Redis, shared by every engine process.
//!
//! Keys of one conversation share a hash tag, `{tenant:conversation}`, so the
//! scripts that touch the lock and the context together run on one Redis
//! Cluster node, while a tenant's conversations still spread over all slots:
//!
//! - `conversation:{tenant:id}`: a hash of `version` and `data` (JSON)
//! - `lock:conversation:{tenant:id}`: the holder's random token, with a TTL
//!
//! Tenant ids cannot contain ':', so the tag is unambiguous.
//!
//! A command whose connection dropped (Redis restarted, say) is sent once
//! more on the reconnected one; every command here is safe to repeat.

use std::time::Duration;

use futures::future::BoxFuture;
use mcp_flow::{ContextError, ContextStore, Conversation, ConversationKey, Lease, Snapshot};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::{acquire, check_key};
use crate::redis_retry::once_more;
use crate::settings::ContextSettings;

/// Writes (or, with empty data, deletes) the context if the caller still
/// holds the lock and read the current version. Returns {status, version}:
/// 0 written (new version), 1 lock lost, 2 version conflict (current).
const WRITE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return {1, 0}
end
local current = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if current ~= tonumber(ARGV[2]) then
    return {2, current}
end
local next = current + 1
if ARGV[3] == '' then
    redis.call('HDEL', KEYS[2], 'data')
    redis.call('HSET', KEYS[2], 'version', next)
else
    redis.call('HSET', KEYS[2], 'version', next, 'data', ARGV[3])
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
else
    redis.call('PERSIST', KEYS[2])
end
return {0, next}
"#;

/// Takes the lock for ARGV[1] with a TTL of ARGV[2] ms; 1 if the caller
/// holds it now. Taking it again with the same token renews it, so a
/// retry after a dropped reply cannot lock the caller out.
const LOCK: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"#;

/// Deletes the lock only if it is still the caller's.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"#;

pub struct RedisContextStore {
    connection: ConnectionManager,
    lock: Script,
    write: Script,
    unlock: Script,
    lock_timeout: Duration,
    lock_ttl: Duration,
    idle_ttl: Option<Duration>,
}

impl RedisContextStore {
    /// Connects now, so a wrong `REDIS_URL` fails at start-up.
    pub async fn connect(settings: &ContextSettings) -> Result<RedisContextStore, ContextError> {
        let url = settings
            .redis_url
            .as_deref()
            .ok_or_else(|| ContextError::Unavailable("REDIS_URL is not set".into()))?;
        let client = redis::Client::open(url)
            .map_err(|e| ContextError::Unavailable(format!("REDIS_URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(3);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| ContextError::Unavailable(format!("connecting to Redis: {e}")))?;
        Ok(RedisContextStore {
            connection,
            lock: Script::new(LOCK),
            write: Script::new(WRITE),
            unlock: Script::new(UNLOCK),
            lock_timeout: settings.lock_timeout,
            lock_ttl: settings.lock_ttl,
            idle_ttl: settings.idle_ttl,
        })
    }

    async fn write(&self, lease: &Lease, data: String, expected: u64) -> Result<u64, ContextError> {
        let (context, lock) = keys(&lease.key);
        let idle_ms = self.idle_ttl.map_or(0, |ttl| ttl.as_millis() as u64);
        let attempt = || {
            let mut invocation = self.write.prepare_invoke();
            invocation
                .key(&lock)
                .key(&context)
                .arg(&lease.token)
                .arg(expected)
                .arg(&data)
                .arg(idle_ms);
            let mut connection = self.connection.clone();
            async move { invocation.invoke_async::<(u8, u64)>(&mut connection).await }
        };
        let (status, version, retried) = match attempt().await {
            Ok((status, version)) => (status, version, false),
            Err(e) if e.is_connection_dropped() => {
                let (status, version) = attempt().await.map_err(unavailable)?;
                (status, version, true)
            }
            Err(e) => return Err(unavailable(e)),
        };
        match status {
            0 => Ok(version),
            1 => Err(ContextError::LockLost {
                key: lease.key.clone(),
            }),
            // Still the lock's holder (the script checked), so the version
            // after ours is our own write, whose reply was lost.
            _ if retried && version == expected + 1 => Ok(version),
            _ => Err(ContextError::Conflict {
                key: lease.key.clone(),
                expected,
                found: version,
            }),
        }
    }

    async fn snapshot(&self, key: &ConversationKey) -> Result<Snapshot, ContextError> {
        let (context, _) = keys(key);
        let (version, data): (Option<u64>, Option<String>) = once_more(|| {
            let mut command = redis::cmd("HMGET");
            command.arg(&context).arg("version").arg("data");
            let mut connection = self.connection.clone();
            async move { command.query_async(&mut connection).await }
        })
        .await
        .map_err(unavailable)?;
        let conversation = match data {
            None => None,
            Some(json) => Some(
                serde_json::from_str(&json).map_err(|e| ContextError::Corrupt {
                    key: key.clone(),
                    reason: e.to_string(),
                })?,
            ),
        };
        Ok(Snapshot {
            conversation,
            version: version.unwrap_or(0),
        })
    }
}

/// (context key, lock key) of a conversation.
fn keys(key: &ConversationKey) -> (String, String) {
    let tag = format!("{{{}:{}}}", key.tenant_id, key.conversation_id);
    (
        format!("conversation:{tag}"),
        format!("lock:conversation:{tag}"),
    )
}

fn unavailable(e: RedisError) -> ContextError {
    ContextError::Unavailable(format!("redis: {e}"))
}

impl ContextStore for RedisContextStore {
    fn lock<'a>(&'a self, key: &'a ConversationKey) -> BoxFuture<'a, Result<Lease, ContextError>> {
        Box::pin(acquire(
            key,
            self.lock_timeout,
            self.lock_ttl,
            move |token| {
                let (_, lock) = keys(key);
                let ttl_ms = self.lock_ttl.as_millis() as u64;
                async move {
                    let held: i64 = once_more(|| {
                        let mut invocation = self.lock.prepare_invoke();
                        invocation.key(&lock).arg(&token).arg(ttl_ms);
                        let mut connection = self.connection.clone();
                        async move { invocation.invoke_async(&mut connection).await }
                    })
                    .await
                    .map_err(unavailable)?;
                    Ok(held == 1)
                }
            },
        ))
    }

    fn load<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Snapshot, ContextError>> {
        Box::pin(self.snapshot(&lease.key))
    }

    fn save<'a>(
        &'a self,
        lease: &'a Lease,
        conversation: &'a Conversation,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, ContextError>> {
        Box::pin(async move {
            let data = serde_json::to_string(conversation).expect("a conversation serializes");
            self.write(lease, data, expected).await
        })
    }

    fn delete<'a>(
        &'a self,
        lease: &'a Lease,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), ContextError>> {
        Box::pin(async move { self.write(lease, String::new(), expected).await.map(|_| ()) })
    }

    fn unlock(&self, lease: Lease) -> BoxFuture<'_, Result<(), ContextError>> {
        Box::pin(async move {
            let (_, lock) = keys(&lease.key);
            let _: i64 = once_more(|| {
                let mut invocation = self.unlock.prepare_invoke();
                invocation.key(&lock).arg(&lease.token);
                let mut connection = self.connection.clone();
                async move { invocation.invoke_async(&mut connection).await }
            })
            .await
            .map_err(unavailable)?;
            Ok(())
        })
    }

    fn peek<'a>(
        &'a self,
        key: &'a ConversationKey,
    ) -> BoxFuture<'a, Result<Snapshot, ContextError>> {
        Box::pin(async move {
            check_key(key)?;
            self.snapshot(key).await
        })
    }
}

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
//! A turn is two scripts, one round trip each: ACQUIRE (lock and read) and
//! COMMIT (fenced write and unlock). A command whose connection dropped
//! (Redis restarted, say) is sent once more on the reconnected one; every
//! script here is safe to repeat, and COMMIT tells a repeat of its own
//! write from someone else's.

use std::time::Duration;

use futures::future::BoxFuture;
use mcp_flow::{ContextError, ContextStore, Conversation, ConversationKey, Lease, Snapshot, Write};
use redis::{RedisError, Script};

use super::{acquire, check_key};
use crate::redis_connection::RedisConnection;
use crate::redis_retry::once_more;
use crate::settings::ContextSettings;

/// Takes the lock (KEYS[1]) for token ARGV[1] with a TTL of ARGV[2] ms and
/// reads the context (KEYS[2]). Returns {1, version, data} if the caller
/// holds the lock now, {0, false, false} if someone else does. Taking it
/// again with the same token renews it, so a retry after a dropped reply
/// cannot lock the caller out.
const ACQUIRE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
    return {0, false, false}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local stored = redis.call('HMGET', KEYS[2], 'version', 'data')
return {1, stored[1], stored[2]}
"#;

/// Writes ARGV[4] (or, if empty, forgets the data) as version ARGV[3] if
/// the caller (token ARGV[1]) holds the lock and the stored version is
/// still ARGV[2], and releases the lock. Returns {status, current version}:
/// 0 written, 1 lock not held, 2 version conflict (lock released).
const COMMIT: &str = r#"
local current = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return {1, current}
end
if current ~= tonumber(ARGV[2]) then
    redis.call('DEL', KEYS[1])
    return {2, current}
end
if ARGV[4] == '' then
    redis.call('HDEL', KEYS[2], 'data')
    redis.call('HSET', KEYS[2], 'version', ARGV[3])
else
    redis.call('HSET', KEYS[2], 'version', ARGV[3], 'data', ARGV[4])
end
local ttl = tonumber(ARGV[5])
if ttl > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
else
    redis.call('PERSIST', KEYS[2])
end
redis.call('DEL', KEYS[1])
return {0, tonumber(ARGV[3])}
"#;

/// Extends the lock by ARGV[2] ms if it is still the caller's.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Deletes the lock only if it is still the caller's.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"#;

pub struct RedisContextStore {
    connection: RedisConnection,
    acquire: Script,
    commit: Script,
    renew: Script,
    release: Script,
    lock_timeout: Duration,
    lock_ttl: Duration,
    idle_ttl: Option<Duration>,
}

impl RedisContextStore {
    /// Connects now, so a wrong `REDIS_URL` fails at start-up.
    pub async fn connect(settings: &ContextSettings) -> Result<RedisContextStore, ContextError> {
        let connection = RedisConnection::connect(settings)
            .await
            .map_err(ContextError::Unavailable)?;
        Ok(RedisContextStore {
            connection,
            acquire: Script::new(ACQUIRE),
            commit: Script::new(COMMIT),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            lock_timeout: settings.lock_timeout,
            lock_ttl: settings.lock_ttl,
            idle_ttl: settings.idle_ttl,
        })
    }

    /// Runs `script` on the conversation's lock and context keys with `args`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &ConversationKey,
        args: &[String],
    ) -> Result<T, RedisError> {
        let (context, lock) = keys(key);
        let mut invocation = script.prepare_invoke();
        invocation.key(&lock).key(&context);
        for arg in args {
            invocation.arg(arg);
        }
        invocation.invoke_async(&mut self.connection.clone()).await
    }

    async fn try_lock(
        &self,
        key: &ConversationKey,
        token: &str,
    ) -> Result<Option<Snapshot>, ContextError> {
        let args = [token.to_owned(), self.lock_ttl.as_millis().to_string()];
        let (held, version, data): (u8, Option<u64>, Option<String>) =
            once_more(|| self.run(&self.acquire, key, &args))
                .await
                .map_err(unavailable)?;
        if held == 0 {
            return Ok(None);
        }
        Ok(Some(snapshot(key, version, data)?))
    }

    async fn commit_write(&self, lease: &Lease, write: Write<'_>) -> Result<(), ContextError> {
        let data = match write.conversation {
            Some(conversation) => {
                serde_json::to_string(conversation).expect("a conversation serializes")
            }
            None => String::new(),
        };
        let idle_ms = self.idle_ttl.map_or(0, |ttl| ttl.as_millis() as u64);
        let args = [
            lease.token.clone(),
            write.expected.to_string(),
            write.version.to_string(),
            data,
            idle_ms.to_string(),
        ];
        let (status, current, retried) = match self.run(&self.commit, &lease.key, &args).await {
            Ok((status, current)) => (status, current, false),
            Err(e) if e.is_connection_dropped() => {
                let (status, current): (u8, u64) = self
                    .run(&self.commit, &lease.key, &args)
                    .await
                    .map_err(unavailable)?;
                (status, current, true)
            }
            Err(e) => return Err(unavailable(e)),
        };
        match status {
            0 => Ok(()),
            // The first try's reply was lost, and it wrote: no one else can
            // have written this version, which follows the one we read
            // under the lock.
            _ if retried && current == write.version => Ok(()),
            1 => Err(ContextError::LockLost {
                key: lease.key.clone(),
            }),
            _ => Err(ContextError::Conflict {
                key: lease.key.clone(),
                expected: write.expected,
                found: current,
            }),
        }
    }
}

/// A snapshot from a stored version and JSON.
fn snapshot(
    key: &ConversationKey,
    version: Option<u64>,
    data: Option<String>,
) -> Result<Snapshot, ContextError> {
    let conversation = match data {
        None => None,
        Some(json) => Some(serde_json::from_str::<Conversation>(&json).map_err(|e| {
            ContextError::Corrupt {
                key: key.clone(),
                reason: e.to_string(),
            }
        })?),
    };
    Ok(Snapshot {
        conversation,
        version: version.unwrap_or(0),
    })
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
    fn acquire<'a>(
        &'a self,
        key: &'a ConversationKey,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(Lease, Snapshot), ContextError>> {
        let wait = wait.min(self.lock_timeout);
        Box::pin(acquire(key, wait, self.lock_ttl, move |token| async move {
            self.try_lock(key, &token).await
        }))
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ContextError>> {
        Box::pin(async move {
            let args = [lease.token.clone(), lease.ttl.as_millis().to_string()];
            let renewed: i64 = once_more(|| self.run(&self.renew, &lease.key, &args))
                .await
                .map_err(unavailable)?;
            match renewed {
                1 => Ok(()),
                _ => Err(ContextError::LockLost {
                    key: lease.key.clone(),
                }),
            }
        })
    }

    fn commit<'a>(
        &'a self,
        lease: &'a Lease,
        write: Write<'a>,
    ) -> BoxFuture<'a, Result<(), ContextError>> {
        Box::pin(self.commit_write(lease, write))
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), ContextError>> {
        Box::pin(async move {
            let args = [lease.token.clone()];
            let _: i64 = once_more(|| self.run(&self.release, &lease.key, &args))
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
            let (context, _) = keys(key);
            let (version, data): (Option<u64>, Option<String>) = once_more(|| {
                let mut command = redis::cmd("HMGET");
                command.arg(&context).arg("version").arg("data");
                let mut connection = self.connection.clone();
                async move { command.query_async(&mut connection).await }
            })
            .await
            .map_err(unavailable)?;
            snapshot(key, version, data)
        })
    }
}

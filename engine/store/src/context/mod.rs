//! Live conversation context behind core's [`ContextStore`] port: in Redis
//! (shared by every engine process) or in this process (the embedded
//! default). Both hold one writer per conversation: a lock with a random
//! token and a time to live, and saves that name the version they read.

mod memory;
mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_flow::{ContextError, ContextStore, ConversationKey, Lease, Snapshot};

use crate::random_hex;
use crate::settings::ContextSettings;
use crate::tenants::check_tenant_id;

pub use memory::InProcessContextStore;
pub use redis::RedisContextStore;

/// The store the settings ask for: Redis if `REDIS_URL` is set (and must
/// answer now), otherwise in-process.
pub async fn open_context_store(
    settings: &ContextSettings,
) -> Result<Arc<dyn ContextStore>, ContextError> {
    Ok(match &settings.redis_url {
        Some(_) => Arc::new(RedisContextStore::connect(settings).await?),
        None => Arc::new(InProcessContextStore::new(settings)),
    })
}

/// Longest conversation id accepted, in bytes.
const MAX_CONVERSATION_ID: usize = 256;

fn check_key(key: &ConversationKey) -> Result<(), ContextError> {
    let bad = |reason: String| ContextError::BadKey {
        key: key.clone(),
        reason,
    };
    check_tenant_id(&key.tenant_id).map_err(|e| bad(e.to_string()))?;
    if key.conversation_id.is_empty() || key.conversation_id.len() > MAX_CONVERSATION_ID {
        return Err(bad(format!(
            "conversation_id must be 1 to {MAX_CONVERSATION_ID} bytes"
        )));
    }
    Ok(())
}

/// Tries `try_lock` with a fresh token until it takes the lock (and returns
/// what was stored) or `wait` passes, sleeping between tries with jittered
/// exponential backoff (2 ms doubling to 100 ms) so waiters neither spin
/// nor wake in step.
///
/// Each try is one round trip that either takes the lock or leaves it
/// alone, and the deadline is checked between tries, never during one: an
/// acquisition that runs out of time has taken nothing it does not return.
async fn acquire<F, Fut>(
    key: &ConversationKey,
    wait: Duration,
    ttl: Duration,
    mut try_lock: F,
) -> Result<(Lease, Snapshot), ContextError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<Snapshot>, ContextError>>,
{
    check_key(key)?;
    let token = random_hex(16);
    let started = Instant::now();
    let mut delay = Duration::from_millis(2);
    loop {
        if let Some(snapshot) = try_lock(token.clone()).await? {
            let lease = Lease {
                key: key.clone(),
                token,
                ttl,
                waited: started.elapsed(),
            };
            return Ok((lease, snapshot));
        }
        let waited = started.elapsed();
        if waited >= wait {
            return Err(ContextError::LockTimeout {
                key: key.clone(),
                waited,
            });
        }
        let sleep = jitter(delay).min(wait - waited);
        tokio::time::sleep(sleep).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// A random duration between half of `delay` and all of it.
fn jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    getrandom::fill(&mut byte).expect("the operating system has a random source");
    delay / 2 + delay / 2 * u32::from(byte[0]) / 255
}

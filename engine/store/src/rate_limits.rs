//! Token buckets per API key and per tenant, checked before a call is let
//! through. With Redis the buckets are shared by every engine process (one
//! script call per bucket, on Redis' clock); without it each process keeps
//! its own.
//!
//! A limiter that cannot reach Redis lets calls through and says so in the
//! log: losing the limit for a while is better than refusing every caller.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Script;

use crate::redis_connection::RedisConnection;
use crate::settings::ContextSettings;

/// A bucket's size and refill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Tokens a full bucket holds: the burst a quiet caller may send.
    pub burst: f64,
}

/// `RATE_LIMIT_PER_KEY`, `RATE_LIMIT_PER_TENANT` (calls per second,
/// decimals allowed) and `RATE_LIMIT_BURST` (default: twice the rate, at
/// least 1). Unset: no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitSettings {
    pub per_key: Option<Rate>,
    pub per_tenant: Option<Rate>,
}

/// A call over a limit: which one, and when a token will be there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {scope}'s rate limit is exhausted; retry in {} ms", retry_after.as_millis())]
pub struct RateLimited {
    /// `API key` or `tenant`.
    pub scope: &'static str,
    pub retry_after: Duration,
}

pub struct RateLimiter {
    settings: RateLimitSettings,
    buckets: Buckets,
}

/// Token buckets of any name and rate: where per-tool limits are kept.
/// Shared by every process through Redis when `REDIS_URL` is set.
pub struct TokenBuckets(Buckets);

impl TokenBuckets {
    pub async fn open(context: &ContextSettings) -> Result<TokenBuckets, String> {
        Ok(TokenBuckets(Buckets::open(context).await?))
    }

    /// Buckets kept in this process.
    pub fn in_process() -> TokenBuckets {
        TokenBuckets(Buckets::InProcess(Mutex::new(HashMap::new())))
    }

    /// Takes a token from `bucket`: `None` if there was one, else how long
    /// until there is.
    pub async fn take(&self, bucket: &str, rate: Rate) -> Option<Duration> {
        self.0.take(&format!("mcp:rate:{{{bucket}}}"), rate).await
    }
}

/// Where the buckets live.
enum Buckets {
    Off,
    InProcess(Mutex<HashMap<String, Bucket>>),
    Redis {
        connection: RedisConnection,
        script: Script,
    },
}

/// A bucket kept in this process.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The same bucket in Redis: a hash of tokens and the time they were
/// counted, refilled on Redis' clock so every process agrees.
/// Returns 0 when a token was taken, else the milliseconds until one.
const TAKE: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local per_ms = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(stored[1]) or burst
local at = tonumber(stored[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * per_ms)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / per_ms) + 1000)
return wait
"#;

impl RateLimiter {
    /// Off when no limit is set; shared through Redis when `REDIS_URL` is.
    pub async fn open(
        settings: &RateLimitSettings,
        context: &ContextSettings,
    ) -> Result<RateLimiter, String> {
        let buckets = if settings.per_key.is_none() && settings.per_tenant.is_none() {
            Buckets::Off
        } else {
            Buckets::open(context).await?
        };
        Ok(RateLimiter {
            settings: settings.clone(),
            buckets,
        })
    }

    /// Whether no limit is set.
    pub fn is_off(&self) -> bool {
        matches!(self.buckets, Buckets::Off)
    }

    /// Takes a token from the key's bucket and from its tenant's.
    pub async fn check(&self, key_id: &str, tenant_id: &str) -> Result<(), RateLimited> {
        for (scope, id, rate) in [
            ("API key", key_id, self.settings.per_key),
            ("tenant", tenant_id, self.settings.per_tenant),
        ] {
            let Some(rate) = rate else { continue };
            // One hash slot per bucket (the braces), for Redis Cluster.
            let bucket = format!("mcp:rate:{{{scope}:{id}}}");
            if let Some(retry_after) = self.buckets.take(&bucket, rate).await {
                return Err(RateLimited { scope, retry_after });
            }
        }
        Ok(())
    }
}

impl Buckets {
    /// In this process without Redis, else in Redis.
    async fn open(context: &ContextSettings) -> Result<Buckets, String> {
        Ok(if context.redis_url.is_none() {
            Buckets::InProcess(Mutex::new(HashMap::new()))
        } else {
            Buckets::Redis {
                connection: RedisConnection::connect(context).await?,
                script: Script::new(TAKE),
            }
        })
    }

    /// `None` if a token was taken, else how long until one is there.
    async fn take(&self, bucket: &str, rate: Rate) -> Option<Duration> {
        match self {
            Buckets::Off => None,
            Buckets::InProcess(buckets) => {
                let mut buckets = buckets.lock().unwrap();
                take_at(buckets.entry(bucket.to_owned()), rate, Instant::now())
            }
            Buckets::Redis { connection, script } => {
                let mut connection = connection.clone();
                let per_ms = rate.per_second / 1000.0;
                let waited: Result<u64, _> = script
                    .key(bucket)
                    .arg(per_ms)
                    .arg(rate.burst)
                    .invoke_async(&mut connection)
                    .await;
                match waited {
                    Ok(0) => None,
                    Ok(ms) => Some(Duration::from_millis(ms)),
                    Err(e) => {
                        tracing::warn!(bucket, error = %e, "rate limit not checked: Redis failed");
                        None
                    }
                }
            }
        }
    }
}

fn take_at(
    entry: std::collections::hash_map::Entry<'_, String, Bucket>,
    rate: Rate,
    now: Instant,
) -> Option<Duration> {
    let bucket = entry.or_insert(Bucket {
        tokens: rate.burst,
        at: now,
    });
    let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * rate.per_second;
    bucket.tokens = (bucket.tokens + refill).min(rate.burst);
    bucket.at = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        return None;
    }
    let seconds = (1.0 - bucket.tokens) / rate.per_second;
    Some(Duration::from_secs_f64(seconds).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3.0,
        };
        let mut buckets = HashMap::new();
        let start = Instant::now();
        let mut take = |at| take_at(buckets.entry("b".to_owned()), rate, at);
        for _ in 0..3 {
            assert_eq!(take(start), None);
        }
        assert_eq!(
            take(start),
            Some(Duration::from_millis(500)),
            "half a second to the next token"
        );
        assert_eq!(take(start + Duration::from_millis(500)), None);
        assert!(take(start + Duration::from_millis(500)).is_some());
        // A long quiet spell refills to the burst, no further.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..5).filter(|_| take(later).is_none()).count(), 3);
    }
}

//! One more try for a Redis command whose connection dropped. The
//! connection manager reconnects on such an error, so after a Redis restart
//! the first command fails only on the dead connection and its retry is
//! answered; while Redis is down the retry is refused at once, so callers
//! still fail fast. Only for commands that are safe to repeat.

use std::future::Future;

use redis::RedisError;

pub(crate) async fn once_more<T, F, Fut>(mut command: F) -> Result<T, RedisError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RedisError>>,
{
    match command().await {
        Err(e) if e.is_connection_dropped() => {
            tracing::debug!(error = %e, "redis connection dropped; trying once more");
            command().await
        }
        other => other,
    }
}

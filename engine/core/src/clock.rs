//! The real clock, for callers without a runtime of their own.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ports::Clock;

/// Wall-clock time. Its `sleep` blocks a thread per call, so it suits tools
/// and tests; the server supplies a clock that sleeps on its async runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        // A thread that finishes after `duration`, awaited without blocking
        // the caller's executor.
        let (done, wait) = futures::channel::oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            let _ = done.send(());
        });
        async move {
            let _ = wait.await;
        }
    }
}

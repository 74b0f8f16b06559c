//! Time for the machine and the server, from the system clock and tokio's
//! timers.

use std::future::Future;
use std::time::Duration;

use mcp_flow::{Clock, SystemClock};

/// Wall-clock time; sleeps on tokio's timer instead of blocking a thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    TokioClock.now_ms()
}

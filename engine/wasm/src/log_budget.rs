//! How much a plugin may write to the engine's log: a budget per call and
//! a refilling allowance per (tenant, plugin). What is over either is
//! dropped and counted, so a plugin printing in a loop costs its own fuel,
//! not the engine's log volume.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Lines one call may log (stdout, stderr and `host.log` together).
pub const LINES_PER_CALL: u32 = 100;
/// Bytes one call may log.
pub const BYTES_PER_CALL: usize = 16 * 1024;
/// Lines a plugin may log per second, over all its calls, after a burst.
pub const PLUGIN_LINES_PER_SECOND: f64 = 50.0;
/// The burst a quiet plugin may log at once.
pub const PLUGIN_BURST_LINES: f64 = 500.0;

/// One call's budget; shared by its streams and its `host.log`.
#[derive(Debug)]
pub(crate) struct CallLog {
    lines: u32,
    bytes: usize,
    dropped: u64,
}

impl CallLog {
    pub fn new() -> CallLog {
        CallLog {
            lines: 0,
            bytes: 0,
            dropped: 0,
        }
    }

    /// Whether a line of `len` bytes fits this call's budget.
    fn admit(&mut self, len: usize) -> bool {
        if self.lines >= LINES_PER_CALL || self.bytes + len > BYTES_PER_CALL {
            self.dropped += 1;
            return false;
        }
        self.lines += 1;
        self.bytes += len;
        true
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The per-plugin allowances of a host, and what all of them dropped.
#[derive(Debug, Default)]
pub struct LogAllowances {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
    dropped: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl LogAllowances {
    /// Whether a line may be logged for this call and plugin; counts it
    /// dropped if not.
    pub(crate) fn admit(&self, call: &mut CallLog, tenant: &str, plugin: &str, len: usize) -> bool {
        self.admit_at(call, tenant, plugin, len, Instant::now())
    }

    fn admit_at(
        &self,
        call: &mut CallLog,
        tenant: &str,
        plugin: &str,
        len: usize,
        now: Instant,
    ) -> bool {
        let admitted = call.admit(len) && self.take(tenant, plugin, now);
        if !admitted {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    fn take(&self, tenant: &str, plugin: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap();
        let bucket = buckets
            .entry((tenant.to_owned(), plugin.to_owned()))
            .or_insert(Bucket {
                tokens: PLUGIN_BURST_LINES,
                at: now,
            });
        let refill = now.duration_since(bucket.at).as_secs_f64() * PLUGIN_LINES_PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(PLUGIN_BURST_LINES);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Lines dropped since the host started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_logs_up_to_its_budget_and_the_rest_is_counted() {
        let allowances = LogAllowances::default();
        let mut call = CallLog::new();
        let logged = (0..150)
            .filter(|_| allowances.admit(&mut call, "t", "p", 10))
            .count();
        assert_eq!(logged, LINES_PER_CALL as usize);
        assert_eq!(call.dropped(), 50);
        assert_eq!(allowances.dropped(), 50);

        let mut big = CallLog::new();
        assert!(allowances.admit(&mut big, "t", "q", BYTES_PER_CALL));
        assert!(
            !allowances.admit(&mut big, "t", "q", 1),
            "bytes are capped too"
        );
    }

    #[test]
    fn a_plugin_logging_from_many_calls_runs_out_of_allowance() {
        let allowances = LogAllowances::default();
        let start = Instant::now();
        let calls = |at: Instant| {
            let mut logged = 0;
            for _ in 0..20 {
                let mut call = CallLog::new();
                logged += (0..LINES_PER_CALL)
                    .filter(|_| allowances.admit_at(&mut call, "t", "p", 1, at))
                    .count();
            }
            logged
        };
        assert_eq!(
            calls(start),
            PLUGIN_BURST_LINES as usize,
            "the burst, then nothing"
        );
        let mut other = CallLog::new();
        assert!(
            allowances.admit_at(&mut other, "t", "other", 1, start),
            "per plugin"
        );
        // Two seconds later, two seconds' worth has refilled.
        let later = start + std::time::Duration::from_secs(2);
        assert_eq!(calls(later), 2 * PLUGIN_LINES_PER_SECOND as usize);
    }
}

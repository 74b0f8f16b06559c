//! Whether a turn was served from this process's caches.
//!
//! The engine runs a turn inside [`track_cache`]; every lookup on that task
//! that had to read the database (a flow, the default flow, running
//! experiments, the tenant's plugins) notes a miss. The turn reports "hit"
//! when it needed nothing from the database beyond its context.

use std::cell::Cell;
use std::future::Future;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Everything the turn looked up was cached.
    Hit,
    /// This many lookups went to the database.
    Miss(u32),
}

impl CacheUse {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Miss(_) => "miss",
        }
    }
}

tokio::task_local! {
    static MISSES: Cell<u32>;
}

/// Runs `future`, returning what it returned and how it used the caches.
pub async fn track_cache<F: Future>(future: F) -> (F::Output, CacheUse) {
    MISSES
        .scope(Cell::new(0), async move {
            let output = future.await;
            let misses = MISSES.with(Cell::get);
            let used = if misses == 0 {
                CacheUse::Hit
            } else {
                CacheUse::Miss(misses)
            };
            (output, used)
        })
        .await
}

/// A lookup on this task read the database.
pub(crate) fn note_miss() {
    let _ = MISSES.try_with(|misses| misses.set(misses.get() + 1));
}

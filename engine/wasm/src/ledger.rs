//! What a turn's plugin calls cost, for the turn that made them.
//!
//! The engine runs a turn inside [`record_calls`]; every plugin call made
//! on that task is noted there, so the turn can report fuel and count calls
//! per plugin without the state machine knowing. Calls made outside a
//! recording (uploads, tool listings), and those the host makes for itself
//! inside one (`describe()` when a turn installs a plugin), are not noted.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use mcp_flow::PluginWorld;

/// One plugin call as the turn saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub plugin: String,
    pub version: String,
    pub world: PluginWorld,
    pub fuel_used: u64,
    pub duration: Duration,
    /// `None` if the plugin answered, else [`mcp_flow::PluginError::kind`].
    pub error: Option<&'static str>,
}

tokio::task_local! {
    static CALLS: RefCell<Vec<CallRecord>>;
}

/// Runs `future`, returning what it returned and the plugin calls it made.
pub async fn record_calls<F: Future>(future: F) -> (F::Output, Vec<CallRecord>) {
    CALLS
        .scope(RefCell::new(Vec::new()), async move {
            let output = future.await;
            (output, CALLS.with(RefCell::take))
        })
        .await
}

/// Runs `future` with its plugin calls kept out of any recording.
pub(crate) async fn unrecorded<F: Future>(future: F) -> F::Output {
    CALLS.scope(RefCell::new(Vec::new()), future).await
}

pub(crate) fn note(record: CallRecord) {
    // Outside a recording there is nobody to tell.
    let _ = CALLS.try_with(|calls| calls.borrow_mut().push(record));
}

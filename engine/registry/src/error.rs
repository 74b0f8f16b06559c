//! What can go wrong between the host and the store.

use mcp_store::StoreError;
use mcp_wasm::{PolicyError, UploadError};

/// A registry operation's failure: the store's, the host's refusal of an
/// upload, or a policy the host cannot enforce. Input errors are returned
/// before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The wasm host refused the upload.
    #[error("the plugin was refused: {0}")]
    Plugin(#[from] UploadError),

    /// A limit or allow-list entry the host cannot enforce.
    #[error(transparent)]
    Policy(#[from] PolicyError),

    /// Too many uploads are being checked: try again shortly.
    #[error("busy: {0}")]
    Busy(String),

    /// The tenant stores as many plugin bytes as it may.
    #[error("quota: {0}")]
    Quota(String),

    /// A stored policy this host no longer accepts (an upgrade lowered a
    /// maximum): not the caller's fault, so not reported as their input.
    #[error("tenant {tenant}'s stored policy: {error}")]
    StalePolicy { tenant: String, error: PolicyError },
}

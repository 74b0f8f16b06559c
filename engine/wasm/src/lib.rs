//! MCP Engine's plugin host: tenant plugins as wasmtime components, each call
//! in a fresh instance under fuel, deadline, memory, table, stack and
//! result-size limits. [`PluginHost`] implements `mcp_flow::PluginRuntime`.

pub mod allow_list;
pub mod bindings;
pub mod breaker;
pub mod cache;
mod call;
mod convert;
pub mod egress;
mod host;
pub mod ledger;
pub mod limits;
pub mod log_budget;
mod state;

pub use allow_list::AllowList;
pub use breaker::BreakerConfig;
pub use cache::{ArtifactKey, ArtifactStore, CacheStatus, DirArtifactStore};
pub use call::CallStats;
pub use egress::{Egress, Refusal, Resolve, SystemResolver};
pub use host::{
    Checked, HostConfig, Inspected, Installed, PluginHost, PolicyError, StoredVersion,
    TenantPolicy, UploadError, WIT_VERSION,
};
pub use ledger::{CallRecord, record_calls};
pub use limits::Limits;
// The plugin descriptions and policy data the host reads and enforces are
// core's, shared with the store; re-exported for the host's users.
pub use mcp_flow::{
    LimitOverrides, Manifest, PolicySettings, RateLimit, StateTypeManifest, ToolManifest,
};

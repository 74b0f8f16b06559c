//! MCP Engine's plugin registry: the one place where the plugin host
//! (mcp-wasm) and the store (mcp-store) meet.
//!
//! - Upload → check → persist: a component is validated, compiled and
//!   described by the host without being installed, so no turn can call it
//!   before it is stored, then stored as a row with the world and manifest
//!   the host found. Uploads are bounded (a few at a time per process, one
//!   per tenant, a byte quota per tenant); a refused one leaves nothing
//!   behind.
//! - Load → install → activate: before a tenant's turn, the host's registry
//!   is made to hold exactly the tenant's enabled versions, the newest of each
//!   active, under the tenant's policy, with the manifests stored at upload:
//!   no plugin code runs on a turn's behalf but its own calls. The store says
//!   when that changed.
//! - Tenant policies are checked against the host's maxima before they are
//!   stored.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_registry::{PluginRegistry, artifact_store};
//! use mcp_store::{Database, Store, StoreSettings};
//! use mcp_wasm::{HostConfig, PluginHost};
//!
//! let settings = StoreSettings::from_env()?;
//! let db = Database::connect(&settings.database).await?;
//! let host = PluginHost::new(HostConfig { artifacts: Some(artifact_store(&db)), ..HostConfig::default() })?;
//! let registry = PluginRegistry::new(Store::open(db).await?, host);
//! registry.load_plugins("acme").await?;
//! # Ok(()) }
//! ```

mod artifacts;
mod error;
mod registry;

pub use artifacts::artifact_store;
pub use error::RegistryError;
pub use registry::{PluginRegistry, UploadLimits, UploadPlugin};

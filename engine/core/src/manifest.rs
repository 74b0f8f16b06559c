//! What a plugin says about itself through `describe()`: the single
//! description of a tool or a tenant state type. The wasm host reads it from
//! the component, the store keeps it beside the plugin's bytes, and the
//! server lists it to callers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool's description, for discovery and for agents calling it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolManifest {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Value,
    pub permissions: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    /// What the tool does to the world, for agents and their users.
    /// Manifests stored before annotations existed read as the defaults.
    #[serde(default)]
    pub annotations: ToolAnnotations,
}

/// Hints about a tool's effects, as MCP's tool annotations carry them.
/// `None`: the tool did not say (MCP's defaults apply).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolAnnotations {
    /// A human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// It changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// It may destroy or overwrite (meaningful when not read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    /// Calling it twice with the same arguments does no more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// It reaches beyond the tenant's own systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world: Option<bool>,
    /// An agent's call runs only once the user confirmed it.
    #[serde(default)]
    pub requires_confirmation: bool,
}

/// At most `requests` calls per `per_seconds` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

/// A tenant state type's description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateTypeManifest {
    pub name: String,
    pub description: String,
    pub config_schema: Value,
}

/// What describe() said, for the worlds that have one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Manifest {
    Tool(ToolManifest),
    StateType(StateTypeManifest),
}

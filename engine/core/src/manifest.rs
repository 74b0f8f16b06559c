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

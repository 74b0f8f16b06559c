//! The plugins a flow names, and which names are plugin names at all.

use serde::Serialize;

use crate::ports::PluginWorld;

/// A plugin a flow uses, for checking against what the tenant has installed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PluginRef {
    pub world: PluginWorld,
    pub name: String,
    /// Where the flow names it.
    pub path: String,
}

/// Plugin names: what the store and the wasm registry accept.
pub fn is_plugin_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

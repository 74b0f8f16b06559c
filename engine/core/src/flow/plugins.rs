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

/// How an integration names a tool of a remote MCP server:
/// `mcp:<server>/<tool>`, the server as the tenant's policy names it.
pub const REMOTE_TOOL_PREFIX: &str = "mcp:";

/// `(server, tool)` of what follows [`REMOTE_TOOL_PREFIX`], if well formed.
pub fn remote_tool(name: &str) -> Option<(&str, &str)> {
    let (server, tool) = name.split_once('/')?;
    let tool_ok = (1..=128).contains(&tool.len())
        && tool
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    (is_plugin_name(server) && tool_ok).then_some((server, tool))
}

//! A tenant's plugin policy as data: limit overrides per world and the hosts
//! its tools may call. The store keeps it as given; the wasm host checks it
//! against its own maxima and enforces it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::ports::PluginWorld;

/// A tenant's policy as stored and as the admin API takes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicySettings {
    #[serde(default)]
    pub limits: HashMap<PluginWorld, LimitOverrides>,
    /// `host` or `host:port` entries; empty means no outbound HTTP at all.
    #[serde(default)]
    pub allow_list: Vec<String>,
    /// Remote MCP servers the tenant's flows may call tools of, by the name
    /// flows use (`"integration_id": "mcp:<name>/<tool>"`). Their hosts must
    /// be on `allow_list` too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mcp_servers: BTreeMap<String, RemoteMcpServer>,
}

/// A remote MCP server (Streamable HTTP) and the tenant's credential for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMcpServer {
    /// `http(s)://host[:port]/path` of its MCP endpoint.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`; none if empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A tenant's overrides of one world's limits; unset fields keep the
/// world's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitOverrides {
    pub fuel: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_bytes: Option<usize>,
    pub table_elements: Option<usize>,
    pub result_bytes: Option<usize>,
}

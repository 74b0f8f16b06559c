//! MCP Engine's server: the seed's gRPC contract and the admin API over the
//! flow core, the plugin host and the store.

pub mod proto;

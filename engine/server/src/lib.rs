//! MCP Engine's server: the seed's gRPC contract and the admin API over the
//! flow core, the plugin host and the store.

pub mod admin;
pub mod auth;
pub mod caps;
pub mod cli;
pub mod clock;
pub mod convert;
pub mod demo;
pub mod engine;
pub mod flow_test;
pub mod gate;
pub mod health;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod proto;
pub mod request;
pub mod scaffold;
pub mod serve;
pub mod service;
pub mod status;
pub mod stream;
pub mod tool_http;

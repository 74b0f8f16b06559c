//! The generated gRPC code: the seed's contract (`mcp.common.v2`,
//! `mcp.engine.v2`, `mcp.health.v2`) and the admin API (`mcp.admin.v1`).
//! Modules follow the proto packages, as the generated code expects.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod mcp {
    pub mod common {
        pub mod v2 {
            tonic::include_proto!("mcp.common.v2");
        }
    }
    pub mod engine {
        pub mod v2 {
            tonic::include_proto!("mcp.engine.v2");
        }
    }
    pub mod health {
        pub mod v2 {
            tonic::include_proto!("mcp.health.v2");
        }
    }
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("mcp.admin.v1");
        }
    }
}

pub use mcp::admin::v1 as admin;
pub use mcp::common::v2 as common;
pub use mcp::engine::v2 as engine;
pub use mcp::health::v2 as health;

/// Every file of proto/ with its imports, encoded, for server reflection.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

//! The example plugins in plugins/, built by this crate's build script for
//! wasm32-wasip2: their paths, for the tests, and the Rust ones' bytes, which
//! the demo tenant (`mcp-engine serve --demo`) installs from the binary.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

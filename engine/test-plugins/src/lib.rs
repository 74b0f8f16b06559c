//! Paths of the plugins in plugins/, built by this crate's build script.
//! Tests read the components from these paths.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

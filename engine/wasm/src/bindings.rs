//! The one module that owns the bindings generated from `wit/`: one per
//! world, sharing the `types` and `host` interfaces of the first.

/// The `condition` world; also the home of the shared types and host interface.
pub mod condition {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "mcp:plugin/condition",
        exports: { default: async },
    });
}

pub use condition::mcp::plugin::host;
pub use condition::mcp::plugin::types;

/// The `action` world.
pub mod action {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "mcp:plugin/action",
        exports: { default: async },
        with: {
            "mcp:plugin/types": super::types,
            "mcp:plugin/host": super::host,
        },
    });
}

/// The `tool` world; wasi:http comes from wasmtime-wasi-http.
pub mod tool {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "mcp:plugin/tool",
        exports: { default: async },
        with: {
            "mcp:plugin/types": super::types,
            "mcp:plugin/host": super::host,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The `annotated-tool` world: a tool that also exports its hints.
pub mod annotated_tool {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "mcp:plugin/annotated-tool",
        exports: { default: async },
        with: {
            "mcp:plugin/types": super::types,
            "mcp:plugin/host": super::host,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The `state-type` world.
pub mod state_type {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "mcp:plugin/state-type",
        exports: { default: async },
        with: {
            "mcp:plugin/types": super::types,
            "mcp:plugin/host": super::host,
        },
    });
}

/// The `entity-intent` world: a classifier that also finds entities.
pub mod entity_intent {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "mcp:plugin/entity-intent",
        exports: { default: async },
        with: {
            "mcp:plugin/types": super::types,
            "mcp:plugin/host": super::host,
        },
    });
}

/// The `intent` world.
pub mod intent {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "mcp:plugin/intent",
        exports: { default: async },
        with: {
            "mcp:plugin/types": super::types,
            "mcp:plugin/host": super::host,
        },
    });
}

//! The client code, generated from MCP Engine's protos at build time. protox
//! compiles them in Rust, so no protoc is needed; copy this beside a copy of
//! proto/ in your own service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors = protox::compile(["mcp_engine.proto"], [&proto])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}

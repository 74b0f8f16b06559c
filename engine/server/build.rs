//! Generates the gRPC code from proto/ with protox (a protobuf compiler in
//! Rust), so building needs no system protoc, and keeps the descriptor set
//! for server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: [&str; 4] = [
    "common.proto",
    "mcp_engine.proto",
    "health.proto",
    "admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let descriptors = protox::compile(PROTOS, [&proto_dir])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

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
    let mut descriptors = protox::compile(PROTOS, [&proto_dir])?;
    // Name each file by its package (`mcp/health/v2/health.proto`): served
    // by reflection beside grpc.health.v1's own `health.proto`, two files
    // of one name would hide one of them.
    let rename = |name: &str| -> String {
        match name {
            "common.proto" => "mcp/common/v2/common.proto".into(),
            "mcp_engine.proto" => "mcp/engine/v2/mcp_engine.proto".into(),
            "health.proto" => "mcp/health/v2/health.proto".into(),
            "admin.proto" => "mcp/admin/v1/admin.proto".into(),
            other => other.into(),
        }
    };
    for file in &mut descriptors.file {
        file.name = file.name.as_deref().map(rename);
        for dependency in &mut file.dependency {
            *dependency = rename(dependency);
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    embed_wit(&out)?;
    std::fs::write(out.join("descriptors.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// The plugin contract (wit/, without its README), for `plugin new` to write
/// into new plugin projects: `WIT_FILES` of (path under wit/, text).
fn embed_wit(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let wit = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../wit")
        .canonicalize()?;
    println!("cargo:rerun-if-changed={}", wit.display());
    let mut files = Vec::new();
    let mut pending = vec![wit.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "wit") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut code = String::from("pub const WIT_FILES: &[(&str, &str)] = &[\n");
    for path in files {
        let relative = path.strip_prefix(&wit)?.display().to_string();
        code += &format!(
            "    ({relative:?}, include_str!({:?})),\n",
            path.display().to_string()
        );
    }
    code += "];\n";
    std::fs::write(out.join("wit_files.rs"), code)?;
    Ok(())
}

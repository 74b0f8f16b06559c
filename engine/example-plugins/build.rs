//! Builds every plugin in plugins/ and writes their paths (and, for the Rust
//! ones, their bytes) as constants, so `cargo test` and `serve --demo` need
//! no manual step (the pattern of wasmtime's
//! test-programs artifacts and spin's test-components).
//!
//! Rust plugins: one `cargo build --release` of the plugins/ workspace for
//! wasm32-wasip2, in its own target directory. Python plugins: built with
//! componentize-py when it is on PATH; with MCP_REQUIRE_PYTHON_PLUGINS=1 (as
//! .ci/run sets) its absence is an error.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest_dir.join("../..").canonicalize().unwrap();
    let plugins = repo.join("plugins");
    let wit = repo.join("wit");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", wit.display());
    println!("cargo:rerun-if-env-changed=MCP_REQUIRE_PYTHON_PLUGINS");

    let mut constants = String::new();
    for (name, path) in build_rust_plugins(&repo, &plugins) {
        let constant = name.to_uppercase().replace('-', "_");
        writeln!(constants, "/// `plugins/{name}`, built for wasm32-wasip2.").unwrap();
        writeln!(
            constants,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
        writeln!(
            constants,
            "/// `plugins/{name}`'s component, built in.\npub const {constant}_BYTES: &[u8] = include_bytes!({:?});",
            path.display().to_string()
        )
        .unwrap();
    }
    for (name, path) in build_python_plugins(&plugins, &wit, &out_dir) {
        let constant = format!("PYTHON_{}", name.to_uppercase());
        writeln!(
            constants,
            "/// `plugins/python/{name}`, built with componentize-py (None without it)."
        )
        .unwrap();
        let value = match path {
            Some(path) => format!("Some({:?})", path.display().to_string()),
            None => "None".to_owned(),
        };
        writeln!(constants, "pub const {constant}: Option<&str> = {value};").unwrap();
    }
    std::fs::write(out_dir.join("plugins.rs"), constants).unwrap();
}

/// Stops the build at once, naming the fix, when the toolchain cannot build
/// for wasm32-wasip2: otherwise the inner build fails minutes later with
/// "can't find crate for `core`". rust-toolchain.toml lists the target, but
/// rustup adds it only when it installs the toolchain, not to one already
/// installed.
fn require_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else {
        return; // Let the inner build say what is wrong with rustc.
    };
    let target_lib = sysroot.join("lib/rustlib/wasm32-wasip2/lib");
    if !target_lib.is_dir() {
        // Cargo shows a failed build script's stderr; a panic would add a
        // backtrace to the one line that matters.
        eprintln!(
            "The Rust toolchain at {} has no wasm32-wasip2 target, which the example plugins \
             (the demo and the tests) are built for. Add it with:\n\n    rustup target add wasm32-wasip2\n\n\
             or build the engine without the demo: cargo build -p mcp-engine --no-default-features",
            sysroot.display()
        );
        std::process::exit(1);
    }
}

/// Every member of the plugins workspace, built in release mode.
fn build_rust_plugins(repo: &Path, plugins: &Path) -> Vec<(String, PathBuf)> {
    require_wasm_target();
    let target_dir = repo.join("target/plugins");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings are for the host, not for wasm guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command.status().expect("cargo runs");
    assert!(
        status.success(),
        "building the plugins in {} failed",
        plugins.display()
    );

    members(plugins)
        .into_iter()
        .map(|name| {
            let file = format!("{}.wasm", name.replace('-', "_"));
            let path = target_dir.join("wasm32-wasip2/release").join(file);
            assert!(path.exists(), "{} was not built", path.display());
            (name, path)
        })
        .collect()
}

/// The workspace members listed in plugins/Cargo.toml.
fn members(plugins: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(plugins.join("Cargo.toml")).unwrap();
    let list = manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("members = ["))
        .expect("plugins/Cargo.toml lists its members on one line");
    list.trim_end_matches(']')
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

fn build_python_plugins(
    plugins: &Path,
    wit: &Path,
    out_dir: &Path,
) -> Vec<(String, Option<PathBuf>)> {
    let required = env::var("MCP_REQUIRE_PYTHON_PLUGINS").is_ok_and(|v| v == "1");
    let available = Command::new("componentize-py")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            !required,
            "componentize-py is not installed (pip install componentize-py)"
        );
        println!(
            "cargo:warning=componentize-py not found: Python plugins are not built and their tests are skipped"
        );
    }
    let python = plugins.join("python");
    let mut names: Vec<String> = std::fs::read_dir(&python)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("app.py").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            if !available {
                return (name, None);
            }
            let world = world_of(&python.join(&name).join("app.py"));
            let output = out_dir.join(format!("{name}_py.wasm"));
            let status = Command::new("componentize-py")
                .current_dir(python.join(&name))
                .arg("-d")
                .arg(wit)
                .args(["-w", &world, "componentize", "app", "-o"])
                .arg(&output)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .status()
                .expect("componentize-py runs");
            assert!(
                status.success(),
                "componentize-py failed for plugins/python/{name}"
            );
            (name, Some(output))
        })
        .collect()
}

/// The world a Python plugin targets: the `-w` of its build line.
fn world_of(app: &Path) -> String {
    let source = std::fs::read_to_string(app).unwrap();
    source
        .split_whitespace()
        .skip_while(|word| *word != "-w")
        .nth(1)
        .unwrap_or_else(|| {
            panic!(
                "{} names no world in its build line (-w WORLD)",
                app.display()
            )
        })
        .to_owned()
}

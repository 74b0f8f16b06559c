//! README.md's quickstart, word for word: the commands of its `sh` blocks run
//! in order in one shell, against the real binary, and their output is
//! checked. Only what cannot run here is left out, each for a reason below.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;

const README: &str = include_str!("../../../README.md");

/// The quickstart's commands, in order.
fn quickstart() -> Vec<&'static str> {
    let section = README
        .split("\n## ")
        .find(|s| s.starts_with("Quickstart\n"))
        .expect("README.md has a Quickstart section");
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in section.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            command if in_sh && !command.is_empty() => commands.push(command),
            _ => {}
        }
    }
    commands
}

#[tokio::test]
async fn the_quickstart_works_word_for_word() {
    let commands = quickstart();
    let [serve, build, path, key, chat, rest @ ..] = commands.as_slice() else {
        panic!("the quickstart changed shape: {commands:#?}");
    };
    // These the harness does itself, so it is their text that is checked:
    // the server it starts is this build's binary, and so is the CLI on PATH.
    let Some((target, serve)) = serve.split_once(" && ") else {
        panic!("the first command adds the wasm target, then serves: {serve}");
    };
    assert_eq!(target, "rustup target add wasm32-wasip2");
    assert_eq!(serve, "cargo run --release -p mcp-engine -- serve --demo");
    // The first half runs as written: with the target installed it is a
    // no-op that must succeed.
    let added = std::process::Command::new("bash")
        .args(["-c", target])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .status()
        .unwrap();
    assert!(added.success(), "`{target}` failed");
    assert_eq!(*build, "cargo build --release -p mcp-engine");
    assert_eq!(*path, "export PATH=\"$PWD/target/release:$PATH\"");
    assert_eq!(*key, "export MCP_API_KEY=<the key the engine printed>");
    // Interactive.
    assert_eq!(*chat, "mcp-engine chat --tenant demo");

    let work = std::env::temp_dir().join(format!("mcp-readme-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let (engine, mut output) = start_with(
        &["serve", "--demo"],
        HashMap::from([("MCP_DATA_DIR", work.join("mcp-data").display().to_string())]),
    )
    .await;
    let mut api_key = None;
    while let Some(line) = output.next_line().await.unwrap() {
        if let Some(k) = line.strip_prefix("Its API key: ") {
            api_key = Some(k.to_owned());
            break;
        }
    }

    // The rest runs from a copy of the files it names, so the repository is
    // left as it was.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let quickstart = work.join("examples/quickstart");
    std::fs::create_dir_all(&quickstart).unwrap();
    for file in ["newsletter.json", "newsletter.scenarios.json"] {
        std::fs::copy(
            repo.join("examples/quickstart").join(file),
            quickstart.join(file),
        )
        .unwrap();
    }
    let binary_dir = Path::new(env!("CARGO_BIN_EXE_mcp-engine"))
        .parent()
        .unwrap();
    let script = format!("set -euo pipefail\n{}\n", rest.join("\n"));
    let ran = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env(
            "PATH",
            format!(
                "{}:{}",
                binary_dir.display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env("MCP_SERVER", &engine.address)
        .env("MCP_API_KEY", api_key.expect("the demo prints its key"))
        // Plugin projects share a target folder, so their dependencies build once.
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target"),
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        ran.status.success(),
        "{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for expected in [
        "created has-email (",
        "test result: ok. 2 passed",
        "1 scenarios, 3 turns: 3 passed, 0 failed",
        "has-email@1.0.0 (condition) sha256 ",
        "newsletter@1.0.0 published",
        "What's your email address?\nSubscribed ada@example.com. Thanks!",
    ] {
        assert!(
            stdout.contains(expected),
            "expected {expected:?} in:\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&work);
}

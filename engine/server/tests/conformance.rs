//! The official MCP conformance suite (`@modelcontextprotocol/conformance`
//! from npm, with the Node 22 it needs, both pinned in tests/conformance/)
//! against `/mcp` of the real binary: every server scenario of its active
//! suite passes, except those tests/conformance/expected-failures.yml lists
//! as not applying to a tools-only server (the suite fails the run if one of
//! those starts passing, too).
//!
//! Skipped when `npm ci` has not been run in tests/conformance/, unless
//! MCP_REQUIRE_CONFORMANCE=1 (as .ci/run sets).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

fn suite_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance"))
}

#[tokio::test]
async fn the_official_conformance_suite_passes() {
    let dir = suite_dir();
    let bin = dir.join("node_modules/.bin");
    if !bin.join("conformance").exists() {
        assert!(
            std::env::var("MCP_REQUIRE_CONFORMANCE").as_deref() != Ok("1"),
            "MCP_REQUIRE_CONFORMANCE=1 but {} has no conformance suite: run npm ci there",
            dir.display()
        );
        eprintln!(
            "skipped: run `npm ci` in {} to run the suite",
            dir.display()
        );
        return;
    }
    let engine = start(HashMap::new()).await;
    let (mut admin, _) = clients(&engine).await;
    let (tenant, key) = new_tenant(&mut admin, "conformance", &[]).await;
    // The fixture tools its tool scenarios call, by name.
    for (name, setting, answer) in [
        (
            "test_simple_text",
            "result",
            "\"This is a simple text response for testing.\"",
        ),
        (
            "test_error_handling",
            "error",
            "This tool intentionally returns an error for testing",
        ),
    ] {
        let config = HashMap::from([(setting.to_owned(), answer.to_owned())]);
        upload(
            &mut admin,
            &key,
            &tenant,
            name,
            mcp_example_plugins::CANNED,
            config,
        )
        .await;
    }

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut proxy = tokio::process::Command::new("node")
        .arg(dir.join("bearer-proxy.mjs"))
        .arg(format!("http://{}", engine.http))
        .env("PATH", &path)
        .env("MCP_KEY", &key)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let port = BufReader::new(proxy.stdout.take().unwrap())
        .lines()
        .next_line()
        .await
        .unwrap()
        .expect("the proxy prints its port");

    let output = tokio::process::Command::new(bin.join("conformance"))
        .args(["server", "--url", &format!("http://127.0.0.1:{port}/mcp")])
        .args(["--suite", "active", "--expected-failures"])
        .arg(dir.join("expected-failures.yml"))
        .env("PATH", &path)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for scenario in [
        "server-initialize",
        "ping",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-error",
        "dns-rebinding-protection",
        "server-sse-multiple-streams",
    ] {
        assert!(
            report
                .lines()
                .any(|line| line.contains('✓') && line.contains(&format!(" {scenario}:"))),
            "{scenario} did not pass:\n{report}"
        );
    }
    drop(proxy);
}

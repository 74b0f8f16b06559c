//! The example client against a real engine running the demo tenant.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

/// The `mcp-engine` binary beside this test's (built by `cargo test
/// --workspace`, as the engine's own tests need it).
fn engine_binary() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let binary = deps.parent().unwrap().parent().unwrap().join("mcp-engine");
    assert!(
        binary.exists(),
        "{} is not built: run `cargo test --workspace`, or `cargo build -p mcp-engine` first",
        binary.display()
    );
    binary
}

#[tokio::test]
async fn the_client_orders_a_pizza_from_the_demo() {
    let data = std::env::temp_dir().join(format!("mcp-client-example-{}", std::process::id()));
    let mut engine = tokio::process::Command::new(engine_binary())
        .args(["serve", "--demo"])
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("GRPC_HOST", "127.0.0.1")
        .env("GRPC_PORT", "0")
        .env("HTTP_PORT", "0")
        .env("MCP_DATA_DIR", &data)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(engine.stdout.take().unwrap()).lines();
    let (mut address, mut key) = (None, None);
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.ends_with("(gRPC)") {
            address = line
                .split_whitespace()
                .find(|w| w.starts_with("127.0.0.1:"))
                .map(str::to_owned);
        }
        if let Some(k) = line.strip_prefix("Its API key: ") {
            key = Some(k.to_owned());
            break;
        }
    }
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-client-example"))
        .args([
            "--server",
            &format!("http://{}", address.unwrap()),
            "--tenant",
            "demo",
        ])
        .args([
            "hi",
            "I'd like to order a pizza",
            "small margherita",
            "1",
            "yes",
        ])
        .env("MCP_API_KEY", key.unwrap())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("bot: What size would you like: small, medium or large?"),
        "{text}"
    );
    assert!(
        text.contains("bot: Order placed! 1 × small margherita, $8.00."),
        "{text}"
    );
    assert!(text.trim_end().ends_with("[state placed]"), "{text}");
    drop(engine);
    let _ = std::fs::remove_dir_all(data);
}

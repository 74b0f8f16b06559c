//! The `mcp-engine` binary.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use mcp_engine::serve::{ServerSettings, serve};

#[derive(Parser)]
#[command(
    name = "mcp-engine",
    version,
    about = "A multi-tenant conversation-flow engine with WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine. With no settings it uses an embedded SQLite file and
    /// in-process context; DATABASE_URL and REDIS_URL switch to PostgreSQL
    /// and Redis.
    Serve,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MCP_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(ServerSettings::from_env()?).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-engine: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! The `mcp-engine` binary: the server, and clients of a running one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use mcp_engine::cli;
use mcp_engine::scaffold::Language;
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
    /// Run the engine. With no settings it keeps everything in an embedded
    /// SQLite file (under MCP_DATA_DIR) and context in process; DATABASE_URL
    /// and REDIS_URL switch to PostgreSQL and Redis. Migrations run at start.
    Serve {
        /// Install the demo tenant (Pizza Planet) and print how to talk to it.
        #[arg(long)]
        demo: bool,
    },
    /// Tenants (needs the operator key, MCP_ADMIN_KEY).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Flows: check and draw them offline, publish them to a server.
    #[command(subcommand)]
    Flow(FlowCommand),
    /// Plugins of a tenant on a server.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Talk to a tenant's default flow in the terminal.
    Chat {
        #[command(flatten)]
        client: Client,
        #[arg(long)]
        tenant: String,
        /// Continue a conversation instead of starting one.
        #[arg(long)]
        conversation: Option<String>,
        /// Start the conversation on this flow (`id` or `id@version`)
        /// instead of the tenant's default.
        #[arg(long)]
        flow: Option<String>,
    },
}

/// Where the server is and which key to use.
#[derive(Args, Clone)]
struct Client {
    #[arg(long, env = "MCP_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// The API key (for `tenant create`, the operator key).
    #[arg(long, env = "MCP_API_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints its id and a first API key (scope admin).
    Create {
        name: String,
        #[arg(long)]
        id: Option<String>,
        /// A host its tool plugins may call (repeatable), e.g. api.example.com:443
        #[arg(long = "allow")]
        allow_list: Vec<String>,
        #[arg(long, env = "MCP_SERVER", default_value = "http://127.0.0.1:50051")]
        server: String,
        /// The operator key.
        #[arg(long, env = "MCP_ADMIN_KEY", hide_env_values = true)]
        key: String,
    },
}

#[derive(Subcommand)]
enum FlowCommand {
    /// Report every problem of a flow with its path; exit code 1 if any is an error.
    Validate { file: PathBuf },
    /// Print the flow as a Mermaid state diagram.
    Graph { file: PathBuf },
    /// Play scripted conversations (a scenarios JSON file) against the flow
    /// and its plugins, offline; pass or fail per turn, exit code 1 if any
    /// failed.
    Test {
        flow: PathBuf,
        scenarios: PathBuf,
        /// A plugin component to use, as NAME=PATH (repeatable); overrides
        /// the scenarios file's `plugins` entry of that name.
        #[arg(long = "plugin", value_name = "NAME=PATH")]
        plugins: Vec<String>,
    },
    /// Publish a flow version to a tenant.
    Publish {
        #[command(flatten)]
        client: Client,
        #[arg(long)]
        tenant: String,
        file: PathBuf,
        /// Make it the tenant's default flow.
        #[arg(long)]
        default: bool,
        /// Store it as a draft.
        #[arg(long)]
        draft: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Upload a plugin component (.wasm).
    Push {
        #[command(flatten)]
        client: Client,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "1.0.0")]
        version: String,
        /// The world it claims: condition, action, tool, state-type, intent.
        #[arg(long)]
        world: Option<String>,
        file: PathBuf,
    },
    /// Start a plugin project for one world, in Rust or Python, that builds
    /// as generated and passes its own tests.
    New {
        /// The extension point: condition, action, tool, state-type, intent.
        #[arg(long)]
        world: mcp_flow::PluginWorld,
        #[arg(long, value_enum, default_value = "rust")]
        lang: Language,
        /// The plugin's name, as flows will call it (e.g. is-weekend).
        name: String,
        /// Where to create it; a new folder named after the plugin by default.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the plugin project in DIR (default: here) into a component;
    /// prints its path.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// List a tenant's plugin versions.
    List {
        #[command(flatten)]
        client: Client,
        #[arg(long)]
        tenant: String,
    },
}

// A turn allocates many small, short-lived values across worker threads;
// glibc's allocator spent a fifth of a loaded engine's CPU on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // rmcp logs every MCP session's start and end at info.
            EnvFilter::try_from_env("MCP_LOG").unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result: Result<ExitCode, Box<dyn std::error::Error>> = runtime.block_on(async {
        match command {
            Command::Serve { demo } => {
                let settings = ServerSettings {
                    demo,
                    ..ServerSettings::from_env()?
                };
                serve(settings).await.map(|_| ExitCode::SUCCESS)
            }
            Command::Tenant(TenantCommand::Create {
                name,
                id,
                allow_list,
                server,
                key,
            }) => cli::create_tenant(&server, &key, &name, id, allow_list).await,
            Command::Flow(FlowCommand::Validate { file }) => cli::validate_flow(&file),
            Command::Flow(FlowCommand::Graph { file }) => cli::graph_flow(&file),
            Command::Flow(FlowCommand::Test {
                flow,
                scenarios,
                plugins,
            }) => cli::test_flow(&flow, &scenarios, &plugins).await,
            Command::Flow(FlowCommand::Publish {
                client,
                tenant,
                file,
                default,
                draft,
            }) => {
                cli::publish_flow(&client.server, client.key, &tenant, &file, default, draft).await
            }
            Command::Plugin(PluginCommand::Push {
                client,
                tenant,
                name,
                version,
                world,
                file,
            }) => {
                cli::push_plugin(
                    &client.server,
                    client.key,
                    &tenant,
                    &name,
                    &version,
                    world,
                    &file,
                )
                .await
            }
            Command::Plugin(PluginCommand::New {
                world,
                lang,
                name,
                dir,
            }) => cli::new_plugin(&name, world, lang, dir),
            Command::Plugin(PluginCommand::Build { dir }) => cli::build_plugin(&dir),
            Command::Plugin(PluginCommand::List { client, tenant }) => {
                cli::list_plugins(&client.server, client.key, &tenant).await
            }
            Command::Chat {
                client,
                tenant,
                conversation,
                flow,
            } => cli::chat(&client.server, client.key, &tenant, conversation, flow).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcp-engine: {e}");
            ExitCode::FAILURE
        }
    }
}

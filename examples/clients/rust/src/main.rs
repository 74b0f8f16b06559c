//! A chat service talking to MCP Engine: sends each line of its arguments as
//! a user message of one conversation and prints the engine's replies.
//!
//! ```sh
//! export MCP_API_KEY=<the tenant's key>
//! cargo run -p mcp-client-example -- --tenant demo "hi" "I'd like to order a pizza"
//! ```
//!
//! `--server` (default http://127.0.0.1:50051) and `--conversation` (default
//! a new one) are optional.

/// The generated code, in modules named after the proto packages (as it
/// expects).
#[allow(clippy::all)]
pub mod mcp {
    pub mod common {
        pub mod v2 {
            tonic::include_proto!("mcp.common.v2");
        }
    }
    pub mod engine {
        pub mod v2 {
            tonic::include_proto!("mcp.engine.v2");
        }
    }
}

use mcp::common::v2 as common;
use mcp::engine::v2::mcp_engine_client::McpEngineClient;
use mcp::engine::v2::{MessageContent, ProcessMessageRequest};
use tonic::Request;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut server = "http://127.0.0.1:50051".to_owned();
    let mut tenant = None;
    let mut conversation = format!("example-{}", std::process::id());
    let mut messages = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--server" => server = args.next().ok_or("--server needs a URL")?,
            "--tenant" => tenant = Some(args.next().ok_or("--tenant needs an id")?),
            "--conversation" => conversation = args.next().ok_or("--conversation needs an id")?,
            _ => messages.push(arg),
        }
    }
    let tenant = tenant.ok_or("--tenant is required")?;
    let key =
        std::env::var("MCP_API_KEY").map_err(|_| "set MCP_API_KEY to the tenant's API key")?;

    let mut client = McpEngineClient::connect(server).await?;
    for text in messages {
        let mut request = Request::new(ProcessMessageRequest {
            tenant_context: Some(common::TenantContext {
                tenant_id: tenant.clone(),
                ..Default::default()
            }),
            conversation_id: conversation.clone(),
            user_id: "example-user".into(),
            content: Some(MessageContent {
                text: text.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        // Every call carries the tenant's key, and a deadline.
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
        request.set_timeout(std::time::Duration::from_secs(10));
        let response = client.process_message(request).await?.into_inner();
        let reply = response.response.map(|r| r.text).unwrap_or_default();
        println!("you: {text}");
        println!("bot: {}", reply.replace('\n', "\n     "));
        println!("     [state {}]", response.current_state);
    }
    Ok(())
}

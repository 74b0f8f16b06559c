//! The client subcommands of `mcp-engine`: offline flow checks, and calls
//! to a running server.

use std::error::Error;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use mcp_flow::flow::Severity;
use tonic::Request;
use tonic::transport::Channel;

use crate::proto::admin::admin_client::AdminClient;
use crate::proto::admin::*;
use crate::proto::common::{MessageType, TenantContext};
use crate::proto::engine::mcp_engine_client::McpEngineClient;
use crate::proto::engine::{MessageContent, ProcessMessageRequest, ProcessingHints, QuickReply};
use crate::serve::MAX_MESSAGE_BYTES;

type Outcome = Result<ExitCode, Box<dyn Error>>;

fn read(file: &Path) -> Result<String, Box<dyn Error>> {
    std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()).into())
}

/// Every problem with its path; exit code 1 if any is an error.
pub fn validate_flow(file: &Path) -> Outcome {
    let text = read(file)?;
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(e) => {
            println!("error: {}: not JSON: {e}", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let report = mcp_flow::validate(value);
    for issue in &report.issues {
        println!("{issue}");
    }
    let errors = report
        .issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .count();
    if errors > 0 {
        println!("{}: {errors} error(s)", file.display());
        Ok(ExitCode::from(1))
    } else {
        println!("{}: valid", file.display());
        Ok(ExitCode::SUCCESS)
    }
}

/// The flow as a Mermaid state diagram, on stdout.
pub fn graph_flow(file: &Path) -> Outcome {
    let flow = mcp_flow::Flow::from_json(&read(file)?)
        .map_err(|report| format!("the flow is invalid:\n{report}"))?;
    print!("{}", mcp_flow::graph::mermaid(flow.definition()));
    Ok(ExitCode::SUCCESS)
}

/// Plays the scenarios against the flow offline; exit code 1 if a turn
/// failed.
pub async fn test_flow(flow_file: &Path, scenarios_file: &Path, plugins: &[String]) -> Outcome {
    use crate::flow_test::PluginSpec;
    let flow = mcp_flow::Flow::from_json(&read(flow_file)?)
        .map_err(|report| format!("{}: the flow is invalid:\n{report}", flow_file.display()))?;
    let mut scenarios = crate::flow_test::read_scenarios(scenarios_file)?;
    let base = scenarios_file.parent().unwrap_or(Path::new("."));
    for plugin in plugins {
        let (name, path) = plugin
            .split_once('=')
            .ok_or_else(|| format!("--plugin {plugin}: give NAME=PATH"))?;
        // Paths on the command line are the caller's, not the file's.
        let path = std::env::current_dir()?.join(path);
        let config = match scenarios.plugins.remove(name) {
            Some(PluginSpec::Configured { config, .. }) => config,
            _ => Default::default(),
        };
        scenarios
            .plugins
            .insert(name.to_owned(), PluginSpec::Configured { path, config });
    }
    let mut report = String::new();
    let summary = crate::flow_test::run(&flow, &scenarios, base, &mut report).await?;
    print!("{report}");
    Ok(if summary.failed_turns == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes a plugin project and says what to do next.
pub fn new_plugin(
    name: &str,
    world: mcp_flow::PluginWorld,
    language: crate::scaffold::Language,
    dir: Option<std::path::PathBuf>,
) -> Outcome {
    use crate::scaffold::{Language, new_plugin, python_bindings};
    let dir = dir.unwrap_or_else(|| name.into());
    let files = new_plugin(&dir, name, world, language)?;
    println!(
        "created {} ({} files): a {world} plugin in {language:?}",
        dir.display(),
        files.len()
    );
    let test = match language {
        Language::Rust => "cargo test".to_owned(),
        Language::Python => match python_bindings(&dir, world) {
            Ok(()) => "python3 -m unittest test_app".to_owned(),
            Err(e) => {
                println!("(the Python bindings were not generated: {e})");
                format!(
                    "componentize-py -d wit -w {world} bindings . && python3 -m unittest test_app"
                )
            }
        },
    };
    println!(
        "next:
    cd {}
    {test}
    mcp-engine plugin build
    mcp-engine plugin push --tenant TENANT --name {name} <the path it prints>",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Builds the plugin project in `dir`; prints the component's path.
pub fn build_plugin(dir: &Path) -> Outcome {
    let component = crate::scaffold::build_plugin(dir)?;
    println!("{}", component.display());
    Ok(ExitCode::SUCCESS)
}

async fn channel(server: &str) -> Result<Channel, Box<dyn Error>> {
    Ok(Channel::from_shared(server.to_owned())?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {server}: {e}"))?)
}

fn authed<T>(message: T, key: &str) -> Result<Request<T>, Box<dyn Error>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    Ok(request)
}

fn key(key: Option<String>) -> Result<String, Box<dyn Error>> {
    key.ok_or_else(|| "an API key is needed: --key or MCP_API_KEY".into())
}

fn status(e: tonic::Status) -> Box<dyn Error> {
    format!("{:?}: {}", e.code(), e.message()).into()
}

async fn admin(server: &str) -> Result<AdminClient<Channel>, Box<dyn Error>> {
    Ok(AdminClient::new(channel(server).await?).max_encoding_message_size(MAX_MESSAGE_BYTES))
}

pub async fn create_tenant(
    server: &str,
    operator_key: &str,
    name: &str,
    id: Option<String>,
    allow_list: Vec<String>,
) -> Outcome {
    let created = admin(server)
        .await?
        .create_tenant(authed(
            CreateTenantRequest {
                tenant_id: id.unwrap_or_default(),
                name: name.to_owned(),
                allow_list,
                ..Default::default()
            },
            operator_key,
        )?)
        .await
        .map_err(status)?
        .into_inner();
    println!("tenant_id: {}", created.tenant_id);
    println!(
        "api_key: {}",
        created.api_key.map(|k| k.token).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn publish_flow(
    server: &str,
    api_key: Option<String>,
    tenant: &str,
    file: &Path,
    default: bool,
    draft: bool,
) -> Outcome {
    let published = admin(server)
        .await?
        .publish_flow(authed(
            PublishFlowRequest {
                tenant_id: tenant.to_owned(),
                definition: read(file)?,
                draft,
                make_default: default,
            },
            &key(api_key)?,
        )?)
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "{}@{} {}{}",
        published.flow_id,
        published.version,
        published.status,
        if published.is_default {
            " (default)"
        } else {
            ""
        }
    );
    for warning in published.warnings {
        println!("warning: {}: {}", warning.path, warning.message);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn push_plugin(
    server: &str,
    api_key: Option<String>,
    tenant: &str,
    name: &str,
    version: &str,
    world: Option<String>,
    file: &Path,
) -> Outcome {
    let component = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let stored = admin(server)
        .await?
        .upload_plugin(authed(
            UploadPluginRequest {
                tenant_id: tenant.to_owned(),
                name: name.to_owned(),
                version: version.to_owned(),
                world: world.unwrap_or_default(),
                component,
                config: Default::default(),
            },
            &key(api_key)?,
        )?)
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "{}@{} ({}) sha256 {}",
        stored.name, stored.version, stored.world, stored.sha256
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn list_plugins(server: &str, api_key: Option<String>, tenant: &str) -> Outcome {
    let listed = admin(server)
        .await?
        .list_plugins(authed(
            ListPluginsRequest {
                tenant_id: tenant.to_owned(),
            },
            &key(api_key)?,
        )?)
        .await
        .map_err(status)?
        .into_inner();
    for p in listed.plugins {
        let state = match (p.enabled, p.active) {
            (true, true) => "active",
            (true, false) => "enabled",
            _ => "disabled",
        };
        println!(
            "{}@{}\t{}\t{}\t{} bytes",
            p.name, p.version, p.world, state, p.size
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Lines from stdin as messages; replies on stdout. Ends at end of input.
pub async fn chat(
    server: &str,
    api_key: Option<String>,
    tenant: &str,
    conversation: Option<String>,
    flow: Option<String>,
) -> Outcome {
    let api_key = key(api_key)?;
    let mut client = McpEngineClient::new(channel(server).await?);
    let conversation = conversation
        .unwrap_or_else(|| format!("chat-{}-{}", std::process::id(), crate::clock::now_ms()));
    eprintln!("conversation {conversation}; type a message, end with Ctrl-D");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    // The previous reply's quick replies: "#2" taps the second.
    let mut offered: Vec<QuickReply> = Vec::new();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let Some(line) = lines.next() else { break };
        let line = line?;
        let tapped = line
            .strip_prefix('#')
            .and_then(|n| n.trim().parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| offered.get(n).cloned());
        let content = match tapped {
            Some(reply) => MessageContent {
                r#type: MessageType::QuickReply as i32,
                text: reply.title.clone(),
                payload: reply.payload.clone(),
                quick_replies: vec![QuickReply {
                    clicked: true,
                    ..reply
                }],
                ..Default::default()
            },
            None => MessageContent {
                text: line,
                ..Default::default()
            },
        };
        let reply = client
            .process_message(authed(
                ProcessMessageRequest {
                    tenant_context: Some(TenantContext {
                        tenant_id: tenant.to_owned(),
                        ..Default::default()
                    }),
                    conversation_id: conversation.clone(),
                    user_id: "terminal".into(),
                    content: Some(content),
                    processing_hints: flow.as_ref().map(|flow| ProcessingHints {
                        force_flow: flow.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &api_key,
            )?)
            .await;
        match reply {
            Ok(reply) => {
                let reply = reply.into_inner();
                let content = reply.response.unwrap_or_default();
                println!("{}", content.text);
                offered = content.quick_replies;
                if !offered.is_empty() {
                    let listed: Vec<String> = offered
                        .iter()
                        .enumerate()
                        .map(|(i, q)| format!("[#{}] {}", i + 1, q.title))
                        .collect();
                    println!("  {}", listed.join("  "));
                }
                let handed_off = reply
                    .metadata
                    .and_then(|m| m.custom_metadata)
                    .is_some_and(|notes| notes.fields.contains_key("handoff"));
                if handed_off {
                    eprintln!("  [handed to a person]");
                }
                eprintln!("  [state {}]", reply.current_state);
            }
            Err(e) => eprintln!("  [{:?}: {}]", e.code(), e.message()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

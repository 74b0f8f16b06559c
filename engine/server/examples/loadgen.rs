//! A gRPC load generator: many conversations of the demo tenant at once,
//! against a running engine, reporting throughput and latency percentiles.
//!
//! ```sh
//! mcp-engine serve --demo                      # prints the demo's key
//! MCP_API_KEY=<key> cargo run --release -p mcp-engine --example loadgen -- \
//!     --concurrency 32 --conversations 2000
//! ```
//!
//! Each conversation orders a pizza from the demo's flow (five turns: intent
//! plugin, slots, VIP condition, price action, end state), so a turn here is
//! a real one: lock, load, step with plugins, save, transcript, analytics.

use std::time::{Duration, Instant};

use clap::Parser;
use mcp_engine::proto::common::TenantContext;
use mcp_engine::proto::engine::mcp_engine_client::McpEngineClient;
use mcp_engine::proto::engine::{MessageContent, ProcessMessageRequest};
use tonic::transport::Channel;

#[derive(Parser)]
struct Options {
    #[arg(long, env = "MCP_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    #[arg(long, env = "MCP_API_KEY", hide_env_values = true)]
    key: String,
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Conversations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Conversations in all, each five turns.
    #[arg(long, default_value_t = 500)]
    conversations: usize,
    /// gRPC connections the workers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

const SCRIPT: [&str; 5] = [
    "hi",
    "I'd like to order a pizza",
    "large pepperoni",
    "2",
    "yes",
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::parse();
    let mut channels = Vec::new();
    for _ in 0..options.connections.max(1) {
        channels.push(
            Channel::from_shared(options.server.clone())?
                .connect()
                .await?,
        );
    }
    let run = format!("load-{}", std::process::id());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..options.concurrency {
        let client = McpEngineClient::new(channels[worker % channels.len()].clone());
        let (next, run, options) = (
            next.clone(),
            run.clone(),
            (
                options.tenant.clone(),
                options.key.clone(),
                options.conversations,
            ),
        );
        workers.push(tokio::spawn(async move {
            let (tenant, key, total) = options;
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    break;
                }
                for text in SCRIPT {
                    let mut request = tonic::Request::new(ProcessMessageRequest {
                        tenant_context: Some(TenantContext {
                            tenant_id: tenant.clone(),
                            ..Default::default()
                        }),
                        conversation_id: format!("{run}-{n}"),
                        user_id: "load".into(),
                        content: Some(MessageContent {
                            text: text.into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                    request
                        .metadata_mut()
                        .insert("authorization", format!("Bearer {key}").parse().unwrap());
                    let sent = Instant::now();
                    match client.clone().process_message(request).await {
                        Ok(response)
                            if response
                                .get_ref()
                                .status
                                .as_ref()
                                .is_some_and(|s| s.success) =>
                        {
                            latencies.push(sent.elapsed())
                        }
                        _ => errors += 1,
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| -> Duration {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} turns ({} conversations, concurrency {}) in {:.2} s: {:.0} turns/s, {errors} errors",
        latencies.len(),
        options.conversations,
        options.concurrency,
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.50).as_secs_f64() * 1e3,
        at(0.90).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}

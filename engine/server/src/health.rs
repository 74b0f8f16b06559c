//! The seed's `mcp.health.v2.Health`: the engine's status, and each
//! dependency's with its round-trip time.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::clock::now_ms;
use crate::convert::timestamp;
use crate::engine::{self, Engine};
use crate::proto::common::HealthStatus;
use crate::proto::health::health_server::Health;
use crate::proto::health::*;

pub struct HealthService {
    pub engine: Arc<Engine>,
    pub started_at_ms: i64,
}

/// Services this one answers for; "" is the engine as a whole.
const KNOWN: [&str; 4] = [
    "",
    "mcp-engine",
    "mcp.engine.v2.MCPEngine",
    "mcp.admin.v1.Admin",
];

fn now() -> prost_types::Timestamp {
    timestamp(now_ms())
}

impl HealthService {
    async fn status(&self, service: &str) -> HealthStatus {
        if !KNOWN.contains(&service) {
            return HealthStatus::HealthServiceUnknown;
        }
        // Degraded still serves turns.
        if self.engine.health().await.down.is_empty() {
            HealthStatus::HealthServing
        } else {
            HealthStatus::HealthNotServing
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        let status = self.status(&service).await;
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
            service,
            timestamp: Some(now()),
            details: None,
        }))
    }

    type WatchStream = WatchStream;

    /// The status now, then again whenever it changes (checked every 5 s).
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let service = request.into_inner().service;
        let engine = self.engine.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let probe = HealthService {
                engine,
                started_at_ms: 0,
            };
            let mut last = None;
            loop {
                let status = probe.status(&service).await;
                if last != Some(status) {
                    let update = HealthCheckResponse {
                        status: status as i32,
                        service: service.clone(),
                        timestamp: Some(now()),
                        details: None,
                    };
                    if sender.send(Ok(update)).await.is_err() {
                        return;
                    }
                    last = Some(status);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = sender.closed() => return,
                }
            }
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_detailed_health(
        &self,
        request: Request<DetailedHealthRequest>,
    ) -> Result<Response<DetailedHealthResponse>, Status> {
        let request = request.into_inner();
        let health = self.engine.health().await;
        let details = details(&health);
        let failing = !health.down.is_empty();
        let dependencies = if request.include_dependencies {
            health
                .probes
                .into_iter()
                .map(|probe| DependencyHealth {
                    name: probe.name.into(),
                    r#type: probe.kind.into(),
                    status: if probe.error.is_some() {
                        HealthStatus::HealthNotServing
                    } else {
                        HealthStatus::HealthServing
                    } as i32,
                    response_time_ms: probe.time.as_millis() as i32,
                    // A stable word, not the driver's text (logged instead).
                    error_message: probe
                        .error
                        .map(|_| "unavailable".to_owned())
                        .unwrap_or_default(),
                    last_check: Some(now()),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(DetailedHealthResponse {
            status: if failing {
                HealthStatus::HealthNotServing
            } else {
                HealthStatus::HealthServing
            } as i32,
            service: request.service,
            version: env!("CARGO_PKG_VERSION").into(),
            timestamp: Some(now()),
            uptime_since: Some(timestamp(self.started_at_ms)),
            dependencies,
            resource_usage: None,
            metrics: None,
            details: Some(details),
        }))
    }
}

/// `{"state": "serving" | "degraded" | "down", "reasons": [...]}`: the seed's
/// statuses have no "degraded", so it is told here.
fn details(health: &engine::Health) -> prost_types::Struct {
    use prost_types::value::Kind;
    let text = |s: &str| prost_types::Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let reasons = health.reasons().map(|r| text(r)).collect();
    prost_types::Struct {
        fields: [
            ("state".to_owned(), text(health.state())),
            (
                "reasons".to_owned(),
                prost_types::Value {
                    kind: Some(Kind::ListValue(prost_types::ListValue { values: reasons })),
                },
            ),
        ]
        .into_iter()
        .collect(),
    }
}

//! The seed's `mcp.health.v2.Health`: the engine's status, and each
//! dependency's with its round-trip time.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::clock::now_ms;
use crate::convert::timestamp;
use crate::engine::Engine;
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
        let failing = self
            .engine
            .probe_dependencies()
            .await
            .iter()
            .any(|(_, _, _, error)| error.is_some());
        if failing {
            HealthStatus::HealthNotServing
        } else {
            HealthStatus::HealthServing
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
        let probes = self.engine.probe_dependencies().await;
        let failing = probes.iter().any(|(_, _, _, error)| error.is_some());
        let dependencies = if request.include_dependencies {
            probes
                .into_iter()
                .map(|(name, kind, time, error)| DependencyHealth {
                    name: name.into(),
                    r#type: kind.into(),
                    status: if error.is_some() {
                        HealthStatus::HealthNotServing
                    } else {
                        HealthStatus::HealthServing
                    } as i32,
                    response_time_ms: time.as_millis() as i32,
                    error_message: error.unwrap_or_default(),
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
            details: None,
        }))
    }
}

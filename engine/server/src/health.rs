//! The seed's `mcp.health.v2.Health`: the engine's status, and each
//! dependency's with its round-trip time.
//!
//! Anyone may ask whether the engine serves; what its dependencies are and
//! how they fare is for the operator (`authorization: Bearer
//! <MCP_ADMIN_KEY>`). Watch streams share one prober, and there are at most
//! [`MAX_WATCHERS`] of them.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::auth::bears_operator_key;
use crate::clock::now_ms;
use crate::convert::timestamp;
use crate::engine::{self, Engine};
use crate::proto::common::HealthStatus;
use crate::proto::health::health_server::Health;
use crate::proto::health::*;

/// Most Watch streams open at once; one more is refused.
pub const MAX_WATCHERS: usize = 256;

/// How often the shared prober looks while anyone watches.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

pub struct HealthService {
    engine: Arc<Engine>,
    started_at_ms: i64,
    operator_key: Option<Arc<str>>,
    watchers: Arc<Semaphore>,
    /// Whether the engine serves, as the prober last found.
    serving: watch::Receiver<bool>,
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
    /// Starts the prober Watch streams share; it probes only while someone
    /// watches, and stops with the engine.
    pub fn new(
        engine: Arc<Engine>,
        started_at_ms: i64,
        operator_key: Option<Arc<str>>,
    ) -> HealthService {
        let (publish, serving) = watch::channel(true);
        let weak = Arc::downgrade(&engine);
        tokio::spawn(async move {
            loop {
                if publish.receiver_count() > 1 {
                    let Some(engine) = weak.upgrade() else { return };
                    // Degraded still serves turns.
                    let up = engine.health().await.down.is_empty();
                    publish.send_if_modified(|serving| std::mem::replace(serving, up) != up);
                } else if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(WATCH_INTERVAL).await;
            }
        });
        HealthService {
            engine,
            started_at_ms,
            operator_key,
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            serving,
        }
    }

    async fn status(&self, service: &str) -> HealthStatus {
        if !KNOWN.contains(&service) {
            return HealthStatus::HealthServiceUnknown;
        }
        serving_status(self.engine.health().await.down.is_empty())
    }

    /// Whether the request bears the operator key.
    fn asked_by_operator<T>(&self, request: &Request<T>) -> bool {
        bears_operator_key(
            AsRef::<http::HeaderMap>::as_ref(request.metadata()).get(http::header::AUTHORIZATION),
            self.operator_key.as_deref(),
        )
    }
}

fn serving_status(serving: bool) -> HealthStatus {
    if serving {
        HealthStatus::HealthServing
    } else {
        HealthStatus::HealthNotServing
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

    /// The status now, then again whenever it changes (checked every 5 s
    /// by the prober all streams share).
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_WATCHERS} health watches are open; use Check, or try again later"
            ))
        })?;
        let service = request.into_inner().service;
        let known = KNOWN.contains(&service.as_str());
        let update = move |service: &str, status: HealthStatus| HealthCheckResponse {
            status: status as i32,
            service: service.to_owned(),
            timestamp: Some(now()),
            details: None,
        };
        // The first answer is probed now; later ones come from the prober.
        let first = self.status(&service).await;
        let mut serving = self.serving.clone();
        serving.borrow_and_update();
        let head = futures::stream::once(std::future::ready(Ok(update(&service, first))));
        let tail = futures::stream::unfold(
            (serving, service, permit, first),
            move |(mut serving, service, permit, last)| async move {
                if !known {
                    // Unknown it stays: nothing more to say.
                    return std::future::pending().await;
                }
                loop {
                    serving.changed().await.ok()?;
                    let status = serving_status(*serving.borrow_and_update());
                    if status != last {
                        let next = update(&service, status);
                        return Some((Ok(next), (serving, service, permit, status)));
                    }
                }
            },
        );
        let stream = head.chain(tail);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_detailed_health(
        &self,
        request: Request<DetailedHealthRequest>,
    ) -> Result<Response<DetailedHealthResponse>, Status> {
        let operator = self.asked_by_operator(&request);
        let request = request.into_inner();
        if request.include_dependencies && !operator {
            return Err(Status::unauthenticated(
                "include_dependencies needs the operator key (authorization: Bearer <MCP_ADMIN_KEY>)",
            ));
        }
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
            // Why it is degraded or down is for the operator.
            details: operator.then_some(details),
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

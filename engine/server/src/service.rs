//! The seed's MCPEngine service (proto/mcp_engine.proto): each call
//! authenticated, authorized for its tenant, validated, then run.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use mcp_store::Scope;
use tonic::{Request, Response, Status};

use crate::auth::{PresentedKey, authenticate, authorize, revoked};
use crate::clock::now_ms;
use crate::convert::{metric_data, tenant_of, timestamp, turn_notes};
use crate::engine::Engine;
use crate::proto::common::{self, HealthStatus};
use crate::proto::engine::mcp_engine_server::McpEngine;
use crate::proto::engine::*;
use crate::request::{deadline_of, require_conversation_id, turn};
use crate::status::from_engine;
use crate::stream::stream_session;

/// Most messages in one batch.
pub const MAX_BATCH: usize = 100;

pub struct EngineService {
    pub engine: Arc<Engine>,
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<ConversationStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl McpEngine for EngineService {
    async fn process_message(
        &self,
        request: Request<ProcessMessageRequest>,
    ) -> Result<Response<ProcessMessageResponse>, Status> {
        let key = authenticate(&request)?;
        let deadline = deadline_of(&request);
        let request = request.into_inner();
        authorize(&key, tenant_of(&request.tenant_context), Scope::Messages)?;
        require_conversation_id(&request.conversation_id)?;
        Ok(Response::new(turn(&self.engine, request, deadline).await?))
    }

    async fn get_conversation_state(
        &self,
        request: Request<GetConversationStateRequest>,
    ) -> Result<Response<GetConversationStateResponse>, Status> {
        let key = authenticate(&request)?;
        let request = request.into_inner();
        let tenant = tenant_of(&request.tenant_context);
        authorize(&key, tenant, Scope::Messages)?;
        require_conversation_id(&request.conversation_id)?;
        let conversation = self
            .engine
            .conversation(tenant, &request.conversation_id)
            .await
            .map_err(from_engine)?;
        Ok(Response::new(GetConversationStateResponse {
            status: Some(common::Status {
                success: true,
                ..Default::default()
            }),
            conversation_state: Some(ConversationState::from(&conversation)),
            performance_metrics: None,
            metadata: turn_notes(conversation.handoff.as_ref(), false, &[]),
        }))
    }

    async fn reset_conversation(
        &self,
        request: Request<ResetConversationRequest>,
    ) -> Result<Response<ResetConversationResponse>, Status> {
        let key = authenticate(&request)?;
        let request = request.into_inner();
        let tenant = tenant_of(&request.tenant_context);
        authorize(&key, tenant, Scope::Messages)?;
        require_conversation_id(&request.conversation_id)?;
        let previous = self
            .engine
            .reset(tenant, &request.conversation_id)
            .await
            .map_err(from_engine)?;
        Ok(Response::new(ResetConversationResponse {
            status: Some(common::Status {
                success: true,
                ..Default::default()
            }),
            conversation_id: request.conversation_id,
            previous_state: previous,
            performance_metrics: None,
            metadata: None,
        }))
    }

    type StreamConversationStream = ResponseStream;

    async fn stream_conversation(
        &self,
        request: Request<tonic::Streaming<ConversationStreamRequest>>,
    ) -> Result<Response<Self::StreamConversationStream>, Status> {
        let key = authenticate(&request)?;
        let presented = request.extensions().get::<PresentedKey>().cloned();
        let mut incoming = request.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let engine = self.engine.clone();
        // A stream outlives its key's check: it ends when the key is revoked.
        let revoked = async move {
            match presented {
                Some(PresentedKey(token)) => revoked(engine.store().clone(), token).await,
                None => std::future::pending().await,
            }
        };
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let ended = tokio::select! {
                ended = stream_session(&engine, &key, &mut incoming, &sender) => ended,
                () = revoked => Err(Status::unauthenticated("the API key was revoked")),
            };
            if let Err(status) = ended {
                let _ = sender.send(Err(status)).await;
            }
        });
        let outgoing = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        Ok(Response::new(Box::pin(outgoing)))
    }

    async fn batch_process_messages(
        &self,
        request: Request<BatchProcessMessagesRequest>,
    ) -> Result<Response<BatchProcessMessagesResponse>, Status> {
        let key = authenticate(&request)?;
        let deadline = deadline_of(&request);
        let batch = request.into_inner();
        let tenant = tenant_of(&batch.tenant_context).to_owned();
        authorize(&key, &tenant, Scope::Messages)?;
        if batch.messages.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "messages: {} is over the batch limit of {MAX_BATCH}",
                batch.messages.len()
            )));
        }
        for (i, message) in batch.messages.iter().enumerate() {
            let own = tenant_of(&message.tenant_context);
            if !own.is_empty() && own != tenant {
                return Err(Status::permission_denied(format!(
                    "messages[{i}].tenant_context: another tenant"
                )));
            }
            if message.conversation_id.trim().is_empty() {
                return Err(Status::invalid_argument(format!(
                    "messages[{i}].conversation_id: must not be empty"
                )));
            }
        }
        let concurrency = if batch.parallel_processing {
            batch.max_concurrency.clamp(1, 32) as usize
        } else {
            1
        };
        // `buffered` keeps the responses in request order.
        let results: Vec<Result<ProcessMessageResponse, Status>> =
            futures::stream::iter(batch.messages)
                .map(|mut message| {
                    message
                        .tenant_context
                        .get_or_insert_with(Default::default)
                        .tenant_id = tenant.clone();
                    turn(&self.engine, message, deadline)
                })
                .buffered(concurrency)
                .collect()
                .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let responses = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|status| ProcessMessageResponse {
                    status: Some(common::Status {
                        success: false,
                        message: status.message().to_owned(),
                        error_code: format!("{:?}", status.code()),
                        details: None,
                    }),
                    ..Default::default()
                })
            })
            .collect::<Vec<_>>();
        Ok(Response::new(BatchProcessMessagesResponse {
            status: Some(common::Status {
                success: failed == 0,
                ..Default::default()
            }),
            successful_count: (responses.len() - failed) as i32,
            failed_count: failed as i32,
            responses,
            performance_metrics: None,
            metadata: None,
        }))
    }

    async fn health_check(
        &self,
        _request: Request<()>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let now = now_ms();
        Ok(Response::new(HealthCheckResponse {
            status: HealthStatus::HealthServing as i32,
            service_name: "mcp-engine".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            timestamp: Some(timestamp(now)),
            details: None,
        }))
    }

    /// The tenant's own series (counters, histogram counts and sums); all
    /// of them, or those named in `metric_names`.
    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let key = authenticate(&request)?;
        let request = request.into_inner();
        let tenant = tenant_of(&request.tenant_context);
        authorize(&key, tenant, Scope::Messages)?;
        let now = timestamp(now_ms());
        let metrics = self
            .engine
            .metrics
            .samples()
            .into_iter()
            .filter(|s| s.labels.iter().any(|(k, v)| k == "tenant" && v == tenant))
            .filter(|s| {
                request.metric_names.is_empty()
                    || request
                        .metric_names
                        .iter()
                        .any(|n| s.name.starts_with(n.as_str()))
            })
            .map(|sample| metric_data(sample, now))
            .collect();
        Ok(Response::new(GetMetricsResponse {
            status: Some(common::Status {
                success: true,
                ..Default::default()
            }),
            metrics,
            performance_metrics: None,
            metadata: None,
        }))
    }
}

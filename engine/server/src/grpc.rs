//! The seed's MCPEngine service over the engine.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use mcp_flow::Conversation;
use mcp_store::Scope;
use prost_types::{Struct, Timestamp, value::Kind};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::auth::{authenticate, authorize};
use crate::engine::{Engine, TurnOutcome, TurnRequest};
use crate::proto::common::{self, HealthStatus, MessageType, PerformanceMetrics};
use crate::proto::engine::mcp_engine_server::McpEngine;
use crate::proto::engine::*;
use crate::status::from_engine;

/// Longest message text accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Largest `content.metadata` accepted, as JSON text: it may carry a user
/// profile the conversation keeps and every plugin call reads.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Most messages in one batch.
pub const MAX_BATCH: usize = 100;

pub struct EngineService {
    pub engine: Arc<Engine>,
}

fn tenant_of(context: &Option<common::TenantContext>) -> &str {
    context.as_ref().map_or("", |c| c.tenant_id.as_str())
}

/// One message through the engine, validated, as the seed's response.
async fn turn(
    engine: &Arc<Engine>,
    request: ProcessMessageRequest,
    deadline: Option<Instant>,
) -> Result<ProcessMessageResponse, Status> {
    let text = request
        .content
        .as_ref()
        .map(|c| c.text.clone())
        .unwrap_or_default();
    if text.len() > MAX_TEXT_BYTES {
        return Err(Status::invalid_argument(format!(
            "content.text: {} bytes is over the limit of {MAX_TEXT_BYTES}",
            text.len()
        )));
    }
    if common::Channel::try_from(request.channel).is_err() {
        return Err(Status::invalid_argument(format!(
            "channel: unknown value {}",
            request.channel
        )));
    }
    // What the channel knows travels in content.metadata: `user_profile`
    // joins the conversation's profile; the rest (`entities`, `attributes`,
    // …) is the event's data. `payload` is a quick reply's or button's.
    let mut data = serde_json::Map::new();
    let mut user_profile = serde_json::Map::new();
    let content = request.content.as_ref();
    if let Some(Value::Object(fields)) = content.and_then(|c| c.metadata.as_ref()).map(from_struct)
    {
        let size = serde_json::to_string(&fields).map_or(0, |json| json.len());
        if size > MAX_METADATA_BYTES {
            return Err(Status::invalid_argument(format!(
                "content.metadata: {size} bytes of JSON is over the limit of {MAX_METADATA_BYTES}"
            )));
        }
        for (key, value) in fields {
            match (key.as_str(), value) {
                ("user_profile", Value::Object(profile)) => user_profile = profile,
                ("user_profile", _) => {
                    return Err(Status::invalid_argument(
                        "content.metadata.user_profile: must be an object",
                    ));
                }
                (_, value) => {
                    data.insert(key, value);
                }
            }
        }
    }
    if let Some(payload) = content
        .map(|c| c.payload.as_str())
        .filter(|p| !p.is_empty())
    {
        data.insert("payload".into(), Value::from(payload));
    }
    let channel = common::Channel::try_from(request.channel).unwrap_or_default();
    data.insert(
        "channel".into(),
        Value::from(
            channel
                .as_str_name()
                .trim_start_matches("CHANNEL_")
                .to_lowercase(),
        ),
    );
    let tenant_id = tenant_of(&request.tenant_context).to_owned();
    let outcome = engine
        .process(TurnRequest {
            tenant_id,
            conversation_id: request.conversation_id.clone(),
            user_id: request.user_id.clone(),
            text,
            data,
            user_profile,
            force_flow: request
                .processing_hints
                .as_ref()
                .map(|h| h.force_flow.clone()),
            deadline,
        })
        .await
        .map_err(from_engine)?;
    Ok(response(&request.conversation_id, outcome))
}

fn response(conversation_id: &str, outcome: TurnOutcome) -> ProcessMessageResponse {
    let fuel_used = outcome.fuel_used();
    let TurnOutcome {
        step,
        conversation,
        duration,
        lock_wait,
        calls,
        cache,
    } = outcome;
    let custom_metrics = serde_json::json!({
        "fuel_used": fuel_used,
        "plugin_calls": calls.len(),
        "plugin_errors": calls.iter().filter(|c| c.error.is_some()).count(),
        "plugins": calls.iter().map(|c| format!("{}@{}", c.plugin, c.version)).collect::<Vec<_>>(),
    });
    let text = step
        .messages
        .iter()
        .map(|m| m.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    ProcessMessageResponse {
        status: Some(common::Status {
            success: step.errors.is_empty(),
            message: step
                .errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
            error_code: step
                .errors
                .first()
                .map(|e| format!("{:?}", e.kind))
                .unwrap_or_default(),
            details: None,
        }),
        conversation_id: conversation_id.to_owned(),
        current_state: step.state.clone(),
        response: Some(MessageContent {
            r#type: MessageType::Text as i32,
            text,
            ..Default::default()
        }),
        context_updates: Some(to_struct(&step.updates)),
        actions_performed: step.actions.iter().map(|a| a.label()).collect(),
        conversation_state: Some(state_of(&conversation)),
        performance_metrics: Some(PerformanceMetrics {
            execution_time_ms: duration.as_millis() as i32,
            queue_time_ms: lock_wait.as_millis() as i32,
            cache_status: cache.as_str().into(),
            custom_metrics: custom_metrics.as_object().map(to_struct),
            ..Default::default()
        }),
        ab_variant: conversation.ab_variant.clone().unwrap_or_default(),
        metadata: None,
    }
}

pub fn state_of(c: &Conversation) -> ConversationState {
    ConversationState {
        current_state: c.current_state.clone(),
        flow_id: c.flow_id.clone(),
        flow_version: c.flow_version.clone(),
        previous_states: c.previous_states.clone(),
        slots: Some(to_struct(&c.slots)),
        variables: Some(to_struct(&c.variables)),
        user_profile: Some(to_struct(&c.user_profile)),
        intent_history: c.intent_history.clone(),
        current_intent: c
            .intent
            .as_ref()
            .and_then(|i| i.name.clone())
            .unwrap_or_default(),
        intent_confidence: c.intent.as_ref().map_or(0.0, |i| i.confidence),
        created_at: Some(timestamp(c.created_at_ms)),
        last_activity: Some(timestamp(c.updated_at_ms)),
        message_count: c.turn as i32,
        error_count: c.error_count as i32,
    }
}

/// The client's deadline, from the `grpc-timeout` header: at most eight
/// digits and a unit (gRPC over HTTP/2).
fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    Instant::now().checked_add(timeout)
}

fn require_conversation_id(conversation_id: &str) -> Result<(), Status> {
    if conversation_id.trim().is_empty() {
        return Err(Status::invalid_argument(
            "conversation_id: must not be empty",
        ));
    }
    Ok(())
}

pub(crate) fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A JSON object as a protobuf Struct.
pub fn to_struct(object: &serde_json::Map<String, Value>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

/// A protobuf Struct as JSON; whole numbers come back as integers.
pub(crate) fn from_struct(s: &Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect(),
    )
}

fn from_value(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9e15 => Value::from(*n as i64),
        Some(Kind::NumberValue(n)) => Value::from(*n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

fn to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(object) => Kind::StructValue(to_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<ConversationStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl McpEngine for EngineService {
    async fn process_message(
        &self,
        request: Request<ProcessMessageRequest>,
    ) -> Result<Response<ProcessMessageResponse>, Status> {
        let key = authenticate(self.engine.store(), &request).await?;
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
        let key = authenticate(self.engine.store(), &request).await?;
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
            conversation_state: Some(state_of(&conversation)),
            performance_metrics: None,
            metadata: None,
        }))
    }

    async fn reset_conversation(
        &self,
        request: Request<ResetConversationRequest>,
    ) -> Result<Response<ResetConversationResponse>, Status> {
        let key = authenticate(self.engine.store(), &request).await?;
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
        let key = authenticate(self.engine.store(), &request).await?;
        let mut incoming = request.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let engine = self.engine.clone();
        tokio::spawn(async move {
            if let Err(status) = stream_session(&engine, &key, &mut incoming, &sender).await {
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
        let key = authenticate(self.engine.store(), &request).await?;
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
        let now = mcp_flow::Clock::now_ms(&crate::clock::TokioClock);
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
        let key = authenticate(self.engine.store(), &request).await?;
        let request = request.into_inner();
        let tenant = tenant_of(&request.tenant_context);
        authorize(&key, tenant, Scope::Messages)?;
        let now = timestamp(now_ms());
        let metrics = self
            .engine
            .metrics
            .samples()
            .into_iter()
            .filter(|s| s.labels.iter().any(|(k, v)| *k == "tenant" && v == tenant))
            .filter(|s| {
                request.metric_names.is_empty()
                    || request
                        .metric_names
                        .iter()
                        .any(|n| s.name.starts_with(n.as_str()))
            })
            .map(|s| MetricData {
                name: s.name,
                r#type: s.kind.into(),
                points: vec![MetricPoint {
                    timestamp: Some(now),
                    value: s.value,
                    attributes: None,
                }],
                labels: Some(to_struct(
                    &s.labels
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), Value::String(v)))
                        .collect(),
                )),
            })
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

type Outgoing = tokio::sync::mpsc::Sender<Result<ConversationStreamResponse, Status>>;

fn reply(
    response: conversation_stream_response::ResponseType,
) -> Result<ConversationStreamResponse, Status> {
    Ok(ConversationStreamResponse {
        response_type: Some(response),
    })
}

fn ack(stream_id: &str, message: &str) -> Result<ConversationStreamResponse, Status> {
    reply(conversation_stream_response::ResponseType::Ack(StreamAck {
        stream_id: stream_id.to_owned(),
        status: Some(common::Status {
            success: true,
            message: message.to_owned(),
            ..Default::default()
        }),
        metadata: None,
    }))
}

fn stream_error(code: &str, message: &str) -> Result<ConversationStreamResponse, Status> {
    reply(conversation_stream_response::ResponseType::Error(
        StreamError {
            error_code: code.to_owned(),
            message: message.to_owned(),
            recoverable: true,
            metadata: None,
        },
    ))
}

pub(crate) fn now_ms() -> i64 {
    mcp_flow::Clock::now_ms(&crate::clock::TokioClock)
}

/// One streaming conversation: an init (tenant, conversation, the events
/// wanted), then messages answered in order, each followed by the events it
/// caused (`state_changed`), heartbeats acknowledged, until a close or the
/// client goes away. A message that fails gets a recoverable stream error
/// and the stream goes on.
async fn stream_session(
    engine: &Arc<Engine>,
    key: &mcp_store::ApiKey,
    incoming: &mut tonic::Streaming<ConversationStreamRequest>,
    outgoing: &Outgoing,
) -> Result<(), Status> {
    use conversation_stream_request::RequestType;
    use conversation_stream_response::ResponseType;

    let init = match incoming.message().await? {
        Some(ConversationStreamRequest {
            request_type: Some(RequestType::Init(init)),
        }) => init,
        _ => {
            return Err(Status::invalid_argument(
                "the first stream message must be init",
            ));
        }
    };
    let tenant = tenant_of(&init.tenant_context).to_owned();
    authorize(key, &tenant, Scope::Messages)?;
    if init.conversation_id.trim().is_empty() {
        return Err(Status::invalid_argument(
            "init.conversation_id: must not be empty",
        ));
    }
    let stream_id = format!("{}-{}", init.conversation_id, now_ms());
    let wanted =
        |event: &str| init.event_types.is_empty() || init.event_types.iter().any(|e| e == event);
    if outgoing.send(ack(&stream_id, "ready")).await.is_err() {
        return Ok(());
    }
    let mut timeouts = engine.timeouts.subscribe();
    loop {
        let request = tokio::select! {
            request = incoming.next() => match request {
                Some(request) => request?,
                None => return Ok(()),
            },
            // A wait state's timeout fired for this conversation (on this
            // process): pass on what it said and where it went.
            timeout = timeouts.recv() => {
                let turn = match timeout {
                    Ok(turn) => turn,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(stream = %stream_id, missed, "stream fell behind; timeout events dropped");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                };
                let ours = turn.key.tenant_id == tenant
                    && turn.key.conversation_id == init.conversation_id;
                if ours && wanted("timeout") {
                    let event = timeout_event(&turn);
                    if outgoing.send(reply(ResponseType::Event(event))).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
        };
        let sent = match request.request_type {
            Some(RequestType::Message(mut message)) => {
                message.tenant_context = Some(common::TenantContext {
                    tenant_id: tenant.clone(),
                    ..message.tenant_context.unwrap_or_default()
                });
                if message.conversation_id.is_empty() {
                    message.conversation_id = init.conversation_id.clone();
                }
                let before = engine
                    .conversation(&tenant, &message.conversation_id)
                    .await
                    .ok()
                    .map(|c| c.current_state);
                match turn(engine, message, None).await {
                    Ok(response) => {
                        let changed = before.as_deref() != Some(response.current_state.as_str());
                        let event = (changed && wanted("state_changed")).then(|| StreamEvent {
                            event_type: "state_changed".into(),
                            conversation_id: response.conversation_id.clone(),
                            event_data: Some(to_struct(
                                serde_json::json!({ "from": before, "to": response.current_state })
                                    .as_object()
                                    .expect("an object"),
                            )),
                            timestamp: Some(timestamp(now_ms())),
                        });
                        let mut ok = outgoing
                            .send(reply(ResponseType::MessageResponse(response)))
                            .await
                            .is_ok();
                        if let Some(event) = event {
                            ok &= outgoing
                                .send(reply(ResponseType::Event(event)))
                                .await
                                .is_ok();
                        }
                        ok
                    }
                    Err(status) => outgoing
                        .send(stream_error(
                            &format!("{:?}", status.code()),
                            status.message(),
                        ))
                        .await
                        .is_ok(),
                }
            }
            Some(RequestType::Heartbeat(_)) => {
                outgoing.send(ack(&stream_id, "heartbeat")).await.is_ok()
            }
            Some(RequestType::Close(_)) => {
                let _ = outgoing.send(ack(&stream_id, "closed")).await;
                return Ok(());
            }
            Some(RequestType::Init(_)) | None => outgoing
                .send(stream_error(
                    "InvalidArgument",
                    "the stream is already initialised",
                ))
                .await
                .is_ok(),
        };
        if !sent {
            return Ok(());
        }
    }
}

fn timeout_event(turn: &crate::engine::TimeoutTurn) -> StreamEvent {
    let data = serde_json::json!({
        "from": turn.state_before,
        "to": turn.step.state,
        "messages": turn.step.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        "ended": turn.step.ended,
    });
    StreamEvent {
        event_type: "timeout".into(),
        conversation_id: turn.key.conversation_id.clone(),
        event_data: Some(to_struct(data.as_object().expect("an object"))),
        timestamp: Some(timestamp(now_ms())),
    }
}

//! StreamConversation: one conversation over a bidirectional stream.

use std::sync::Arc;

use futures::StreamExt;
use mcp_store::Scope;
use tonic::Status;

use crate::auth::authorize;
use crate::clock::now_ms;
use crate::convert::{message_events, state_changed, tenant_of};
use crate::engine::Engine;
use crate::proto::common;
use crate::proto::engine::*;
use crate::request::turn;

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

/// One streaming conversation: an init (tenant, conversation, the events
/// wanted), then messages answered in order, each followed by the events it
/// caused (`state_changed`), heartbeats acknowledged, until a close or the
/// client goes away. A message that fails gets a recoverable stream error
/// and the stream goes on.
pub async fn stream_session(
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
                    let event = StreamEvent::from(turn.as_ref());
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
                        let event = (changed && wanted("state_changed"))
                            .then(|| state_changed(before.as_deref(), &response));
                        // Each message on its own first, in order, for channels
                        // that send them apart (honouring delay_ms and typing),
                        // then the turn's response as always.
                        let mut ok = true;
                        if wanted("message") {
                            for event in message_events(&response) {
                                ok &= outgoing
                                    .send(reply(ResponseType::Event(event)))
                                    .await
                                    .is_ok();
                            }
                        }
                        ok &= outgoing
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

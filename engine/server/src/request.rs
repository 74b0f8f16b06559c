//! What every MCPEngine call does with its request: the caller's deadline,
//! the conversation id it must name, and one message through the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Status};

use crate::convert::response;
use crate::engine::{Engine, TurnRequest};
use crate::proto::engine::{ProcessMessageRequest, ProcessMessageResponse};
use crate::status::from_engine;

/// One message through the engine, validated, as the seed's response.
pub async fn turn(
    engine: &Arc<Engine>,
    request: ProcessMessageRequest,
    deadline: Option<Instant>,
) -> Result<ProcessMessageResponse, Status> {
    let turn = TurnRequest {
        deadline,
        ..TurnRequest::try_from(&request)?
    };
    let review = turn.review;
    let forced = turn.force_flow.clone();
    let outcome = engine.process(turn).await.map_err(from_engine)?;
    // A hint that changed nothing is said so, never dropped silently.
    let mut ignored = Vec::new();
    if let Some(forced) = forced {
        let flow_id = forced.split('@').next().unwrap_or_default();
        // Its first turn started the conversation on the forced flow.
        if outcome.conversation.turn > 1 && outcome.conversation.flow_id != flow_id {
            ignored.push(format!(
                "force_flow: conversation {} already runs flow {}; force_flow picks the flow of a new conversation",
                request.conversation_id, outcome.conversation.flow_id
            ));
        }
    }
    Ok(response(
        &request.conversation_id,
        outcome,
        review,
        &ignored,
    ))
}

/// The client's deadline, from the `grpc-timeout` header: at most eight
/// digits and a unit (gRPC over HTTP/2).
pub fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
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

pub fn require_conversation_id(conversation_id: &str) -> Result<(), Status> {
    if conversation_id.trim().is_empty() {
        return Err(Status::invalid_argument(
            "conversation_id: must not be empty",
        ));
    }
    Ok(())
}

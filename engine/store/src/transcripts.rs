//! Conversation transcripts: every processed turn, as it went in and out.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::Store;
use crate::error::StoreError;
use crate::tenants::{json, parse_json};

/// One processed turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    pub conversation_id: String,
    /// When the conversation was created: a reset starts a new transcript
    /// under the same id.
    pub started_at_ms: i64,
    pub turn: u64,
    pub flow_id: String,
    pub flow_version: String,
    pub state_before: String,
    pub state_after: String,
    /// The event (message text, data).
    pub input: Value,
    /// What came out: messages, visited states, actions, updates, errors.
    pub output: Value,
    pub received_at_ms: i64,
    pub duration_us: u64,
}

/// Binds a turn's twelve columns, in the order of the transcripts table.
pub(crate) fn bind_turn<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    tenant_id: &'q str,
    turn: &'q TurnRecord,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(tenant_id)
        .bind(&turn.conversation_id)
        .bind(turn.started_at_ms)
        .bind(turn.turn as i64)
        .bind(&turn.flow_id)
        .bind(&turn.flow_version)
        .bind(&turn.state_before)
        .bind(&turn.state_after)
        .bind(json(&turn.input))
        .bind(json(&turn.output))
        .bind(turn.received_at_ms)
        .bind(turn.duration_us as i64)
}

impl Store {
    /// Appends a turn to its conversation's transcript. Recording the same
    /// turn twice keeps the first (a retried write after a lost reply).
    /// Turns the engine runs go through the durable writer instead.
    pub async fn record_turn(&self, tenant_id: &str, turn: &TurnRecord) -> Result<(), StoreError> {
        let query = sqlx::query(
            "INSERT INTO transcripts (tenant_id, conversation_id, started_at, turn, flow_id, \
             flow_version, state_before, state_after, input, output, received_at, duration_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (tenant_id, conversation_id, started_at, turn) DO NOTHING",
        );
        bind_turn(query, tenant_id, turn)
            .execute(self.db().pool()?)
            .await?;
        Ok(())
    }

    /// A conversation's turns, oldest first, across resets; at most `limit`
    /// of the most recent.
    pub async fn transcript(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        limit: u32,
    ) -> Result<Vec<TurnRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT conversation_id, started_at, turn, flow_id, flow_version, state_before, \
             state_after, input, output, received_at, duration_us FROM transcripts \
             WHERE tenant_id = $1 AND conversation_id = $2 \
             ORDER BY started_at DESC, turn DESC LIMIT $3",
        )
        .bind(tenant_id)
        .bind(conversation_id)
        .bind(i64::from(limit))
        .fetch_all(self.db().pool()?)
        .await?;
        let mut turns = rows
            .iter()
            .map(|row| {
                Ok(TurnRecord {
                    conversation_id: row.try_get("conversation_id")?,
                    started_at_ms: row.try_get("started_at")?,
                    turn: row.try_get::<i64, _>("turn")? as u64,
                    flow_id: row.try_get("flow_id")?,
                    flow_version: row.try_get("flow_version")?,
                    state_before: row.try_get("state_before")?,
                    state_after: row.try_get("state_after")?,
                    input: parse_json(&row.try_get::<String, _>("input")?)?,
                    output: parse_json(&row.try_get::<String, _>("output")?)?,
                    received_at_ms: row.try_get("received_at")?,
                    duration_us: row.try_get::<i64, _>("duration_us")? as u64,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        turns.reverse();
        Ok(turns)
    }
}

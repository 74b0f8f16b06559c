//! The audit log of tool executions: who ran which tool, with what (a hash
//! of the arguments), how it ended, how long it took and what it cost.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::Store;
use crate::error::StoreError;

/// How an execution ended, as the audit log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolOutcome {
    Ok,
    /// Refused before running: the arguments break the input schema.
    InvalidArguments,
    /// Ran, but the result breaks the output schema.
    InvalidResult,
    /// Refused: the caller's key lacks a permission the tool declares.
    Denied,
    /// Refused: the tool's rate limit for this caller is exhausted.
    RateLimited,
    /// Refused: a destructive tool called without confirmation.
    NeedsConfirmation,
    /// No such tool for this tenant.
    NotFound,
    /// The plugin ran and failed (error, trap, timeout, limit, breaker).
    Failed,
}

impl ToolOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::InvalidArguments => "invalid_arguments",
            ToolOutcome::InvalidResult => "invalid_result",
            ToolOutcome::Denied => "denied",
            ToolOutcome::RateLimited => "rate_limited",
            ToolOutcome::NeedsConfirmation => "needs_confirmation",
            ToolOutcome::NotFound => "not_found",
            ToolOutcome::Failed => "failed",
        }
    }

    fn parse(s: &str) -> ToolOutcome {
        [
            ToolOutcome::Ok,
            ToolOutcome::InvalidArguments,
            ToolOutcome::InvalidResult,
            ToolOutcome::Denied,
            ToolOutcome::RateLimited,
            ToolOutcome::NeedsConfirmation,
            ToolOutcome::NotFound,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .unwrap_or(ToolOutcome::Failed)
    }
}

/// One execution of a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    pub tenant_id: String,
    pub called_at_ms: i64,
    /// `mcp`, `seed-002`, `grpc` or `flow`.
    pub via: String,
    /// The API key's id; for a flow, the conversation's id.
    pub caller: String,
    pub tool: String,
    pub version: String,
    pub args_sha256: String,
    pub outcome: ToolOutcome,
    pub error: Option<String>,
    pub duration_us: u64,
    pub fuel: u64,
}

impl Store {
    /// Appends executions to the audit log, in one transaction.
    pub async fn record_tool_calls(&self, calls: &[ToolCallRecord]) -> Result<(), StoreError> {
        let mut tx = self.db().pool()?.begin().await?;
        for call in calls {
            sqlx::query(
                "INSERT INTO tool_calls (tenant_id, called_at, via, caller, tool, version, \
                 args_sha256, outcome, error, duration_us, fuel) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&call.tenant_id)
            .bind(call.called_at_ms)
            .bind(&call.via)
            .bind(&call.caller)
            .bind(&call.tool)
            .bind(&call.version)
            .bind(&call.args_sha256)
            .bind(call.outcome.as_str())
            .bind(call.error.as_deref())
            .bind(call.duration_us as i64)
            .bind(call.fuel.min(i64::MAX as u64) as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A tenant's most recent executions, newest first; only `tool`'s when
    /// given.
    pub async fn tool_calls(
        &self,
        tenant_id: &str,
        tool: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ToolCallRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, called_at, via, caller, tool, version, args_sha256, outcome, \
             error, duration_us, fuel FROM tool_calls \
             WHERE tenant_id = $1 AND ($2 = '' OR tool = $2) \
             ORDER BY called_at DESC, seq DESC LIMIT $3",
        )
        .bind(tenant_id)
        .bind(tool.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.db().pool()?)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ToolCallRecord {
                    tenant_id: row.try_get("tenant_id")?,
                    called_at_ms: row.try_get("called_at")?,
                    via: row.try_get("via")?,
                    caller: row.try_get("caller")?,
                    tool: row.try_get("tool")?,
                    version: row.try_get("version")?,
                    args_sha256: row.try_get("args_sha256")?,
                    outcome: ToolOutcome::parse(&row.try_get::<String, _>("outcome")?),
                    error: row.try_get("error")?,
                    duration_us: row.try_get::<i64, _>("duration_us")? as u64,
                    fuel: row.try_get::<i64, _>("fuel")? as u64,
                })
            })
            .collect()
    }

    /// Deletes executions recorded before `before_ms`; returns how many.
    pub async fn prune_tool_calls(&self, before_ms: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM tool_calls WHERE called_at < $1")
            .bind(before_ms)
            .execute(self.db().pool()?)
            .await?;
        Ok(deleted.rows_affected())
    }
}

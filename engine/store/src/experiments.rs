//! A/B experiments: each splits a tenant's new conversations between flow
//! variants (core allocates; this stores them and serves the running ones).

use std::sync::Arc;

use mcp_flow::ExperimentConfig;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::changes::ChangeKind;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::tenants::{json, parse_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExperimentStatus {
    Running,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    pub config: ExperimentConfig,
    pub status: ExperimentStatus,
    pub created_at_ms: i64,
    pub stopped_at_ms: Option<i64>,
}

impl Store {
    /// Stores a running experiment. Its variants' `modifications.flow_id`
    /// (and `flow_version`, if given) must name published flows.
    pub async fn create_experiment(
        &self,
        tenant_id: &str,
        config: ExperimentConfig,
    ) -> Result<Experiment, StoreError> {
        if let Some((path, message)) = config.validate().into_iter().next() {
            return Err(StoreError::invalid(path, message));
        }
        for (i, variant) in config.variants.iter().enumerate() {
            let Some(flow_id) = variant.modifications.get("flow_id") else {
                continue;
            };
            let field = format!("variants[{i}].modifications");
            let flow_id = flow_id.as_str().ok_or_else(|| {
                StoreError::invalid(format!("{field}.flow_id"), "must be a string")
            })?;
            let version = match variant.modifications.get("flow_version") {
                None => None,
                Some(v) => Some(v.as_str().ok_or_else(|| {
                    StoreError::invalid(format!("{field}.flow_version"), "must be a string")
                })?),
            };
            self.published_flow(tenant_id, flow_id, version)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound { .. } => StoreError::invalid(
                        field.clone(),
                        format!(
                            "no published flow {flow_id}{}",
                            version.map(|v| format!("@{v}")).unwrap_or_default()
                        ),
                    ),
                    other => other,
                })?;
        }
        let experiment = Experiment {
            config,
            status: ExperimentStatus::Running,
            created_at_ms: now_ms(),
            stopped_at_ms: None,
        };
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        let inserted = sqlx::query(
            "INSERT INTO experiments (tenant_id, experiment_id, config, status, created_at) \
             VALUES ($1, $2, $3, 'running', $4) ON CONFLICT (tenant_id, experiment_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(&experiment.config.experiment_id)
        .bind(json(&experiment.config))
        .bind(experiment.created_at_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists {
                what: "experiment",
                id: experiment.config.experiment_id,
            });
        }
        self.record_change(&mut tx, tenant_id, ChangeKind::Experiments)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Experiments);
        Ok(experiment)
    }

    pub async fn list_experiments(&self, tenant_id: &str) -> Result<Vec<Experiment>, StoreError> {
        let rows = sqlx::query(
            "SELECT config, status, created_at, stopped_at FROM experiments \
             WHERE tenant_id = $1 ORDER BY created_at, experiment_id",
        )
        .bind(tenant_id)
        .fetch_all(self.db().pool()?)
        .await?;
        rows.iter().map(experiment).collect()
    }

    /// Stops an experiment: new conversations are no longer allocated to it;
    /// conversations already in a variant keep their flow version.
    pub async fn stop_experiment(
        &self,
        tenant_id: &str,
        experiment_id: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        let stopped = sqlx::query(
            "UPDATE experiments SET status = 'stopped', stopped_at = $1 \
             WHERE tenant_id = $2 AND experiment_id = $3 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(tenant_id)
        .bind(experiment_id)
        .execute(&mut *tx)
        .await?;
        if stopped.rows_affected() == 0 {
            return Err(StoreError::not_found("running experiment", experiment_id));
        }
        self.record_change(&mut tx, tenant_id, ChangeKind::Experiments)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Experiments);
        Ok(())
    }

    /// The tenant's running experiments, from the cache when it is current.
    pub async fn running_experiments(
        &self,
        tenant_id: &str,
    ) -> Result<Arc<Vec<ExperimentConfig>>, StoreError> {
        if let Some(running) = self.cached(tenant_id, |c| c.experiments.clone()) {
            return Ok(running);
        }
        crate::cache_use::note_miss();
        let read_at = self.generation();
        let running: Arc<Vec<ExperimentConfig>> = Arc::new(
            self.list_experiments(tenant_id)
                .await?
                .into_iter()
                .filter(|e| e.status == ExperimentStatus::Running)
                .map(|e| e.config)
                .collect(),
        );
        self.cache_if_fresh(tenant_id, ChangeKind::Experiments, read_at, |cache| {
            cache.experiments = Some(running.clone());
        });
        Ok(running)
    }
}

fn experiment(row: &AnyRow) -> Result<Experiment, StoreError> {
    Ok(Experiment {
        config: parse_json(&row.try_get::<String, _>("config")?)?,
        status: match row.try_get::<String, _>("status")?.as_str() {
            "running" => ExperimentStatus::Running,
            _ => ExperimentStatus::Stopped,
        },
        created_at_ms: row.try_get("created_at")?,
        stopped_at_ms: row.try_get("stopped_at")?,
    })
}

//! Flow versions: validated by core and checked against the tenant's plugins
//! before anything is stored; served parsed from a cache.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mcp_flow::flow::{Issue, Severity};
use mcp_flow::{Flow, Report};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::Store;
use crate::changes::ChangeKind;
use crate::db::{Backend, now_ms};
use crate::error::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowStatus {
    /// Stored and validated, but no conversation runs on it.
    Draft,
    /// Served to conversations.
    Published,
}

impl FlowStatus {
    fn as_str(self) -> &'static str {
        match self {
            FlowStatus::Draft => "draft",
            FlowStatus::Published => "published",
        }
    }
}

/// How a new version is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOptions {
    pub status: FlowStatus,
    /// Make this flow the tenant's default. A tenant's first published flow
    /// becomes its default anyway.
    pub make_default: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            status: FlowStatus::Published,
            make_default: false,
        }
    }
}

/// A published flow version as a turn uses it: parsed, validated, immutable.
#[derive(Debug, Clone)]
pub struct StoredFlow {
    pub flow_id: String,
    pub version: String,
    pub flow: Arc<Flow>,
}

/// One stored version of a flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowVersion {
    pub flow_id: String,
    pub version: String,
    pub status: FlowStatus,
    /// Whether the flow (all its versions) is the tenant's default.
    pub is_default: bool,
    pub created_at_ms: i64,
    pub published_at_ms: Option<i64>,
    /// The definition as stored (canonical JSON).
    pub definition: String,
    /// What the validator warned about; nothing here blocks publishing.
    pub warnings: Vec<Issue>,
}

/// The columns `flow_version()` reads; a macro so queries stay literals.
macro_rules! version_columns {
    () => {
        "v.flow_id, v.version, v.status, v.definition, v.created_at, v.published_at, f.is_default"
    };
}

impl Store {
    /// Validates a flow document and stores it as a new version. Nothing is
    /// written if the flow is invalid, uses a plugin the tenant lacks (or
    /// has as another world), or repeats an existing version.
    pub async fn publish_flow(
        &self,
        tenant_id: &str,
        document: &str,
        options: PublishOptions,
    ) -> Result<FlowVersion, StoreError> {
        let flow = Flow::from_json(document).map_err(StoreError::InvalidFlow)?;
        let definition = flow.definition();
        let canonical = serde_json::to_string(definition).expect("a definition serializes");
        let now = now_ms();
        let published = options.status == FlowStatus::Published;

        let mut tx = self.begin_for_tenant(tenant_id).await?;
        check_flow_plugins(&mut tx, tenant_id, &flow).await?;
        sqlx::query(
            "INSERT INTO flows (tenant_id, flow_id, is_default, created_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (tenant_id, flow_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(&definition.flow_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let exists = sqlx::query(
            "SELECT 1 FROM flow_versions WHERE tenant_id = $1 AND flow_id = $2 AND version = $3",
        )
        .bind(tenant_id)
        .bind(&definition.flow_id)
        .bind(&definition.version)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_some() {
            return Err(StoreError::AlreadyExists {
                what: "flow version",
                id: format!("{}@{}", definition.flow_id, definition.version),
            });
        }
        sqlx::query(
            "INSERT INTO flow_versions \
             (tenant_id, flow_id, version, seq, definition, status, created_at, published_at) \
             SELECT $1, $2, $3, COALESCE(MAX(seq), 0) + 1, $4, $5, $6, $7 \
             FROM flow_versions WHERE tenant_id = $1 AND flow_id = $2",
        )
        .bind(tenant_id)
        .bind(&definition.flow_id)
        .bind(&definition.version)
        .bind(&canonical)
        .bind(options.status.as_str())
        .bind(now)
        .bind(published.then_some(now))
        .execute(&mut *tx)
        .await?;
        if published {
            let has_default =
                sqlx::query("SELECT 1 FROM flows WHERE tenant_id = $1 AND is_default = 1")
                    .bind(tenant_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
            if options.make_default || !has_default {
                make_default(&mut tx, tenant_id, &definition.flow_id).await?;
            }
        }
        self.record_change(&mut tx, tenant_id, ChangeKind::Flows)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Flows);
        tracing::info!(tenant = tenant_id, flow = %definition.flow_id, version = %definition.version, status = options.status.as_str(), "flow stored");
        self.flow_version(tenant_id, &definition.flow_id, &definition.version)
            .await
    }

    /// Publishes a stored draft, checking its plugins again (they may have
    /// changed since it was stored).
    pub async fn publish_draft(
        &self,
        tenant_id: &str,
        flow_id: &str,
        version: &str,
    ) -> Result<FlowVersion, StoreError> {
        let draft = self.flow_version(tenant_id, flow_id, version).await?;
        if draft.status == FlowStatus::Published {
            return Ok(draft);
        }
        let flow = Flow::from_json(&draft.definition).map_err(StoreError::InvalidFlow)?;
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        check_flow_plugins(&mut tx, tenant_id, &flow).await?;
        sqlx::query(
            "UPDATE flow_versions SET status = 'published', published_at = $1 \
             WHERE tenant_id = $2 AND flow_id = $3 AND version = $4",
        )
        .bind(now_ms())
        .bind(tenant_id)
        .bind(flow_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        let has_default =
            sqlx::query("SELECT 1 FROM flows WHERE tenant_id = $1 AND is_default = 1")
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !has_default {
            make_default(&mut tx, tenant_id, flow_id).await?;
        }
        self.record_change(&mut tx, tenant_id, ChangeKind::Flows)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Flows);
        self.flow_version(tenant_id, flow_id, version).await
    }

    /// Makes a flow with at least one published version the tenant's default.
    pub async fn set_default_flow(&self, tenant_id: &str, flow_id: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        let published = sqlx::query(
            "SELECT 1 FROM flow_versions WHERE tenant_id = $1 AND flow_id = $2 AND status = 'published'",
        )
        .bind(tenant_id)
        .bind(flow_id)
        .fetch_optional(&mut *tx)
        .await?;
        if published.is_none() {
            return Err(StoreError::not_found("published flow", flow_id));
        }
        make_default(&mut tx, tenant_id, flow_id).await?;
        self.record_change(&mut tx, tenant_id, ChangeKind::Flows)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Flows);
        Ok(())
    }

    /// Versions of the tenant's flows, newest first; all flows if `flow_id`
    /// is `None`.
    pub async fn list_flow_versions(
        &self,
        tenant_id: &str,
        flow_id: Option<&str>,
    ) -> Result<Vec<FlowVersion>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            version_columns!(),
            " FROM flow_versions v \
             JOIN flows f ON f.tenant_id = v.tenant_id AND f.flow_id = v.flow_id \
             WHERE v.tenant_id = $1 AND ($2 IS NULL OR v.flow_id = $2) \
             ORDER BY v.flow_id, v.seq DESC"
        ))
        .bind(tenant_id)
        .bind(flow_id)
        .fetch_all(self.db().pool()?)
        .await?;
        rows.iter().map(flow_version).collect()
    }

    /// One version of one of the tenant's flows.
    pub async fn flow_version(
        &self,
        tenant_id: &str,
        flow_id: &str,
        version: &str,
    ) -> Result<FlowVersion, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            version_columns!(),
            " FROM flow_versions v \
             JOIN flows f ON f.tenant_id = v.tenant_id AND f.flow_id = v.flow_id \
             WHERE v.tenant_id = $1 AND v.flow_id = $2 AND v.version = $3"
        ))
        .bind(tenant_id)
        .bind(flow_id)
        .bind(version)
        .fetch_optional(self.db().pool()?)
        .await?
        .ok_or_else(|| StoreError::not_found("flow version", format!("{flow_id}@{version}")))?;
        flow_version(&row)
    }

    /// Begins a write transaction holding the tenant's row lock, so a
    /// tenant's writes (version numbers, the default flag, the plugins a
    /// publish checks) never interleave. SQLite's `BEGIN IMMEDIATE` already
    /// serializes every writer.
    pub(crate) async fn begin_for_tenant(
        &self,
        tenant_id: &str,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.db().begin().await?;
        let lock = match self.db().backend() {
            Backend::Postgres => "SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE",
            Backend::Sqlite => "SELECT 1 FROM tenants WHERE id = $1",
        };
        sqlx::query(lock)
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::not_found("tenant", tenant_id))?;
        Ok(tx)
    }
}

/// Every plugin the flow uses must be installed, enabled, and of the world
/// the flow uses it as; problems are reported with their paths. Runs under
/// the tenant's lock, so a plugin cannot be disabled halfway through.
async fn check_flow_plugins(
    tx: &mut Transaction<'static, Any>,
    tenant_id: &str,
    flow: &Flow,
) -> Result<(), StoreError> {
    if flow.plugins().is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(
        "SELECT DISTINCT name, world FROM plugins WHERE tenant_id = $1 AND enabled = 1",
    )
    .bind(tenant_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut worlds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in rows {
        worlds
            .entry(row.try_get("name")?)
            .or_default()
            .insert(row.try_get("world")?);
    }
    let mut report = Report::default();
    for used in flow.plugins() {
        let message = match worlds.get(&used.name) {
            None => format!(
                "plugin `{}` is not installed (or not enabled) for this tenant",
                used.name
            ),
            Some(installed) if !installed.contains(used.world.as_str()) => format!(
                "plugin `{}` is used as a {} plugin but is a {} plugin",
                used.name,
                used.world,
                installed.iter().cloned().collect::<Vec<_>>().join("/")
            ),
            Some(_) => continue,
        };
        report.issues.push(Issue {
            severity: Severity::Error,
            path: used.path.clone(),
            message,
        });
    }
    if report.has_errors() {
        return Err(StoreError::InvalidFlow(report));
    }
    Ok(())
}

impl Store {
    /// A published version, parsed; `None` is the latest published.
    pub async fn published_flow(
        &self,
        tenant_id: &str,
        flow_id: &str,
        version: Option<&str>,
    ) -> Result<StoredFlow, StoreError> {
        match version {
            None => {
                if let Some(latest) = self.cached(tenant_id, |c| c.latest.get(flow_id).cloned()) {
                    return Ok(latest);
                }
            }
            // Only published versions are parsed into the cache, and a
            // published version never changes: a hit is always current.
            Some(version) => {
                let key = (tenant_id.to_owned(), flow_id.to_owned(), version.to_owned());
                if let Some(flow) = self.inner.caches.lock().unwrap().parsed.get(&key).cloned() {
                    return Ok(StoredFlow {
                        flow_id: flow_id.to_owned(),
                        version: version.to_owned(),
                        flow,
                    });
                }
            }
        }
        crate::cache_use::note_miss();
        let read_at = self.generation();
        let row = sqlx::query(
            "SELECT version, definition FROM flow_versions \
             WHERE tenant_id = $1 AND flow_id = $2 AND status = 'published' AND ($3 IS NULL OR version = $3) \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(flow_id)
        .bind(version)
        .fetch_optional(self.db().pool()?)
        .await?
        .ok_or_else(|| StoreError::not_found("published flow", match version {
            Some(v) => format!("{flow_id}@{v}"),
            None => flow_id.to_owned(),
        }))?;
        let stored = self.parse_cached(tenant_id, flow_id, &row)?;
        if version.is_none() {
            self.cache_if_fresh(tenant_id, ChangeKind::Flows, read_at, |cache| {
                cache.latest.insert(flow_id.to_owned(), stored.clone());
            });
        }
        Ok(stored)
    }

    /// The latest published version of the tenant's default flow.
    pub async fn default_flow(&self, tenant_id: &str) -> Result<StoredFlow, StoreError> {
        if let Some(flow) = self.cached(tenant_id, |c| c.default_flow.clone()) {
            return Ok(flow);
        }
        crate::cache_use::note_miss();
        let read_at = self.generation();
        let row = sqlx::query(
            "SELECT v.flow_id, v.version, v.definition FROM flows f \
             JOIN flow_versions v ON v.tenant_id = f.tenant_id AND v.flow_id = f.flow_id \
             WHERE f.tenant_id = $1 AND f.is_default = 1 AND v.status = 'published' \
             ORDER BY v.seq DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(self.db().pool()?)
        .await?
        .ok_or_else(|| StoreError::not_found("default flow of tenant", tenant_id))?;
        let flow_id: String = row.try_get("flow_id")?;
        let stored = self.parse_cached(tenant_id, &flow_id, &row)?;
        self.cache_if_fresh(tenant_id, ChangeKind::Flows, read_at, |cache| {
            cache.default_flow = Some(stored.clone());
        });
        Ok(stored)
    }

    fn parse_cached(
        &self,
        tenant_id: &str,
        flow_id: &str,
        row: &AnyRow,
    ) -> Result<StoredFlow, StoreError> {
        let version: String = row.try_get("version")?;
        let key = (tenant_id.to_owned(), flow_id.to_owned(), version.clone());
        let cached = self.inner.caches.lock().unwrap().parsed.get(&key).cloned();
        let flow = match cached {
            Some(flow) => flow,
            None => {
                let definition: String = row.try_get("definition")?;
                let flow = Arc::new(Flow::from_json(&definition).map_err(|report| {
                    StoreError::Corrupt(format!(
                        "stored flow {flow_id}@{version} no longer validates: {report}"
                    ))
                })?);
                self.inner
                    .caches
                    .lock()
                    .unwrap()
                    .parsed
                    .insert(key, flow.clone());
                flow
            }
        };
        Ok(StoredFlow {
            flow_id: flow_id.to_owned(),
            version,
            flow,
        })
    }
}

async fn make_default(
    tx: &mut Transaction<'static, Any>,
    tenant_id: &str,
    flow_id: &str,
) -> Result<(), StoreError> {
    // Clear first: the unique index allows one default per tenant.
    sqlx::query("UPDATE flows SET is_default = 0 WHERE tenant_id = $1 AND is_default = 1")
        .bind(tenant_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE flows SET is_default = 1 WHERE tenant_id = $1 AND flow_id = $2")
        .bind(tenant_id)
        .bind(flow_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn flow_version(row: &AnyRow) -> Result<FlowVersion, StoreError> {
    let definition: String = row.try_get("definition")?;
    let warnings = Flow::from_json(&definition)
        .map(|flow| flow.warnings().to_vec())
        .unwrap_or_default();
    Ok(FlowVersion {
        flow_id: row.try_get("flow_id")?,
        version: row.try_get("version")?,
        status: match row.try_get::<String, _>("status")?.as_str() {
            "published" => FlowStatus::Published,
            _ => FlowStatus::Draft,
        },
        is_default: row.try_get::<i64, _>("is_default")? == 1,
        created_at_ms: row.try_get("created_at")?,
        published_at_ms: row.try_get("published_at")?,
        definition,
        warnings,
    })
}

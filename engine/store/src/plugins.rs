//! Plugin versions as rows: bytes, hash, world, manifest and config, as the
//! plugin registry inspected them before storing. The store never runs a
//! plugin; it returns what each tenant has enabled, cached until a change.
//!
//! A plugin's active version (what unpinned calls resolve to) is its most
//! recently uploaded enabled version.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use mcp_flow::{Manifest, PluginWorld, PolicySettings};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::changes::ChangeKind;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::tenants::{json, parse_json};

/// A plugin version to store, already inspected by the plugin host.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    pub name: String,
    pub version: String,
    pub world: PluginWorld,
    pub bytes: Vec<u8>,
    pub manifest: Option<Manifest>,
    /// Values the plugin reads through the host `config` interface.
    pub config: BTreeMap<String, String>,
}

/// A stored plugin version (without its bytes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginVersion {
    pub name: String,
    pub version: String,
    pub world: PluginWorld,
    pub sha256: String,
    pub size: u64,
    pub manifest: Option<Manifest>,
    pub config: BTreeMap<String, String>,
    pub enabled: bool,
    /// Whether unpinned calls resolve to this version.
    pub active: bool,
    pub uploaded_at_ms: i64,
}

/// What a tenant's plugin calls may use: its policy and its enabled
/// versions. A new value is read after every change, so two values that are
/// the same `Arc` saw the same data.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantPlugins {
    pub policy: PolicySettings,
    /// By name, then upload order: the last of each name is its active one.
    pub enabled: Vec<EnabledPlugin>,
}

/// One enabled plugin version, without its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct EnabledPlugin {
    pub name: String,
    pub version: String,
    pub world: PluginWorld,
    pub sha256: String,
    pub config: BTreeMap<String, String>,
    /// What describe() said at upload, for tools and state types.
    pub manifest: Option<Manifest>,
}

fn check_version(version: &str) -> Result<(), StoreError> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "version",
            format!("\"{version}\" must be 1 to 64 letters, digits, '.', '-', '_' or '+'"),
        ))
    }
}

fn already_exists(name: &str, version: &str) -> StoreError {
    StoreError::AlreadyExists {
        what: "plugin version",
        id: format!("{name}@{version}"),
    }
}

impl Store {
    /// Checks that a version could be stored: a valid name and version, an
    /// existing tenant, and no such version yet. Cheap; the registry calls it
    /// before compiling an upload.
    pub async fn check_new_plugin(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        if !mcp_flow::flow::is_plugin_name(name) {
            return Err(StoreError::invalid(
                "name",
                format!(
                    "\"{name}\" must be lowercase letters, digits and '-', starting with a letter"
                ),
            ));
        }
        check_version(version)?;
        self.tenant(tenant_id).await?;
        if self.plugin_row(tenant_id, name, version).await?.is_some() {
            return Err(already_exists(name, version));
        }
        Ok(())
    }

    /// Stores a new plugin version, which becomes the plugin's active
    /// version, and announces the change to every process.
    pub async fn insert_plugin(
        &self,
        tenant_id: &str,
        plugin: NewPlugin,
    ) -> Result<PluginVersion, StoreError> {
        self.check_new_plugin(tenant_id, &plugin.name, &plugin.version)
            .await?;
        let stored = async {
            let mut tx = self.begin_for_tenant(tenant_id).await?;
            sqlx::query(
                "INSERT INTO plugins \
                 (tenant_id, name, version, seq, world, bytes, sha256, size, manifest, config, enabled, uploaded_at) \
                 SELECT $1, $2, $3, COALESCE(MAX(seq), 0) + 1, $4, $5, $6, $7, $8, $9, 1, $10 \
                 FROM plugins WHERE tenant_id = $1 AND name = $2",
            )
            .bind(tenant_id)
            .bind(&plugin.name)
            .bind(&plugin.version)
            .bind(plugin.world.as_str())
            .bind(&plugin.bytes)
            .bind(hex::encode(Sha256::digest(&plugin.bytes)))
            .bind(plugin.bytes.len() as i64)
            .bind(plugin.manifest.as_ref().map(json))
            .bind(json(&plugin.config))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            self.record_change(&mut tx, tenant_id, ChangeKind::Plugins)
                .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = stored {
            // Another upload of the same version may have won the race.
            let duplicate = self
                .plugin_row(tenant_id, &plugin.name, &plugin.version)
                .await
                .ok()
                .flatten()
                .is_some();
            return Err(if duplicate {
                already_exists(&plugin.name, &plugin.version)
            } else {
                e
            });
        }
        tracing::info!(tenant = tenant_id, plugin = %plugin.name, version = %plugin.version, world = %plugin.world, "plugin stored");
        self.invalidate(tenant_id, ChangeKind::Plugins);
        self.plugin_version(tenant_id, &plugin.name, &plugin.version)
            .await
    }

    /// The tenant's policy and enabled plugin versions, from memory unless
    /// something changed since they were last read.
    pub async fn tenant_plugins(&self, tenant_id: &str) -> Result<Arc<TenantPlugins>, StoreError> {
        if let Some(plugins) = self.cached(tenant_id, |c| c.plugins.clone()) {
            return Ok(plugins);
        }
        crate::cache_use::note_miss();
        let read_at = self.generation();
        let policy = self.tenant(tenant_id).await?.policy;
        let rows = sqlx::query(
            "SELECT name, version, world, sha256, config, manifest FROM plugins \
             WHERE tenant_id = $1 AND enabled = 1 ORDER BY name, seq",
        )
        .bind(tenant_id)
        .fetch_all(self.db().pool()?)
        .await?;
        let enabled = rows
            .iter()
            .map(|row| {
                Ok(EnabledPlugin {
                    name: row.try_get("name")?,
                    version: row.try_get("version")?,
                    world: PluginWorld::from_str(&row.try_get::<String, _>("world")?)
                        .map_err(StoreError::Corrupt)?,
                    sha256: row.try_get("sha256")?,
                    config: parse_json(&row.try_get::<String, _>("config")?)?,
                    manifest: row
                        .try_get::<Option<String>, _>("manifest")?
                        .as_deref()
                        .map(parse_json)
                        .transpose()?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let plugins = Arc::new(TenantPlugins { policy, enabled });
        self.cache_if_fresh(tenant_id, ChangeKind::Plugins, read_at, |cache| {
            cache.plugins = Some(plugins.clone());
        });
        Ok(plugins)
    }

    /// The bytes of every version the tenant stores, enabled or not: what
    /// its upload quota counts.
    pub async fn plugin_bytes_stored(&self, tenant_id: &str) -> Result<u64, StoreError> {
        // PostgreSQL sums bigints as numeric, which the Any driver cannot
        // decode: cast back.
        let total: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM plugins WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_one(self.db().pool()?)
        .await?;
        Ok(total as u64)
    }

    /// The component bytes of one stored version.
    pub async fn plugin_bytes(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
    ) -> Result<Vec<u8>, StoreError> {
        sqlx::query_scalar(
            "SELECT bytes FROM plugins WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(version)
        .fetch_optional(self.db().pool()?)
        .await?
        .ok_or_else(|| StoreError::not_found("plugin version", format!("{name}@{version}")))
    }

    /// Every version of every plugin of the tenant, by name then upload order.
    pub async fn list_plugins(&self, tenant_id: &str) -> Result<Vec<PluginVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, seq, world, sha256, size, manifest, config, enabled, uploaded_at \
             FROM plugins WHERE tenant_id = $1 ORDER BY name, seq",
        )
        .bind(tenant_id)
        .fetch_all(self.db().pool()?)
        .await?;
        let mut versions: Vec<PluginVersion> =
            rows.iter().map(plugin_version).collect::<Result<_, _>>()?;
        mark_active(&mut versions, &rows)?;
        Ok(versions)
    }

    pub async fn plugin_version(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
    ) -> Result<PluginVersion, StoreError> {
        self.list_plugins(tenant_id)
            .await?
            .into_iter()
            .find(|p| p.name == name && p.version == version)
            .ok_or_else(|| StoreError::not_found("plugin version", format!("{name}@{version}")))
    }

    /// Enables or disables one version. A disabled version is unloaded from
    /// every engine process; conversations pinned to it get "not found".
    pub async fn set_plugin_enabled(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
        enabled: bool,
    ) -> Result<PluginVersion, StoreError> {
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        let updated = sqlx::query(
            "UPDATE plugins SET enabled = $1 WHERE tenant_id = $2 AND name = $3 AND version = $4",
        )
        .bind(i64::from(enabled))
        .bind(tenant_id)
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::not_found(
                "plugin version",
                format!("{name}@{version}"),
            ));
        }
        self.record_change(&mut tx, tenant_id, ChangeKind::Plugins)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Plugins);
        self.plugin_version(tenant_id, name, version).await
    }

    /// Deletes one version for good.
    pub async fn delete_plugin_version(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        let deleted =
            sqlx::query("DELETE FROM plugins WHERE tenant_id = $1 AND name = $2 AND version = $3")
                .bind(tenant_id)
                .bind(name)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::not_found(
                "plugin version",
                format!("{name}@{version}"),
            ));
        }
        self.record_change(&mut tx, tenant_id, ChangeKind::Plugins)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Plugins);
        Ok(())
    }

    async fn plugin_row(
        &self,
        tenant_id: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<AnyRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT sha256 FROM plugins WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(version)
        .fetch_optional(self.db().pool()?)
        .await?)
    }
}

fn plugin_version(row: &AnyRow) -> Result<PluginVersion, StoreError> {
    let manifest: Option<String> = row.try_get("manifest")?;
    Ok(PluginVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        world: PluginWorld::from_str(&row.try_get::<String, _>("world")?)
            .map_err(StoreError::Corrupt)?,
        sha256: row.try_get("sha256")?,
        size: row.try_get::<i64, _>("size")? as u64,
        manifest: manifest.as_deref().map(parse_json).transpose()?,
        config: parse_json(&row.try_get::<String, _>("config")?)?,
        enabled: row.try_get::<i64, _>("enabled")? == 1,
        active: false,
        uploaded_at_ms: row.try_get("uploaded_at")?,
    })
}

/// The highest-`seq` enabled version of each plugin is its active one.
fn mark_active(versions: &mut [PluginVersion], rows: &[AnyRow]) -> Result<(), StoreError> {
    let mut best: BTreeMap<String, (i64, usize)> = BTreeMap::new();
    for (i, (version, row)) in versions.iter().zip(rows).enumerate() {
        let seq: i64 = row.try_get("seq")?;
        if version.enabled && best.get(&version.name).is_none_or(|(s, _)| seq > *s) {
            best.insert(version.name.clone(), (seq, i));
        }
    }
    for (_, i) in best.values() {
        versions[*i].active = true;
    }
    Ok(())
}

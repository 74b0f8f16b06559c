//! Plugin versions: validated and compiled by the wasm host before they are
//! stored, and loaded into the host's registry per tenant on demand.
//!
//! A plugin's active version (what unpinned calls resolve to) is its most
//! recently uploaded enabled version.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use mcp_flow::PluginWorld;
use mcp_wasm::Manifest;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::changes::ChangeKind;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::tenants::{json, parse_json};
use crate::{Store, random_hex};

/// An upload, as a tenant sends it.
#[derive(Debug, Clone)]
pub struct UploadPlugin {
    pub name: String,
    pub version: String,
    pub bytes: Vec<u8>,
    /// The world the tenant says it is; checked against what it exports.
    pub world: Option<PluginWorld>,
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

impl Store {
    /// Validates, compiles and stores a new plugin version, which becomes the
    /// plugin's active version. Nothing is stored if the host refuses it or
    /// the version exists.
    pub async fn upload_plugin(
        &self,
        tenant_id: &str,
        upload: UploadPlugin,
    ) -> Result<PluginVersion, StoreError> {
        if !mcp_flow::flow::is_plugin_name(&upload.name) {
            return Err(StoreError::invalid(
                "name",
                format!(
                    "\"{}\" must be lowercase letters, digits and '-', starting with a letter",
                    upload.name
                ),
            ));
        }
        check_version(&upload.version)?;
        self.tenant(tenant_id).await?;
        if self
            .plugin_row(tenant_id, &upload.name, &upload.version)
            .await?
            .is_some()
        {
            return Err(StoreError::AlreadyExists {
                what: "plugin version",
                id: format!("{}@{}", upload.name, upload.version),
            });
        }
        // Validate and compile under a scratch tenant (real ids cannot hold
        // ':'), so no turn can call the version before it is stored; the
        // compiled code stays cached for the real install below.
        let scratch = format!("upload:{}", random_hex(8));
        let installed = self
            .host()
            .install(
                &scratch,
                &upload.name,
                &upload.version,
                &upload.bytes,
                upload.world,
                upload.config.clone(),
            )
            .await;
        self.host().uninstall(&scratch, &upload.name);
        let installed = installed?;

        let stored = async {
            let mut tx = self.begin_for_tenant(tenant_id).await?;
            sqlx::query(
                "INSERT INTO plugins \
                 (tenant_id, name, version, seq, world, bytes, sha256, size, manifest, config, enabled, uploaded_at) \
                 SELECT $1, $2, $3, COALESCE(MAX(seq), 0) + 1, $4, $5, $6, $7, $8, $9, 1, $10 \
                 FROM plugins WHERE tenant_id = $1 AND name = $2",
            )
            .bind(tenant_id)
            .bind(&upload.name)
            .bind(&upload.version)
            .bind(installed.world.as_str())
            .bind(&upload.bytes)
            .bind(&installed.sha256)
            .bind(upload.bytes.len() as i64)
            .bind(installed.manifest.as_ref().map(json))
            .bind(json(&upload.config))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            self.record_change(&mut tx, tenant_id, ChangeKind::Plugins).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = stored {
            let duplicate = self
                .plugin_row(tenant_id, &upload.name, &upload.version)
                .await
                .ok()
                .flatten()
                .is_some();
            return Err(if duplicate {
                StoreError::AlreadyExists {
                    what: "plugin version",
                    id: format!("{}@{}", upload.name, upload.version),
                }
            } else {
                e
            });
        }
        tracing::info!(tenant = tenant_id, plugin = %upload.name, version = %upload.version, world = %installed.world, "plugin stored");
        self.invalidate(tenant_id, ChangeKind::Plugins);
        self.load_plugins(tenant_id).await?;
        self.plugin_version(tenant_id, &upload.name, &upload.version)
            .await
    }

    /// Every version of every plugin of the tenant, by name then upload order.
    pub async fn list_plugins(&self, tenant_id: &str) -> Result<Vec<PluginVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, seq, world, sha256, size, manifest, config, enabled, uploaded_at \
             FROM plugins WHERE tenant_id = $1 ORDER BY name, seq",
        )
        .bind(tenant_id)
        .fetch_all(&self.db().pool)
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

    /// Makes the host's registry hold exactly the tenant's enabled plugin
    /// versions, with the right ones active, under the tenant's policy.
    /// Does nothing if that is already so and nothing changed since; call it
    /// before running a tenant's turn.
    pub async fn load_plugins(&self, tenant_id: &str) -> Result<(), StoreError> {
        if self
            .cached(tenant_id, |c| c.plugins_loaded.then_some(()))
            .is_some()
        {
            return Ok(());
        }
        let gate = self
            .inner
            .plugin_loads
            .lock()
            .unwrap()
            .entry(tenant_id.to_owned())
            .or_default()
            .clone();
        let _loading = gate.lock().await;
        if self
            .cached(tenant_id, |c| c.plugins_loaded.then_some(()))
            .is_some()
        {
            return Ok(());
        }
        crate::cache_use::note_miss();
        let read_at = self.generation();
        let tenant = self.tenant(tenant_id).await?;
        // Stored policies passed validation once; one that no longer does
        // (an engine upgrade lowered a maximum) is not the caller's fault.
        let policy = tenant
            .policy
            .validate()
            .map_err(|e| StoreError::Corrupt(format!("tenant {tenant_id}'s policy: {e}")))?;
        let rows = sqlx::query(
            "SELECT name, version, seq, world, sha256, config FROM plugins \
             WHERE tenant_id = $1 AND enabled = 1 ORDER BY name, seq",
        )
        .bind(tenant_id)
        .fetch_all(&self.db().pool)
        .await?;

        let host = self.host();
        host.set_policy(tenant_id, policy);
        let mut wanted = HashSet::new();
        let mut active: BTreeMap<String, String> = BTreeMap::new();
        for row in &rows {
            let name: String = row.try_get("name")?;
            let version: String = row.try_get("version")?;
            let sha256: String = row.try_get("sha256")?;
            let world = PluginWorld::from_str(&row.try_get::<String, _>("world")?)
                .map_err(StoreError::Corrupt)?;
            let config: BTreeMap<String, String> =
                parse_json(&row.try_get::<String, _>("config")?)?;
            // A version deleted and uploaded again may keep its bytes but
            // change its config: either difference means reinstalling.
            let current = host.resolve_version(tenant_id, &name, &version);
            if current.is_none_or(|p| p.sha256 != sha256 || *p.config() != config) {
                let bytes: Vec<u8> = sqlx::query_scalar(
                    "SELECT bytes FROM plugins WHERE tenant_id = $1 AND name = $2 AND version = $3",
                )
                .bind(tenant_id)
                .bind(&name)
                .bind(&version)
                .fetch_one(&self.db().pool)
                .await?;
                host.remove_version(tenant_id, &name, &version);
                if let Err(e) = host
                    .install(tenant_id, &name, &version, &bytes, Some(world), config)
                    .await
                {
                    // Stored plugins passed these checks once; an engine
                    // upgrade may refuse one. Its calls fail as not found.
                    tracing::error!(tenant = tenant_id, plugin = %name, version = %version, error = %e, "stored plugin no longer loads");
                    continue;
                }
            }
            wanted.insert((name.clone(), version.clone()));
            active.insert(name, version);
        }
        for (installed, _) in host.installed(tenant_id) {
            if !wanted.contains(&(installed.name.clone(), installed.version.clone())) {
                host.remove_version(tenant_id, &installed.name, &installed.version);
            }
        }
        for (name, version) in &active {
            host.activate(tenant_id, name, version);
        }
        self.cache_if_fresh(tenant_id, ChangeKind::Plugins, read_at, |cache| {
            cache.plugins_loaded = true;
        });
        tracing::debug!(
            tenant = tenant_id,
            versions = wanted.len(),
            "plugins loaded"
        );
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
        .fetch_optional(&self.db().pool)
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

//! Tenants, their policy (limits and outbound allow-list) and their API keys.
//!
//! A policy is stored as given: what the plugin host can enforce is the
//! host's to say, so the plugin registry checks a policy before it is written
//! here and again when it is applied.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use mcp_flow::PolicySettings;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::changes::ChangeKind;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::{Store, random_hex};

/// A tenant and what its plugins may do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub policy: PolicySettings,
    pub created_at_ms: i64,
}

/// What an API key lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Send messages and read conversations (the MCPEngine service).
    #[serde(rename = "messages")]
    Messages,
    /// Publish flows and run experiments.
    #[serde(rename = "flows:write")]
    FlowsWrite,
    /// Upload, enable, disable and delete plugins.
    #[serde(rename = "plugins:write")]
    PluginsWrite,
    /// Call the tenant's tools (MCP, seed 002's endpoints, ExecuteTool);
    /// a tool that declares permissions needs a grant of each too.
    #[serde(rename = "tools:call")]
    ToolsCall,
    /// Everything the tenant can do, keys included.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Messages,
        Scope::FlowsWrite,
        Scope::PluginsWrite,
        Scope::ToolsCall,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Messages => "messages",
            Scope::FlowsWrite => "flows:write",
            Scope::PluginsWrite => "plugins:write",
            Scope::ToolsCall => "tools:call",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Scope, StoreError> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                StoreError::invalid(
                    "scopes",
                    format!(
                        "unknown scope \"{s}\"; scopes are messages, flows:write, plugins:write, \
                         tools:call, admin, and {PERMISSION_PREFIX}<name> for a tool's permission"
                    ),
                )
            })
    }
}

/// An API key as stored (without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    /// Tool permissions granted (`permission:<name>` scopes): a tool whose
    /// manifest declares a permission runs only for keys granted it.
    pub permissions: BTreeSet<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl ApiKey {
    /// `admin` allows everything.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// Whether the key is granted a tool permission; `admin` is granted all.
    pub fn grants(&self, permission: &str) -> bool {
        self.scopes.contains(&Scope::Admin) || self.permissions.contains(permission)
    }

    /// The scopes as given and stored: names, then `permission:<name>`s.
    pub fn scope_names(&self) -> Vec<String> {
        self.scopes
            .iter()
            .map(|s| s.as_str().to_owned())
            .chain(
                self.permissions
                    .iter()
                    .map(|p| format!("{PERMISSION_PREFIX}{p}")),
            )
            .collect()
    }
}

/// How a key's scopes name a tool permission it is granted.
pub const PERMISSION_PREFIX: &str = "permission:";

/// What a key may do: its scopes and the tool permissions it is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyGrants {
    pub scopes: BTreeSet<Scope>,
    pub permissions: BTreeSet<String>,
}

impl KeyGrants {
    /// Parses scope names as clients send them: `messages`, `tools:call`,
    /// `permission:network`, ...
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<KeyGrants, StoreError> {
        let mut grants = KeyGrants::default();
        for name in names {
            match name.strip_prefix(PERMISSION_PREFIX) {
                Some(permission) => {
                    check_permission_name(permission)?;
                    grants.permissions.insert(permission.to_owned());
                }
                None => {
                    grants.scopes.insert(name.parse()?);
                }
            }
        }
        Ok(grants)
    }
}

impl From<&[Scope]> for KeyGrants {
    fn from(scopes: &[Scope]) -> KeyGrants {
        KeyGrants {
            scopes: scopes.iter().copied().collect(),
            permissions: BTreeSet::new(),
        }
    }
}

/// A permission as tools declare it: 1 to 64 letters, digits, `-`, `_`,
/// `.` or `:`.
fn check_permission_name(name: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "scopes",
            format!(
                "\"{PERMISSION_PREFIX}{name}\": a permission is 1 to 64 letters, digits, '-', '_', '.' or ':'"
            ),
        ))
    }
}

/// A key just created: the only time its secret is known.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: ApiKey,
    /// What the client sends as `authorization: Bearer <token>`.
    pub token: String,
}

const KEY_PREFIX: &str = "mcpk";

/// Bytes of randomness in a key's id, which is their lowercase hex.
const KEY_ID_BYTES: usize = 8;

fn is_key_id(id: &str) -> bool {
    id.len() == 2 * KEY_ID_BYTES && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Tenant ids appear in Redis keys and URLs: letters, digits, `-` and `_`.
pub fn check_tenant_id(id: &str) -> Result<(), StoreError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "tenant_id",
            format!(
                "\"{id}\" must be 1 to 64 letters, digits, '-' or '_', starting with a letter or digit"
            ),
        ))
    }
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn parse_scopes(text: &str) -> Result<KeyGrants, StoreError> {
    KeyGrants::parse(text.split_whitespace())
}

impl Store {
    /// Creates a tenant. Without an id one is generated (`t-` and 12 hex digits).
    pub async fn create_tenant(
        &self,
        id: Option<&str>,
        name: &str,
        policy: PolicySettings,
    ) -> Result<Tenant, StoreError> {
        let id = match id {
            Some(id) => id.to_owned(),
            None => format!("t-{}", random_hex(6)),
        };
        check_tenant_id(&id)?;
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::invalid("name", "must be 1 to 200 characters"));
        }
        let tenant = Tenant {
            id,
            name: name.to_owned(),
            policy,
            created_at_ms: now_ms(),
        };
        let mut tx = self.db().begin().await?;
        let taken = sqlx::query("SELECT id FROM tenants WHERE id = $1 OR name = $2")
            .bind(&tenant.id)
            .bind(&tenant.name)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = taken {
            let existing: String = row.try_get("id")?;
            return Err(if existing == tenant.id {
                StoreError::AlreadyExists {
                    what: "tenant",
                    id: tenant.id,
                }
            } else {
                StoreError::AlreadyExists {
                    what: "tenant named",
                    id: tenant.name,
                }
            });
        }
        sqlx::query(
            "INSERT INTO tenants (id, name, limits, allow_list, mcp_servers, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(json(&tenant.policy.limits))
        .bind(json(&tenant.policy.allow_list))
        .bind(json(&tenant.policy.mcp_servers))
        .bind(tenant.created_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e.as_database_error() {
            // Another process created the same tenant since the check.
            Some(db) if db.is_unique_violation() => StoreError::AlreadyExists {
                what: "tenant",
                id: tenant.id.clone(),
            },
            _ => e.into(),
        })?;
        tx.commit().await?;
        tracing::info!(tenant = %tenant.id, name = %tenant.name, "tenant created");
        Ok(tenant)
    }

    pub async fn tenant(&self, tenant_id: &str) -> Result<Tenant, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, limits, allow_list, mcp_servers, created_at FROM tenants WHERE id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(self.db().pool()?)
        .await?
        .ok_or_else(|| StoreError::not_found("tenant", tenant_id))?;
        Ok(Tenant {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            policy: PolicySettings {
                limits: parse_json(&row.try_get::<String, _>("limits")?)?,
                allow_list: parse_json(&row.try_get::<String, _>("allow_list")?)?,
                mcp_servers: parse_json(&row.try_get::<String, _>("mcp_servers")?)?,
            },
            created_at_ms: row.try_get("created_at")?,
        })
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY created_at, id")
            .fetch_all(self.db().pool()?)
            .await?;
        let mut tenants = Vec::with_capacity(ids.len());
        for id in ids {
            tenants.push(self.tenant(&id).await?);
        }
        Ok(tenants)
    }

    /// Replaces a tenant's limits and allow-list; every engine process applies
    /// them to the tenant's next plugin call.
    pub async fn set_tenant_policy(
        &self,
        tenant_id: &str,
        policy: PolicySettings,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        let updated = sqlx::query(
            "UPDATE tenants SET limits = $1, allow_list = $2, mcp_servers = $3 WHERE id = $4",
        )
        .bind(json(&policy.limits))
        .bind(json(&policy.allow_list))
        .bind(json(&policy.mcp_servers))
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::not_found("tenant", tenant_id));
        }
        self.record_change(&mut tx, tenant_id, ChangeKind::Plugins)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Plugins);
        Ok(())
    }

    /// Creates an API key for a tenant. The token is returned once; only a
    /// hash of its secret is stored.
    pub async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        scopes: &[Scope],
    ) -> Result<IssuedKey, StoreError> {
        self.create_api_key_granting(tenant_id, name, KeyGrants::from(scopes))
            .await
    }

    /// Creates an API key with scopes and tool permissions.
    pub async fn create_api_key_granting(
        &self,
        tenant_id: &str,
        name: &str,
        grants: KeyGrants,
    ) -> Result<IssuedKey, StoreError> {
        if grants.scopes.is_empty() {
            return Err(StoreError::invalid(
                "scopes",
                "a key needs at least one scope",
            ));
        }
        let id = random_hex(KEY_ID_BYTES);
        let secret = random_hex(32);
        let key = ApiKey {
            id,
            tenant_id: tenant_id.to_owned(),
            name: name.trim().to_owned(),
            scopes: grants.scopes,
            permissions: grants.permissions,
            created_at_ms: now_ms(),
            revoked_at_ms: None,
        };
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, secret_hash, scopes, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.name)
        .bind(secret_hash(&secret))
        .bind(key.scope_names().join(" "))
        .bind(key.created_at_ms)
        .execute(&mut *tx)
        .await?;
        // Processes may remember this id as unknown; the change drops that.
        self.record_change(&mut tx, tenant_id, ChangeKind::Keys)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Keys);
        let token = format!("{KEY_PREFIX}_{}_{secret}", key.id);
        Ok(IssuedKey { key, token })
    }

    /// The key a presented token belongs to, if it is valid and not revoked.
    /// The secret is compared in constant time. Lookups are cached (see
    /// `key_cache`): a known key is checked with no database round trip.
    pub async fn verify_api_key(&self, token: &str) -> Result<Option<ApiKey>, StoreError> {
        let mut parts = token.trim().splitn(3, '_');
        let (Some(KEY_PREFIX), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        // Only an id as issued is worth a lookup (or a cache entry).
        if !is_key_id(id) {
            return Ok(None);
        }
        let cached = {
            let caches = self.inner.caches.lock().unwrap();
            if !self.db().is_available() {
                // Nothing can be revoked while the database is down.
                caches.keys.get_stale(id)
            } else {
                (!caches.deaf).then(|| caches.keys.get(id)).flatten()
            }
        };
        let found = match cached {
            Some(found) => found,
            None => {
                let read_at = self.generation();
                let found = match self.stored_key(id).await {
                    Ok(found) => found,
                    // The database went away before the store noticed: a
                    // key seen before still stands, as it would once noticed.
                    Err(e) => match self.inner.caches.lock().unwrap().keys.get_stale(id) {
                        Some(found) => found,
                        None => return Err(e),
                    },
                };
                let mut caches = self.inner.caches.lock().unwrap();
                // A lookup that raced a change of any key is not kept.
                if !caches.deaf && caches.keys_invalidated.max(caches.all_invalidated) <= read_at {
                    let entry = found
                        .as_ref()
                        .map(|(key, hash)| (key.tenant_id.clone(), (key.clone(), hash.clone())));
                    caches.keys.put(id, entry);
                }
                found
            }
        };
        let Some((key, stored)) = found else {
            return Ok(None);
        };
        let presented = secret_hash(secret);
        if !bool::from(presented.as_bytes().ct_eq(stored.as_bytes())) {
            return Ok(None);
        }
        Ok(Some(key))
    }

    /// A key that is not revoked, with its secret's hash.
    /// API keys looked up in the database since the store opened: what a
    /// flood of made-up keys would cost, were they not refused first.
    pub fn key_lookups(&self) -> u64 {
        self.inner
            .key_lookups
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn stored_key(&self, id: &str) -> Result<Option<(ApiKey, String)>, StoreError> {
        self.inner
            .key_lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let row = sqlx::query(
            "SELECT id, tenant_id, name, secret_hash, scopes, created_at FROM api_keys \
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(self.db().pool()?)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let grants = parse_scopes(&row.try_get::<String, _>("scopes")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let key = ApiKey {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            scopes: grants.scopes,
            permissions: grants.permissions,
            created_at_ms: row.try_get("created_at")?,
            revoked_at_ms: None,
        };
        Ok(Some((key, row.try_get("secret_hash")?)))
    }

    pub async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, scopes, created_at, revoked_at FROM api_keys \
             WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(self.db().pool()?)
        .await?;
        rows.iter()
            .map(|row| {
                let grants = parse_scopes(&row.try_get::<String, _>("scopes")?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok(ApiKey {
                    id: row.try_get("id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    name: row.try_get("name")?,
                    scopes: grants.scopes,
                    permissions: grants.permissions,
                    created_at_ms: row.try_get("created_at")?,
                    revoked_at_ms: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes one of the tenant's keys: this process refuses it from the
    /// next call on, every other one within a second (the change feed).
    pub async fn revoke_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_for_tenant(tenant_id).await?;
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(tenant_id)
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        if revoked.rows_affected() == 0 {
            return Err(StoreError::not_found("api key", key_id));
        }
        self.record_change(&mut tx, tenant_id, ChangeKind::Keys)
            .await?;
        tx.commit().await?;
        self.invalidate(tenant_id, ChangeKind::Keys);
        Ok(())
    }
}

pub(crate) fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("store values serialize")
}

pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

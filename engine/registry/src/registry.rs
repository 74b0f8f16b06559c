//! [`PluginRegistry`]: uploads into the store through the host, and the
//! store's plugin rows into the host's registry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use mcp_flow::{PluginWorld, PolicySettings};
use mcp_store::tenants::check_tenant_id;
use mcp_store::{NewPlugin, PluginVersion, Store, StoreError, Tenant, TenantPlugins};
use mcp_wasm::{PluginHost, StoredVersion, TenantPolicy};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::RegistryError;

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

/// How much uploading a process takes on.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Uploads checked at once in this process (compiling is the costly
    /// part); one more is refused as busy, not queued.
    pub parallel: usize,
    /// Bytes of components a tenant may store, every version counted.
    pub tenant_bytes: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            parallel: 2,
            tenant_bytes: 256 << 20,
        }
    }
}

/// The store and the host of one engine process. Cheap to clone; clones
/// share everything.
#[derive(Clone)]
pub struct PluginRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    host: PluginHost,
    /// Per tenant, the store's plugin rows the host holds now.
    applied: Mutex<HashMap<String, Arc<TenantPlugins>>>,
    /// One load per tenant at a time.
    loads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    limits: UploadLimits,
    /// A permit per upload being checked, of `limits.parallel`.
    upload_slots: Arc<Semaphore>,
    /// Tenants with an upload being checked in this process.
    uploading: Arc<Mutex<HashSet<String>>>,
}

/// An upload's place among those being checked, held until it is stored
/// or refused.
struct UploadSlot {
    _permit: OwnedSemaphorePermit,
    tenant: String,
    uploading: Arc<Mutex<HashSet<String>>>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.uploading.lock().unwrap().remove(&self.tenant);
    }
}

impl PluginRegistry {
    pub fn new(store: Store, host: PluginHost) -> PluginRegistry {
        PluginRegistry::with_limits(store, host, UploadLimits::default())
    }

    pub fn with_limits(store: Store, host: PluginHost, limits: UploadLimits) -> PluginRegistry {
        PluginRegistry {
            inner: Arc::new(Inner {
                store,
                host,
                applied: Mutex::new(HashMap::new()),
                loads: Mutex::new(HashMap::new()),
                upload_slots: Arc::new(Semaphore::new(limits.parallel.max(1))),
                limits,
                uploading: Arc::default(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The host turns call plugins through.
    pub fn host(&self) -> &PluginHost {
        &self.inner.host
    }

    /// Creates a tenant whose policy the host can enforce.
    pub async fn create_tenant(
        &self,
        id: Option<&str>,
        name: &str,
        policy: PolicySettings,
    ) -> Result<Tenant, RegistryError> {
        // The id is named first when both it and the policy are wrong.
        if let Some(id) = id {
            check_tenant_id(id)?;
        }
        TenantPolicy::from_settings(&policy)?;
        Ok(self.store().create_tenant(id, name, policy).await?)
    }

    /// Replaces a tenant's limits and allow-list; every engine process
    /// applies them to the tenant's next plugin call.
    pub async fn set_tenant_policy(
        &self,
        tenant_id: &str,
        policy: PolicySettings,
    ) -> Result<(), RegistryError> {
        TenantPolicy::from_settings(&policy)?;
        Ok(self.store().set_tenant_policy(tenant_id, policy).await?)
    }

    /// Validates, compiles and stores a new plugin version, which becomes the
    /// plugin's active version. A refused upload leaves nothing behind: not
    /// a row, not compiled code, not a breaker. Refused as busy while this
    /// tenant has another upload being checked here, or while the process
    /// checks as many as it takes at once.
    pub async fn upload_plugin(
        &self,
        tenant_id: &str,
        upload: UploadPlugin,
    ) -> Result<PluginVersion, RegistryError> {
        self.store()
            .check_new_plugin(tenant_id, &upload.name, &upload.version)
            .await?;
        let _slot = self.upload_slot(tenant_id)?;
        let stored = self.store().plugin_bytes_stored(tenant_id).await?;
        let quota = self.inner.limits.tenant_bytes;
        if stored + upload.bytes.len() as u64 > quota {
            return Err(RegistryError::Quota(format!(
                "the tenant stores {stored} bytes of plugins; {} more would pass its quota of {quota} (delete versions it no longer needs)",
                upload.bytes.len()
            )));
        }
        // Checked under the tenant's own policy but installed nowhere, so no
        // turn can call the version before it is stored.
        let checked = self
            .host()
            .check(
                tenant_id,
                &upload.name,
                &upload.version,
                &upload.bytes,
                upload.world,
                upload.config.clone(),
            )
            .await?;
        let stored = self
            .store()
            .insert_plugin(
                tenant_id,
                NewPlugin {
                    name: upload.name,
                    version: upload.version,
                    world: checked.installed.world,
                    bytes: upload.bytes,
                    manifest: checked.installed.manifest.clone(),
                    config: upload.config,
                },
            )
            .await?;
        // Kept compiled only once stored: the install below finds it.
        self.host().keep_compiled(&checked).await;
        self.load_plugins(tenant_id).await?;
        Ok(stored)
    }

    fn upload_slot(&self, tenant_id: &str) -> Result<UploadSlot, RegistryError> {
        let permit = self
            .inner
            .upload_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                RegistryError::Busy(format!(
                    "{} uploads are being checked; try again shortly",
                    self.inner.limits.parallel
                ))
            })?;
        if !self
            .inner
            .uploading
            .lock()
            .unwrap()
            .insert(tenant_id.to_owned())
        {
            return Err(RegistryError::Busy(
                "another upload of this tenant is being checked; try again when it is done".into(),
            ));
        }
        Ok(UploadSlot {
            _permit: permit,
            tenant: tenant_id.to_owned(),
            uploading: self.inner.uploading.clone(),
        })
    }

    /// Makes the host's registry hold exactly the tenant's enabled plugin
    /// versions, with the right ones active, under the tenant's policy.
    /// Does nothing if that is already so and nothing changed since; call it
    /// before running a tenant's turn. Returns whether it had work to do.
    pub async fn load_plugins(&self, tenant_id: &str) -> Result<bool, RegistryError> {
        let plugins = self.store().tenant_plugins(tenant_id).await?;
        if self.holds(tenant_id, &plugins) {
            return Ok(false);
        }
        let gate = self
            .inner
            .loads
            .lock()
            .unwrap()
            .entry(tenant_id.to_owned())
            .or_default()
            .clone();
        let _loading = gate.lock().await;
        // Another load may have run while this one waited: apply what the
        // store says now, never an older read over a newer one.
        let plugins = self.store().tenant_plugins(tenant_id).await?;
        if self.holds(tenant_id, &plugins) {
            return Ok(false);
        }
        self.apply(tenant_id, &plugins).await?;
        self.inner
            .applied
            .lock()
            .unwrap()
            .insert(tenant_id.to_owned(), plugins);
        Ok(true)
    }

    fn holds(&self, tenant_id: &str, plugins: &Arc<TenantPlugins>) -> bool {
        self.inner
            .applied
            .lock()
            .unwrap()
            .get(tenant_id)
            .is_some_and(|applied| Arc::ptr_eq(applied, plugins))
    }

    async fn apply(&self, tenant_id: &str, plugins: &TenantPlugins) -> Result<(), RegistryError> {
        // Stored policies passed validation once; one that no longer does
        // (an engine upgrade lowered a maximum) is not the caller's fault.
        let policy = TenantPolicy::from_settings(&plugins.policy).map_err(|error| {
            RegistryError::StalePolicy {
                tenant: tenant_id.to_owned(),
                error,
            }
        })?;
        let host = self.host();
        host.set_policy(tenant_id, policy);
        let mut wanted = HashSet::new();
        let mut active: BTreeMap<&str, &str> = BTreeMap::new();
        for plugin in &plugins.enabled {
            let (name, version) = (plugin.name.as_str(), plugin.version.as_str());
            // A version deleted and uploaded again may keep its bytes but
            // change its config: either difference means reinstalling.
            let current = host.resolve_version(tenant_id, name, version);
            if current.is_none_or(|p| p.sha256 != plugin.sha256 || *p.config() != plugin.config) {
                let bytes = match self.store().plugin_bytes(tenant_id, name, version).await {
                    Ok(bytes) => bytes,
                    // Deleted since the rows were read: its change brings a
                    // new load, which will not want it.
                    Err(StoreError::NotFound { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
                host.remove_version(tenant_id, name, version);
                if let Err(e) = host
                    .install_described(
                        tenant_id,
                        StoredVersion {
                            name,
                            version,
                            bytes: &bytes,
                            world: plugin.world,
                            config: plugin.config.clone(),
                            manifest: plugin.manifest.clone(),
                        },
                    )
                    .await
                {
                    // Stored plugins passed these checks once; an engine
                    // upgrade may refuse one. Its calls fail as not found.
                    tracing::error!(tenant = tenant_id, plugin = name, version, error = %e, "stored plugin no longer loads");
                    continue;
                }
            }
            wanted.insert((name, version));
            active.insert(name, version);
        }
        for (installed, _) in host.installed(tenant_id) {
            if !wanted.contains(&(installed.name.as_str(), installed.version.as_str())) {
                host.remove_version(tenant_id, &installed.name, &installed.version);
            }
        }
        for (name, version) in active {
            host.activate(tenant_id, name, version);
        }
        tracing::debug!(
            tenant = tenant_id,
            versions = wanted.len(),
            "plugins loaded"
        );
        Ok(())
    }
}

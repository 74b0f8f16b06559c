//! The plugin host: one wasmtime engine, a linker per kind of world, compiled
//! components cached by content, and a registry of what each tenant installed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mcp_flow::{
    LimitOverrides, Manifest, PluginWorld, PolicySettings, RemoteMcpServer, ToolManifest,
};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

use crate::allow_list::AllowList;
use crate::bindings::{
    action, annotated_tool, condition, entity_intent, host as host_api, intent, state_type, tool,
};
use crate::breaker::{BreakerConfig, Breakers};
use crate::cache::{ArtifactKey, ArtifactStore, CacheStatus, MemoryCache, sha256_hex};
use crate::egress::{Egress, EgressCounters, Gate};
use crate::limits::{
    Limits, MAX_DEADLINE_MS, MAX_FUEL, MAX_MEMORY_BYTES, MAX_RESULT_BYTES, MAX_TABLE_ELEMENTS,
    MAX_WASM_STACK,
};
use crate::log_budget::LogAllowances;
use crate::state::{CallSite, StoreState};

/// How often the epoch ticks: the granularity of call deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The package version this host speaks.
pub const WIT_VERSION: &str = "0.1.0";

/// Settings of a host.
#[derive(Clone)]
pub struct HostConfig {
    /// Largest component accepted at upload.
    pub max_component_bytes: usize,
    /// Use the pooling allocator (fast instantiation); off allocates per call.
    pub pooling: bool,
    /// Concurrent instances the pool holds.
    pub max_instances: u32,
    pub breaker: BreakerConfig,
    /// Where compiled components persist; `None` keeps them in memory only.
    pub artifacts: Option<Arc<dyn ArtifactStore>>,
    /// Where tools' outbound HTTP may go, besides each tenant's allow-list.
    pub egress: Egress,
    /// How much compiled code the in-memory cache keeps, least recently
    /// used out first.
    pub compiled_cache_bytes: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            max_component_bytes: 32 << 20,
            pooling: true,
            max_instances: 200,
            breaker: BreakerConfig::default(),
            artifacts: None,
            egress: Egress::default(),
            compiled_cache_bytes: 512 << 20,
        }
    }
}

/// Why an upload or install was refused. Each names what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UploadError {
    #[error("the plugin is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a WebAssembly file")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build for wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    NotAComponent,
    #[error("the component does not compile: {0}")]
    Invalid(String),
    #[error(
        "the component exports none of mcp:plugin/{{conditions,actions,tools,state-types,intents}}@{WIT_VERSION}; it exports: {0}"
    )]
    NoWorld(String),
    #[error("the component exports more than one plugin interface: {0}")]
    SeveralWorlds(String),
    #[error("the component exports {found}; this engine supports mcp:plugin@{WIT_VERSION}")]
    UnsupportedVersion { found: String },
    #[error("the component serves the {found} world, not the {expected} world")]
    WrongWorld {
        expected: PluginWorld,
        found: PluginWorld,
    },
    #[error("the component needs something the host does not provide: {0}")]
    UnsupportedImport(String),
    #[error("the component's {0}")]
    BadExport(String),
    #[error("\"{0}\" is not a plugin name: use 1 to 64 lowercase letters, digits, '-' or '_'")]
    BadName(String),
    #[error("describe() failed: {0}")]
    Describe(String),
    #[error("version {0} of this plugin is installed already, with different bytes")]
    VersionExists(String),
}

/// A component that passed validation, compiled.
#[derive(Clone)]
pub struct Inspected {
    pub world: PluginWorld,
    pub sha256: String,
    pub size: usize,
    pub cache: CacheStatus,
    pub(crate) component: Component,
}

/// Bindings ready to instantiate, by world.
#[derive(Clone)]
pub(crate) enum Typed {
    Condition(condition::ConditionPre<StoreState>),
    Action(action::ActionPre<StoreState>),
    /// A tool; with its hints' bindings when it exports
    /// `tool-annotations` too.
    Tool(
        tool::ToolPre<StoreState>,
        Option<annotated_tool::AnnotatedToolPre<StoreState>>,
    ),
    StateType(state_type::StateTypePre<StoreState>),
    /// An intent classifier; with its entities' bindings when it exports
    /// `intent-entities` too.
    Intent(
        intent::IntentPre<StoreState>,
        Option<entity_intent::EntityIntentPre<StoreState>>,
    ),
}

/// An upload that passed every check, describe() included, but is neither
/// installed nor cached yet: [`PluginHost::commit`] does both.
pub struct Checked {
    pub installed: Installed,
    inspected: Inspected,
}

/// A version as stored: its bytes, and what checking it at upload found.
pub struct StoredVersion<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub bytes: &'a [u8],
    pub world: PluginWorld,
    pub config: BTreeMap<String, String>,
    pub manifest: Option<Manifest>,
}

/// One installed plugin version of one tenant.
pub struct Installed {
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub world: PluginWorld,
    pub sha256: String,
    pub manifest: Option<Manifest>,
    pub(crate) typed: Typed,
    pub(crate) config: Arc<BTreeMap<String, String>>,
}

/// What a tenant may do: outbound hosts and limit overrides per world.
#[derive(Debug, Clone, Default)]
pub struct TenantPolicy {
    pub allow_list: AllowList,
    pub limits: HashMap<PluginWorld, LimitOverrides>,
    /// Remote MCP servers its flows may call, by name.
    pub mcp_servers: BTreeMap<String, RemoteMcpServer>,
}

/// A policy setting this host cannot enforce, by the field that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl TenantPolicy {
    /// Checks stored or requested settings against this host's maxima; the
    /// error names the first bad entry.
    pub fn from_settings(settings: &PolicySettings) -> Result<TenantPolicy, PolicyError> {
        let allow_list = AllowList::parse(&settings.allow_list).map_err(|message| PolicyError {
            field: "allow_list".into(),
            message,
        })?;
        for (world, limits) in &settings.limits {
            // The engine's ceilings: no tenant setting goes past them.
            let over = |name: &str, value: Option<u64>, max: u64| match value {
                Some(value) if value > max => Err(PolicyError {
                    field: format!("limits.{world}.{name}"),
                    message: format!("{value} is above the engine's maximum of {max}"),
                }),
                _ => Ok(()),
            };
            over(
                "memory_bytes",
                limits.memory_bytes.map(|v| v as u64),
                MAX_MEMORY_BYTES as u64,
            )?;
            over("fuel", limits.fuel, MAX_FUEL)?;
            over("deadline_ms", limits.deadline_ms, MAX_DEADLINE_MS)?;
            over(
                "result_bytes",
                limits.result_bytes.map(|v| v as u64),
                MAX_RESULT_BYTES as u64,
            )?;
            over(
                "table_elements",
                limits.table_elements.map(|v| v as u64),
                MAX_TABLE_ELEMENTS as u64,
            )?;
            if limits.fuel == Some(0) || limits.deadline_ms == Some(0) {
                return Err(PolicyError {
                    field: format!("limits.{world}"),
                    message: "fuel and deadline_ms must be above 0".into(),
                });
            }
        }
        for (name, server) in &settings.mcp_servers {
            let field = || format!("mcp_servers.{name}");
            if !mcp_flow::flow::is_plugin_name(name) {
                return Err(PolicyError {
                    field: field(),
                    message: "a server's name is 1 to 64 lowercase letters, digits, '-' or '_'"
                        .into(),
                });
            }
            let authority = server
                .url
                .strip_prefix("http://")
                .or_else(|| server.url.strip_prefix("https://"))
                .and_then(|rest| rest.split('/').next())
                .filter(|authority| !authority.is_empty());
            if authority.is_none() {
                return Err(PolicyError {
                    field: format!("{}.url", field()),
                    message: format!("\"{}\" is not an http(s) URL", server.url),
                });
            }
        }
        Ok(TenantPolicy {
            allow_list,
            limits: settings.limits.clone(),
            mcp_servers: settings.mcp_servers.clone(),
        })
    }
}

/// The installed versions of one tenant's plugin.
#[derive(Default)]
struct Versions {
    /// In the order they were installed; the last is the active one
    /// unless another was activated.
    installed: Vec<Arc<Installed>>,
    active: Option<String>,
}

impl Versions {
    fn get(&self, version: &str) -> Option<&Arc<Installed>> {
        self.installed.iter().find(|p| p.version == version)
    }

    fn active(&self) -> Option<&Arc<Installed>> {
        self.active.as_deref().and_then(|v| self.get(v))
    }
}

impl Installed {
    /// The values the plugin reads through the host `config` interface.
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }
}

/// A tenant's policy as calls use it.
struct Policy {
    allow_list: Arc<AllowList>,
    limits: HashMap<PluginWorld, LimitOverrides>,
    mcp_servers: BTreeMap<String, RemoteMcpServer>,
}

pub(crate) struct Inner {
    pub engine: Engine,
    /// WASI (nothing granted) and the host interface.
    base: Linker<StoreState>,
    /// The base plus outbound HTTP, for tools.
    with_http: Linker<StoreState>,
    config: HostConfig,
    engine_hash: String,
    memory: MemoryCache,
    /// (tenant, plugin) → its installed versions.
    registry: RwLock<HashMap<(String, String), Versions>>,
    policies: RwLock<HashMap<String, Policy>>,
    pub breakers: Breakers,
    egress: Arc<Gate>,
    log_allowances: Arc<LogAllowances>,
}

/// The host. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct PluginHost {
    pub(crate) inner: Arc<Inner>,
}

impl PluginHost {
    pub fn new(config: HostConfig) -> wasmtime::Result<PluginHost> {
        let mut wasm = Config::new();
        wasm.gc_support(false)
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .async_stack_size(MAX_WASM_STACK + (1 << 20))
            .memory_init_cow(true);
        if config.pooling {
            let instances = config.max_instances;
            let mut pool = PoolingAllocationConfig::default();
            // A component holds several core instances (libc, the
            // program, adapters); Python components hold more.
            pool.total_component_instances(instances)
                .total_core_instances(instances * 20)
                .total_memories(instances * 4)
                .total_tables(instances * 20)
                .total_stacks(instances)
                .max_core_instances_per_component(50)
                .max_memories_per_component(10)
                .max_tables_per_component(50)
                .max_component_instance_size(8 << 20)
                .max_core_instance_size(16 << 20)
                .table_elements(MAX_TABLE_ELEMENTS)
                .max_memory_size(MAX_MEMORY_BYTES)
                // Reset slots by zeroing rather than unmapping, so the next
                // instance does not page-fault its way back in: this is most
                // of the cost of a small call.
                .linear_memory_keep_resident(2 << 20)
                .table_keep_resident(64 << 10)
                .async_stack_keep_resident(256 << 10)
                // Where the kernel can say which pages were written (Linux
                // 6.7+), only those are reset; elsewhere this is a no-op.
                .pagemap_scan(Enabled::Auto);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm)?;
        spawn_epoch_ticker(&engine);

        let mut base = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut base)?;
        host_api::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut base, |s| s)?;
        let mut with_http = base.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut with_http)?;

        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());

        Ok(PluginHost {
            inner: Arc::new(Inner {
                engine,
                base,
                with_http,
                engine_hash,
                memory: MemoryCache::new(config.compiled_cache_bytes),
                registry: RwLock::new(HashMap::new()),
                policies: RwLock::new(HashMap::new()),
                breakers: Breakers::new(config.breaker),
                log_allowances: Arc::default(),
                egress: Arc::new(Gate {
                    policy: config.egress.clone(),
                    counters: EgressCounters::default(),
                }),
                config,
            }),
        })
    }

    /// Outbound requests let out and denied, by the reason of the denial.
    pub fn egress_counters(&self) -> &EgressCounters {
        &self.inner.egress.counters
    }

    /// Plugin instances alive now (pooling allocator only; else `None`).
    pub fn instances_in_use(&self) -> Option<u64> {
        self.inner
            .engine
            .pooling_allocator_metrics()
            .map(|m| m.component_instances())
    }

    /// Plugin log lines dropped over their limits since the host started.
    pub fn log_lines_dropped(&self) -> u64 {
        self.inner.log_allowances.dropped()
    }

    /// The engine's compatibility hash: half of every artifact key.
    pub fn engine_hash(&self) -> &str {
        &self.inner.engine_hash
    }

    /// Compiled components the in-memory cache holds, and their bytes.
    pub fn compiled_cache_usage(&self) -> (usize, usize) {
        self.inner.memory.usage()
    }

    /// Validates an upload: a component under the size limit, exporting
    /// exactly one supported world, importing only what the host provides.
    /// Compiles it (or finds it compiled) on the way, and keeps it compiled.
    pub async fn inspect(&self, bytes: &[u8]) -> Result<Inspected, UploadError> {
        let inspected = self.validate(bytes).await?;
        self.keep(&inspected).await;
        Ok(inspected)
    }

    /// [`PluginHost::inspect`] without keeping anything: what is refused
    /// leaves nothing behind.
    async fn validate(&self, bytes: &[u8]) -> Result<Inspected, UploadError> {
        let limit = self.inner.config.max_component_bytes;
        if bytes.len() > limit {
            return Err(UploadError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(UploadError::NotAComponent),
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
            _ => return Err(UploadError::NotWasm),
        }
        let sha256 = sha256_hex(bytes);
        let (component, cache) = self.compile(&sha256, bytes).await?;
        let world = world_of(&component, &self.inner.engine)?;
        self.linker(world)
            .instantiate_pre(&component)
            .map_err(|e| UploadError::UnsupportedImport(import_problem(world, &e)))?;
        Ok(Inspected {
            world,
            sha256,
            size: bytes.len(),
            cache,
            component,
        })
    }

    async fn compile(
        &self,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<(Component, CacheStatus), UploadError> {
        let inner = &self.inner;
        if let Some(component) = inner.memory.get(sha256) {
            return Ok((component, CacheStatus::Memory));
        }
        let key = ArtifactKey {
            content_sha256: sha256.to_owned(),
            engine_hash: inner.engine_hash.clone(),
        };
        if let Some(store) = &inner.config.artifacts
            && let Some(artifact) = store.load(&key).await
        {
            // SAFETY: artifacts are written only by `Component::serialize`
            // of an engine with this compatibility hash, into storage the
            // operator controls; wasmtime re-checks the header and settings.
            match unsafe { Component::deserialize(&inner.engine, &artifact) } {
                Ok(component) => return Ok((component, CacheStatus::Stored)),
                Err(e) => {
                    tracing::warn!(sha256, error = %e, "stored artifact unusable; compiling again")
                }
            }
        }
        let engine = inner.engine.clone();
        let owned = bytes.to_vec();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &owned))
            .await
            .map_err(|e| UploadError::Invalid(e.to_string()))?
            .map_err(|e| UploadError::Invalid(format!("{e:#}")))?;
        Ok((component, CacheStatus::Compiled))
    }

    /// Keeps a validated component compiled: in memory, and in the artifact
    /// store if it was compiled here.
    async fn keep(&self, inspected: &Inspected) {
        let inner = &self.inner;
        inner.memory.put(&inspected.sha256, &inspected.component);
        if inspected.cache != CacheStatus::Compiled {
            return;
        }
        if let Some(store) = &inner.config.artifacts {
            let key = ArtifactKey {
                content_sha256: inspected.sha256.clone(),
                engine_hash: inner.engine_hash.clone(),
            };
            match inspected.component.serialize() {
                Ok(artifact) => store.save(&key, &artifact).await,
                Err(e) => {
                    tracing::warn!(sha256 = %inspected.sha256, error = %e, "could not serialize a compiled plugin")
                }
            }
        }
    }

    fn linker(&self, world: PluginWorld) -> &Linker<StoreState> {
        match world {
            PluginWorld::Tool => &self.inner.with_http,
            _ => &self.inner.base,
        }
    }

    /// Validates, compiles and installs a plugin version for a tenant; calls
    /// for (tenant, name) resolve to it from now on. `expected` is the world
    /// the upload claims, if it claims one.
    pub async fn install(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: &[u8],
        expected: Option<PluginWorld>,
        config: BTreeMap<String, String>,
    ) -> Result<Arc<Installed>, UploadError> {
        let checked = self
            .check(tenant, name, version, bytes, expected, config)
            .await?;
        if let Some(existing) = self.resolve_version(tenant, name, version)
            && existing.sha256 != checked.installed.sha256
        {
            return Err(UploadError::VersionExists(version.to_owned()));
        }
        Ok(self.commit(checked).await)
    }

    /// Every check of [`PluginHost::install`] but the one against versions
    /// installed here (the caller's store knows better), describe()
    /// included, with nothing installed or kept: an upload refused here, or
    /// refused later by the caller, leaves nothing behind in the host.
    pub async fn check(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: &[u8],
        expected: Option<PluginWorld>,
        config: BTreeMap<String, String>,
    ) -> Result<Checked, UploadError> {
        let (mut installed, inspected) = self
            .prepare(tenant, name, version, bytes, expected, config)
            .await?;
        installed.manifest = self
            .describe(&installed)
            .await
            .map_err(|e| UploadError::Describe(e.to_string()))?;
        Ok(Checked {
            installed,
            inspected,
        })
    }

    /// Installs a stored version whose manifest was read by describe() at
    /// upload: no plugin code runs, so a turn that loads a tenant's plugins
    /// never waits on one. A tool or state type stored without its manifest
    /// is described as at upload.
    pub async fn install_described(
        &self,
        tenant: &str,
        stored: StoredVersion<'_>,
    ) -> Result<Arc<Installed>, UploadError> {
        let StoredVersion {
            name,
            version,
            bytes,
            world,
            config,
            manifest,
        } = stored;
        let described = matches!(world, PluginWorld::Tool | PluginWorld::StateType);
        if described && manifest.is_none() {
            tracing::warn!(
                tenant,
                plugin = name,
                version,
                "stored without a manifest; describing"
            );
            return self
                .install(tenant, name, version, bytes, Some(world), config)
                .await;
        }
        let (mut installed, inspected) = self
            .prepare(tenant, name, version, bytes, Some(world), config)
            .await?;
        installed.manifest = manifest;
        Ok(self
            .commit(Checked {
                installed,
                inspected,
            })
            .await)
    }

    /// Keeps a checked upload's compiled code, without installing it.
    pub async fn keep_compiled(&self, checked: &Checked) {
        self.keep(&checked.inspected).await;
    }

    /// Installs a checked upload and keeps its compiled code.
    pub async fn commit(&self, checked: Checked) -> Arc<Installed> {
        self.keep(&checked.inspected).await;
        let installed = Arc::new(checked.installed);
        let (tenant, name, version) = (&installed.tenant, &installed.name, &installed.version);
        {
            let mut registry = self.inner.registry.write().unwrap();
            let versions = registry.entry((tenant.clone(), name.clone())).or_default();
            versions.installed.retain(|p| p.version != *version);
            versions.installed.push(installed.clone());
            versions.active = Some(version.clone());
        }
        tracing::info!(%tenant, plugin = %name, %version, world = %installed.world, sha256 = %installed.sha256, "plugin installed");
        installed
    }

    /// Validates and compiles a version and binds it to its world, without
    /// running it or keeping anything.
    async fn prepare(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: &[u8],
        expected: Option<PluginWorld>,
        config: BTreeMap<String, String>,
    ) -> Result<(Installed, Inspected), UploadError> {
        if !mcp_flow::flow::is_plugin_name(name) {
            return Err(UploadError::BadName(name.to_owned()));
        }
        let inspected = self.validate(bytes).await?;
        if let Some(expected) = expected
            && expected != inspected.world
        {
            return Err(UploadError::WrongWorld {
                expected,
                found: inspected.world,
            });
        }
        let pre = self
            .linker(inspected.world)
            .instantiate_pre(&inspected.component)
            .map_err(|e| UploadError::UnsupportedImport(import_problem(inspected.world, &e)))?;
        let bad = |e: wasmtime::Error| UploadError::BadExport(format!("{e:#}"));
        let typed = match inspected.world {
            PluginWorld::Condition => {
                Typed::Condition(condition::ConditionPre::new(pre).map_err(bad)?)
            }
            PluginWorld::Action => Typed::Action(action::ActionPre::new(pre).map_err(bad)?),
            PluginWorld::Tool => {
                let annotated =
                    exports_companion(&inspected.component, &self.inner.engine, "tool-annotations")
                        .then(|| annotated_tool::AnnotatedToolPre::new(pre.clone()))
                        .transpose()
                        .map_err(bad)?;
                Typed::Tool(tool::ToolPre::new(pre).map_err(bad)?, annotated)
            }
            PluginWorld::StateType => {
                Typed::StateType(state_type::StateTypePre::new(pre).map_err(bad)?)
            }
            PluginWorld::Intent => {
                let with_entities =
                    exports_companion(&inspected.component, &self.inner.engine, "intent-entities")
                        .then(|| entity_intent::EntityIntentPre::new(pre.clone()))
                        .transpose()
                        .map_err(bad)?;
                Typed::Intent(intent::IntentPre::new(pre).map_err(bad)?, with_entities)
            }
        };
        let installed = Installed {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            world: inspected.world,
            sha256: inspected.sha256.clone(),
            manifest: None,
            typed,
            config: Arc::new(config),
        };
        Ok((installed, inspected))
    }

    /// Removes every version of (tenant, name); calls fail as not installed.
    pub fn uninstall(&self, tenant: &str, name: &str) -> bool {
        self.inner
            .registry
            .write()
            .unwrap()
            .remove(&(tenant.to_owned(), name.to_owned()))
            .is_some()
    }

    /// Removes one version. If it was active, the most recently installed
    /// remaining version becomes active.
    pub fn remove_version(&self, tenant: &str, name: &str, version: &str) -> bool {
        let mut registry = self.inner.registry.write().unwrap();
        let key = (tenant.to_owned(), name.to_owned());
        let Some(versions) = registry.get_mut(&key) else {
            return false;
        };
        let before = versions.installed.len();
        versions.installed.retain(|p| p.version != version);
        let removed = versions.installed.len() < before;
        if versions.active.as_deref() == Some(version) {
            versions.active = versions.installed.last().map(|p| p.version.clone());
        }
        if versions.installed.is_empty() {
            registry.remove(&key);
        }
        removed
    }

    /// Makes an installed version the one unpinned calls resolve to.
    pub fn activate(&self, tenant: &str, name: &str, version: &str) -> bool {
        let mut registry = self.inner.registry.write().unwrap();
        match registry.get_mut(&(tenant.to_owned(), name.to_owned())) {
            Some(versions) if versions.get(version).is_some() => {
                versions.active = Some(version.to_owned());
                true
            }
            _ => false,
        }
    }

    /// The active version of (tenant, name).
    pub fn resolve(&self, tenant: &str, name: &str) -> Option<Arc<Installed>> {
        let registry = self.inner.registry.read().unwrap();
        registry
            .get(&(tenant.to_owned(), name.to_owned()))?
            .active()
            .cloned()
    }

    /// One version of (tenant, name): what a pinned conversation calls.
    pub fn resolve_version(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Option<Arc<Installed>> {
        let registry = self.inner.registry.read().unwrap();
        registry
            .get(&(tenant.to_owned(), name.to_owned()))?
            .get(version)
            .cloned()
    }

    /// Every installed version of every plugin of a tenant, with whether it
    /// is the active one: what a store reconciles against.
    pub fn installed(&self, tenant: &str) -> Vec<(Arc<Installed>, bool)> {
        let registry = self.inner.registry.read().unwrap();
        registry
            .iter()
            .filter(|((owner, _), _)| owner == tenant)
            .flat_map(|(_, versions)| {
                let active = versions.active.as_deref();
                versions
                    .installed
                    .iter()
                    .map(move |p| (p.clone(), active == Some(p.version.as_str())))
            })
            .collect()
    }

    /// A tenant's installed tools, for discovery.
    pub fn tools(&self, tenant: &str) -> Vec<ToolManifest> {
        let registry = self.inner.registry.read().unwrap();
        let mut tools: Vec<ToolManifest> = registry
            .iter()
            .filter(|((owner, _), _)| owner == tenant)
            .filter_map(|(_, versions)| versions.active())
            .filter_map(|p| match &p.manifest {
                Some(Manifest::Tool(t)) => Some(t.clone()),
                _ => None,
            })
            .collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    /// Sets what a tenant's plugins may reach and use.
    pub fn set_policy(&self, tenant: &str, policy: TenantPolicy) {
        self.inner.policies.write().unwrap().insert(
            tenant.to_owned(),
            Policy {
                allow_list: Arc::new(policy.allow_list),
                limits: policy.limits,
                mcp_servers: policy.mcp_servers,
            },
        );
    }

    /// A remote MCP server of a tenant, with what an outbound call to it
    /// must pass: the engine's egress policy and the tenant's allow-list.
    pub fn remote_server(
        &self,
        tenant: &str,
        name: &str,
    ) -> Option<(RemoteMcpServer, Egress, Arc<AllowList>)> {
        let policies = self.inner.policies.read().unwrap();
        let policy = policies.get(tenant)?;
        let server = policy.mcp_servers.get(name)?.clone();
        Some((
            server,
            self.inner.egress.policy.clone(),
            policy.allow_list.clone(),
        ))
    }

    /// A tenant's remote MCP servers, by name.
    pub fn remote_servers(&self, tenant: &str) -> Vec<String> {
        self.inner
            .policies
            .read()
            .unwrap()
            .get(tenant)
            .map(|p| p.mcp_servers.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The limits and allow-list of a call to a tenant's plugin of `world`.
    pub(crate) fn policy(&self, tenant: &str, world: PluginWorld) -> (Limits, Arc<AllowList>) {
        let defaults = Limits::for_world(world);
        match self.inner.policies.read().unwrap().get(tenant) {
            Some(policy) => {
                let limits = policy
                    .limits
                    .get(&world)
                    .map_or(defaults, |o| defaults.with(o));
                (limits, policy.allow_list.clone())
            }
            None => (defaults, Arc::new(AllowList::default())),
        }
    }

    /// A store for one call, with its limits armed.
    pub(crate) fn store(
        &self,
        installed: &Installed,
        limits: &Limits,
        allow_list: Arc<AllowList>,
    ) -> wasmtime::Result<Store<StoreState>> {
        let site = CallSite {
            tenant: installed.tenant.as_str().into(),
            plugin: installed.name.as_str().into(),
        };
        let state = StoreState::new(
            site,
            limits,
            allow_list,
            self.inner.egress.clone(),
            self.inner.log_allowances.clone(),
            installed.config.clone(),
        );
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel)?;
        // Ticks until the deadline, plus one: a call started just before a
        // tick still gets its whole budget.
        let ticks = limits.deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        Ok(store)
    }
}

/// Ticks the engine's epoch until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch ticker");
}

/// The world a component implements, from its exports.
fn world_of(component: &Component, engine: &Engine) -> Result<PluginWorld, UploadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    // A companion rides beside its interface; it is no world of its own.
    let ours: Vec<&String> = exports
        .iter()
        .filter(|e| e.starts_with("mcp:plugin/") && companion_of(e).is_none())
        .collect();
    for export in &exports {
        if let Some(main) = companion_of(export)
            && !ours
                .iter()
                .any(|e| e.starts_with(&format!("mcp:plugin/{main}@")))
        {
            return Err(UploadError::NoWorld(format!(
                "{}: {} is exported without mcp:plugin/{main}",
                exports.join(", "),
                export.split('@').next().unwrap_or(export),
            )));
        }
    }
    match ours.as_slice() {
        [] => Err(UploadError::NoWorld(if exports.is_empty() {
            "nothing".into()
        } else {
            exports.join(", ")
        })),
        [one] => {
            let rest = one.trim_start_matches("mcp:plugin/");
            let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
            if version != WIT_VERSION {
                return Err(UploadError::UnsupportedVersion {
                    found: (*one).clone(),
                });
            }
            match interface {
                "conditions" => Ok(PluginWorld::Condition),
                "actions" => Ok(PluginWorld::Action),
                "tools" => Ok(PluginWorld::Tool),
                "state-types" => Ok(PluginWorld::StateType),
                "intents" => Ok(PluginWorld::Intent),
                _ => Err(UploadError::NoWorld(exports.join(", "))),
            }
        }
        several => Err(UploadError::SeveralWorlds(
            several
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Optional interfaces a plugin may export beside its world's own, and
/// the interface each goes with.
const COMPANIONS: [(&str, &str); 2] = [
    ("tool-annotations", "tools"),
    ("intent-entities", "intents"),
];

/// The interface `export` is a companion of, if it is one.
fn companion_of(export: &str) -> Option<&'static str> {
    let interface = export.strip_prefix("mcp:plugin/")?.split('@').next()?;
    COMPANIONS
        .iter()
        .find(|(companion, _)| *companion == interface)
        .map(|(_, main)| *main)
}

/// Whether a component exports the companion interface `companion`.
fn exports_companion(component: &Component, engine: &Engine, companion: &str) -> bool {
    let prefix = format!("mcp:plugin/{companion}@");
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with(&prefix))
}

fn import_problem(world: PluginWorld, error: &wasmtime::Error) -> String {
    let message = format!("{error:#}");
    if world != PluginWorld::Tool && message.contains("wasi:http") {
        format!("only tool plugins may import wasi:http ({message})")
    } else {
        message
    }
}

impl PluginHost {
    /// Whether a component with these bytes is compiled in this process.
    pub fn is_compiled(&self, bytes: &[u8]) -> bool {
        self.inner.memory.get(&sha256_hex(bytes)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_overrides_above_the_engines_ceilings_are_refused_by_field() {
        let mut settings = PolicySettings::default();
        let raise = |limits: LimitOverrides| HashMap::from([(PluginWorld::Tool, limits)]);
        settings.limits = raise(LimitOverrides {
            deadline_ms: Some(MAX_DEADLINE_MS),
            fuel: Some(MAX_FUEL),
            ..Default::default()
        });
        assert!(
            TenantPolicy::from_settings(&settings).is_ok(),
            "at the ceiling"
        );
        for (field, limits) in [
            (
                "deadline_ms",
                LimitOverrides {
                    deadline_ms: Some(MAX_DEADLINE_MS + 1),
                    ..Default::default()
                },
            ),
            (
                "fuel",
                LimitOverrides {
                    fuel: Some(MAX_FUEL + 1),
                    ..Default::default()
                },
            ),
            (
                "result_bytes",
                LimitOverrides {
                    result_bytes: Some(MAX_RESULT_BYTES + 1),
                    ..Default::default()
                },
            ),
        ] {
            settings.limits = raise(limits);
            let error = TenantPolicy::from_settings(&settings).unwrap_err();
            assert_eq!(error.field, format!("limits.tool.{field}"));
            assert!(
                error.message.contains("above the engine's maximum"),
                "{error}"
            );
        }
    }
}

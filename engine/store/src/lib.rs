//! MCP Engine's storage.
//!
//! - [`Store`]: tenants, API keys, flows, plugins, experiments and transcripts
//!   in PostgreSQL or SQLite (one schema, migrated at connect), with in-memory
//!   caches that every process sharing the database keeps current.
//! - [`context`]: live conversation context behind core's `ContextStore`
//!   port, in Redis or in this process, one writer per conversation.
//!
//! Every repository call names its tenant; none takes an id without one.
//! The store keeps plugins as rows (bytes, hash, world, manifest, config)
//! and compiled code as opaque artifacts; it never runs or inspects them.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_store::{Database, Store, StoreSettings};
//!
//! let settings = StoreSettings::from_env()?;
//! let db = Database::connect(&settings.database).await?;
//! let store = Store::open(db).await?;
//! # Ok(()) }
//! ```

pub mod analytics;
pub mod artifacts;
pub mod cache_use;
pub mod changes;
pub mod context;
pub mod db;
pub mod durable;
pub mod error;
pub mod experiments;
pub mod flows;
mod key_cache;
pub mod plugins;
pub mod rate_limits;
mod redis_connection;
mod redis_retry;
pub mod settings;
pub mod tenants;
pub mod tool_calls;
pub mod transcripts;
pub mod wakeups;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mcp_flow::{ExperimentConfig, Flow};

use key_cache::KeyCache;

pub use analytics::Analytics;
pub use cache_use::{CacheUse, track_cache};
pub use changes::ChangeKind;
pub use context::{InProcessContextStore, RedisContextStore, open_context_store};
pub use db::{Backend, Database};
pub use durable::{Durability, DurableSettings, DurableWriter, Reservation, TurnWrite};
pub use error::StoreError;
pub use experiments::{Experiment, ExperimentStatus};
pub use flows::{FlowStatus, FlowVersion, PublishOptions, StoredFlow};
pub use mcp_flow::PolicySettings;
pub use plugins::{EnabledPlugin, NewPlugin, PluginVersion, TenantPlugins};
pub use rate_limits::{Rate, RateLimitSettings, RateLimited, RateLimiter, TokenBuckets};
pub use settings::{ContextSettings, DatabaseSettings, SettingError, StoreSettings};
pub use tenants::{ApiKey, IssuedKey, KeyGrants, PERMISSION_PREFIX, Scope, Tenant};
pub use tool_calls::{ToolCallRecord, ToolOutcome};
pub use transcripts::TurnRecord;
pub use wakeups::Wakeups;

/// The repositories and their caches. Cheap to clone; clones share both.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    db: Database,
    caches: Mutex<Caches>,
    /// API keys looked up in the database (cache misses), since start.
    key_lookups: std::sync::atomic::AtomicU64,
    /// Bumped whenever keys may have changed, for holders of open streams.
    keys_changed: tokio::sync::watch::Sender<u64>,
}

/// What is cached, and when it was last invalidated.
///
/// A value read from the database is cached only if nothing it depends on
/// was invalidated since the read began: readers note `generation` first,
/// and every invalidation bumps it. So a change that lands while a reader is
/// mid-query is never hidden by that reader's stale result.
#[derive(Default)]
struct Caches {
    generation: u64,
    /// When everything was last dropped (a lost change listener).
    all_invalidated: u64,
    /// True while changes may go unheard (the listener is reconnecting):
    /// nothing is stored in the caches then, and what they hold is served
    /// only while the database is unavailable (it could be stale, but no
    /// change can be made while the database is down).
    deaf: bool,
    tenants: HashMap<String, TenantCache>,
    /// Published flow versions never change, so parsed ones stay valid.
    parsed: HashMap<(String, String, String), Arc<Flow>>,
    /// Verified API keys by id, with their secrets' hashes.
    keys: KeyCache<(ApiKey, String)>,
    /// When any tenant's keys last changed.
    keys_invalidated: u64,
}

#[derive(Default)]
struct TenantCache {
    invalidated: HashMap<ChangeKind, u64>,
    default_flow: Option<StoredFlow>,
    latest: HashMap<String, StoredFlow>,
    experiments: Option<Arc<Vec<ExperimentConfig>>>,
    plugins: Option<Arc<TenantPlugins>>,
}

impl Caches {
    fn fresh(&self, tenant: &str, kind: ChangeKind, read_at: u64) -> bool {
        if self.deaf {
            return false;
        }
        let tenant_mark = self
            .tenants
            .get(tenant)
            .and_then(|t| t.invalidated.get(&kind))
            .copied()
            .unwrap_or(0);
        self.all_invalidated.max(tenant_mark) <= read_at
    }
}

impl Inner {
    fn invalidate(&self, tenant: &str, kind: ChangeKind) {
        let mut caches = self.caches.lock().unwrap();
        caches.generation += 1;
        let generation = caches.generation;
        if kind == ChangeKind::Keys {
            caches.keys.forget_tenant(tenant);
            caches.keys_invalidated = generation;
            self.keys_changed.send_replace(generation);
        }
        let cache = caches.tenants.entry(tenant.to_owned()).or_default();
        cache.invalidated.insert(kind, generation);
        match kind {
            ChangeKind::Flows => {
                cache.default_flow = None;
                cache.latest.clear();
            }
            ChangeKind::Plugins => cache.plugins = None,
            ChangeKind::Experiments => cache.experiments = None,
            ChangeKind::Keys => {}
        }
        tracing::debug!(tenant, ?kind, "cache invalidated");
    }

    /// While not listening nothing new is cached (what is cached stays, for
    /// when the database is unreachable); on listening again everything
    /// cached before is dropped.
    fn set_listening(&self, listening: bool) {
        if listening {
            self.invalidate_all();
        }
        self.caches.lock().unwrap().deaf = !listening;
    }

    fn invalidate_all(&self) {
        let mut caches = self.caches.lock().unwrap();
        caches.generation += 1;
        caches.all_invalidated = caches.generation;
        caches.keys.clear();
        self.keys_changed.send_replace(caches.generation);
        for cache in caches.tenants.values_mut() {
            cache.default_flow = None;
            cache.latest.clear();
            cache.experiments = None;
            cache.plugins = None;
        }
    }
}

impl Store {
    /// The store over a migrated database. Starts following other
    /// processes' changes at once.
    pub async fn open(db: Database) -> Result<Store, StoreError> {
        let inner = Arc::new(Inner {
            db,
            caches: Mutex::new(Caches::default()),
            key_lookups: Default::default(),
            keys_changed: tokio::sync::watch::Sender::new(0),
        });
        changes::watch(&inner.db, Arc::downgrade(&inner)).await?;
        Ok(Store { inner })
    }

    /// One round trip to the database, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(self.inner.db.pool()?)
            .await?;
        Ok(())
    }

    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// Changes whenever any API key may have been revoked: a change this
    /// process made, one the change feed announced, or a lost feed.
    pub fn watch_keys(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.keys_changed.subscribe()
    }

    /// Reads the tenant's flows from the database again on their next use
    /// (`processing_hints.bypass_cache`). Published versions never change,
    /// so it is which version is latest or default that is read again.
    pub fn refresh_flows(&self, tenant: &str) {
        self.inner.invalidate(tenant, ChangeKind::Flows);
    }

    /// Drops what this process cached about a tenant (a change it made).
    pub(crate) fn invalidate(&self, tenant: &str, kind: ChangeKind) {
        self.inner.invalidate(tenant, kind);
    }

    fn generation(&self) -> u64 {
        self.inner.caches.lock().unwrap().generation
    }

    /// Runs `update` on the tenant's cache if nothing of `kind` was
    /// invalidated since `read_at`.
    fn cache_if_fresh(
        &self,
        tenant: &str,
        kind: ChangeKind,
        read_at: u64,
        update: impl FnOnce(&mut TenantCache),
    ) {
        let mut caches = self.inner.caches.lock().unwrap();
        if caches.fresh(tenant, kind, read_at) {
            update(caches.tenants.entry(tenant.to_owned()).or_default());
        }
    }

    fn cached<T>(&self, tenant: &str, read: impl FnOnce(&TenantCache) -> Option<T>) -> Option<T> {
        let caches = self.inner.caches.lock().unwrap();
        if caches.deaf && self.inner.db.is_available() {
            return None;
        }
        caches.tenants.get(tenant).and_then(read)
    }
}

/// `bytes` random bytes as hex, from the operating system's generator.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system has a random source");
    hex::encode(buf)
}

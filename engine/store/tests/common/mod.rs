//! Backends for the storage tests: SQLite and the in-process context store
//! always; PostgreSQL and Redis whenever DATABASE_URL / REDIS_URL are set
//! (CI sets both, so nothing is skipped there). The plugin registry's tests
//! include this file too.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mcp_store::{
    ContextSettings, Database, DatabaseSettings, PolicySettings, Store, StoreSettings,
};
use serde_json::json;

/// A database every test in this binary shares; tests keep apart by using
/// tenants of their own.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: &'static str,
    pub settings: DatabaseSettings,
}

pub fn databases() -> Vec<Backend> {
    let defaults = StoreSettings::default().database;
    let mut backends = vec![Backend {
        name: "sqlite",
        settings: DatabaseSettings {
            url: Some(format!("sqlite://{}?mode=rwc", sqlite_file().display())),
            change_poll_interval: Duration::from_millis(100),
            ..defaults.clone()
        },
    }];
    if let Ok(url) = std::env::var("DATABASE_URL") {
        backends.push(Backend {
            name: "postgres",
            settings: DatabaseSettings {
                url: Some(postgres_schema(&url)),
                ..defaults
            },
        });
    }
    backends
}

/// A fresh SQLite file per test binary run.
fn sqlite_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("store-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!(
            "{}-{}.db",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        file
    })
    .clone()
}

/// A schema of its own for this test binary, emptied once per run, so
/// migrations always start clean and runs never see each other's rows.
fn postgres_schema(url: &str) -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let schema = format!("mcp_test_{}", env!("CARGO_CRATE_NAME"));
        let url = url.to_owned();
        let admin_url = url.clone();
        let statement = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}");
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(&admin_url)
                        .await
                        .expect("DATABASE_URL is set but PostgreSQL cannot be reached");
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                })
        })
        .join()
        .unwrap();
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options=-c%20search_path%3D{schema}")
    })
    .clone()
}

pub async fn store(backend: &Backend) -> Store {
    let db = Database::connect(&backend.settings)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name));
    Store::open(db).await.unwrap()
}

/// A tenant id no other test uses.
pub fn tenant_id(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

pub fn context_settings(redis: bool) -> ContextSettings {
    ContextSettings {
        redis_url: if redis {
            std::env::var("REDIS_URL").ok()
        } else {
            None
        },
        lock_timeout: Duration::from_secs(30),
        lock_ttl: Duration::from_secs(30),
        idle_ttl: Some(Duration::from_secs(600)),
        ..StoreSettings::default().context
    }
}

/// Context stores to test: in-process always; Redis and a throwaway 3-master
/// Redis Cluster when REDIS_URL is set (CI sets it, so none is skipped
/// there). The cluster lives as long as the value.
pub struct ContextBackends {
    list: Vec<(&'static str, ContextSettings)>,
    _cluster: Option<mcp_testkit::ThrowawayRedisCluster>,
}

impl ContextBackends {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, ContextSettings)> + '_ {
        self.list.iter().cloned()
    }
}

pub fn context_backends() -> ContextBackends {
    let mut list = vec![("in-process", context_settings(false))];
    let mut cluster = None;
    if std::env::var("REDIS_URL").is_ok() {
        list.push(("redis", context_settings(true)));
        let started = mcp_testkit::ThrowawayRedisCluster::start();
        list.push((
            "redis-cluster",
            ContextSettings {
                redis_url: Some(started.url()),
                redis_cluster: true,
                ..context_settings(false)
            },
        ));
        cluster = Some(started);
    }
    ContextBackends {
        list,
        _cluster: cluster,
    }
}

/// Polls `check` until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A flow that uses a condition plugin and an action plugin.
pub fn vip_flow(version: &str) -> String {
    json!({
        "flow_id": "refunds", "name": "Refunds", "version": version, "initial_state": "ask",
        "states": {
            "ask": {
                "type": "response",
                "config": { "response_templates": { "default": "What did you spend?" } },
                "transitions": [ { "condition": "any_input", "target_state": "check" } ]
            },
            "check": {
                "type": "condition",
                "transitions": [
                    { "condition": "plugin", "plugin": "vip-check", "args": { "min_spent": 500 }, "target_state": "vip", "priority": 1 },
                    { "condition": "default", "target_state": "done" }
                ]
            },
            "vip": {
                "type": "end",
                "entry_actions": [ { "type": "plugin", "plugin": "price", "args": { "discount": 0.5 } } ],
                "config": { "message": "VIP." }
            },
            "done": { "type": "end", "config": { "message": "Done." } }
        }
    })
    .to_string()
}

pub fn plain_flow(flow_id: &str, version: &str) -> String {
    json!({
        "flow_id": flow_id, "name": flow_id, "version": version, "initial_state": "hello",
        "states": {
            "hello": {
                "type": "response",
                "config": { "response_templates": { "default": "Hello from {{ variables.v | default('x') }}" } },
                "transitions": [ { "condition": "any_input", "target_state": "bye" } ]
            },
            "bye": { "type": "end", "config": { "message": "Bye." } }
        }
    })
    .to_string()
}

pub async fn new_tenant(store: &Store, prefix: &str) -> String {
    let id = tenant_id(prefix);
    store
        .create_tenant(
            Some(&id),
            &format!("Tenant {id}"),
            PolicySettings::default(),
        )
        .await
        .unwrap();
    id
}

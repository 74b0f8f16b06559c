//! The database: one connection pool over PostgreSQL or SQLite, migrated at
//! connect time.
//!
//! Queries go through sqlx's `Any` driver so each is written once: `$n`
//! placeholders (SQLite reads them too), integers for times and flags, text
//! for JSON. Only the DDL differs per dialect (`migrations/postgres`,
//! `migrations/sqlite`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::error::StoreError;
use crate::settings::DatabaseSettings;

/// The PostgreSQL channel on which changes are announced.
pub(crate) const CHANGES_CHANNEL: &str = "mcp_changes";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        })
    }
}

/// A migrated database. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Database {
    pub(crate) pool: AnyPool,
    backend: Backend,
    url: String,
    pub(crate) change_poll_interval: Duration,
    /// False while the database is known to be unreachable (PostgreSQL's
    /// change listener lost it and cannot get it back): queries are then
    /// refused at once instead of each waiting out the pool's timeout, and
    /// caches serve what they hold.
    available: Arc<AtomicBool>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects (creating the embedded SQLite file and its directory if
    /// needed) and applies any migrations not yet applied.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Database, StoreError> {
        install_default_drivers();
        let url = settings.effective_url();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        if settings.url.is_none() {
            std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
                StoreError::invalid(
                    "MCP_DATA_DIR",
                    format!("cannot create {}: {e}", settings.data_dir.display()),
                )
            })?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            // A file in this process cannot drop its connection: the ping
            // before each use would be a trip to the worker thread for
            // nothing. A server's connection is still tested.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; the busy
                        // timeout makes writers queue instead of failing.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                             PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        match backend {
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
            Backend::Sqlite => {
                // sqlx takes an advisory lock for PostgreSQL migrations but
                // none for SQLite; processes sharing the file take this one.
                let _guard = match sqlite_path(&url) {
                    Some(path) => Some(lock_file(path.with_extension("migrate-lock")).await?),
                    None => None,
                };
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?
            }
        }
        tracing::info!(%backend, "database ready");
        Ok(Database {
            pool,
            backend,
            url,
            change_poll_interval: settings.change_poll_interval,
            available: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Begins a write transaction. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`): a deferred transaction that reads and then
    /// writes fails with "database is locked" if another writer got in
    /// between, where an immediate one just waits its turn.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        self.check_available()?;
        Ok(self.begin_unchecked().await?)
    }

    /// [`begin`](Self::begin), even while the database is thought away: for
    /// writers that retry until it is back.
    pub(crate) async fn begin_unchecked(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Postgres => self.pool.begin().await,
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The pool, or `Unavailable` at once while the database is known to
    /// be unreachable.
    pub fn pool(&self) -> Result<&AnyPool, StoreError> {
        self.check_available()?;
        Ok(&self.pool)
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.is_available() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "it stopped answering; retrying every second".into(),
            ))
        }
    }

    /// Whether the database is thought reachable.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    pub(crate) fn set_available(&self, available: bool) {
        self.available.store(available, Ordering::Relaxed);
    }
}

/// The file of an SQLite URL (`sqlite://path?opts`, `sqlite:path`); `None`
/// for in-memory databases.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// An exclusive advisory lock on `path`, held until the file is dropped.
async fn lock_file(path: PathBuf) -> Result<std::fs::File, StoreError> {
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .expect("the lock task does not panic");
    locked.map_err(|e| {
        StoreError::invalid(
            "DATABASE_URL",
            format!("cannot lock the database for migration: {e}"),
        )
    })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

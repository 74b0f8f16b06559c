//! Telling every engine process on the database that a tenant's flows,
//! plugins, experiments or API keys changed, so none serves a stale cache.
//!
//! Every change is written to the `changes` table in the transaction that
//! makes it. On PostgreSQL the same transaction also sends NOTIFY, which is
//! delivered on commit; a process whose listening connection drops forgets
//! everything it cached once it listens again, since notifications sent
//! meanwhile are lost. While it cannot get the connection back the database
//! is marked unavailable: queries fail at once, and caches keep serving
//! (no change can be made while the database is down). On
//! SQLite (several processes may share one file) each process polls the
//! table; SQLite's single writer commits rows in `seq` order, so a poller
//! never skips one.

use std::sync::Weak;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{Any, Row, Transaction};

use crate::db::{Backend, CHANGES_CHANNEL, Database, now_ms};
use crate::error::StoreError;
use crate::{Inner, Store};

/// What changed for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Flow versions, their status, or the default flow.
    Flows,
    /// Plugin versions, their enabled flag, or the tenant's plugin policy.
    Plugins,
    Experiments,
    /// API keys created or revoked.
    Keys,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Flows => "flows",
            ChangeKind::Plugins => "plugins",
            ChangeKind::Experiments => "experiments",
            ChangeKind::Keys => "keys",
        }
    }

    fn parse(s: &str) -> Option<ChangeKind> {
        [
            ChangeKind::Flows,
            ChangeKind::Plugins,
            ChangeKind::Experiments,
            ChangeKind::Keys,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == s)
    }
}

/// How long a change row is kept: far longer than any poll interval.
const CHANGE_RETENTION_MS: i64 = 3_600_000;

impl Store {
    /// Records a change inside the transaction that makes it.
    pub(crate) async fn record_change(
        &self,
        tx: &mut Transaction<'static, Any>,
        tenant_id: &str,
        kind: ChangeKind,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO changes (tenant_id, kind, changed_at) VALUES ($1, $2, $3)")
            .bind(tenant_id)
            .bind(kind.as_str())
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        if self.db().backend() == Backend::Postgres {
            // pg_notify returns void, which the Any driver cannot decode.
            sqlx::query("SELECT pg_notify($1, $2) IS NULL")
                .bind(CHANGES_CHANNEL)
                .bind(format!("{} {tenant_id}", kind.as_str()))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

/// Starts the task that applies other processes' changes to this store's
/// caches; it ends when the store is dropped.
pub(crate) async fn watch(db: &Database, inner: Weak<Inner>) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM changes WHERE changed_at < $1")
        .bind(now_ms() - CHANGE_RETENTION_MS)
        .execute(&db.pool)
        .await?;
    match db.backend() {
        Backend::Postgres => {
            let listener = subscribe(db.url()).await?;
            tokio::spawn(listen(db.url().to_owned(), listener, inner));
        }
        Backend::Sqlite => {
            let start: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM changes")
                .fetch_one(&db.pool)
                .await?;
            tokio::spawn(poll(db.clone(), start.unwrap_or(0), inner));
        }
    }
    Ok(())
}

/// How long one attempt to subscribe may take. `PgListener::connect` keeps
/// retrying a refused connection for its pool's 30 s, and until an attempt
/// fails the store does not know the database is down.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

async fn subscribe(url: &str) -> Result<PgListener, sqlx::Error> {
    let attempt = async {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(listener)
    };
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

async fn listen(url: String, mut listener: PgListener, weak: Weak<Inner>) {
    loop {
        let received = listener.try_recv().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        match received {
            Ok(Some(notification)) => {
                let payload = notification.payload();
                match payload.split_once(' ') {
                    Some((kind, tenant)) if ChangeKind::parse(kind).is_some() => {
                        inner.invalidate(tenant, ChangeKind::parse(kind).unwrap())
                    }
                    _ => tracing::warn!(payload, "unreadable change notification"),
                }
            }
            Ok(None) => {
                tracing::warn!("change listener reconnected; dropping every cache");
                inner.invalidate_all();
            }
            Err(e) => {
                // Until a new subscription stands, changes may go unheard:
                // nothing new is cached meanwhile, and what is cached is
                // served only if the database cannot be asked instead.
                tracing::warn!(error = %e, "change listener failed; caching is off until it is back");
                inner.set_listening(false);
                drop(inner);
                let mut first_try = true;
                loop {
                    match subscribe(&url).await {
                        Ok(fresh) => {
                            listener = fresh;
                            break;
                        }
                        Err(e) => {
                            if first_try {
                                tracing::warn!(error = %e, "the database is unreachable; turns go on from memory");
                                if let Some(inner) = weak.upgrade() {
                                    inner.db.set_available(false);
                                }
                            }
                            first_try = false;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                inner.db.set_available(true);
                inner.set_listening(true);
                tracing::info!("change listener back; caching is on");
            }
        }
    }
}

async fn poll(db: Database, mut seen: i64, inner: Weak<Inner>) {
    let mut ticker = tokio::time::interval(db.change_poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let rows =
            sqlx::query("SELECT seq, tenant_id, kind FROM changes WHERE seq > $1 ORDER BY seq")
                .bind(seen)
                .fetch_all(&db.pool)
                .await;
        match rows {
            Ok(rows) => {
                for row in rows {
                    let (Ok(seq), Ok(tenant), Ok(kind)) = (
                        row.try_get::<i64, _>("seq"),
                        row.try_get::<String, _>("tenant_id"),
                        row.try_get::<String, _>("kind"),
                    ) else {
                        inner.invalidate_all();
                        continue;
                    };
                    seen = seen.max(seq);
                    match ChangeKind::parse(&kind) {
                        Some(kind) => inner.invalidate(&tenant, kind),
                        None => inner.invalidate_all(),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "polling for changes failed; dropping every cache");
                inner.invalidate_all();
            }
        }
    }
}

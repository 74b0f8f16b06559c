//! Compiled plugin code in the database, so a process compiles a component
//! once and every other process (and every restart) loads it ready-made.

use std::sync::Arc;

use mcp_wasm::cache::BoxFuture;
use mcp_wasm::{ArtifactKey, ArtifactStore};

use crate::db::{Database, now_ms};

/// The `plugin_artifacts` table as the host's artifact store. Failures are
/// logged and treated as misses: the host then compiles instead.
#[derive(Debug, Clone)]
pub struct DbArtifactStore {
    db: Database,
}

impl Database {
    /// An artifact store over this database, for `HostConfig::artifacts`.
    pub fn artifact_store(&self) -> Arc<dyn ArtifactStore> {
        Arc::new(DbArtifactStore { db: self.clone() })
    }
}

impl ArtifactStore for DbArtifactStore {
    fn load<'a>(&'a self, key: &'a ArtifactKey) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let loaded = sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT artifact FROM plugin_artifacts WHERE content_sha256 = $1 AND engine_hash = $2",
            )
            .bind(&key.content_sha256)
            .bind(&key.engine_hash)
            .fetch_optional(&self.db.pool)
            .await;
            loaded.unwrap_or_else(|e| {
                tracing::warn!(sha256 = %key.content_sha256, error = %e, "could not load a compiled plugin");
                None
            })
        })
    }

    fn save<'a>(&'a self, key: &'a ArtifactKey, artifact: &'a [u8]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let saved = sqlx::query(
                "INSERT INTO plugin_artifacts (content_sha256, engine_hash, artifact, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (content_sha256, engine_hash) DO NOTHING",
            )
            .bind(&key.content_sha256)
            .bind(&key.engine_hash)
            .bind(artifact)
            .bind(now_ms())
            .execute(&self.db.pool)
            .await;
            if let Err(e) = saved {
                tracing::warn!(sha256 = %key.content_sha256, error = %e, "could not store a compiled plugin");
            }
        })
    }
}

//! The database's `plugin_artifacts` table as the host's artifact store, so
//! a component compiled by one process loads ready-made in every other.

use std::sync::Arc;

use mcp_store::Database;
use mcp_wasm::cache::BoxFuture;
use mcp_wasm::{ArtifactKey, ArtifactStore};

/// An artifact store over `db`, for `HostConfig::artifacts`. Failures are
/// logged and treated as misses: the host then compiles instead.
pub fn artifact_store(db: &Database) -> Arc<dyn ArtifactStore> {
    Arc::new(DbArtifacts { db: db.clone() })
}

struct DbArtifacts {
    db: Database,
}

impl ArtifactStore for DbArtifacts {
    fn load<'a>(&'a self, key: &'a ArtifactKey) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            self.db
                .artifact(&key.content_sha256, &key.engine_hash)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(sha256 = %key.content_sha256, error = %e, "could not load a compiled plugin");
                    None
                })
        })
    }

    fn save<'a>(&'a self, key: &'a ArtifactKey, artifact: &'a [u8]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self
                .db
                .save_artifact(&key.content_sha256, &key.engine_hash, artifact)
                .await
            {
                tracing::warn!(sha256 = %key.content_sha256, error = %e, "could not store a compiled plugin");
            }
        })
    }
}

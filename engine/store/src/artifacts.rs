//! Compiled plugin code in the database, so a process compiles a component
//! once and every other process (and every restart) loads it ready-made.
//! The store keeps the bytes opaque; the plugin host decides what they are.

use crate::db::{Database, now_ms};
use crate::error::StoreError;

impl Database {
    /// The artifact compiled from the component with this content hash by an
    /// engine with this compatibility hash, if one was saved.
    pub async fn artifact(
        &self,
        content_sha256: &str,
        engine_hash: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT artifact FROM plugin_artifacts WHERE content_sha256 = $1 AND engine_hash = $2",
        )
        .bind(content_sha256)
        .bind(engine_hash)
        .fetch_optional(self.pool()?)
        .await?)
    }

    /// Saves an artifact; one already saved under the same hashes is kept.
    pub async fn save_artifact(
        &self,
        content_sha256: &str,
        engine_hash: &str,
        artifact: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO plugin_artifacts (content_sha256, engine_hash, artifact, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (content_sha256, engine_hash) DO NOTHING",
        )
        .bind(content_sha256)
        .bind(engine_hash)
        .bind(artifact)
        .bind(now_ms())
        .execute(self.pool()?)
        .await?;
        Ok(())
    }

    /// Deletes compiled code no stored plugin version has (versions since
    /// deleted, uploads refused by older engines); returns how many rows
    /// went. Artifacts are saved only after their version is stored, so an
    /// upload in progress elsewhere loses nothing.
    pub async fn prune_artifacts(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM plugin_artifacts \
             WHERE content_sha256 NOT IN (SELECT sha256 FROM plugins)",
        )
        .execute(self.pool()?)
        .await?
        .rows_affected())
    }
}

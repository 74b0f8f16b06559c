//! Compiled components, cached by content hash and the engine's
//! compatibility hash: in memory, and in a store that outlives the process
//! (a directory here; the plugin registry keeps them in the database).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Identifies compiled code: what was compiled, and by which engine build
/// and settings (code from another wasmtime or other limits will not load).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactKey {
    /// SHA-256 of the component's bytes, hex.
    pub content_sha256: String,
    /// Hash of the engine's compatibility-relevant settings, hex.
    pub engine_hash: String,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where compiled artifacts persist between processes.
pub trait ArtifactStore: Send + Sync {
    fn load<'a>(&'a self, key: &'a ArtifactKey) -> BoxFuture<'a, Option<Vec<u8>>>;
    fn save<'a>(&'a self, key: &'a ArtifactKey, artifact: &'a [u8]) -> BoxFuture<'a, ()>;
}

/// Artifacts as files: `<dir>/<engine_hash>/<content_sha256>.cwasm`.
#[derive(Debug, Clone)]
pub struct DirArtifactStore {
    dir: PathBuf,
}

impl DirArtifactStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirArtifactStore { dir: dir.into() }
    }

    fn path(&self, key: &ArtifactKey) -> PathBuf {
        self.dir
            .join(&key.engine_hash)
            .join(format!("{}.cwasm", key.content_sha256))
    }
}

impl ArtifactStore for DirArtifactStore {
    fn load<'a>(&'a self, key: &'a ArtifactKey) -> BoxFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { tokio::fs::read(self.path(key)).await.ok() })
    }

    fn save<'a>(&'a self, key: &'a ArtifactKey, artifact: &'a [u8]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let path = self.path(key);
            // Write then rename, so a reader never sees half a file.
            let partial = path.with_extension(format!("partial-{}", std::process::id()));
            let written = async {
                tokio::fs::create_dir_all(path.parent().expect("has a parent")).await?;
                tokio::fs::write(&partial, artifact).await?;
                tokio::fs::rename(&partial, &path).await
            };
            if let Err(e) = written.await {
                tracing::warn!(path = %path.display(), error = %e, "could not persist a compiled plugin");
            }
        })
    }
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Already compiled in this process.
    Memory,
    /// Loaded from the artifact store.
    Stored,
    /// Compiled now.
    Compiled,
}

/// Components compiled in this process, by content hash.
#[derive(Default)]
pub(crate) struct MemoryCache {
    components: Mutex<HashMap<String, Component>>,
}

impl MemoryCache {
    pub fn get(&self, sha256: &str) -> Option<Component> {
        self.components.lock().unwrap().get(sha256).cloned()
    }

    pub fn put(&self, sha256: &str, component: &Component) {
        self.components
            .lock()
            .unwrap()
            .insert(sha256.to_owned(), component.clone());
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

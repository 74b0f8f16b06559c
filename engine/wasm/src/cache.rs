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

/// Components compiled in this process, by content hash, up to a total
/// size: the least recently used go first. Installed plugins hold their own
/// reference, so evicting one costs a recompile (or an artifact load) only if
/// the same bytes are installed again.
pub(crate) struct MemoryCache {
    capacity_bytes: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_hash: HashMap<String, Entry>,
    bytes: usize,
    /// Bumped on every use; an entry's stamp says when it was last used.
    clock: u64,
}

struct Entry {
    component: Component,
    bytes: usize,
    used: u64,
}

impl MemoryCache {
    pub fn new(capacity_bytes: usize) -> MemoryCache {
        MemoryCache {
            capacity_bytes,
            entries: Mutex::default(),
        }
    }

    pub fn get(&self, sha256: &str) -> Option<Component> {
        let mut entries = self.entries.lock().unwrap();
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.by_hash.get_mut(sha256)?;
        entry.used = now;
        Some(entry.component.clone())
    }

    /// Keeps a component, evicting the least recently used ones until the
    /// total fits. One larger than the whole capacity is not kept.
    pub fn put(&self, sha256: &str, component: &Component) {
        let bytes = compiled_size(component);
        if bytes > self.capacity_bytes {
            return;
        }
        let mut entries = self.entries.lock().unwrap();
        entries.clock += 1;
        let used = entries.clock;
        if let Some(old) = entries.by_hash.insert(
            sha256.to_owned(),
            Entry {
                component: component.clone(),
                bytes,
                used,
            },
        ) {
            entries.bytes -= old.bytes;
        }
        entries.bytes += bytes;
        while entries.bytes > self.capacity_bytes {
            let Some(oldest) = entries
                .by_hash
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(hash, _)| hash.clone())
            else {
                break;
            };
            let evicted = entries.by_hash.remove(&oldest).expect("just found");
            entries.bytes -= evicted.bytes;
            tracing::debug!(sha256 = %oldest, bytes = evicted.bytes, "compiled plugin evicted");
        }
    }

    /// Components held, and their compiled size in bytes.
    pub fn usage(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap();
        (entries.by_hash.len(), entries.bytes)
    }
}

/// The size of a component's compiled code and data in memory.
fn compiled_size(component: &Component) -> usize {
    let image = component.image_range();
    (image.end as usize).saturating_sub(image.start as usize)
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

//! Verified API keys in memory, so checking a call's key needs no database
//! round trip: bounded, with entries for unknown ids too, each kept a short
//! time, and dropped at once when the change feed says a tenant's keys
//! changed (a revocation reaches every process within a second).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a lookup is trusted without a change-feed message, found or not.
pub(crate) const KEY_TTL: Duration = Duration::from_secs(10);

/// Most key ids remembered; past it expired entries go, then all of them.
pub(crate) const MAX_KEYS: usize = 10_000;

/// Lookups by key id: the tenant and value found, or nothing found.
pub(crate) struct KeyCache<V> {
    entries: HashMap<String, Entry<V>>,
}

struct Entry<V> {
    found: Option<(String, V)>,
    stored: Instant,
}

impl<V> Default for KeyCache<V> {
    fn default() -> Self {
        KeyCache {
            entries: HashMap::new(),
        }
    }
}

impl<V: Clone> KeyCache<V> {
    /// `Some(None)` when the id is known not to exist.
    pub fn get(&self, id: &str) -> Option<Option<V>> {
        self.entries
            .get(id)
            .filter(|entry| entry.stored.elapsed() < KEY_TTL)
            .map(|entry| entry.found.as_ref().map(|(_, value)| value.clone()))
    }

    /// Remembers what a lookup of `id` found: a value of `tenant`, or none.
    pub fn put(&mut self, id: &str, found: Option<(String, V)>) {
        if self.entries.len() >= MAX_KEYS {
            self.entries
                .retain(|_, entry| entry.stored.elapsed() < KEY_TTL);
            if self.entries.len() >= MAX_KEYS {
                self.entries.clear();
            }
        }
        self.entries.insert(
            id.to_owned(),
            Entry {
                found,
                stored: Instant::now(),
            },
        );
    }

    /// Forgets the tenant's keys, and every id known not to exist (one of
    /// them may have just been created).
    pub fn forget_tenant(&mut self, tenant: &str) {
        self.entries.retain(|_, entry| {
            entry
                .found
                .as_ref()
                .is_some_and(|(owner, _)| owner != tenant)
        });
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_change_forgets_its_keys_and_every_unknown_id() {
        let mut cache = KeyCache::default();
        cache.put("a1", Some(("a".to_owned(), 1)));
        cache.put("b1", Some(("b".to_owned(), 2)));
        cache.put("nobody", None);
        assert_eq!(cache.get("a1"), Some(Some(1)));
        assert_eq!(cache.get("nobody"), Some(None));
        assert_eq!(cache.get("never-looked-up"), None);

        cache.forget_tenant("a");
        assert_eq!(cache.get("a1"), None);
        assert_eq!(cache.get("nobody"), None);
        assert_eq!(cache.get("b1"), Some(Some(2)));
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let mut cache = KeyCache::default();
        for i in 0..MAX_KEYS + 5 {
            cache.put(&format!("id-{i}"), None::<(String, u8)>);
            assert!(cache.len() <= MAX_KEYS);
        }
        assert_eq!(
            cache.get(&format!("id-{}", MAX_KEYS + 4)),
            Some(None),
            "the newest entry is kept"
        );
    }
}

//! Verified API keys in memory, so checking a call's key needs no database
//! round trip: bounded, with entries for unknown ids too, each kept a short
//! time, and dropped at once when the change feed says a tenant's keys
//! changed (a revocation reaches every process within a second).
//!
//! Unknown ids come from callers with no valid key, so they get a bound of
//! their own: a flood of them never pushes out the keys of real callers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a lookup is trusted without a change-feed message, found or not.
pub(crate) const KEY_TTL: Duration = Duration::from_secs(10);

/// Most keys remembered.
pub(crate) const MAX_KEYS: usize = 10_000;

/// Most unknown ids remembered.
pub(crate) const MAX_UNKNOWN: usize = 1_000;

/// Lookups by key id: the tenant and value found, or nothing found.
pub(crate) struct KeyCache<V> {
    known: HashMap<String, (String, V, Instant)>,
    unknown: HashMap<String, Instant>,
}

impl<V> Default for KeyCache<V> {
    fn default() -> Self {
        KeyCache {
            known: HashMap::new(),
            unknown: HashMap::new(),
        }
    }
}

impl<V: Clone> KeyCache<V> {
    /// `Some(None)` when the id is known not to exist.
    pub fn get(&self, id: &str) -> Option<Option<V>> {
        if let Some((_, value, stored)) = self.known.get(id) {
            return (stored.elapsed() < KEY_TTL).then(|| Some(value.clone()));
        }
        self.unknown
            .get(id)
            .filter(|stored| stored.elapsed() < KEY_TTL)
            .map(|_| None)
    }

    /// As [`get`](Self::get), however old the entry.
    pub fn get_stale(&self, id: &str) -> Option<Option<V>> {
        if let Some((_, value, _)) = self.known.get(id) {
            return Some(Some(value.clone()));
        }
        self.unknown.get(id).map(|_| None)
    }

    /// Remembers what a lookup of `id` found: a value of `tenant`, or none.
    pub fn put(&mut self, id: &str, found: Option<(String, V)>) {
        let now = Instant::now();
        match found {
            Some((tenant, value)) => {
                make_room(&mut self.known, MAX_KEYS, now, |(_, _, stored)| *stored);
                self.unknown.remove(id);
                self.known.insert(id.to_owned(), (tenant, value, now));
            }
            None => {
                make_room(&mut self.unknown, MAX_UNKNOWN, now, |stored| *stored);
                self.known.remove(id);
                self.unknown.insert(id.to_owned(), now);
            }
        }
    }

    /// Forgets the tenant's keys, and every id known not to exist (one of
    /// them may have just been created).
    pub fn forget_tenant(&mut self, tenant: &str) {
        self.known.retain(|_, (owner, _, _)| owner != tenant);
        self.unknown.clear();
    }

    pub fn clear(&mut self) {
        self.known.clear();
        self.unknown.clear();
    }
}

/// Keeps `entries` under `bound` before an insert: expired entries go
/// first; if more than half the bound is still live, all go, so the sweep
/// (one pass, one clock read) runs at most once per half a bound of inserts.
fn make_room<T>(
    entries: &mut HashMap<String, T>,
    bound: usize,
    now: Instant,
    stored: impl Fn(&T) -> Instant,
) {
    if entries.len() < bound {
        return;
    }
    entries.retain(|_, entry| now.duration_since(stored(entry)) < KEY_TTL);
    if entries.len() > bound / 2 {
        entries.clear();
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
    fn a_flood_of_unknown_ids_never_pushes_out_known_keys() {
        let mut cache = KeyCache::default();
        cache.put("real", Some(("t".to_owned(), 7)));
        for i in 0..MAX_UNKNOWN * 3 {
            cache.put(&format!("junk-{i}"), None);
            assert!(cache.unknown.len() <= MAX_UNKNOWN);
        }
        assert_eq!(cache.get("real"), Some(Some(7)));
        assert_eq!(
            cache.get(&format!("junk-{}", MAX_UNKNOWN * 3 - 1)),
            Some(None),
            "the newest unknown id is kept"
        );
    }

    #[test]
    fn known_keys_never_exceed_their_bound() {
        let mut cache = KeyCache::default();
        for i in 0..MAX_KEYS + 5 {
            cache.put(&format!("id-{i}"), Some(("t".to_owned(), i)));
            assert!(cache.known.len() <= MAX_KEYS);
        }
        assert_eq!(
            cache.get(&format!("id-{}", MAX_KEYS + 4)),
            Some(Some(MAX_KEYS + 4))
        );
    }
}

//! Context in this process: for a single engine with nothing installed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use mcp_flow::{ContextError, ContextStore, Conversation, ConversationKey, Lease, Snapshot, Write};

use super::{acquire, check_key};
use crate::settings::ContextSettings;

/// Conversations in a map, with the same lock, version and idle-expiry rules
/// as the Redis store.
pub struct InProcessContextStore {
    slots: Mutex<HashMap<ConversationKey, Slot>>,
    lock_timeout: Duration,
    lock_ttl: Duration,
    idle_ttl: Option<Duration>,
    operations: AtomicU64,
}

#[derive(Default)]
struct Slot {
    version: u64,
    conversation: Option<Conversation>,
    lock: Option<(String, Instant)>,
    expires_at: Option<Instant>,
}

impl Slot {
    fn locked_by(&self, token: &str, now: Instant) -> bool {
        matches!(&self.lock, Some((holder, until)) if holder == token && *until > now)
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Sweep expired conversations every this many operations.
const SWEEP_EVERY: u64 = 1024;

impl InProcessContextStore {
    pub fn new(settings: &ContextSettings) -> InProcessContextStore {
        InProcessContextStore {
            slots: Mutex::new(HashMap::new()),
            lock_timeout: settings.lock_timeout,
            lock_ttl: settings.lock_ttl,
            idle_ttl: settings.idle_ttl,
            operations: AtomicU64::new(0),
        }
    }

    /// Runs `f` on the conversation's slot, dropping it first if it idled out.
    fn with_slot<T>(&self, key: &ConversationKey, f: impl FnOnce(&mut Slot, Instant) -> T) -> T {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap();
        if self
            .operations
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            // Keep what is live: a held lock, or context not yet idled out.
            slots.retain(|_, slot| {
                let locked = matches!(&slot.lock, Some((_, until)) if *until > now);
                locked || (slot.version > 0 && !slot.expired(now))
            });
        }
        let slot = slots.entry(key.clone()).or_default();
        if slot.expired(now) {
            *slot = Slot {
                lock: slot.lock.take(),
                ..Slot::default()
            };
        }
        f(slot, now)
    }

    /// The same checks and steps as the Redis store's COMMIT script.
    fn commit_write(&self, lease: &Lease, write: Write<'_>) -> Result<(), ContextError> {
        self.with_slot(&lease.key, |slot, now| {
            if !slot.locked_by(&lease.token, now) {
                return Err(ContextError::LockLost {
                    key: lease.key.clone(),
                });
            }
            slot.lock = None;
            if slot.version != write.expected {
                return Err(ContextError::Conflict {
                    key: lease.key.clone(),
                    expected: write.expected,
                    found: slot.version,
                });
            }
            slot.version = write.version;
            slot.conversation = write.conversation.cloned();
            slot.expires_at = self.idle_ttl.map(|ttl| now + ttl);
            Ok(())
        })
    }

    /// Reads without creating a slot for a conversation never seen.
    fn snapshot(&self, key: &ConversationKey) -> Snapshot {
        let slots = self.slots.lock().unwrap();
        match slots.get(key) {
            Some(slot) if !slot.expired(Instant::now()) => Snapshot {
                conversation: slot.conversation.clone(),
                version: slot.version,
            },
            _ => Snapshot {
                conversation: None,
                version: 0,
            },
        }
    }
}

impl ContextStore for InProcessContextStore {
    fn acquire<'a>(
        &'a self,
        key: &'a ConversationKey,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(Lease, Snapshot), ContextError>> {
        let wait = wait.min(self.lock_timeout);
        Box::pin(acquire(key, wait, self.lock_ttl, move |token| {
            let taken = self.with_slot(key, |slot, now| {
                if matches!(&slot.lock, Some((holder, until)) if *until > now && *holder != token) {
                    return None;
                }
                slot.lock = Some((token, now + self.lock_ttl));
                Some(Snapshot {
                    conversation: slot.conversation.clone(),
                    version: slot.version,
                })
            });
            async move { Ok(taken) }
        }))
    }

    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ContextError>> {
        Box::pin(async move {
            self.with_slot(&lease.key, |slot, now| {
                if !slot.locked_by(&lease.token, now) {
                    return Err(ContextError::LockLost {
                        key: lease.key.clone(),
                    });
                }
                slot.lock = Some((lease.token.clone(), now + lease.ttl));
                Ok(())
            })
        })
    }

    fn commit<'a>(
        &'a self,
        lease: &'a Lease,
        write: Write<'a>,
    ) -> BoxFuture<'a, Result<(), ContextError>> {
        Box::pin(async move { self.commit_write(lease, write) })
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), ContextError>> {
        Box::pin(async move {
            self.with_slot(&lease.key, |slot, now| {
                if slot.locked_by(&lease.token, now) {
                    slot.lock = None;
                }
            });
            Ok(())
        })
    }

    fn peek<'a>(
        &'a self,
        key: &'a ConversationKey,
    ) -> BoxFuture<'a, Result<Snapshot, ContextError>> {
        Box::pin(async move {
            check_key(key)?;
            Ok(self.snapshot(key))
        })
    }
}

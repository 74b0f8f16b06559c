//! The storage port: where conversations live between turns. mcp-store
//! implements it in Redis and in process.
//!
//! The trait returns boxed futures so a server can hold `Arc<dyn ContextStore>`
//! and pick Redis or the in-process store at start-up; a store round trip
//! dwarfs the allocation.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::context::Conversation;

/// One conversation of one tenant: every context operation names both, so a
/// store can never hand one tenant another's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey {
    pub tenant_id: String,
    pub conversation_id: String,
}

impl ConversationKey {
    pub fn new(tenant_id: impl Into<String>, conversation_id: impl Into<String>) -> Self {
        ConversationKey {
            tenant_id: tenant_id.into(),
            conversation_id: conversation_id.into(),
        }
    }
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant_id, self.conversation_id)
    }
}

/// The right to write one conversation until `ttl` after it was granted.
///
/// Holding a lease is necessary but not sufficient: a save also names the
/// version it read, so a holder whose lease ran out while it was paused can
/// never overwrite what the next holder wrote (the version is the fencing
/// token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: ConversationKey,
    /// Random; proves to the store that this holder took the lock.
    pub token: String,
    pub ttl: Duration,
    /// How long acquiring it took (for metrics on lock contention).
    pub waited: Duration,
}

/// What a store holds for a conversation, and the version that wrote it.
/// Versions start at 1 and grow by one with every save or delete, so a reset
/// conversation (no context, version 3) is told apart from one never stored
/// (no context, version 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub conversation: Option<Conversation>,
    pub version: u64,
}

/// Why a context operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("conversation {key} is busy: its lock was not acquired within {waited:?}")]
    LockTimeout {
        key: ConversationKey,
        waited: Duration,
    },
    #[error("the lock on conversation {key} expired or was taken over")]
    LockLost { key: ConversationKey },
    #[error(
        "conversation {key} was written by someone else: expected version {expected}, found {found}"
    )]
    Conflict {
        key: ConversationKey,
        expected: u64,
        found: u64,
    },
    #[error("stored context of conversation {key} is unreadable: {reason}")]
    Corrupt {
        key: ConversationKey,
        reason: String,
    },
    #[error("bad conversation key {key}: {reason}")]
    BadKey {
        key: ConversationKey,
        reason: String,
    },
    #[error("context store unavailable: {0}")]
    Unavailable(String),
}

/// Live conversation context with one writer per conversation at a time.
///
/// A turn is `lock` → `load` → step → `save(expected = loaded version)` →
/// `unlock`. Reads for display use `peek`, which takes no lock.
pub trait ContextStore: Send + Sync {
    /// Waits (with backoff, up to the store's lock timeout) for the
    /// conversation's lock.
    fn lock<'a>(&'a self, key: &'a ConversationKey) -> BoxFuture<'a, Result<Lease, ContextError>>;

    /// The conversation as stored, and its version.
    fn load<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Snapshot, ContextError>>;

    /// Writes the conversation if the lease still holds and the stored version
    /// is still `expected`; returns the new version.
    fn save<'a>(
        &'a self,
        lease: &'a Lease,
        conversation: &'a Conversation,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, ContextError>>;

    /// Forgets the conversation (a reset), under the same checks as `save`.
    fn delete<'a>(
        &'a self,
        lease: &'a Lease,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), ContextError>>;

    /// Releases the lock if this lease still holds it; a lease that expired
    /// releases nothing (the lock may be someone else's by now).
    fn unlock(&self, lease: Lease) -> BoxFuture<'_, Result<(), ContextError>>;

    /// Reads without locking: for state queries, never for a turn.
    fn peek<'a>(
        &'a self,
        key: &'a ConversationKey,
    ) -> BoxFuture<'a, Result<Snapshot, ContextError>>;
}

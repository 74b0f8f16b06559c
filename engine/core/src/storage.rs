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

/// What a commit writes: the conversation (or, with `None`, its absence: a
/// reset), as `version`, if the stored version is still `expected`.
///
/// `version` is normally `expected + 1`; a conversation resumed from a
/// durable copy continues that copy's versions instead, so they never go
/// backwards.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub conversation: Option<&'a Conversation>,
    pub expected: u64,
    pub version: u64,
}

/// Live conversation context with one writer per conversation at a time.
///
/// A turn is two steps, one round trip each: `acquire` (lock and read) →
/// step → `commit` (fenced write and unlock). A turn that runs long
/// `renew`s its lease; a turn that writes nothing `release`s it. Reads for
/// display use `peek`, which takes no lock.
pub trait ContextStore: Send + Sync {
    /// Takes the conversation's lock and reads what is stored, in one step.
    /// A busy conversation is waited for (with backoff) up to `wait`, or the
    /// store's own lock timeout if that is shorter.
    fn acquire<'a>(
        &'a self,
        key: &'a ConversationKey,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(Lease, Snapshot), ContextError>>;

    /// Extends the lease by its time to live, if it still holds.
    fn renew<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), ContextError>>;

    /// Writes `write` if the lease still holds and the stored version is
    /// still `write.expected`, and releases the lock, in one step. The lock
    /// is released on a version conflict too.
    fn commit<'a>(
        &'a self,
        lease: &'a Lease,
        write: Write<'a>,
    ) -> BoxFuture<'a, Result<(), ContextError>>;

    /// Releases the lock without writing, if this lease still holds it; a
    /// lease that expired releases nothing (the lock may be someone else's).
    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), ContextError>>;

    /// Reads without locking: for state queries, never for a turn.
    fn peek<'a>(
        &'a self,
        key: &'a ConversationKey,
    ) -> BoxFuture<'a, Result<Snapshot, ContextError>>;
}

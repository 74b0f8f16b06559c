//! When conversations are due a timeout event: a wait state's `timeout`
//! transition fires even if the user says nothing.
//!
//! After each turn the engine schedules the conversation's next deadline
//! (or clears it); a background task claims what is due and runs a timeout
//! turn. With Redis the schedule is one sorted set shared by every engine
//! process, `mcp:wakeups` (score: due time in Unix ms); in process it is a
//! map. Claiming is atomic and takes a lease rather than the entry: a
//! claimed entry moves `lease` into the future, so one process delivers it,
//! and the turn that delivers it replaces or clears it. If that turn never
//! comes (the process died, the engine was busy, the database failed), the
//! lease runs out and the deadline is claimed again. A deadline delivered
//! early or twice is harmless: the engine runs a timeout turn only when the
//! conversation's current state is due one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use mcp_flow::ConversationKey;
use redis::Script;

use crate::redis_connection::RedisConnection;
use crate::redis_retry::once_more;
use crate::settings::ContextSettings;

/// The Redis sorted set of due times.
pub const KEY: &str = "mcp:wakeups";

/// Returns up to ARGV[2] members due at or before ARGV[1], each moved to
/// ARGV[3] (the end of its lease).
const CLAIM: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
    redis.call('ZADD', KEYS[1], ARGV[3], member)
end
return due
"#;

pub struct Wakeups {
    backend: Backend,
}

enum Backend {
    Redis {
        connection: RedisConnection,
        claim: Script,
    },
    InProcess(Mutex<Schedule>),
}

#[derive(Default)]
struct Schedule {
    due: BTreeSet<(i64, String)>,
    by_member: HashMap<String, i64>,
}

impl Wakeups {
    /// Redis if `REDIS_URL` is set (and answers), else in process.
    pub async fn open(settings: &ContextSettings) -> Result<Wakeups, String> {
        let backend = match &settings.redis_url {
            None => Backend::InProcess(Mutex::default()),
            Some(_) => Backend::Redis {
                connection: RedisConnection::connect(settings).await?,
                claim: Script::new(CLAIM),
            },
        };
        Ok(Wakeups { backend })
    }

    /// Sets (or, with `None`, clears) when `key` is next due a timeout.
    pub async fn schedule(
        &self,
        key: &ConversationKey,
        due_at_ms: Option<i64>,
    ) -> Result<(), String> {
        let member = member(key);
        match &self.backend {
            Backend::Redis { connection, .. } => {
                // Setting or clearing a score is safe to repeat.
                let result: Result<i64, _> = once_more(|| {
                    let mut command = redis::cmd(if due_at_ms.is_some() { "ZADD" } else { "ZREM" });
                    command.arg(KEY);
                    if let Some(at) = due_at_ms {
                        command.arg(at);
                    }
                    command.arg(&member);
                    let mut connection = connection.clone();
                    async move { command.query_async(&mut connection).await }
                })
                .await;
                result
                    .map(drop)
                    .map_err(|e| format!("scheduling a timeout: {e}"))
            }
            Backend::InProcess(schedule) => {
                let mut schedule = schedule.lock().unwrap();
                if let Some(old) = schedule.by_member.remove(&member) {
                    schedule.due.remove(&(old, member.clone()));
                }
                if let Some(at) = due_at_ms {
                    schedule.due.insert((at, member.clone()));
                    schedule.by_member.insert(member, at);
                }
                Ok(())
            }
        }
    }

    /// Claims up to `limit` conversations due at or before `now_ms` for
    /// `lease`: no other caller gets them until it runs out, unless they are
    /// scheduled anew meanwhile.
    pub async fn claim_due(
        &self,
        now_ms: i64,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ConversationKey>, String> {
        let lease_end = now_ms.saturating_add(lease.as_millis() as i64);
        let members: Vec<String> = match &self.backend {
            Backend::Redis { connection, claim } => claim
                .key(KEY)
                .arg(now_ms)
                .arg(limit)
                .arg(lease_end)
                .invoke_async(&mut connection.clone())
                .await
                .map_err(|e| format!("claiming due timeouts: {e}"))?,
            Backend::InProcess(schedule) => {
                let mut schedule = schedule.lock().unwrap();
                let mut taken = Vec::new();
                while taken.len() < limit {
                    match schedule.due.first() {
                        Some((at, _)) if *at <= now_ms => {
                            let (_, member) = schedule.due.pop_first().expect("just seen");
                            taken.push(member);
                        }
                        _ => break,
                    }
                }
                for member in &taken {
                    schedule.due.insert((lease_end, member.clone()));
                    schedule.by_member.insert(member.clone(), lease_end);
                }
                taken
            }
        };
        Ok(members.iter().filter_map(|m| from_member(m)).collect())
    }
}

/// Tenant ids cannot contain ':', so the first one ends the tenant.
fn member(key: &ConversationKey) -> String {
    format!("{}:{}", key.tenant_id, key.conversation_id)
}

fn from_member(member: &str) -> Option<ConversationKey> {
    let (tenant, conversation) = member.split_once(':')?;
    Some(ConversationKey::new(tenant, conversation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_conversation_ids_with_colons() {
        let key = ConversationKey::new("acme", "web:42:x");
        assert_eq!(from_member(&member(&key)), Some(key));
    }
}

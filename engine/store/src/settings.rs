//! Storage settings, read from the environment (README.md, "Storage settings").

use std::path::PathBuf;
use std::time::Duration;

use crate::durable::{Durability, DurableSettings};

/// Where tenants, flows and plugins live.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`; `None` is the embedded SQLite file
    /// `mcp-engine.db` under `data_dir`.
    pub url: Option<String>,
    pub data_dir: PathBuf,
    pub max_connections: u32,
    /// How long a query may wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// How often a process sharing an SQLite file looks for changes made by
    /// others (PostgreSQL notifies instead).
    pub change_poll_interval: Duration,
}

/// Where live conversation context lives.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextSettings {
    /// `redis://…`; `None` keeps context in this process. With
    /// `redis_cluster`, one or more of the cluster's nodes, comma-separated.
    pub redis_url: Option<String>,
    /// `REDIS_CLUSTER`: `REDIS_URL` names a Redis Cluster.
    pub redis_cluster: bool,
    /// How long a turn waits for a busy conversation's lock.
    pub lock_timeout: Duration,
    /// How long a lock lives unless its holder renews it: how soon another
    /// process takes over a conversation whose holder died. A turn renews
    /// its lock every third of this while it runs.
    pub lock_ttl: Duration,
    /// Idle conversations are forgotten after this; `None` keeps them.
    pub idle_ttl: Option<Duration>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    pub database: DatabaseSettings,
    pub context: ContextSettings,
    pub durable: DurableSettings,
}

/// A setting that could not be read, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct SettingError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings::from_lookup(|_| None).expect("defaults are valid")
    }
}

impl StoreSettings {
    /// Reads `DATABASE_URL`, `MCP_DATA_DIR`, `DATABASE_MAX_CONNECTIONS`,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS`, `CHANGE_POLL_INTERVAL_MS`, `REDIS_URL`,
    /// `CONTEXT_LOCK_TIMEOUT_MS`, `CONTEXT_LOCK_TTL_MS`,
    /// `CONVERSATION_IDLE_TTL_SECONDS` (0 keeps conversations forever),
    /// `REDIS_CLUSTER`, `REDIS_CONNECT_TIMEOUT_MS`, `REDIS_RESPONSE_TIMEOUT_MS`,
    /// `CONTEXT_DURABILITY` (`async` or `sync`), `DURABLE_QUEUE_MAX` and
    /// `DURABLE_BATCH_MAX`.
    pub fn from_env() -> Result<StoreSettings, SettingError> {
        StoreSettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), from any source of variables.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<StoreSettings, SettingError> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let millis = |name: &'static str, default: u64| -> Result<Duration, SettingError> {
            number(name, var(name), default).map(Duration::from_millis)
        };

        let url = var("DATABASE_URL");
        if let Some(url) = &url
            && !["postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err(SettingError {
                name: "DATABASE_URL",
                value: url.clone(),
                reason: "must start with postgres://, postgresql:// or sqlite:".into(),
            });
        }
        let redis_url = var("REDIS_URL");
        if let Some(url) = &redis_url
            && !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err(SettingError {
                name: "REDIS_URL",
                value: url.clone(),
                reason: "must start with redis://, rediss:// or unix://".into(),
            });
        }
        let redis_cluster = match var("REDIS_CLUSTER").as_deref().map(str::trim) {
            None | Some("false" | "0" | "no") => false,
            Some("true" | "1" | "yes") => true,
            Some(other) => {
                return Err(SettingError {
                    name: "REDIS_CLUSTER",
                    value: other.to_owned(),
                    reason: "must be true or false".into(),
                });
            }
        };
        if redis_cluster && redis_url.is_none() {
            return Err(SettingError {
                name: "REDIS_CLUSTER",
                value: "true".into(),
                reason: "needs REDIS_URL to name the cluster's nodes".into(),
            });
        }
        let max_connections = number(
            "DATABASE_MAX_CONNECTIONS",
            var("DATABASE_MAX_CONNECTIONS"),
            10,
        )?;
        if max_connections == 0 {
            return Err(SettingError {
                name: "DATABASE_MAX_CONNECTIONS",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let idle_seconds = number(
            "CONVERSATION_IDLE_TTL_SECONDS",
            var("CONVERSATION_IDLE_TTL_SECONDS"),
            7 * 24 * 3600,
        )?;
        let positive = |name: &'static str, default: u64| -> Result<Duration, SettingError> {
            let value = millis(name, default)?;
            if value.is_zero() {
                return Err(SettingError {
                    name,
                    value: "0".into(),
                    reason: "must be above 0".into(),
                });
            }
            Ok(value)
        };
        let durability = match var("CONTEXT_DURABILITY").as_deref().map(str::trim) {
            None | Some("async") => Durability::Async,
            Some("sync") => Durability::Sync,
            Some(other) => {
                return Err(SettingError {
                    name: "CONTEXT_DURABILITY",
                    value: other.to_owned(),
                    reason: "must be async or sync".into(),
                });
            }
        };
        let count = |name: &'static str, default: u64| -> Result<usize, SettingError> {
            match number(name, var(name), default)? {
                0 => Err(SettingError {
                    name,
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                }),
                n => Ok(n as usize),
            }
        };
        Ok(StoreSettings {
            durable: DurableSettings {
                durability,
                queue_max: count("DURABLE_QUEUE_MAX", 10_000)?,
                batch_max: count("DURABLE_BATCH_MAX", 256)?,
            },
            database: DatabaseSettings {
                url,
                data_dir: var("MCP_DATA_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("mcp-data")),
                max_connections: max_connections as u32,
                acquire_timeout: millis("DATABASE_ACQUIRE_TIMEOUT_MS", 5_000)?,
                change_poll_interval: positive("CHANGE_POLL_INTERVAL_MS", 250)?,
            },
            context: ContextSettings {
                redis_url,
                redis_cluster,
                lock_timeout: millis("CONTEXT_LOCK_TIMEOUT_MS", 5_000)?,
                lock_ttl: positive("CONTEXT_LOCK_TTL_MS", 3_000)?,
                idle_ttl: (idle_seconds > 0).then(|| Duration::from_secs(idle_seconds)),
                connect_timeout: millis("REDIS_CONNECT_TIMEOUT_MS", 2_000)?,
                response_timeout: millis("REDIS_RESPONSE_TIMEOUT_MS", 2_000)?,
            },
        })
    }
}

impl DatabaseSettings {
    /// The URL to connect to: the configured one, or the embedded file.
    pub fn effective_url(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("mcp-engine.db").display()
            ),
        }
    }
}

fn number(name: &'static str, value: Option<String>, default: u64) -> Result<u64, SettingError> {
    match value {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|_| SettingError {
            name,
            value,
            reason: "must be a whole number".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<StoreSettings, SettingError> {
        StoreSettings::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn nothing_set_means_embedded_defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.database.url, None);
        assert_eq!(
            s.database.effective_url(),
            "sqlite://mcp-data/mcp-engine.db?mode=rwc"
        );
        assert_eq!(s.context.redis_url, None);
        assert_eq!(s.context.lock_timeout, Duration::from_millis(5_000));
        assert_eq!(s.context.idle_ttl, Some(Duration::from_secs(604_800)));
        assert_eq!(s.durable.durability, Durability::Async);
    }

    #[test]
    fn variables_override_defaults() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://root@127.0.0.1/test"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("CONTEXT_LOCK_TIMEOUT_MS", "250"),
            ("CONVERSATION_IDLE_TTL_SECONDS", "0"),
            ("MCP_DATA_DIR", "/var/lib/mcp"),
            ("CONTEXT_DURABILITY", "sync"),
        ])
        .unwrap();
        assert_eq!(s.database.effective_url(), "postgres://root@127.0.0.1/test");
        assert_eq!(
            s.context.redis_url.as_deref(),
            Some("redis://127.0.0.1:6379")
        );
        assert_eq!(s.context.lock_timeout, Duration::from_millis(250));
        assert_eq!(s.context.idle_ttl, None);
        assert_eq!(s.database.data_dir, PathBuf::from("/var/lib/mcp"));
        assert_eq!(s.durable.durability, Durability::Sync);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = settings(&[("CONTEXT_LOCK_TIMEOUT_MS", "5s")]).unwrap_err();
        assert_eq!(err.name, "CONTEXT_LOCK_TIMEOUT_MS");
        assert!(err.to_string().contains("whole number"), "{err}");

        let err = settings(&[("DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.name, "DATABASE_URL");

        let err = settings(&[("REDIS_URL", "127.0.0.1:6379")]).unwrap_err();
        assert_eq!(err.name, "REDIS_URL");

        let err = settings(&[("REDIS_CLUSTER", "true")]).unwrap_err();
        assert_eq!(err.name, "REDIS_CLUSTER");
        assert!(err.to_string().contains("REDIS_URL"), "{err}");

        let err = settings(&[("CONTEXT_DURABILITY", "always")]).unwrap_err();
        assert_eq!(err.name, "CONTEXT_DURABILITY");
        assert!(err.to_string().contains("async or sync"), "{err}");

        for zero in [
            "DATABASE_MAX_CONNECTIONS",
            "CONTEXT_LOCK_TTL_MS",
            "CHANGE_POLL_INTERVAL_MS",
            "DURABLE_QUEUE_MAX",
            "DURABLE_BATCH_MAX",
        ] {
            let err = settings(&[(zero, "0")]).unwrap_err();
            assert_eq!(err.name, zero);
        }
    }
}

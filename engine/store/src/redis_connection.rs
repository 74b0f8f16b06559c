//! One connection to Redis for every part of the store that uses it: a single
//! server (through a connection manager that reconnects) or a Redis Cluster
//! (whose client follows MOVED and ASK redirects and reconnects on its own).
//!
//! Everything the store sends touches one hash slot per command or script
//! (a conversation's keys share the `{tenant:conversation}` tag; the wakeup
//! schedule and the analytics stream are one key each), so the same code
//! runs on both.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::settings::ContextSettings;

#[derive(Clone)]
pub(crate) enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Connects now, so a wrong `REDIS_URL` fails at start-up. With
    /// `REDIS_CLUSTER`, `REDIS_URL` lists one or more of the cluster's nodes,
    /// comma-separated; the rest are discovered.
    pub(crate) async fn connect(settings: &ContextSettings) -> Result<RedisConnection, String> {
        let url = settings
            .redis_url
            .as_deref()
            .ok_or_else(|| "REDIS_URL is not set".to_owned())?;
        if settings.redis_cluster {
            let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
            let client = ClusterClient::builder(nodes)
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.response_timeout)
                .retries(3)
                .build()
                .map_err(|e| format!("REDIS_URL: {e}"))?;
            let connection = client
                .get_async_connection()
                .await
                .map_err(|e| format!("connecting to the Redis Cluster: {e}"))?;
            return Ok(RedisConnection::Cluster(connection));
        }
        let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(3);
        ConnectionManager::new_with_config(client, config)
            .await
            .map(RedisConnection::Single)
            .map_err(|e| format!("connecting to Redis: {e}"))
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

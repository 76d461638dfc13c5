//! The Redis connection pool shared by the session store and the event log, and the one place
//! that bounds every Redis operation in time and counts it in the metrics.
//!
//! A Redis that is down or slow surfaces as [`RedisError`], which callers turn into 503 for the
//! client: never into "session not found".
//!
//! Three deployments (`redis.mode`): one server (`standalone`), the master that Redis Sentinel
//! reports (`sentinel`: each new pooled connection asks the Sentinels, so after a failover new
//! connections go to the new master), or a Redis Cluster (`cluster`: each pooled connection is
//! a cluster connection that routes every command, script and MULTI by its keys' slot; all of a
//! session's keys share the `{<sid>}` hash tag, so they always land in one slot). Callers see
//! one [`Connection`] type either way.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionLike;
use deadpool_redis::{Pool, PoolConfig, Runtime, cluster, sentinel};

use super::RedisError;
use super::settings::{cluster_nodes, connection_info, sentinel_settings};
use crate::config::{RedisConfig, RedisMode};
use crate::telemetry::Metrics;

/// A pooled connection to whichever Redis deployment is configured; a
/// [`ConnectionLike`], so commands, pipelines and scripts run on it as on any connection.
pub enum Connection {
    Standalone(deadpool_redis::Connection),
    Sentinel(sentinel::Connection),
    Cluster(cluster::Connection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a ::redis::Cmd,
    ) -> ::redis::RedisFuture<'a, ::redis::Value> {
        match self {
            Connection::Standalone(conn) => conn.req_packed_command(cmd),
            Connection::Sentinel(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> ::redis::RedisFuture<'a, Vec<::redis::Value>> {
        match self {
            Connection::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(conn) => conn.get_db(),
            Connection::Sentinel(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The pool of the configured mode.
#[derive(Clone)]
enum Pools {
    Standalone(Pool),
    Sentinel(sentinel::Pool),
    Cluster(cluster::Pool),
}

impl Pools {
    fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        let size = config.pool_size;
        let created = |e: &dyn std::fmt::Display| RedisError::Config(e.to_string());
        Ok(match config.mode {
            RedisMode::Standalone => {
                let mut pool_config =
                    deadpool_redis::Config::from_connection_info(connection_info(config)?);
                pool_config.pool = Some(PoolConfig::new(size));
                let pool = pool_config
                    .create_pool(Some(Runtime::Tokio1))
                    .map_err(|e| created(&e))?;
                Pools::Standalone(pool)
            }
            RedisMode::Sentinel => {
                let (sentinels, master_name, node) = sentinel_settings(config)?;
                let node = sentinel::SentinelNodeConnectionInfo {
                    tls_mode: node.tls.then_some(sentinel::TlsMode::Secure),
                    redis_connection_info: Some(node.settings.into()),
                };
                let manager = sentinel::Manager::new(
                    sentinels,
                    master_name,
                    Some(node),
                    sentinel::SentinelServerType::Master,
                )
                .map_err(|e| created(&e))?;
                let pool = sentinel::Pool::builder(manager)
                    .max_size(size)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|e| created(&e))?;
                Pools::Sentinel(pool)
            }
            RedisMode::Cluster => {
                let manager = cluster::Manager::new(cluster_nodes(config)?, false)
                    .map_err(|e| created(&e))?;
                let pool = cluster::Pool::builder(manager)
                    .max_size(size)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(|e| created(&e))?;
                Pools::Cluster(pool)
            }
        })
    }

    async fn get(&self) -> Result<Connection, String> {
        match self {
            Pools::Standalone(pool) => pool.get().await.map(Connection::Standalone),
            Pools::Sentinel(pool) => pool.get().await.map(Connection::Sentinel),
            Pools::Cluster(pool) => pool.get().await.map(Connection::Cluster),
        }
        .map_err(|e| e.to_string())
    }
}

/// A pool of Redis connections with a per-operation deadline.
#[derive(Clone)]
pub struct RedisPool {
    pool: Pools,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl RedisPool {
    /// Builds the pool; connections are opened on first use, so a Redis that is down at start
    /// makes requests fail with 503 rather than stopping the gateway.
    pub fn new(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<Self, RedisError> {
        Ok(Self {
            pool: Pools::new(config)?,
            timeout: config.timeout,
            metrics,
        })
    }

    /// Runs one operation on a pooled connection, within the deadline, and counts it.
    pub async fn run<T, F, Fut>(&self, op: &'static str, operation: F) -> Result<T, RedisError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            let connection = self
                .pool
                .get()
                .await
                .map_err(|reason| RedisError::Connect { op, reason })?;
            operation(connection)
                .await
                .map_err(|e| RedisError::Command {
                    op,
                    reason: e.to_string(),
                })
        })
        .await
        .unwrap_or(Err(RedisError::Timeout {
            op,
            after: self.timeout,
        }));
        self.metrics
            .store_operation(op, result.is_ok(), started.elapsed().as_secs_f64());
        result
    }

    /// The per-operation deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

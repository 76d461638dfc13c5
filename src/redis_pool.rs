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

use deadpool_redis::{Pool, PoolConfig, Runtime, cluster, sentinel};
use redis::aio::ConnectionLike;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, TlsMode};

use crate::config::{RedisConfig, RedisMode};
use crate::redis_pubsub::Target;
use crate::telemetry::Metrics;

/// Why a Redis operation failed. Messages carry no credentials.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis configuration: {0}")]
    Config(String),
    #[error("redis {op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("no Redis connection for {op}: {reason}")]
    Connect { op: &'static str, reason: String },
    #[error("redis {op} failed: {reason}")]
    Command { op: &'static str, reason: String },
}

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
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Standalone(conn) => conn.req_packed_command(cmd),
            Connection::Sentinel(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
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
        Fut: Future<Output = redis::RedisResult<T>>,
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

/// Standalone mode: parses `redis.url` and applies credentials and database from their own
/// settings.
pub fn connection_info(config: &RedisConfig) -> Result<ConnectionInfo, RedisError> {
    let info = parse("redis.url", &config.url)?;
    let settings = node_settings(config, info.redis_settings().clone())?;
    Ok(info.set_redis_settings(settings))
}

/// What the [`Subscriber`](crate::redis_pubsub::Subscriber) connects to: the server
/// (standalone), any cluster node (classic `PUBLISH` reaches every node of a cluster), or the
/// master the Sentinels report at each (re)connect.
pub fn subscriber_target(config: &RedisConfig) -> Result<Target, RedisError> {
    let client = |info: ConnectionInfo| {
        Client::open(info).map_err(|e| RedisError::Config(format!("redis pub/sub: {e}")))
    };
    Ok(match config.mode {
        RedisMode::Standalone => Target::Server(client(connection_info(config)?)?),
        RedisMode::Cluster => Target::AnyNode(
            cluster_nodes(config)?
                .into_iter()
                .map(client)
                .collect::<Result<_, _>>()?,
        ),
        RedisMode::Sentinel => {
            let (sentinels, master_name, node) = sentinel_settings(config)?;
            let mut info =
                SentinelNodeConnectionInfo::default().set_redis_connection_info(node.settings);
            if node.tls {
                info = info.set_tls_mode(TlsMode::Secure);
            }
            let client = SentinelClient::build(
                sentinels,
                master_name,
                Some(info),
                SentinelServerType::Master,
            )
            .map_err(|e| RedisError::Config(format!("redis.sentinels: {e}")))?;
            Target::SentinelMaster(Box::new(client))
        }
    })
}

/// Cluster mode: the seed nodes, with the credentials (a cluster has only database 0).
fn cluster_nodes(config: &RedisConfig) -> Result<Vec<ConnectionInfo>, RedisError> {
    config
        .nodes
        .iter()
        .enumerate()
        .map(|(index, url)| {
            let info = parse(&format!("redis.nodes[{index}]"), url)?;
            let settings = node_settings(config, RedisConnectionInfo::default())?;
            Ok(info.set_redis_settings(settings))
        })
        .collect()
}

/// How to reach the master a Sentinel reports.
struct MasterSettings {
    settings: RedisConnectionInfo,
    /// TLS, as for the Sentinels (`rediss://`).
    tls: bool,
}

/// Sentinel mode: the Sentinels (no credentials: those are the master's), the master's name,
/// and how to connect to the master.
fn sentinel_settings(
    config: &RedisConfig,
) -> Result<(Vec<ConnectionInfo>, String, MasterSettings), RedisError> {
    let sentinels = config
        .sentinels
        .iter()
        .enumerate()
        .map(|(index, url)| parse(&format!("redis.sentinels[{index}]"), url))
        .collect::<Result<Vec<_>, _>>()?;
    let master_name = config
        .master_name
        .clone()
        .ok_or_else(|| RedisError::Config("redis.master_name is not set".into()))?;
    let tls = sentinels
        .first()
        .is_some_and(|info| matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
    let settings = node_settings(config, RedisConnectionInfo::default())?;
    Ok((sentinels, master_name, MasterSettings { settings, tls }))
}

fn parse(key: &str, url: &str) -> Result<ConnectionInfo, RedisError> {
    url.into_connection_info()
        .map_err(|e| RedisError::Config(format!("{key}: {e}")))
}

/// The database number sessions live in (`redis.db`, else the URL's, else 0).
pub fn database(config: &RedisConfig) -> i64 {
    config
        .db
        .or_else(|| {
            parse("redis.url", &config.url)
                .ok()
                .map(|info| info.redis_settings().db())
        })
        .unwrap_or(0)
}

/// Applies `redis.username`, the password and `redis.db` to a data node's settings.
fn node_settings(
    config: &RedisConfig,
    mut settings: RedisConnectionInfo,
) -> Result<RedisConnectionInfo, RedisError> {
    if let Some(username) = &config.username {
        settings = settings.set_username(username);
    }
    if let Some(password) = password(config)? {
        settings = settings.set_password(password);
    }
    if let Some(db) = config.db {
        settings = settings.set_db(db);
    }
    Ok(settings)
}

fn password(config: &RedisConfig) -> Result<Option<String>, RedisError> {
    if let Some(password) = &config.password {
        return Ok(Some(password.expose().to_owned()));
    }
    let Some(path) = &config.password_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| RedisError::Config(format!("redis.password_file {}: {e}", path.display())))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}

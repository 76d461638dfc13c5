//! The connections shared by the session store and the event log, and the one place that
//! bounds every Redis operation in time and counts it in the metrics.
//!
//! A Redis that is down or slow surfaces as [`RedisError`], which callers turn into 503 for the
//! client: never into "session not found".
//!
//! Three deployments (`redis.mode`):
//! - `standalone`: a multiplexed connection ([`ConnectionManager`]) per thread, that every
//!   request served on that thread pipelines its commands on. There is no checkout and no
//!   health ping, so an operation is exactly its own round trip. It speaks RESP3 (Redis 6 or
//!   newer), so the server closing it (a restart, a failover) is noticed at once and it is
//!   reconnected in the background while operations wait, within their deadline. An operation
//!   that times out replaces its thread's connection, so a half-open connection (a host gone
//!   without a reset) heals at the next request.
//! - `cluster`: a cluster connection per thread, also multiplexed, that routes every command,
//!   script and MULTI by its keys' slot; all of a session's keys share the `{<sid>}` hash tag,
//!   so they always land in one slot.
//! - `sentinel`: a deadpool-redis pool of `redis.pool_size` connections to the master the
//!   Sentinels report. Each new connection asks the Sentinels, which is what follows a
//!   failover; the price is the pool's ping on every checkout (one more round trip).
//!
//! Callers see one [`Connection`] type either way.
//!
//! **Per thread.** A multiplexed connection is driven by a task on the runtime that opened it,
//! and each actix worker thread has its own runtime. With one connection for the replica, a
//! worker's round trip on another worker's connection woke both threads twice (the command
//! handed over, the answer handed back: an eventfd write and an `epoll_wait` each). So each
//! thread that uses Redis opens its own, as `upstream/http_client/` does for HTTP: the
//! threads are few and fixed (the workers, the main runtime), and so are the connections.
//! Sentinel mode's pool stays one per replica, so `redis.pool_size` bounds its connections.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::ProtocolVersion;
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use deadpool_redis::{Runtime, sentinel};
use thread_local::ThreadLocal;
use tokio::sync::OnceCell;

use super::RedisError;
use super::settings::{cluster_nodes, connection_info, sentinel_settings};
use crate::config::{RedisConfig, RedisMode};
use crate::telemetry::Metrics;

/// A connection to whichever Redis deployment is configured; a [`ConnectionLike`], so
/// commands, pipelines and scripts run on it as on any connection.
pub enum Connection {
    Standalone(ConnectionManager),
    Sentinel(sentinel::Connection),
    Cluster(ClusterConnection),
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

impl Connection {
    /// Runs independent commands together; their answers come in order. They go as one
    /// pipeline (one round trip), except on a cluster, whose pipelines must stay within one
    /// slot: there they are sent at once on its multiplexed connection, routed by their keys.
    pub async fn query_each<T: ::redis::FromRedisValue>(
        self,
        commands: Vec<::redis::Cmd>,
    ) -> ::redis::RedisResult<Vec<T>> {
        match self {
            Connection::Cluster(conn) => {
                let sent = commands.iter().map(|command| {
                    let mut conn = conn.clone();
                    async move { command.query_async(&mut conn).await }
                });
                futures::future::try_join_all(sent).await
            }
            mut connection => {
                let mut pipe = ::redis::pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                pipe.query_async(&mut connection).await
            }
        }
    }
}

/// The standalone connections, one per thread, each replaced when an operation on it times
/// out.
struct Standalone {
    client: ::redis::Client,
    config: ConnectionManagerConfig,
    /// Each thread's connection and its generation (counting replacements).
    per_thread: ThreadLocal<RefCell<(u64, ConnectionManager)>>,
}

impl Standalone {
    /// Builds the calling thread's connection (not yet opened) at once, so that settings the
    /// client refuses fail the start.
    fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        let info = connection_info(config)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client =
            ::redis::Client::open(info.set_redis_settings(settings)).map_err(config_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_number_of_retries(RECONNECT_ATTEMPTS);
        let standalone = Self {
            client,
            config,
            per_thread: ThreadLocal::new(),
        };
        let first = standalone.fresh().map_err(config_error)?;
        standalone.per_thread.get_or(|| RefCell::new((0, first)));
        Ok(standalone)
    }

    /// A connection not yet opened: it connects on its first use, from the runtime using it.
    fn fresh(&self) -> ::redis::RedisResult<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
    }

    /// This thread's connection and its generation.
    fn connection(&self) -> Result<(u64, ConnectionManager), String> {
        let current = self
            .per_thread
            .get_or_try(|| self.fresh().map(|manager| RefCell::new((0, manager))))
            .map_err(|error| error.to_string())?;
        let current = current.borrow();
        Ok((current.0, current.1.clone()))
    }

    /// Replaces this thread's connection if it is still generation `stale` (once, however
    /// many operations timed out on it). Called on the thread the operation ran on: every
    /// runtime of the gateway is single-threaded, so a task never moves between threads.
    fn replace(&self, stale: u64) {
        let Some(current) = self.per_thread.get() else {
            return;
        };
        if current.borrow().0 != stale {
            return;
        }
        match self.fresh() {
            Ok(fresh) => *current.borrow_mut() = (stale + 1, fresh),
            Err(error) => tracing::warn!(%error, "cannot replace the Redis connection"),
        }
    }
}

/// A dropped standalone connection is reconnected in the background, with exponential backoff
/// from the first delay to the last, this many times (about a minute); operations wait for it
/// within their deadline. After the last attempt, the next operation starts another round.
const RECONNECT_ATTEMPTS: usize = 64;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);

/// The connections of the configured mode.
enum Connections {
    Standalone(Standalone),
    Sentinel(sentinel::Pool),
    Cluster {
        client: ClusterClient,
        /// Each thread's, connected on its first use there; a failed attempt leaves it empty
        /// for the next one.
        per_thread: ThreadLocal<OnceCell<ClusterConnection>>,
    },
}

/// Which connection an operation ran on, to replace it when the operation timed out.
#[derive(Clone, Copy)]
enum Used {
    Standalone(u64),
    Other,
}

impl Connections {
    fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        Ok(match config.mode {
            RedisMode::Standalone => Connections::Standalone(Standalone::new(config)?),
            RedisMode::Sentinel => Connections::Sentinel(sentinel_pool(config)?),
            RedisMode::Cluster => Connections::Cluster {
                client: ClusterClient::builder(cluster_nodes(config)?)
                    .connection_timeout(config.timeout)
                    .build()
                    .map_err(config_error)?,
                per_thread: ThreadLocal::new(),
            },
        })
    }

    /// The sentinel checkout and the cluster connect are boxed: deadpool's checkout future is
    /// about 10 KiB, and inline it made every Redis operation's future (and so every request's)
    /// that large, to be copied on each move.
    async fn get(&self) -> Result<(Used, Connection), String> {
        match self {
            Connections::Standalone(standalone) => {
                let (generation, manager) = standalone.connection()?;
                Ok((
                    Used::Standalone(generation),
                    Connection::Standalone(manager),
                ))
            }
            Connections::Sentinel(pool) => Box::pin(pool.get())
                .await
                .map(|c| (Used::Other, Connection::Sentinel(c)))
                .map_err(|e| e.to_string()),
            Connections::Cluster { client, per_thread } => {
                let connection = per_thread.get_or_default();
                Box::pin(connection.get_or_try_init(|| client.get_async_connection()))
                    .await
                    .map(|c| (Used::Other, Connection::Cluster(c.clone())))
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn timed_out(&self, used: Used) {
        if let (Connections::Standalone(standalone), Used::Standalone(generation)) = (self, used) {
            standalone.replace(generation);
        }
    }
}

/// A setting the Redis client refused.
fn config_error(error: impl std::fmt::Display) -> RedisError {
    RedisError::Config(error.to_string())
}

/// Sentinel mode's pool: each new connection goes to the master the Sentinels report now.
fn sentinel_pool(config: &RedisConfig) -> Result<sentinel::Pool, RedisError> {
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
    .map_err(config_error)?;
    sentinel::Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(config_error)
}

/// Redis connections with a per-operation deadline.
#[derive(Clone)]
pub struct RedisPool {
    connections: Arc<Connections>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl RedisPool {
    /// Sets the connections up; they are opened on first use, so a Redis that is down at start
    /// makes requests fail with 503 rather than stopping the gateway.
    pub fn new(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<Self, RedisError> {
        Ok(Self {
            connections: Arc::new(Connections::new(config)?),
            timeout: config.timeout,
            metrics,
        })
    }

    /// Runs one operation on a connection, within the deadline, and counts it.
    pub async fn run<T, F, Fut>(&self, op: &'static str, operation: F) -> Result<T, RedisError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let mut used = None;
        let result = tokio::time::timeout(self.timeout, async {
            let (on, connection) = self
                .connections
                .get()
                .await
                .map_err(|reason| RedisError::Connect { op, reason })?;
            used = Some(on);
            operation(connection)
                .await
                .map_err(|e| RedisError::Command {
                    op,
                    reason: e.to_string(),
                })
        })
        .await
        .unwrap_or_else(|_| {
            if let Some(used) = used {
                self.connections.timed_out(used);
            }
            Err(RedisError::Timeout {
                op,
                after: self.timeout,
            })
        });
        self.metrics
            .store_operation(op, result.is_ok(), started.elapsed().as_secs_f64());
        result
    }

    /// The per-operation deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

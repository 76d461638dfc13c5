//! The Redis connection pool shared by the session store and the event log, and the one place
//! that bounds every Redis operation in time and counts it in the metrics.
//!
//! A Redis that is down or slow surfaces as [`RedisError`], which callers turn into 503 for the
//! client: never into "session not found".

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::{Connection, Pool, PoolConfig, Runtime};

use crate::config::RedisConfig;
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

/// A pool of Redis connections with a per-operation deadline.
#[derive(Clone)]
pub struct RedisPool {
    pool: Pool,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl RedisPool {
    /// Builds the pool; connections are opened on first use, so a Redis that is down at start
    /// makes requests fail with 503 rather than stopping the gateway.
    pub fn new(config: &RedisConfig, metrics: Arc<Metrics>) -> Result<Self, RedisError> {
        let info = connection_info(config)?;
        let mut pool_config = deadpool_redis::Config::from_connection_info(info);
        pool_config.pool = Some(PoolConfig::new(config.pool_size));
        let pool = pool_config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| RedisError::Config(e.to_string()))?;
        Ok(Self {
            pool,
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
            let connection = self.pool.get().await.map_err(|e| RedisError::Connect {
                op,
                reason: e.to_string(),
            })?;
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

/// Parses the URL and applies credentials and database from their own settings.
pub fn connection_info(config: &RedisConfig) -> Result<redis::ConnectionInfo, RedisError> {
    let mut info: redis::ConnectionInfo =
        redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
            .map_err(|e| RedisError::Config(format!("redis.url: {e}")))?;
    let mut settings = info.redis_settings().clone();
    if let Some(username) = &config.username {
        settings = settings.set_username(username);
    }
    if let Some(password) = password(config)? {
        settings = settings.set_password(password);
    }
    if let Some(db) = config.db {
        settings = settings.set_db(db);
    }
    info = info.set_redis_settings(settings);
    Ok(info)
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

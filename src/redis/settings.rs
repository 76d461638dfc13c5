//! Connection settings shared by the pool ([`super::pool`]) and the pub/sub connection
//! ([`super::pubsub`]), from `[redis]`: `url` (standalone), `nodes` (cluster), `sentinels` and
//! `master_name` (Sentinel), TLS by `rediss://`, and the data nodes' credentials (`username`,
//! `password` or `password_file`, read when a connection is configured) and database (`db`).

use ::redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use super::RedisError;
use crate::config::RedisConfig;

/// Standalone mode: parses `redis.url` and applies credentials and database from their own
/// settings.
pub fn connection_info(config: &RedisConfig) -> Result<ConnectionInfo, RedisError> {
    let info = parse("redis.url", &config.url)?;
    let settings = node_settings(config, info.redis_settings().clone())?;
    Ok(info.set_redis_settings(settings))
}

/// Cluster mode: the seed nodes, with the credentials (a cluster has only database 0).
pub(super) fn cluster_nodes(config: &RedisConfig) -> Result<Vec<ConnectionInfo>, RedisError> {
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
pub(super) struct MasterSettings {
    pub(super) settings: RedisConnectionInfo,
    /// TLS, as for the Sentinels (`rediss://`).
    pub(super) tls: bool,
}

/// Sentinel mode: the Sentinels (no credentials: those are the master's), the master's name,
/// and how to connect to the master.
pub(super) fn sentinel_settings(
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
        .is_some_and(|info| matches!(info.addr(), ::redis::ConnectionAddr::TcpTls { .. }));
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

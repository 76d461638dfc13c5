//! Everything mcpgate does with Redis below the session store, the event log and the limits:
//! the connection settings ([`settings`]), the pool every command goes through, with its
//! deadline and metrics ([`pool`]), the replica's pub/sub connection ([`pubsub`]), the one
//! key scheme, with the table of every key and channel ([`keys`]), and, for the round trips of
//! every request, hashes as read ([`hash`]) and commands built at their size ([`command`]).
//!
//! Dependencies run one way: `keys`, `settings`, `hash` and `command` stand alone, `pool` uses
//! `settings`, and `pubsub` uses both (it publishes through the pool).

use std::time::Duration;

pub mod command;
pub mod hash;
pub mod keys;
pub mod pool;
pub mod pubsub;
pub mod settings;

pub use hash::HashFields;
pub use pool::{Connection, RedisPool};
pub use pubsub::{Notification, Subscriber, Subscription, Target};

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

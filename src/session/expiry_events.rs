//! Counting expirations as Redis reports them, where the operator enabled keyspace
//! notifications for expired keys (`notify-keyspace-events` including `Ex`). Every replica
//! hears every event; the tombstone flip in [`RedisStore::notice_expired_key`] lets exactly one
//! of them count it. Without notifications nothing arrives here, and an expiry is counted when
//! a client comes back with the id (`Lookup::Expired { first_notice }`).
//!
//! Redis Cluster publishes keyspace events only on the node holding the key, so in cluster mode
//! this watcher is not started and expirations are counted on the client's return.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::RedisStore;
use crate::redis_pubsub::{Notification, Subscriber};
use crate::telemetry::Metrics;

/// Listens for `expired` keyspace events of database `db` until the process ends.
pub fn watch(
    store: Arc<RedisStore>,
    subscriber: Arc<Subscriber>,
    db: i64,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = subscriber
            .subscribe(&format!("__keyevent@{db}__:expired"))
            .await;
        loop {
            let Notification::Message(key) = events.recv().await else {
                continue;
            };
            match store.notice_expired_key(&key).await {
                Ok(true) => metrics.sessions_expired.inc(),
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, "could not record an expiry event"),
            }
        }
    })
}

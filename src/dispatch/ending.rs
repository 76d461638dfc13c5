//! How sessions end on this replica, whoever noticed: a client coming back with an expired id,
//! an open stream finding its session gone, a Redis keyspace event, or a DELETE. Ending a
//! session closes its streams and requests here, frees an expired session's slot in its
//! owner's session count (when the owner is known here), and (for the one notice per expiry
//! that [`Lookup::Expired`] grants) closes its upstream sessions and counts it.
//!
//! Nothing scans the store. Three things bound how long an ended session lingers here:
//! - with Redis keyspace notifications for expired keys (`notify-keyspace-events` with `Ex`),
//!   every replica hears each expiry and ends the session at once ([`watch_expiries`]);
//! - without them, an open SSE stream checks its session at every keep-alive
//!   (`http::sse`, every 15 s) and ends it when the record is gone;
//! - [`Gateway::housekeeping`] drops entries of this replica's [`Hub`](super::Hub) that were
//!   unused for [`Settings::hub_idle`](super::Settings) and hold nothing open; those with
//!   resource subscriptions are checked against the store first.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Caller, Gateway};
use crate::redis::{Notification, Subscriber, keys};
use crate::session::{Lookup, Orphans, SessionId, StoreError};
use crate::upstream::CallContext;

/// How often [`Gateway::housekeeping`] runs.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);
/// Most subscribed idle entries checked against the store per housekeeping round.
const CHECKS_PER_ROUND: usize = 256;

/// Where Redis publishes expired-key events (standalone and Sentinel deployments).
pub struct ExpiryEvents {
    pub subscriber: Arc<Subscriber>,
    pub db: i64,
}

impl Gateway {
    /// Asks the store whether a session this replica thought live is gone; if so, ends it here.
    /// Returns whether it is still live. A store failure counts as live: an outage must not end
    /// sessions.
    pub async fn still_live(&self, id: &SessionId) -> bool {
        match self.store.exists(id).await {
            Ok(true) | Err(_) => true,
            Ok(false) => !self.notice_gone(id).await.is_ok_and(|ended| ended),
        }
    }

    /// Classifies a session whose record seems gone and ends it here; `Ok(false)` when it is
    /// live after all.
    async fn notice_gone(&self, id: &SessionId) -> Result<bool, StoreError> {
        match self.store.notice_gone(id).await? {
            None => Ok(false),
            Some(lookup) => {
                self.ended(id, lookup, Caller::Gateway);
                Ok(true)
            }
        }
    }

    /// Ends a session that a lookup (for `caller`) found gone: streams and requests here
    /// stop, an expired session's slot in its owner's session count is freed; the first notice
    /// of an expiry is counted and closes the upstream sessions.
    pub(super) fn ended(&self, id: &SessionId, lookup: Lookup, caller: Caller<'_>) {
        if matches!(lookup, Lookup::Expired { .. }) {
            self.free_expired_slot(id, caller);
        }
        if let Lookup::Expired {
            first_notice: true,
            orphans,
        } = lookup
        {
            self.metrics.sessions_expired.inc();
            self.close_orphans(id, orphans);
        }
        self.hub.close(id);
        self.upstreams().session_ended(id);
    }

    /// Ends upstream sessions that outlived their session, in the background.
    fn close_orphans(&self, id: &SessionId, orphans: Orphans) {
        for (name, upstream_session) in orphans {
            let Some(upstream) = self.upstreams().by_name(&name) else {
                continue;
            };
            let ctx = CallContext {
                session: id.clone(),
                upstream_session,
            };
            tokio::spawn(async move { upstream.close_session(&ctx).await });
        }
    }

    /// One round of freeing this replica's memory of sessions it no longer serves.
    pub async fn housekeeping(&self) {
        let pruned = self.hub.prune(self.settings.hub_idle);
        for id in pruned.to_check.into_iter().take(CHECKS_PER_ROUND) {
            if self.still_live(&id).await {
                self.hub.touch(&id);
            }
        }
        let held = i64::try_from(self.hub.sessions_held()).unwrap_or(i64::MAX);
        self.metrics.sessions_held.set(held);
    }
}

/// Runs housekeeping every few seconds for as long as the gateway exists.
pub(super) async fn keep_house(gateway: Weak<Gateway>) {
    let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        gateway.housekeeping().await;
    }
}

/// Ends sessions as Redis reports their records expired, until the gateway is gone. Every
/// replica hears every event; the store's tombstone flip lets one of them count the expiry and
/// close the upstream sessions. Redis Cluster publishes keyspace events only on the node
/// holding the key, so cluster deployments rely on the other two mechanisms.
pub(super) async fn watch_expiries(gateway: Weak<Gateway>, events: ExpiryEvents) {
    let channel = keys::expired_keys_channel(events.db);
    let mut expired = events.subscriber.subscribe(&channel).await;
    loop {
        let Notification::Message(key) = expired.recv().await else {
            continue;
        };
        let Some(id) = keys::session_of_expired_key(&key) else {
            continue;
        };
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        if let Err(error) = gateway.notice_gone(&id).await {
            tracing::debug!(%error, "could not record an expiry event");
        }
    }
}

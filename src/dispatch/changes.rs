//! Upstream list changes, for the `subscriptions/listen` streams of every replica.
//!
//! A listen stream relays the list changes of legacy upstreams too (modern upstreams send
//! theirs on listen streams of their own, `listen.rs`). Those reach the gateway as unsolicited
//! messages (`unsolicited.rs`): a stdio child's `notifications/<list>/list_changed`, an HTTP
//! upstream's on a session's held GET stream, and the gateway's own announcement when an
//! upstream comes back up. Each is announced at most once per [`COALESCE`] per upstream and
//! list on this replica: in a fleet on the Redis channel every replica hears
//! (`Bus::announce`), alone on a local broadcast of [`LOCAL_CAPACITY`]. A listener that falls
//! behind, or whose pub/sub connection dropped, hears a [`Heard::Gap`] and tells its client
//! that every list it listens to may have changed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::Gateway;
use crate::protocol::Method;
use crate::redis::pubsub::{Notification, Subscription};
use crate::sync::lock;

/// Changes a replica without a fleet keeps for listeners that fall behind.
pub const LOCAL_CAPACITY: usize = 256;
/// Repeats of one upstream's change of one list within this are announced once.
pub const COALESCE: Duration = Duration::from_millis(250);

/// One upstream's list changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    pub upstream: String,
    /// The notification's method, `notifications/<list>/list_changed`.
    pub method: String,
}

/// What a listener hears next.
pub(super) enum Heard {
    Change(Change),
    /// Changes may have been missed.
    Gap,
}

/// This replica's side of the feed.
pub(super) struct Changes {
    local: broadcast::Sender<Change>,
    /// When each change was last announced (one entry per upstream and list).
    announced: Mutex<HashMap<Change, Instant>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            local: broadcast::channel(LOCAL_CAPACITY).0,
            announced: Mutex::default(),
        }
    }
}

impl Changes {
    /// Whether `change` was not announced within [`COALESCE`]; marks it announced now.
    fn is_news(&self, change: &Change) -> bool {
        let now = Instant::now();
        let mut announced = lock(&self.announced);
        let recent = announced
            .get(change)
            .is_some_and(|at| now.duration_since(*at) < COALESCE);
        if !recent {
            announced.insert(change.clone(), now);
        }
        !recent
    }
}

/// The changes one listen stream hears.
pub(super) enum ChangeReceiver {
    Local(broadcast::Receiver<Change>),
    Fleet(Subscription),
}

impl ChangeReceiver {
    pub async fn next(&mut self) -> Heard {
        match self {
            ChangeReceiver::Local(receiver) => match receiver.recv().await {
                Ok(change) => Heard::Change(change),
                Err(broadcast::error::RecvError::Lagged(_)) => Heard::Gap,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            },
            ChangeReceiver::Fleet(subscription) => loop {
                match subscription.recv().await {
                    Notification::Gap => return Heard::Gap,
                    Notification::Message(payload) => {
                        if let Ok(change) = serde_json::from_str(&payload) {
                            return Heard::Change(change);
                        }
                    }
                }
            },
        }
    }
}

impl Gateway {
    /// Announces that `upstream` sent (or the gateway made up) the notification `method`, when
    /// it is a list change.
    pub(super) async fn announce_change(&self, upstream: &str, method: &str) {
        let is_list_change = matches!(
            Method::parse(method),
            Method::ToolsListChanged | Method::PromptsListChanged | Method::ResourcesListChanged
        );
        if !is_list_change {
            return;
        }
        let change = Change {
            upstream: upstream.to_owned(),
            method: method.to_owned(),
        };
        if !self.changes.is_news(&change) {
            return;
        }
        match &self.bus {
            Some(bus) => {
                if let Err(error) = bus.announce(&change).await {
                    tracing::warn!(%error, "could not announce an upstream's list change to the fleet");
                }
            }
            None => {
                let _ = self.changes.local.send(change);
            }
        }
    }

    /// Starts hearing the changes announced from now on.
    pub(super) async fn hear_changes(&self) -> ChangeReceiver {
        match &self.bus {
            Some(bus) => ChangeReceiver::Fleet(bus.hear_changes().await),
            None => ChangeReceiver::Local(self.changes.local.subscribe()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_repeated_at_once_is_announced_once() {
        let changes = Changes::default();
        let change = Change {
            upstream: "local".into(),
            method: "notifications/tools/list_changed".into(),
        };
        assert!(changes.is_news(&change));
        assert!(!changes.is_news(&change));
        let other = Change {
            method: "notifications/prompts/list_changed".into(),
            ..change
        };
        assert!(changes.is_news(&other));
    }
}

//! What this replica knows about the sessions it serves right now: requests in flight (for
//! cancellation and duplicate-id checks), resource subscriptions (for routing updates), the
//! owner of the standalone GET stream, and a token that closes every open stream on DELETE.
//!
//! All of it is a cache: a replica that never saw a session rebuilds its entry on first use.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::jsonrpc::RequestId;
use crate::session::{SessionId, SessionRecord};

#[derive(Default)]
struct Presence {
    closed: CancellationToken,
    in_flight: HashMap<RequestId, CancellationToken>,
    subscriptions: BTreeSet<String>,
    /// Cancelled when a newer GET takes the standalone stream over.
    standalone_owner: Option<CancellationToken>,
}

/// Per-replica session presence.
#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<SessionId, Presence>>,
    /// Cancelled when the replica starts draining.
    draining: CancellationToken,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Presence>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a session seen on this replica; returns the token cancelled when it ends.
    /// Returns `true` as second value when the session was new here (a revival or a creation).
    pub fn attach(&self, id: &SessionId, record: &SessionRecord) -> (CancellationToken, bool) {
        let mut sessions = self.lock();
        let fresh = !sessions.contains_key(id);
        let presence = sessions.entry(id.clone()).or_default();
        if fresh {
            presence.subscriptions = record.subscriptions.keys().cloned().collect();
        }
        (presence.closed.clone(), fresh)
    }

    /// Marks a request in flight; `None` when the session already has one with this id.
    pub fn begin(&self, id: &SessionId, request: &RequestId) -> Option<CancellationToken> {
        let mut sessions = self.lock();
        let presence = sessions.entry(id.clone()).or_default();
        if presence.in_flight.contains_key(request) {
            return None;
        }
        let token = presence.closed.child_token();
        presence.in_flight.insert(request.clone(), token.clone());
        Some(token)
    }

    pub fn end(&self, id: &SessionId, request: &RequestId) {
        if let Some(presence) = self.lock().get_mut(id) {
            presence.in_flight.remove(request);
        }
    }

    /// Cancels a request in flight; returns whether there was one.
    pub fn cancel(&self, id: &SessionId, request: &RequestId) -> bool {
        let token = self
            .lock()
            .get_mut(id)
            .and_then(|p| p.in_flight.remove(request));
        token.inspect(CancellationToken::cancel).is_some()
    }

    /// Starts draining: open SSE streams end with a `retry` hint, so their clients reconnect
    /// (to another replica); requests in flight go on.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    /// Cancelled once draining started.
    pub fn draining(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Requests this replica is working on.
    pub fn requests_in_flight(&self) -> usize {
        self.lock().values().map(|p| p.in_flight.len()).sum()
    }

    /// Ends a session on this replica: closes its streams and cancels its requests.
    pub fn close(&self, id: &SessionId) {
        if let Some(presence) = self.lock().remove(id) {
            presence.closed.cancel();
        }
    }

    pub fn set_subscribed(&self, id: &SessionId, uri: &str, subscribed: bool) {
        let mut sessions = self.lock();
        let presence = sessions.entry(id.clone()).or_default();
        if subscribed {
            presence.subscriptions.insert(uri.to_owned());
        } else {
            presence.subscriptions.remove(uri);
        }
    }

    /// Sessions on this replica that should see a message about `uri` (all when `None`).
    pub fn audience(&self, uri: Option<&str>) -> Vec<SessionId> {
        self.lock()
            .iter()
            .filter(|(_, p)| uri.is_none_or(|uri| p.subscriptions.contains(uri)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Takes over the standalone GET stream: the previous reader's token is cancelled, and the
    /// returned token ends this reader when a newer one claims, or when the session ends.
    pub fn claim_standalone(&self, id: &SessionId) -> CancellationToken {
        let mut sessions = self.lock();
        let presence = sessions.entry(id.clone()).or_default();
        let token = presence.closed.child_token();
        if let Some(previous) = presence.standalone_owner.replace(token.clone()) {
            previous.cancel();
        }
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolVersion;
    use std::time::Duration;

    #[test]
    fn tracks_duplicates_cancellation_and_closure() {
        let hub = Hub::default();
        let id = SessionId::generate();
        let record = SessionRecord::new(
            ProtocolVersion::LATEST,
            Default::default(),
            Default::default(),
            Duration::from_secs(60),
        );
        let (closed, fresh) = hub.attach(&id, &record);
        assert!(fresh);
        let token = hub.begin(&id, &RequestId::Number(1)).unwrap();
        assert!(hub.begin(&id, &RequestId::Number(1)).is_none());
        assert!(hub.cancel(&id, &RequestId::Number(1)));
        assert!(token.is_cancelled());
        let other = hub.begin(&id, &RequestId::Number(2)).unwrap();
        hub.close(&id);
        assert!(closed.is_cancelled() && other.is_cancelled());
    }

    #[test]
    fn the_newest_standalone_claim_wins() {
        let hub = Hub::default();
        let id = SessionId::generate();
        let first = hub.claim_standalone(&id);
        let second = hub.claim_standalone(&id);
        assert!(first.is_cancelled());
        assert!(!second.is_cancelled());
        hub.close(&id);
        assert!(second.is_cancelled());
    }
}

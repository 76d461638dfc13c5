//! What this replica knows about the sessions it serves right now: requests in flight (for
//! cancellation, duplicate-id checks and their cap), resource subscriptions (for routing
//! updates), the owner of the standalone GET stream, the GET streams open (for their cap), when
//! this replica last refreshed the session's slot in the per-principal session count, and a
//! token that closes every open stream on DELETE.
//!
//! All of it is a cache: a replica that never saw a session rebuilds its entry on first use.
//! So that a long-lived replica does not keep the entries of sessions that ended elsewhere
//! (expired, or deleted on another replica), [`Hub::prune`] drops entries unused here for a
//! while that hold nothing open; entries with resource subscriptions are only dropped once the
//! store says their session is gone (the caller checks, see `Gateway::housekeeping`).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};
use tokio_util::sync::CancellationToken;

use crate::protocol::jsonrpc::RequestId;
use crate::session::{SessionId, SessionRecord};

struct Presence {
    closed: CancellationToken,
    in_flight: HashMap<RequestId, CancellationToken>,
    subscriptions: BTreeSet<String>,
    /// Cancelled when a newer GET takes the standalone stream over.
    standalone_owner: Option<CancellationToken>,
    /// SSE responses of this session open on this replica.
    open_streams: usize,
    /// Of those, the ones opened with GET (see [`Hub::open_get_stream`]).
    get_streams: usize,
    /// The owner tag of the session's record, once seen here.
    owner: Option<String>,
    /// When this replica last refreshed the session's slot (see [`Hub::slot_refresh_due`]).
    slot_refreshed: Option<Instant>,
    /// Upstreams whose standalone stream of this session this replica holds: the upstream
    /// session held, and the token that stops its holder.
    holding: HashMap<String, (Option<String>, CancellationToken)>,
    last_used: Instant,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            closed: CancellationToken::new(),
            in_flight: HashMap::new(),
            subscriptions: BTreeSet::new(),
            standalone_owner: None,
            open_streams: 0,
            get_streams: 0,
            owner: None,
            slot_refreshed: None,
            holding: HashMap::new(),
            last_used: Instant::now(),
        }
    }
}

impl Presence {
    /// Nothing of the session is open on this replica.
    fn is_idle_since(&self, cutoff: Instant) -> bool {
        self.in_flight.is_empty()
            && self.open_streams == 0
            && self.get_streams == 0
            && self.holding.is_empty()
            && self.last_used <= cutoff
    }
}

/// Why [`Hub::begin`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotBegun {
    /// The session has a request with this id in flight.
    DuplicateId,
    /// The session has as many requests in flight here as allowed.
    AtCap,
}

/// What [`Hub::prune`] left for the caller to decide.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Entries dropped.
    pub dropped: usize,
    /// Idle entries kept for their subscriptions: drop them if their session is gone.
    pub to_check: Vec<SessionId>,
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
        if fresh {
            let subscriptions = record.subscriptions.keys().cloned().collect();
            let presence = Presence {
                subscriptions,
                ..Presence::default()
            };
            sessions.insert(id.clone(), presence);
        }
        let presence = sessions.get_mut(id).expect("inserted above when absent");
        if presence.owner.is_none() {
            presence.owner = Some(record.owner.clone());
        }
        presence.last_used = Instant::now();
        (presence.closed.clone(), fresh)
    }

    /// Counts an SSE response of the session opening on this replica; pair with
    /// [`Hub::stream_closed`].
    pub fn stream_opened(&self, id: &SessionId) {
        let mut sessions = self.lock();
        let presence = sessions.entry(id.clone()).or_default();
        presence.open_streams += 1;
        presence.last_used = Instant::now();
    }

    pub fn stream_closed(&self, id: &SessionId) {
        if let Some(presence) = self.lock().get_mut(id) {
            presence.open_streams = presence.open_streams.saturating_sub(1);
            presence.last_used = Instant::now();
        }
    }

    /// Records that this replica now holds the session's standalone stream of `upstream` for
    /// the upstream session `held`; returns the token that stops the holder (also cancelled
    /// when the session ends here), or `None` when it holds that one already. A holder of an
    /// older upstream session (the upstream was re-initialized) is stopped.
    pub fn start_holding(
        &self,
        id: &SessionId,
        upstream: &str,
        held: Option<&str>,
    ) -> Option<CancellationToken> {
        let mut sessions = self.lock();
        let presence = sessions.entry(id.clone()).or_default();
        if let Some((current, stop)) = presence.holding.get(upstream) {
            if current.as_deref() == held {
                return None;
            }
            stop.cancel();
        }
        let stop = presence.closed.child_token();
        let entry = (held.map(str::to_owned), stop.clone());
        presence.holding.insert(upstream.to_owned(), entry);
        Some(stop)
    }

    /// Forgets a holder, unless a holder of a newer upstream session replaced it.
    pub fn stop_holding(&self, id: &SessionId, upstream: &str, held: Option<&str>) {
        if let Some(presence) = self.lock().get_mut(id)
            && presence
                .holding
                .get(upstream)
                .is_some_and(|(current, _)| current.as_deref() == held)
        {
            presence.holding.remove(upstream);
        }
    }

    /// Drops the entries of sessions unused here for `idle` that hold nothing open and have no
    /// subscriptions; subscribed ones are returned for a liveness check instead.
    pub fn prune(&self, idle: Duration) -> Pruned {
        let Some(cutoff) = Instant::now().checked_sub(idle) else {
            return Pruned::default();
        };
        let mut pruned = Pruned::default();
        self.lock().retain(|id, presence| {
            if !presence.is_idle_since(cutoff) {
                return true;
            }
            if presence.subscriptions.is_empty() {
                pruned.dropped += 1;
                return false;
            }
            pruned.to_check.push(id.clone());
            true
        });
        pruned
    }

    /// Marks a session as just confirmed live (its idle entry is kept another round).
    pub fn touch(&self, id: &SessionId) {
        if let Some(presence) = self.lock().get_mut(id) {
            presence.last_used = Instant::now();
        }
    }

    /// Sessions this replica holds an entry for.
    pub fn sessions_held(&self) -> usize {
        self.lock().len()
    }

    /// Marks a request in flight, unless the session has one with this id already or `cap`
    /// requests in flight here.
    pub fn begin(
        &self,
        id: &SessionId,
        request: &RequestId,
        cap: usize,
    ) -> Result<CancellationToken, NotBegun> {
        let mut sessions = self.lock();
        let presence = sessions.entry(id.clone()).or_default();
        if presence.in_flight.contains_key(request) {
            return Err(NotBegun::DuplicateId);
        }
        if presence.in_flight.len() >= cap {
            return Err(NotBegun::AtCap);
        }
        presence.last_used = Instant::now();
        let token = presence.closed.child_token();
        presence.in_flight.insert(request.clone(), token.clone());
        Ok(token)
    }

    /// Counts a GET stream of the session opening here, unless `cap` are open already; one
    /// that takes the standalone stream over from a live one (which then ends) is always let
    /// through. Pair with [`Hub::get_stream_closed`].
    pub fn open_get_stream(&self, id: &SessionId, cap: usize, standalone: bool) -> bool {
        let mut sessions = self.lock();
        let presence = sessions.entry(id.clone()).or_default();
        let takes_over = standalone
            && presence
                .standalone_owner
                .as_ref()
                .is_some_and(|owner| !owner.is_cancelled());
        if presence.get_streams >= cap && !takes_over {
            return false;
        }
        presence.get_streams += 1;
        presence.last_used = Instant::now();
        true
    }

    pub fn get_stream_closed(&self, id: &SessionId) {
        if let Some(presence) = self.lock().get_mut(id) {
            presence.get_streams = presence.get_streams.saturating_sub(1);
        }
    }

    /// Whether this replica should refresh the session's slot now: it has not for `every`
    /// (or ever). Records the refresh as done.
    pub fn slot_refresh_due(&self, id: &SessionId, every: Duration) -> bool {
        let mut sessions = self.lock();
        let presence = sessions.entry(id.clone()).or_default();
        let due = presence
            .slot_refreshed
            .is_none_or(|at| at.elapsed() >= every);
        if due {
            presence.slot_refreshed = Some(Instant::now());
        }
        due
    }

    /// Records that the session's slot was just taken or refreshed.
    pub fn slot_refreshed(&self, id: &SessionId) {
        let mut sessions = self.lock();
        sessions.entry(id.clone()).or_default().slot_refreshed = Some(Instant::now());
    }

    /// Whether this replica serves the session now (it has seen it and not forgotten it).
    pub fn serves(&self, id: &SessionId) -> bool {
        self.lock().contains_key(id)
    }

    /// The owner tag of a session this replica has seen.
    pub fn owner(&self, id: &SessionId) -> Option<String> {
        self.lock().get(id).and_then(|p| p.owner.clone())
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

    /// Upstream streams this replica holds for sessions.
    pub fn streams_held(&self) -> usize {
        self.lock().values().map(|p| p.holding.len()).sum()
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
        let token = hub.begin(&id, &RequestId::Number(1), 8).unwrap();
        assert_eq!(
            hub.begin(&id, &RequestId::Number(1), 8).unwrap_err(),
            NotBegun::DuplicateId
        );
        assert!(hub.cancel(&id, &RequestId::Number(1)));
        assert!(token.is_cancelled());
        let other = hub.begin(&id, &RequestId::Number(2), 8).unwrap();
        hub.close(&id);
        assert!(closed.is_cancelled() && other.is_cancelled());
    }

    #[test]
    fn caps_requests_in_flight_and_get_streams() {
        let hub = Hub::default();
        let id = SessionId::generate();
        hub.begin(&id, &RequestId::Number(1), 2).unwrap();
        hub.begin(&id, &RequestId::Number(2), 2).unwrap();
        assert_eq!(
            hub.begin(&id, &RequestId::Number(3), 2).unwrap_err(),
            NotBegun::AtCap
        );
        hub.end(&id, &RequestId::Number(1));
        hub.begin(&id, &RequestId::Number(3), 2).unwrap();

        assert!(hub.open_get_stream(&id, 1, false));
        assert!(!hub.open_get_stream(&id, 1, false));
        assert!(
            !hub.open_get_stream(&id, 1, true),
            "no live standalone stream to take over"
        );
        hub.claim_standalone(&id);
        assert!(
            hub.open_get_stream(&id, 1, true),
            "a takeover is let through"
        );
        hub.get_stream_closed(&id);
        hub.get_stream_closed(&id);
        assert!(hub.open_get_stream(&id, 1, false));
    }

    #[test]
    fn a_slot_refresh_is_due_once_per_period() {
        let hub = Hub::default();
        let id = SessionId::generate();
        assert!(hub.slot_refresh_due(&id, Duration::from_secs(60)));
        assert!(!hub.slot_refresh_due(&id, Duration::from_secs(60)));
        assert!(hub.slot_refresh_due(&id, Duration::ZERO));
        let other = SessionId::generate();
        hub.slot_refreshed(&other);
        assert!(!hub.slot_refresh_due(&other, Duration::from_secs(60)));
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

    #[test]
    fn prune_drops_idle_entries_and_keeps_open_or_subscribed_ones() {
        let hub = Hub::default();
        let record = SessionRecord::new(
            ProtocolVersion::LATEST,
            Default::default(),
            Default::default(),
            Duration::from_secs(60),
        );
        let [idle, streaming, working, subscribed] = std::array::from_fn(|_| SessionId::generate());
        for id in [&idle, &streaming, &working, &subscribed] {
            hub.attach(id, &record);
        }
        hub.stream_opened(&streaming);
        hub.begin(&working, &RequestId::Number(1), 8).unwrap();
        hub.set_subscribed(&subscribed, "file:///a", true);
        std::thread::sleep(Duration::from_millis(20));
        let pruned = hub.prune(Duration::from_millis(10));
        assert_eq!(pruned.dropped, 1);
        assert_eq!(pruned.to_check, vec![subscribed.clone()]);
        assert_eq!(hub.sessions_held(), 3);
        hub.stream_closed(&streaming);
        hub.end(&working, &RequestId::Number(1));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(hub.prune(Duration::from_millis(10)).dropped, 2);
        assert_eq!(hub.sessions_held(), 1);
    }
}

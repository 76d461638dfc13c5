//! The in-memory store: the embedded default for development and single-replica use.
//!
//! It mirrors the Redis semantics (sliding idle TTL capped by the absolute lifetime;
//! tombstones that outlive records so 404s can be classified, and that take over a record's
//! upstream sessions when it expires so that whoever notices the expiry closes them). Entries
//! are pruned in deadline order on every operation, so memory is bounded by the sessions active
//! within the last `2 × idle_ttl`, whatever the traffic; there is no background task.
//!
//! A load costs a map lookup and an `Arc` clone: the record is stored as the `Arc` it is
//! served in (a change copies it only while a request still holds the old one), and sliding a
//! deadline only moves the entry's own, not its place in the deadline order (pruning files an
//! entry again when it finds it slid).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use foldhash::HashMap;

use super::{
    Claimed, Hold, LeaseWanted, Lookup, Orphans, RecordChange, SessionId, SessionRecord,
    SessionStore, StoreError, StreamLease, UpstreamSession,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tombstone {
    Live,
    Expired,
    Deleted,
}

/// A live record, with its upstream sessions, and its idle deadline.
struct Stored {
    record: Arc<SessionRecord>,
    deadline: Instant,
}

/// What outlives a record: its state and, once it expired, its upstream sessions (like the
/// Redis `:t` and `:u`).
struct Tomb {
    state: Tombstone,
    deadline: Instant,
    upstreams: Orphans,
}

/// Entries by the deadline they were filed under, so that pruning takes only what is due. An
/// entry's own deadline is never earlier (deadlines only slide forward).
type Deadlines = BTreeSet<(Instant, SessionId)>;

#[derive(Default)]
struct State {
    records: HashMap<SessionId, Stored>,
    record_deadlines: Deadlines,
    tombs: HashMap<SessionId, Tomb>,
    tomb_deadlines: Deadlines,
    /// Hold leases by session and upstream: holder and deadline. Dropped with their record.
    leases: HashMap<(SessionId, String), (String, Instant)>,
}

/// Sessions held in this process only.
pub struct MemoryStore {
    idle_ttl: Duration,
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new(idle_ttl: Duration) -> Self {
        Self {
            idle_ttl,
            state: Mutex::new(State::default()),
        }
    }

    /// A locked state with everything due pruned.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.prune(Instant::now());
        state
    }

    fn record_deadline(&self, record: &SessionRecord, now: Instant) -> Instant {
        now + self.idle_ttl.min(record.remaining_lifetime())
    }

    fn tomb_deadline(&self, now: Instant) -> Instant {
        now + super::tombstone_ttl(self.idle_ttl)
    }
}

impl State {
    /// Drops records and tombs whose deadline passed, and files again those slid since. An
    /// expired record's tomb stays `live` and takes its upstream sessions, so the first to
    /// notice gets the expiry and them.
    fn prune(&mut self, now: Instant) {
        while let Some(id) = take_due(&mut self.record_deadlines, now) {
            match self.records.get(&id).map(|stored| stored.deadline) {
                Some(slid) if slid > now => _ = self.record_deadlines.insert((slid, id)),
                Some(_) => self.expire_record(&id),
                None => {}
            }
        }
        while let Some(id) = take_due(&mut self.tomb_deadlines, now) {
            match self.tombs.get(&id).map(|tomb| tomb.deadline) {
                Some(slid) if slid > now => _ = self.tomb_deadlines.insert((slid, id)),
                Some(_) => _ = self.tombs.remove(&id),
                None => {}
            }
        }
    }

    fn expire_record(&mut self, id: &SessionId) {
        let Some(stored) = self.records.remove(id) else {
            return;
        };
        self.leases.retain(|(session, _), _| session != id);
        if let Some(tomb) = self.tombs.get_mut(id) {
            tomb.upstreams = Arc::unwrap_or_clone(stored.record).upstreams;
        }
    }

    /// Sets a tomb's state (creating it when absent) and its deadline, which only slides
    /// forward.
    fn set_tomb(&mut self, id: &SessionId, state: Tombstone, deadline: Instant) {
        if let Some(tomb) = self.tombs.get_mut(id) {
            tomb.state = state;
            tomb.deadline = deadline;
            return;
        }
        let tomb = Tomb {
            state,
            deadline,
            upstreams: Orphans::new(),
        };
        self.tombs.insert(id.clone(), tomb);
        self.tomb_deadlines.insert((deadline, id.clone()));
    }

    /// Takes or renews `holder`'s lease of a live session's stream of `upstream` unless another
    /// holder's runs.
    fn take_lease(&mut self, id: &SessionId, upstream: &str, holder: &str, time: Duration) -> Hold {
        let now = Instant::now();
        let entry = self
            .leases
            .entry((id.clone(), upstream.to_owned()))
            .or_insert_with(|| (holder.to_owned(), now));
        if entry.0 != holder && entry.1 > now {
            return Hold::HeldElsewhere;
        }
        *entry = (holder.to_owned(), now + time);
        Hold::Held
    }

    /// Classifies an id without a record, flipping a `live` tomb to `expired`.
    fn classify_gone(&mut self, id: &SessionId) -> Lookup {
        let Some(tomb) = self.tombs.get_mut(id) else {
            return Lookup::Unknown;
        };
        match tomb.state {
            Tombstone::Live => {
                tomb.state = Tombstone::Expired;
                Lookup::Expired {
                    first_notice: true,
                    orphans: std::mem::take(&mut tomb.upstreams),
                }
            }
            Tombstone::Expired => Lookup::Expired {
                first_notice: false,
                orphans: Orphans::new(),
            },
            Tombstone::Deleted => Lookup::Deleted,
        }
    }
}

/// Takes the first entry filed under a deadline that passed.
fn take_due(deadlines: &mut Deadlines, now: Instant) -> Option<SessionId> {
    let (filed, _) = deadlines.first()?;
    if *filed > now {
        return None;
    }
    deadlines.pop_first().map(|(_, id)| id)
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        let now = Instant::now();
        let (deadline, tomb_deadline) =
            (self.record_deadline(record, now), self.tomb_deadline(now));
        let record = Arc::new(record.clone());
        let mut state = self.lock();
        state
            .records
            .insert(id.clone(), Stored { record, deadline });
        state.record_deadlines.insert((deadline, id.clone()));
        state.set_tomb(id, Tombstone::Live, tomb_deadline);
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Lookup, StoreError> {
        let now = Instant::now();
        let tomb_deadline = self.tomb_deadline(now);
        let mut state = self.lock();
        let Some(stored) = state.records.get_mut(id) else {
            return Ok(state.classify_gone(id));
        };
        stored.deadline = self.record_deadline(&stored.record, now);
        let record = Arc::clone(&stored.record);
        state.set_tomb(id, Tombstone::Live, tomb_deadline);
        Ok(Lookup::Live(record))
    }

    async fn update(&self, id: &SessionId, change: &RecordChange) -> Result<(), StoreError> {
        if let Some(stored) = self.lock().records.get_mut(id) {
            change.apply(Arc::make_mut(&mut stored.record));
        }
        Ok(())
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let tomb_deadline = self.tomb_deadline(Instant::now());
        let mut state = self.lock();
        let removed = state.records.remove(id);
        state.leases.retain(|(session, _), _| session != id);
        state.set_tomb(id, Tombstone::Deleted, tomb_deadline);
        if let Some(tomb) = state.tombs.get_mut(id) {
            tomb.upstreams.clear();
        }
        Ok(removed.is_some())
    }

    async fn exists(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.lock().records.contains_key(id))
    }

    async fn notice_gone(&self, id: &SessionId) -> Result<Option<Lookup>, StoreError> {
        let mut state = self.lock();
        if state.records.contains_key(id) {
            return Ok(None);
        }
        Ok(Some(state.classify_gone(id)))
    }

    async fn hold(
        &self,
        id: &SessionId,
        upstream: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Hold, StoreError> {
        let mut state = self.lock();
        if !state.records.contains_key(id) {
            return Ok(Hold::SessionGone);
        }
        Ok(state.take_lease(id, upstream, holder, lease))
    }

    async fn renew_holds(
        &self,
        streams: &[StreamLease],
        holder: &str,
        lease: Duration,
    ) -> Result<Vec<Hold>, StoreError> {
        let mut renewed = Vec::with_capacity(streams.len());
        for stream in streams {
            renewed.push(
                self.hold(&stream.session, &stream.upstream, holder, lease)
                    .await?,
            );
        }
        Ok(renewed)
    }

    async fn claim_upstream(
        &self,
        id: &SessionId,
        upstream: &str,
        session: &UpstreamSession,
        lease: Option<LeaseWanted<'_>>,
    ) -> Result<Claimed, StoreError> {
        let mut state = self.lock();
        let Some(stored) = state.records.get_mut(id) else {
            return Ok(Claimed::SessionGone);
        };
        if let Some(saved) = stored.record.upstreams.get(upstream) {
            return Ok(Claimed::Taken(saved.clone()));
        }
        let record = Arc::make_mut(&mut stored.record);
        record
            .upstreams
            .insert(upstream.to_owned(), session.clone());
        let holding = lease.is_some_and(|lease| {
            state.take_lease(id, upstream, lease.holder, lease.time) == Hold::Held
        });
        Ok(Claimed::Won { holding })
    }

    async fn holders(
        &self,
        id: &SessionId,
        upstreams: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let now = Instant::now();
        let state = self.lock();
        let holder = |upstream: &String| {
            let (holder, until) = state.leases.get(&(id.clone(), upstream.clone()))?;
            (*until > now).then(|| holder.clone())
        };
        Ok(upstreams.iter().map(holder).collect())
    }

    async fn release(
        &self,
        id: &SessionId,
        upstream: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let key = (id.clone(), upstream.to_owned());
        if state
            .leases
            .get(&key)
            .is_some_and(|(owner, _)| owner == holder)
        {
            state.leases.remove(&key);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl MemoryStore {
    /// Records and tombs held, for tests of the memory bound.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let state = self.lock();
        (state.records.len(), state.tombs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolVersion;
    use serde_json::json;

    fn record() -> SessionRecord {
        SessionRecord::new(
            ProtocolVersion::LATEST,
            json!({}),
            json!({}),
            Duration::from_secs(3600),
        )
    }

    #[tokio::test]
    async fn keeps_the_first_claimed_upstream_session_and_reads_leases_without_taking_them() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let id = SessionId::generate();
        store.create(&id, &record()).await.unwrap();
        let session = |sid: &str| UpstreamSession {
            session_id: Some(sid.into()),
            protocol_version: None,
        };
        let claim = |sid| {
            let claimed = session(sid);
            let (store, id) = (&store, &id);
            async move {
                store
                    .claim_upstream(id, "remote", &claimed, None)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(claim("u-1").await, Claimed::Won { holding: false });
        assert_eq!(claim("u-2").await, Claimed::Taken(session("u-1")));
        let lease = Duration::from_secs(30);
        store.hold(&id, "remote", "r-1", lease).await.unwrap();
        let names = ["remote".to_owned(), "other".to_owned()];
        let holders = store.holders(&id, &names).await.unwrap();
        assert_eq!(holders, vec![Some("r-1".to_owned()), None]);
        let wanted = |holder| {
            Some(LeaseWanted {
                holder,
                time: lease,
            })
        };
        let third = session("u-3");
        let claimed = store.claim_upstream(&id, "third", &third, wanted("r-3"));
        assert_eq!(claimed.await.unwrap(), Claimed::Won { holding: true });
        let held_by = store.holders(&id, &["third".to_owned()]).await.unwrap();
        assert_eq!(held_by, vec![Some("r-3".to_owned())]);
        assert_eq!(
            store.hold(&id, "other", "r-2", lease).await.unwrap(),
            Hold::Held
        );
        store.delete(&id).await.unwrap();
        assert_eq!(claim("u-4").await, Claimed::SessionGone);
    }

    #[tokio::test]
    async fn classifies_live_expired_deleted_and_unknown() {
        let store = MemoryStore::new(Duration::from_millis(50));
        let (a, b) = (SessionId::generate(), SessionId::generate());
        store.create(&a, &record()).await.unwrap();
        store.create(&b, &record()).await.unwrap();
        assert!(matches!(store.load(&a).await.unwrap(), Lookup::Live(_)));
        assert!(store.delete(&b).await.unwrap());
        assert!(matches!(store.load(&b).await.unwrap(), Lookup::Deleted));
        tokio::time::sleep(Duration::from_millis(80)).await;
        let first = store.load(&a).await.unwrap();
        assert!(matches!(
            first,
            Lookup::Expired {
                first_notice: true,
                ..
            }
        ));
        let again = store.load(&a).await.unwrap();
        assert!(matches!(
            again,
            Lookup::Expired {
                first_notice: false,
                ..
            }
        ));
        assert!(matches!(
            store.load(&SessionId::generate()).await.unwrap(),
            Lookup::Unknown
        ));
    }

    #[tokio::test]
    async fn lookups_slide_the_idle_ttl() {
        let store = MemoryStore::new(Duration::from_millis(60));
        let id = SessionId::generate();
        store.create(&id, &record()).await.unwrap();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(matches!(store.load(&id).await.unwrap(), Lookup::Live(_)));
        }
    }

    #[tokio::test]
    async fn expired_records_are_pruned_and_hand_over_their_upstreams() {
        let store = MemoryStore::new(Duration::from_millis(40));
        let mut with_upstream = record();
        with_upstream.upstreams.insert(
            "remote".into(),
            crate::session::UpstreamSession {
                session_id: Some("up-1".into()),
                protocol_version: None,
            },
        );
        let noticed = SessionId::generate();
        store.create(&noticed, &with_upstream).await.unwrap();
        for _ in 0..500 {
            store
                .create(&SessionId::generate(), &record())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.held().0, 0, "expired records are pruned");
        match store.notice_gone(&noticed).await.unwrap() {
            Some(Lookup::Expired {
                first_notice: true,
                orphans,
            }) => assert_eq!(orphans["remote"].session_id.as_deref(), Some("up-1")),
            other => panic!("expected the first notice, got {other:?}"),
        }
        assert_eq!(store.held().1, 501, "tombstones outlive their records");
    }

    #[tokio::test]
    async fn concurrent_changes_keep_each_other() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let id = SessionId::generate();
        store.create(&id, &record()).await.unwrap();
        for uri in ["file:///a", "file:///b"] {
            let change = RecordChange::Subscribe {
                uri: uri.into(),
                upstream: "files".into(),
            };
            store.update(&id, &change).await.unwrap();
        }
        let Lookup::Live(loaded) = store.load(&id).await.unwrap() else {
            panic!("live")
        };
        assert_eq!(loaded.subscriptions.len(), 2);
    }
}

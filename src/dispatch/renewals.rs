//! Renewing the leases of the upstream streams this replica holds (`holder.rs`) together, not one
//! by one. Each lease is due [`RENEW_EVERY`] after it was taken or last renewed; once every
//! [`TICK`], the leases due go to the store in batches of at most [`BATCH`], one round trip
//! each ([`SessionStore::renew_holds`]). A replica at its `server.max_held_streams` bound
//! (8,192 by default) so makes about four round trips a second for them instead of 819.
//!
//! A holder registers its lease for as long as it holds the stream ([`LeaseRenewals::register`])
//! and learns from its [`Renewal`] when the lease is lost: another replica has it, or the
//! session is gone. A batch the store fails changes nothing: every stream is kept, since an
//! outage must not cost what the upstreams send meanwhile, and its leases are tried again when
//! next due. The table has one entry per held stream, so `server.max_held_streams` bounds it;
//! an entry goes with its [`Renewal`].
//!
//! A renewal takes a lease nobody has (as [`SessionStore::hold`] does), so that a stream is
//! kept through a store outage longer than [`LEASE`]. A holder giving its lease up therefore
//! drops its [`Renewal`] first and releases the lease under [`LeaseRenewals::held_off`]: no
//! batch runs meanwhile, and a batch after it finds the lease unregistered, so none takes the
//! released lease back.
//!
//! [`SessionStore::renew_holds`]: crate::session::SessionStore::renew_holds
//! [`SessionStore::hold`]: crate::session::SessionStore::hold

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{RwLock, RwLockReadGuard, oneshot};
use tokio::time::Instant;

use super::Gateway;
use crate::session::{Hold, SessionStore, StreamLease};
use crate::sync::lock;

/// How long a holder's lease lasts without renewal.
pub(super) const LEASE: Duration = Duration::from_secs(30);
/// How often a lease is renewed (and its session checked).
pub(super) const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often the leases due are renewed; a lease is renewed at most this late.
const TICK: Duration = Duration::from_secs(1);
/// The most leases renewed in one round trip.
const BATCH: usize = 256;

/// Why a holder has to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseLost {
    /// Another replica has the lease.
    HeldElsewhere,
    /// The session is gone.
    SessionGone,
}

/// The leases this replica renews, one per held stream.
#[derive(Default)]
pub(super) struct LeaseRenewals {
    table: Arc<Mutex<Table>>,
    registrations: AtomicU64,
    /// Written while a batch runs; read while a holder releases its lease.
    batches: RwLock<()>,
}

struct Entry {
    /// Tells this entry from a newer holder's of the same stream.
    registration: u64,
    due: Instant,
    lost: oneshot::Sender<LeaseLost>,
}

/// A holder's registered lease; dropping it stops the renewals.
pub(super) struct Renewal {
    table: Arc<Mutex<Table>>,
    stream: StreamLease,
    registration: u64,
    lost: oneshot::Receiver<LeaseLost>,
}

impl LeaseRenewals {
    /// Renews the lease of `stream`, just taken, from [`RENEW_EVERY`] on. A newer holder of the
    /// same stream here takes over the renewals of the one it replaces.
    pub(super) fn register(&self, stream: StreamLease) -> Renewal {
        let registration = self.registrations.fetch_add(1, Ordering::Relaxed);
        let (lost, lost_here) = oneshot::channel();
        let entry = Entry {
            registration,
            due: Instant::now() + RENEW_EVERY,
            lost,
        };
        lock(&self.table).insert(stream.clone(), entry);
        Renewal {
            table: self.table.clone(),
            stream,
            registration,
            lost: lost_here,
        }
    }

    /// Renews the leases due at `now`.
    async fn renew_due(&self, store: &dyn SessionStore, holder: &str, now: Instant) {
        let due = self.take_due(now);
        self.renew(store, holder, &due).await;
    }

    /// Renews those of `due` still registered, a batch at a time, and tells the holders of
    /// those lost.
    async fn renew(&self, store: &dyn SessionStore, holder: &str, due: &[(StreamLease, u64)]) {
        for batch in due.chunks(BATCH) {
            let _running = self.batches.write().await;
            let batch = self.still_registered(batch);
            if batch.is_empty() {
                continue;
            }
            let streams: Vec<StreamLease> = batch.iter().map(|(s, _)| s.clone()).collect();
            match store.renew_holds(&streams, holder, LEASE).await {
                Ok(answers) => self.settle(&batch, &answers),
                Err(error) => {
                    tracing::debug!(%error, leases = batch.len(), "could not renew stream leases; the streams are kept");
                }
            }
        }
    }

    /// Keeps renewal batches from running while the guard lives.
    pub(super) async fn held_off(&self) -> RwLockReadGuard<'_, ()> {
        self.batches.read().await
    }

    /// The leases due at `now`, with their registrations; each is next due [`RENEW_EVERY`] on.
    fn take_due(&self, now: Instant) -> Vec<(StreamLease, u64)> {
        let mut table = lock(&self.table);
        let due = table.iter_mut().filter(|(_, entry)| entry.due <= now);
        due.map(|(stream, entry)| {
            entry.due = now + RENEW_EVERY;
            (stream.clone(), entry.registration)
        })
        .collect()
    }

    /// Those of `due` whose holders have not given them up since.
    fn still_registered(&self, due: &[(StreamLease, u64)]) -> Vec<(StreamLease, u64)> {
        let table = lock(&self.table);
        let registered = |(stream, registration): &&(StreamLease, u64)| {
            is_registered(&table, stream, *registration)
        };
        due.iter().filter(registered).cloned().collect()
    }

    /// Drops the entries whose lease is lost and tells their holders.
    fn settle(&self, batch: &[(StreamLease, u64)], answers: &[Hold]) {
        let mut table = lock(&self.table);
        for ((stream, registration), answer) in batch.iter().zip(answers) {
            let lost = match answer {
                Hold::Held => continue,
                Hold::HeldElsewhere => LeaseLost::HeldElsewhere,
                Hold::SessionGone => LeaseLost::SessionGone,
            };
            if let Some(entry) = remove_registered(&mut table, stream, *registration) {
                let _ = entry.lost.send(lost);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.table).len()
    }
}

impl Renewal {
    /// Waits until the lease is lost. Never resolves once a newer holder here took over.
    pub(super) async fn lost(&mut self) -> LeaseLost {
        match (&mut self.lost).await {
            Ok(lost) => lost,
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        remove_registered(&mut lock(&self.table), &self.stream, self.registration);
    }
}

type Table = HashMap<StreamLease, Entry>;

fn is_registered(table: &Table, stream: &StreamLease, registration: u64) -> bool {
    table
        .get(stream)
        .is_some_and(|entry| entry.registration == registration)
}

/// Removes the entry of `stream` if it is still that `registration`'s.
fn remove_registered(table: &mut Table, stream: &StreamLease, registration: u64) -> Option<Entry> {
    if !is_registered(table, stream, registration) {
        return None;
    }
    table.remove(stream)
}

/// Renews the leases due every [`TICK`] for as long as the gateway exists.
pub(super) async fn renew_leases(gateway: Weak<Gateway>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        let holder = gateway.signer.replica();
        gateway
            .renewals
            .renew_due(gateway.store.as_ref(), holder, Instant::now())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolVersion;
    use crate::session::{MemoryStore, SessionId, SessionRecord};

    const HERE: &str = "replica-a";

    async fn held_stream(store: &MemoryStore, holder: &str) -> StreamLease {
        let session = SessionId::generate();
        let record = SessionRecord::new(
            ProtocolVersion::LATEST,
            Default::default(),
            Default::default(),
            Duration::from_secs(3600),
        );
        store.create(&session, &record).await.unwrap();
        let stream = StreamLease {
            session,
            upstream: "remote".into(),
        };
        let hold = store.hold(&stream.session, &stream.upstream, holder, LEASE);
        assert_eq!(hold.await.unwrap(), Hold::Held);
        stream
    }

    fn lost_now(renewal: &mut Renewal) -> Option<LeaseLost> {
        renewal.lost.try_recv().ok()
    }

    #[tokio::test]
    async fn renews_the_leases_due_and_tells_the_holders_of_those_lost() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let renewals = LeaseRenewals::default();
        let kept = held_stream(&store, HERE).await;
        let taken = held_stream(&store, HERE).await;
        let ended = held_stream(&store, HERE).await;
        let mut registered: Vec<Renewal> = [&kept, &taken, &ended]
            .map(|stream| renewals.register(stream.clone()))
            .into();
        let start = Instant::now();
        store
            .release(&taken.session, &taken.upstream, HERE)
            .await
            .unwrap();
        let elsewhere = store.hold(&taken.session, &taken.upstream, "replica-b", LEASE);
        assert_eq!(elsewhere.await.unwrap(), Hold::Held);
        store.delete(&ended.session).await.unwrap();

        renewals.renew_due(&store, HERE, start).await;
        assert_eq!(renewals.len(), 3, "nothing is due before RENEW_EVERY");
        assert!(registered.iter_mut().all(|r| lost_now(r).is_none()));

        renewals.renew_due(&store, HERE, start + RENEW_EVERY).await;
        assert_eq!(lost_now(&mut registered[0]), None);
        assert_eq!(lost_now(&mut registered[1]), Some(LeaseLost::HeldElsewhere));
        assert_eq!(lost_now(&mut registered[2]), Some(LeaseLost::SessionGone));
        assert_eq!(renewals.len(), 1, "only the kept lease is still renewed");
        let upstreams = [kept.upstream.clone()];
        let holders = store.holders(&kept.session, &upstreams).await.unwrap();
        assert_eq!(holders, vec![Some(HERE.to_owned())]);

        drop(registered);
        assert_eq!(renewals.len(), 0, "a dropped renewal leaves the table");
    }

    #[tokio::test]
    async fn a_replaced_holder_leaves_its_successor_registered() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let renewals = LeaseRenewals::default();
        let stream = held_stream(&store, HERE).await;
        let older = renewals.register(stream.clone());
        let mut newer = renewals.register(stream.clone());
        drop(older);
        assert_eq!(renewals.len(), 1);

        store.delete(&stream.session).await.unwrap();
        let due = Instant::now() + RENEW_EVERY;
        renewals.renew_due(&store, HERE, due).await;
        assert_eq!(lost_now(&mut newer), Some(LeaseLost::SessionGone));
    }

    #[tokio::test]
    async fn a_lease_given_up_after_it_fell_due_is_not_taken_back() {
        let store = MemoryStore::new(Duration::from_secs(60));
        let renewals = LeaseRenewals::default();
        let stream = held_stream(&store, HERE).await;
        let renewal = renewals.register(stream.clone());
        let due = renewals.take_due(Instant::now() + RENEW_EVERY);
        assert_eq!(due.len(), 1);

        drop(renewal);
        let held_off = renewals.held_off().await;
        let release = store.release(&stream.session, &stream.upstream, HERE);
        release.await.unwrap();
        drop(held_off);
        renewals.renew(&store, HERE, &due).await;

        let upstreams = [stream.upstream.clone()];
        let holders = store.holders(&stream.session, &upstreams).await.unwrap();
        assert_eq!(holders, vec![None], "the released lease stays free");
    }

    #[tokio::test]
    async fn a_batch_the_store_fails_keeps_every_stream() {
        let nothing_listens = crate::config::RedisConfig {
            url: "redis://127.0.0.1:1".into(),
            timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let metrics = Arc::new(crate::telemetry::Metrics::new().unwrap());
        let pool = crate::redis::RedisPool::new(&nothing_listens, metrics).unwrap();
        let store = crate::session::RedisStore::new(pool, Duration::from_secs(3600));
        let renewals = LeaseRenewals::default();
        let stream = StreamLease {
            session: SessionId::generate(),
            upstream: "remote".into(),
        };
        let mut renewal = renewals.register(stream);

        renewals
            .renew_due(&store, HERE, Instant::now() + RENEW_EVERY)
            .await;

        assert_eq!(lost_now(&mut renewal), None, "the stream is kept");
        assert_eq!(renewals.len(), 1, "and renewed again when next due");
    }
}

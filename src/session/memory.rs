//! The in-memory store: the embedded default for development and single-replica use.
//!
//! It mirrors the Redis semantics (sliding idle TTL capped by the absolute lifetime, and
//! tombstones that outlive records so 404s can be classified) without a background sweeper:
//! entries are pruned lazily, a bounded amount on each write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Lookup, SessionId, SessionRecord, SessionStore, StoreError};

/// Tombstones are remembered this many times longer than the idle TTL.
const TOMBSTONE_FACTOR: u32 = 2;
/// How many entries one write may examine for pruning.
const PRUNE_BUDGET: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tombstone {
    Live,
    Expired,
    Deleted,
}

struct Entry {
    record: SessionRecord,
    idle_deadline: Instant,
}

#[derive(Default)]
struct State {
    records: HashMap<SessionId, Entry>,
    tombstones: HashMap<SessionId, (Tombstone, Instant)>,
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

    fn deadline_for(&self, record: &SessionRecord, now: Instant) -> Instant {
        now + self.idle_ttl.min(record.remaining_lifetime())
    }

    fn tombstone_deadline(&self, now: Instant) -> Instant {
        now + self.idle_ttl * TOMBSTONE_FACTOR
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn prune(&mut self, now: Instant) {
        let dead: Vec<SessionId> = self
            .records
            .iter()
            .take(PRUNE_BUDGET)
            .filter(|(_, e)| e.idle_deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            self.records.remove(&id);
        }
        let forgotten: Vec<SessionId> = self
            .tombstones
            .iter()
            .take(PRUNE_BUDGET)
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in forgotten {
            self.tombstones.remove(&id);
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        let now = Instant::now();
        let idle_deadline = self.deadline_for(record, now);
        let tombstone_deadline = self.tombstone_deadline(now);
        let mut state = self.lock();
        state.prune(now);
        state.records.insert(
            id.clone(),
            Entry {
                record: record.clone(),
                idle_deadline,
            },
        );
        state
            .tombstones
            .insert(id.clone(), (Tombstone::Live, tombstone_deadline));
        Ok(())
    }

    async fn load(&self, id: &SessionId) -> Result<Lookup, StoreError> {
        let now = Instant::now();
        let tombstone_deadline = self.tombstone_deadline(now);
        let mut state = self.lock();
        if let Some(entry) = state.records.get_mut(id) {
            if entry.idle_deadline > now {
                entry.idle_deadline = now + self.idle_ttl.min(entry.record.remaining_lifetime());
                let record = entry.record.clone();
                state
                    .tombstones
                    .insert(id.clone(), (Tombstone::Live, tombstone_deadline));
                return Ok(Lookup::Live(Box::new(record)));
            }
            state.records.remove(id);
        }
        let tombstone = state
            .tombstones
            .get_mut(id)
            .filter(|(_, deadline)| *deadline > now);
        Ok(match tombstone {
            Some((state @ Tombstone::Live, _)) => {
                *state = Tombstone::Expired;
                Lookup::Expired { first_notice: true }
            }
            Some((Tombstone::Expired, _)) => Lookup::Expired {
                first_notice: false,
            },
            Some((Tombstone::Deleted, _)) => Lookup::Deleted,
            None => Lookup::Unknown,
        })
    }

    async fn save(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(entry) = state.records.get_mut(id) {
            entry.record = record.clone();
        }
        Ok(())
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let now = Instant::now();
        let tombstone_deadline = self.tombstone_deadline(now);
        let mut state = self.lock();
        let was_live = state
            .records
            .remove(id)
            .is_some_and(|e| e.idle_deadline > now);
        state
            .tombstones
            .insert(id.clone(), (Tombstone::Deleted, tombstone_deadline));
        Ok(was_live)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
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
        assert!(matches!(first, Lookup::Expired { first_notice: true }));
        let again = store.load(&a).await.unwrap();
        assert!(matches!(
            again,
            Lookup::Expired {
                first_notice: false
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
}

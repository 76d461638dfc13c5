//! The sessions this replica created lately, so that its first request here is not counted as
//! a revival, without keeping anything else of an idle session: a new session gets no
//! [`super::Hub`] entry until its first request, and costs this replica about 16 bytes here.
//!
//! Ids are kept as 64-bit keyed hashes in two generations; the older one is dropped each time
//! `keep` has passed, so an id is remembered for between `keep` and twice that. That bounds the
//! sets by the creation rate, and matches the hub, which forgets an idle session after `keep`
//! too (its next request then counts as a revival either way).

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use foldhash::{HashSet, HashSetExt};

use crate::session::SessionId;
use crate::sync::lock;

pub(super) struct CreatedHere {
    keep: Duration,
    hasher: RandomState,
    generations: Mutex<Generations>,
}

struct Generations {
    current: HashSet<u64>,
    previous: HashSet<u64>,
    started: Instant,
}

impl CreatedHere {
    pub(super) fn new(keep: Duration) -> Self {
        Self {
            keep,
            hasher: RandomState::default(),
            generations: Mutex::new(Generations {
                current: HashSet::new(),
                previous: HashSet::new(),
                started: Instant::now(),
            }),
        }
    }

    pub(super) fn insert(&self, id: &SessionId) {
        let key = self.hasher.hash_one(id);
        let mut generations = lock(&self.generations);
        if generations.started.elapsed() >= self.keep {
            generations.previous = std::mem::take(&mut generations.current);
            generations.started = Instant::now();
        }
        generations.current.insert(key);
    }

    /// Whether `id` was created here lately, remembering it.
    pub(super) fn contains(&self, id: &SessionId) -> bool {
        let key = self.hasher.hash_one(id);
        let generations = lock(&self.generations);
        generations.current.contains(&key) || generations.previous.contains(&key)
    }

    /// Whether `id` was created here lately; forgets it (the hub knows it from now on).
    pub(super) fn take(&self, id: &SessionId) -> bool {
        let key = self.hasher.hash_one(id);
        let mut generations = lock(&self.generations);
        generations.current.remove(&key) || generations.previous.remove(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_creation_once_and_forgets_it_after_two_periods() {
        let created = CreatedHere::new(Duration::from_millis(20));
        let (a, b) = (SessionId::generate(), SessionId::generate());
        created.insert(&a);
        created.insert(&b);
        assert!(
            created.contains(&a) && created.contains(&a),
            "contains keeps it"
        );
        assert!(created.take(&a));
        assert!(!created.take(&a), "taken once");
        assert!(!created.contains(&a));
        std::thread::sleep(Duration::from_millis(25));
        created.insert(&SessionId::generate());
        assert!(created.take(&b), "still in the previous generation");
        created.insert(&b);
        std::thread::sleep(Duration::from_millis(25));
        created.insert(&SessionId::generate());
        std::thread::sleep(Duration::from_millis(25));
        created.insert(&SessionId::generate());
        assert!(!created.take(&b), "forgotten after two periods");
    }
}

//! Sessions: the id, the record that lets any replica serve a session, and the store trait.
//!
//! The store is the only owner of session state. Everything else in the process is a cache
//! that may be rebuilt from a [`SessionRecord`] at any time.

mod expiry_events;
mod memory;
mod record;
mod redis;

use async_trait::async_trait;
use base64::Engine;
use rand::Rng;

pub use expiry_events::watch as watch_expiry_events;
pub use memory::MemoryStore;
pub use record::{SessionRecord, UpstreamSession};
pub use redis::RedisStore;

/// A session id: 256 bits from the thread-local CSPRNG, base64url without padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        SessionId(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts a client-supplied id if it is visible ASCII of a sane length; anything else can
    /// never name a session of ours, so the caller answers 404 without touching the store.
    pub fn parse(text: &str) -> Option<Self> {
        let plausible = (16..=128).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        plausible.then(|| SessionId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a store knows about an id.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The session is live; its idle TTL was slid by this lookup.
    Live(Box<SessionRecord>),
    /// The session existed and timed out. `first_notice` is true for exactly one lookup
    /// across the fleet, so the expiry is counted once.
    Expired { first_notice: bool },
    /// The client deleted it.
    Deleted,
    /// The id was never issued (or was forgotten entirely).
    Unknown,
}

/// A store failure. Never a reason to answer 404: callers answer 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session record is unreadable: {0}")]
    Corrupt(String),
}

/// Where session records live.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new record under a fresh id.
    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError>;
    /// Reads a record and slides its idle TTL in the same step.
    async fn load(&self, id: &SessionId) -> Result<Lookup, StoreError>;
    /// Replaces the record of a live session; a no-op when it is gone.
    async fn save(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError>;
    /// Ends the session; returns whether it was live.
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError>;
    /// Checks that the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_long_unique_and_parse_back() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 43);
        assert_eq!(SessionId::parse(a.as_str()), Some(a));
        assert!(SessionId::parse("short").is_none());
        assert!(SessionId::parse("has spaces in it, which is not allowed").is_none());
    }
}

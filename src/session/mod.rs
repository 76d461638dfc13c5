//! Sessions: the id, the record that lets any replica serve a session, and the store trait.
//!
//! The store is the only owner of session state. Everything else in the process is a cache
//! that may be rebuilt from a [`SessionRecord`] at any time.

mod memory;
mod record;
mod redis;
mod traced;

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use rand::Rng;

pub use memory::MemoryStore;
pub use record::{
    RECORD_SCHEMA, RecordChange, RecordCore, SessionRecord, UpstreamSession, unix_now,
};
pub use redis::RedisStore;
pub use traced::TracedStore;

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

/// The TTL a tombstone (and the upstream sessions it keeps) gets from the last use of its
/// session, or (Redis) from its last slide: twice the idle TTL, and at least a minute more than
/// it, so that an open stream's next keep-alive check (every 15 s) still finds the tombstone of
/// a session that just expired. The Redis store slides it before less than 3/4 of its margin
/// beyond the record is left.
pub fn tombstone_ttl(idle_ttl: std::time::Duration) -> std::time::Duration {
    idle_ttl
        .saturating_mul(2)
        .max(idle_ttl.saturating_add(std::time::Duration::from_secs(60)))
}

/// Upstream sessions of a session that ended, by upstream name, still to be closed.
pub type Orphans = std::collections::BTreeMap<String, UpstreamSession>;

/// What a store knows about an id.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The session is live; its idle TTL was slid by this lookup.
    Live(Arc<SessionRecord>),
    /// The session existed and timed out. `first_notice` is true for exactly one lookup
    /// across the fleet, so the expiry is counted once; that lookup also gets the session's
    /// upstream sessions (`orphans`), which it must close.
    Expired {
        first_notice: bool,
        orphans: Orphans,
    },
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
    /// A replica of a newer release wrote this record (during a rolling upgrade); this one
    /// refuses it rather than half-understand it.
    #[error("session record has schema {found}; this replica reads up to {supported}")]
    NewerSchema { found: u32, supported: u32 },
}

/// A stream lease asked for together with a claim ([`SessionStore::claim_upstream`]): the
/// lease [`SessionStore::hold`] would take, by `holder`, for `time`.
#[derive(Debug, Clone, Copy)]
pub struct LeaseWanted<'a> {
    pub holder: &'a str,
    pub time: std::time::Duration,
}

/// The answer to [`SessionStore::claim_upstream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The session's session on that upstream is now the caller's; `holding` when the caller
    /// asked for the stream's lease and took it too.
    Won { holding: bool },
    /// Another one was saved first; here it is.
    Taken(UpstreamSession),
    /// The session is gone.
    SessionGone,
}

/// A session's standalone stream of an upstream, whose lease a replica renews
/// ([`SessionStore::renew_holds`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamLease {
    pub session: SessionId,
    pub upstream: String,
}

/// The answer to [`SessionStore::hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The caller holds it (again) for the lease's time.
    Held,
    /// Another replica holds it.
    HeldElsewhere,
    /// The session is gone.
    SessionGone,
}

/// Where session records live.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new record under a fresh id.
    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError>;
    /// Reads a record and slides its idle TTL in the same step.
    async fn load(&self, id: &SessionId) -> Result<Lookup, StoreError>;
    /// Applies one change to a live session's record, atomically; a no-op when it is gone.
    async fn update(&self, id: &SessionId, change: &RecordChange) -> Result<(), StoreError>;
    /// Saves a newly opened upstream session as the session's session on `upstream` unless
    /// one is saved already (another request opened one first, maybe on another replica);
    /// when it is saved, also takes the `lease` of its stream if one is wanted and free, in the
    /// same step.
    async fn claim_upstream(
        &self,
        id: &SessionId,
        upstream: &str,
        session: &UpstreamSession,
        lease: Option<LeaseWanted<'_>>,
    ) -> Result<Claimed, StoreError>;
    /// Ends the session; returns whether it was live.
    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError>;
    /// Whether the record still exists, without sliding its TTL (open streams ask this).
    async fn exists(&self, id: &SessionId) -> Result<bool, StoreError>;
    /// Classifies an id whose record is gone, noticing an expiry the way a returning client
    /// would (see [`Lookup::Expired`]); `None` when the record is there after all. Never
    /// touches a live record.
    async fn notice_gone(&self, id: &SessionId) -> Result<Option<Lookup>, StoreError>;
    /// Takes, or renews, the lease by which one replica (`holder`) holds a session's stream of
    /// `upstream`, for `lease`; a replica that stops renewing loses it when the lease runs out.
    async fn hold(
        &self,
        id: &SessionId,
        upstream: &str,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<Hold, StoreError>;
    /// Renews `holder`'s leases of `streams` for `lease`, together (one round trip on Redis);
    /// the answer for each, in order, is [`SessionStore::hold`]'s.
    async fn renew_holds(
        &self,
        streams: &[StreamLease],
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<Vec<Hold>, StoreError>;
    /// The holder of each of `upstreams`' leases of a session, in that order (`None` where
    /// none is live); takes none of them.
    async fn holders(
        &self,
        id: &SessionId,
        upstreams: &[String],
    ) -> Result<Vec<Option<String>>, StoreError>;
    /// Gives up a lease `holder` has.
    async fn release(&self, id: &SessionId, upstream: &str, holder: &str)
    -> Result<(), StoreError>;
    /// Checks that the store answers and accepts the writes that serving sessions needs
    /// (sliding TTLs); a store that only refuses new data (out of memory) passes.
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

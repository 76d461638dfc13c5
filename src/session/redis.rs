//! The Redis session store: session records and their tombstones, shared by every replica.
//!
//! It owns two keys per session. The `{<sid>}` hash tag keeps both in one Redis Cluster slot, so
//! the MULTI blocks and the script below never span slots:
//!
//! | key | holds | TTL |
//! |---|---|---|
//! | `mcpgate:{<sid>}:s` | the [`SessionRecord`] as JSON | `min(idle_ttl, time left to record.expires_at)`, slid by every load |
//! | `mcpgate:{<sid>}:t` | tombstone: `live`, `expired` or `deleted` | `tombstone_ttl` (2 × `idle_ttl`), refreshed by every load |
//!
//! The tombstone outlives the record so that an id whose record is gone can still be told
//! apart: `live` with no record means the session timed out, and the one lookup that flips it
//! to `expired` (atomically, in a script) gets `first_notice`, so a fleet counts an expiry once.
//! Refreshing the tombstone on every load keeps an id classifiable for as long as clients keep
//! presenting it.
//!
//! Round trips: `create`, `save` and `delete` take one; `load` takes one (a MULTI of two GETEX)
//! unless the record is within `idle_ttl` of its absolute cap (one PEXPIREAT more), its
//! tombstone went missing (restored), or it is gone with a `live` tombstone (the expire script).
//!
//! Expiry is Redis's job: nothing here scans keys or sweeps. Every Redis call goes through
//! [`RedisPool::run`] (deadline, metrics); a failure is [`StoreError::Unavailable`], never a
//! missing session. Needs Redis 6.2 or later (GETEX, SET … PXAT / KEEPTTL).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{ExistenceCheck, Expiry, Pipeline, Script, SetExpiry, SetOptions};
use async_trait::async_trait;

use super::{Lookup, SessionId, SessionRecord, SessionStore, StoreError};
use crate::redis_pool::RedisPool;

/// Tombstones live this many times longer than the idle TTL (as in the memory store).
const TOMBSTONE_FACTOR: u32 = 2;

/// Deletes the record (a no-op when Redis already expired it) and flips a `live` tombstone to
/// `expired`, keeping its TTL. Returns the tombstone as it was, so exactly one caller sees
/// `live`.
const EXPIRE_SCRIPT: &str = r"
redis.call('DEL', KEYS[1])
local previous = redis.call('GET', KEYS[2])
if previous == 'live' then
  redis.call('SET', KEYS[2], 'expired', 'KEEPTTL')
end
return previous
";

/// What the tombstone key says about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tombstone {
    Live,
    Expired,
    Deleted,
}

impl Tombstone {
    fn as_str(self) -> &'static str {
        match self {
            Tombstone::Live => "live",
            Tombstone::Expired => "expired",
            Tombstone::Deleted => "deleted",
        }
    }

    /// Reads a tombstone value; an absent key is `None`, an unknown value is corrupt.
    fn parse(value: Option<String>) -> Result<Option<Self>, StoreError> {
        let Some(value) = value else { return Ok(None) };
        match value.as_str() {
            "live" => Ok(Some(Tombstone::Live)),
            "expired" => Ok(Some(Tombstone::Expired)),
            "deleted" => Ok(Some(Tombstone::Deleted)),
            other => Err(StoreError::Corrupt(format!(
                "tombstone holds unknown state {other:?}"
            ))),
        }
    }

    /// The answer for an id whose record is gone, given its tombstone before any flip.
    fn classify(previous: Option<Self>) -> Lookup {
        match previous {
            Some(Tombstone::Live) => Lookup::Expired { first_notice: true },
            Some(Tombstone::Expired) => Lookup::Expired {
                first_notice: false,
            },
            Some(Tombstone::Deleted) => Lookup::Deleted,
            None => Lookup::Unknown,
        }
    }
}

/// The two keys of one session.
struct Keys {
    record: String,
    tombstone: String,
}

impl Keys {
    fn new(id: &SessionId) -> Self {
        Self {
            record: format!("mcpgate:{{{id}}}:s"),
            tombstone: format!("mcpgate:{{{id}}}:t"),
        }
    }
}

/// Sessions in Redis: every replica can serve every session.
pub struct RedisStore {
    pool: RedisPool,
    idle_ttl_ms: u64,
    tombstone_ttl_ms: u64,
    expire: Script,
}

impl RedisStore {
    /// A store whose records expire after `idle_ttl` without a load. Tombstones are kept
    /// `2 × idle_ttl` from the last load (or create/delete), so they always outlive the record.
    pub fn new(pool: RedisPool, idle_ttl: Duration) -> Self {
        Self {
            pool,
            idle_ttl_ms: millis(idle_ttl),
            tombstone_ttl_ms: millis(idle_ttl.saturating_mul(TOMBSTONE_FACTOR)),
            expire: Script::new(EXPIRE_SCRIPT),
        }
    }

    /// Notices a record key that Redis reported expired (keyspace notifications) the way a
    /// returning client would: `true` for the one caller that flipped the tombstone.
    pub async fn notice_expired_key(&self, key: &str) -> Result<bool, StoreError> {
        let session = key
            .strip_prefix("mcpgate:{")
            .and_then(|rest| rest.strip_suffix("}:s"))
            .and_then(SessionId::parse);
        let Some(session) = session else {
            return Ok(false);
        };
        let lookup = self.expire(&Keys::new(&session)).await?;
        Ok(matches!(lookup, Lookup::Expired { first_notice: true }))
    }

    /// Runs one Redis operation; any failure means the store is unavailable.
    async fn run<T, F, Fut>(&self, op: &'static str, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(crate::redis_pool::Connection) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        self.pool
            .run(op, operation)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Runs a pipeline (atomic or not, as built) and decodes its replies.
    async fn query<T>(&self, op: &'static str, pipe: Pipeline) -> Result<T, StoreError>
    where
        T: ::redis::FromRedisValue,
    {
        self.run(
            op,
            |mut conn| async move { pipe.query_async(&mut conn).await },
        )
        .await
    }

    /// `PX tombstone_ttl`, with an optional existence check.
    fn tombstone_options(&self, check: Option<ExistenceCheck>) -> SetOptions {
        let options = SetOptions::default().with_expiration(SetExpiry::PX(self.tombstone_ttl_ms));
        match check {
            Some(check) => options.conditional_set(check),
            None => options,
        }
    }

    /// The record's expiry at create: the idle TTL, or the absolute cap when that comes first.
    fn record_expiry(&self, record: &SessionRecord) -> SetExpiry {
        let cap = cap_ms(record);
        if cap.saturating_sub(now_ms()) < self.idle_ttl_ms {
            SetExpiry::PXAT(cap)
        } else {
            SetExpiry::PX(self.idle_ttl_ms)
        }
    }

    /// The record is gone: classify the id, flipping a `live` tombstone if it says so.
    async fn gone(&self, keys: &Keys, tombstone: Option<Tombstone>) -> Result<Lookup, StoreError> {
        match tombstone {
            Some(Tombstone::Live) => self.expire(keys).await,
            other => Ok(Tombstone::classify(other)),
        }
    }

    /// Ends a timed-out session; only the caller that flips the tombstone gets the first notice.
    async fn expire(&self, keys: &Keys) -> Result<Lookup, StoreError> {
        let mut invocation = self.expire.prepare_invoke();
        invocation.key(&keys.record).key(&keys.tombstone);
        let previous: Option<String> = self
            .run("session_expire", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(Tombstone::classify(Tombstone::parse(previous)?))
    }

    /// After a successful load: pins the record's TTL to the absolute cap when that is nearer
    /// than the idle TTL, and restores a missing tombstone. Usually nothing to do.
    async fn fix_up(
        &self,
        keys: &Keys,
        cap: u64,
        now: u64,
        tombstone: Option<Tombstone>,
    ) -> Result<(), StoreError> {
        let mut pipe = ::redis::pipe();
        if cap.saturating_sub(now) < self.idle_ttl_ms {
            pipe.pexpire_at(&keys.record, i64::try_from(cap).unwrap_or(i64::MAX))
                .ignore();
        }
        if tombstone.is_none() {
            // NX: a concurrent delete's `deleted` wins over this repair.
            let options = self.tombstone_options(Some(ExistenceCheck::NX));
            pipe.set_options(&keys.tombstone, Tombstone::Live.as_str(), options)
                .ignore();
        }
        if pipe.is_empty() {
            return Ok(());
        }
        self.query::<()>("session_load_fixup", pipe).await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        let keys = Keys::new(id);
        let json = encode(record)?;
        let record_options = SetOptions::default().with_expiration(self.record_expiry(record));
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .set_options(&keys.record, json, record_options)
            .ignore()
            .set_options(
                &keys.tombstone,
                Tombstone::Live.as_str(),
                self.tombstone_options(None),
            )
            .ignore();
        self.query("session_create", pipe).await
    }

    async fn load(&self, id: &SessionId) -> Result<Lookup, StoreError> {
        let keys = Keys::new(id);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .get_ex(&keys.record, Expiry::PX(self.idle_ttl_ms))
            .get_ex(&keys.tombstone, Expiry::PX(self.tombstone_ttl_ms));
        let (raw, tombstone): (Option<Vec<u8>>, Option<String>) =
            self.query("session_load", pipe).await?;
        let tombstone = Tombstone::parse(tombstone)?;
        let Some(raw) = raw else {
            return self.gone(&keys, tombstone).await;
        };
        let record = decode(&raw)?;
        let (cap, now) = (cap_ms(&record), now_ms());
        if cap <= now {
            // Past the absolute cap: Redis would have dropped it had the clocks agreed.
            return self.expire(&keys).await;
        }
        self.fix_up(&keys, cap, now, tombstone).await?;
        Ok(Lookup::Live(Box::new(record)))
    }

    async fn save(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        let keys = Keys::new(id);
        let json = encode(record)?;
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::XX)
            .with_expiration(SetExpiry::KEEPTTL);
        let mut pipe = ::redis::pipe();
        pipe.set_options(&keys.record, json, options).ignore();
        self.query("session_save", pipe).await
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let keys = Keys::new(id);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .del(&keys.record)
            .set_options(
                &keys.tombstone,
                Tombstone::Deleted.as_str(),
                self.tombstone_options(None),
            )
            .ignore();
        let (removed,): (u64,) = self.query("session_delete", pipe).await?;
        Ok(removed > 0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run("session_ping", |mut conn| async move {
            ::redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }
}

fn encode(record: &SessionRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Unknown fields (from a newer schema) are ignored by the record's serde derive.
fn decode(raw: &[u8]) -> Result<SessionRecord, StoreError> {
    serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The record's absolute cap, Unix milliseconds.
fn cap_ms(record: &SessionRecord) -> u64 {
    record.expires_at.saturating_mul(1000)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whole milliseconds, at least 1 (Redis refuses a zero TTL).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

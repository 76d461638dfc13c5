//! The Redis session store: session records and their tombstones, shared by every replica.
//!
//! It owns these keys per session (named, with their types and TTLs, in [`keys`]): the record
//! (a hash: `schema`, `core` (JSON: version, client info and capabilities, times), `log`
//! (level), `sub:<uri>` (upstream)), the upstream sessions (a hash: `<upstream>` → JSON), the
//! tombstone, and the leases of the replicas holding the session's standalone streams. The
//! `{<sid>}` hash tag keeps them in one Redis Cluster slot, so the MULTI blocks and the scripts
//! below never span slots.
//!
//! Every change is one field, written atomically and only while the record exists (a script),
//! so replicas changing the same session at once never lose each other's changes. Upstream
//! sessions live in their own key, which outlives the record: whoever notices that a session
//! expired gets them (the expire script hands them over once) and closes them upstream. A
//! session's first session on an upstream is claimed rather than set: the first one saved is
//! kept, so requests racing to open it on several replicas agree on one.
//!
//! The tombstone outlives the record so that an id whose record is gone can still be told
//! apart: `live` with no record means the session timed out, and the one caller that flips it
//! to `expired` (atomically, in a script) gets `first_notice`, so a fleet counts an expiry once.
//! A load slides the record's idle TTL only; the tombstone and the upstream sessions are given
//! `tombstone_ttl` at creation and again by a load that finds them due (the keep script), which
//! notes until when in the record's `kept` field. They are due once they would outlive the
//! record by less than [`KEEP_MARGIN`] of what a slide gives them, so they always outlive it, by
//! at least 45 s, and a busy session's tombstone is slid about every `idle_ttl / 4` (at least
//! 15 s apart). A tombstone lost meanwhile (evicted, say) is restored by the next slide.
//!
//! Round trips: `create`, `update`, `delete`, `exists`, `hold` and `holders` take one, and so does
//! `renew_holds` for all its leases (on a cluster they go out together, unpipelined:
//! [`Connection::query_each`]); `load` takes one (a pipeline of HGETALL, PEXPIRE and HGETALL)
//! unless the record is within `idle_ttl` of its absolute cap (one PEXPIREAT more), its
//! tombstone and upstream sessions are due (the keep script), it is gone (the expire script reads
//! the tombstone, and flips a `live` one), or it is a schema-1 record (upgraded in place, once).
//! Operations issued together share a round trip on the multiplexed connection; a pooled
//! (Sentinel) connection also costs the pool's own check on checkout.
//!
//! **Memory pressure.** The load pipeline is not a MULTI and uses only commands Redis runs when
//! `maxmemory` is reached (HGETALL, PEXPIRE), so a Redis that refuses new data (`noeviction`)
//! still serves, and slides, existing sessions; the keep script slides TTLs before it writes, and
//! a load whose keep script fails serves the session all the same (the next load tries again);
//! creating a session (a MULTI of writes) fails with 503. [`SessionStore::ping`] probes with
//! PEXPIRE: it fails when Redis refuses writes altogether (paused, read-only) and passes when it
//! is only full.
//!
//! Expiry is Redis's job: nothing here scans keys or sweeps. Every Redis call goes through
//! [`RedisPool::run`] (deadline, metrics); a failure is [`StoreError::Unavailable`], never a
//! missing session. Needs Redis 6.2 or later (GETEX, SET … KEEPTTL).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{Pipeline, Script, SetExpiry, SetOptions};
use async_trait::async_trait;

use super::{
    Claimed, Hold, LeaseWanted, Lookup, Orphans, RECORD_SCHEMA, RecordChange, RecordCore,
    SessionId, SessionRecord, SessionStore, StoreError, StreamLease, UpstreamSession,
};
use crate::redis::command::sized;
use crate::redis::{Connection, HashFields, RedisPool, keys};

/// Record hash fields.
const FIELD_SCHEMA: &str = "schema";
const FIELD_CORE: &str = "core";
const FIELD_LOG: &str = "log";
/// Unix ms until which the tombstone and the upstream sessions are kept (by the last slide).
const FIELD_KEPT: &str = "kept";
/// The tombstone and the upstream sessions are slid again once they would outlive the record
/// by less than this share of what a slide gives them beyond it (`tombstone_ttl - idle_ttl`,
/// at least 60 s): 3/4, so they outlive it by at least 45 s, far beyond the replicas' clock skew.
const KEEP_MARGIN: (u64, u64) = (3, 4);
const SUBSCRIPTION_PREFIX: &str = "sub:";

/// Ends a session whose record is gone, or (ARGV[1] = `force`) past its absolute cap. With
/// `notice`, a record that is still there is left alone and the answer is `present`.
/// Deletes the record and flips a `live` tombstone to `expired` (keeping its TTL); the caller
/// that flips it also gets the upstream sessions, which are then forgotten.
/// KEYS: record, tombstone, upstreams. Returns {previous tombstone or '', flat orphan pairs}.
const EXPIRE_SCRIPT: &str = r"
if ARGV[1] == 'notice' and redis.call('EXISTS', KEYS[1]) == 1 then
  return {'present', {}}
end
redis.call('DEL', KEYS[1])
local previous = redis.call('GET', KEYS[2])
local orphans = {}
if previous == 'live' then
  redis.call('SET', KEYS[2], 'expired', 'KEEPTTL')
  orphans = redis.call('HGETALL', KEYS[3])
  redis.call('DEL', KEYS[3])
end
return {previous or '', orphans}
";

/// Sets one field of a live session. KEYS: record (must exist), the hash to write.
/// ARGV: field, value, TTL in ms to give the written hash (`0`: leave it).
const SET_FIELD_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
";

/// Slides the tombstone and the upstream sessions of a live session to ARGV[1] ms (restoring a
/// lost tombstone as `live`) and notes in the record's field ARGV[2] that they are kept until
/// ARGV[3] (Unix ms). TTLs first: under `maxmemory` Redis refuses only a script's first write
/// that may grow memory. KEYS: record (must exist), tombstone, upstreams. Returns 0 when the
/// session is gone.
const KEEP_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('PEXPIRE', KEYS[3], ARGV[1])
if redis.call('PEXPIRE', KEYS[2], ARGV[1]) == 0 then
  redis.call('SET', KEYS[2], 'live', 'PX', ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
";

/// Saves an upstream session unless one is saved for that upstream, and then takes its
/// stream's lease if asked and free. KEYS: record (must exist), upstreams, and the lease when
/// asked. ARGV: upstream, JSON, the upstreams' TTL in ms, and when the lease is asked its
/// holder and time in ms. Returns {1, 'held'} when saved and the lease taken, {1, ''} when
/// saved only, {0, the saved JSON} when one was saved before, {-1, ''} when the session is
/// gone.
const CLAIM_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, ''}
end
local saved = redis.call('HGET', KEYS[2], ARGV[1])
if saved then
  return {0, saved}
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if KEYS[3] and redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[5]) then
  return {1, 'held'}
end
return {1, ''}
";

/// Takes or renews a hold lease. KEYS: record, lease. ARGV: holder, lease ms.
/// Returns -1 when the session is gone, 1 when held by the caller, 0 when held by another.
const HOLD_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local owner = redis.call('GET', KEYS[2])
if not owner then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 1
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
";

/// Deletes a hold lease if the caller has it. KEYS: lease. ARGV: holder.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Replaces a schema-1 record (one JSON string) by its schema-2 hashes, keeping its TTL, if it
/// is still the string that was read. KEYS: record, upstreams. ARGV: the JSON read, the
/// upstreams' TTL in ms, the number N of record field pairs, N record pairs, upstream pairs.
const UPGRADE_SCRIPT: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'string' or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[1])
local last = 3 + 2 * tonumber(ARGV[3])
for i = 4, last, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
for i = last + 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if #ARGV > last then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
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

    /// The answer for an id whose record is gone, given its tombstone before any flip and the
    /// upstream sessions handed over by the flip.
    fn classify(previous: Option<Self>, orphans: Orphans) -> Lookup {
        match previous {
            Some(Tombstone::Live) => Lookup::Expired {
                first_notice: true,
                orphans,
            },
            Some(Tombstone::Expired) => Lookup::Expired {
                first_notice: false,
                orphans: Orphans::new(),
            },
            Some(Tombstone::Deleted) => Lookup::Deleted,
            None => Lookup::Unknown,
        }
    }
}

/// How the expire script treats a record that is still there.
#[derive(Debug, Clone, Copy)]
enum ExpireMode {
    /// Past its absolute cap: delete it.
    Force,
    /// Someone thinks it is gone: leave it if it is not.
    Notice,
}

/// The keys of one session.
struct Keys {
    record: String,
    upstreams: String,
    tombstone: String,
}

impl Keys {
    fn new(id: &SessionId) -> Self {
        Self {
            record: keys::session_record(id),
            upstreams: keys::session_upstreams(id),
            tombstone: keys::session_tombstone(id),
        }
    }
}

/// What the load pipeline read.
enum Read {
    Hashes {
        record: HashFields,
        upstreams: HashFields,
    },
    /// The record is a schema-1 string.
    Legacy,
}

/// Sessions in Redis: every replica can serve every session.
pub struct RedisStore {
    pool: RedisPool,
    idle_ttl_ms: u64,
    tombstone_ttl_ms: u64,
    /// How far beyond a loaded record's idle TTL its tombstone must still be kept, or be slid.
    keep_margin_ms: u64,
    expire: Script,
    set_field: Script,
    keep: Script,
    upgrade: Script,
    hold: Script,
    claim: Script,
    release: Script,
}

impl RedisStore {
    /// A store whose records expire after `idle_ttl` without a load. Tombstones and upstream
    /// sessions are kept [`tombstone_ttl`](super::tombstone_ttl) from their creation or last
    /// slide, and slid before the record could outlive them.
    pub fn new(pool: RedisPool, idle_ttl: Duration) -> Self {
        let (idle_ttl_ms, tombstone_ttl_ms) =
            (millis(idle_ttl), millis(super::tombstone_ttl(idle_ttl)));
        let (share, of) = KEEP_MARGIN;
        Self {
            pool,
            idle_ttl_ms,
            tombstone_ttl_ms,
            keep_margin_ms: tombstone_ttl_ms.saturating_sub(idle_ttl_ms) / of * share,
            expire: Script::new(EXPIRE_SCRIPT),
            set_field: Script::new(SET_FIELD_SCRIPT),
            keep: Script::new(KEEP_SCRIPT),
            upgrade: Script::new(UPGRADE_SCRIPT),
            hold: Script::new(HOLD_SCRIPT),
            claim: Script::new(CLAIM_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
        }
    }

    /// Runs one Redis operation; any failure means the store is unavailable.
    async fn run<T, F, Fut>(&self, op: &'static str, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
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

    /// `PX tombstone_ttl`.
    fn tombstone_options(&self) -> SetOptions {
        SetOptions::default().with_expiration(SetExpiry::PX(self.tombstone_ttl_ms))
    }

    /// Reads the record and the upstream sessions, sliding the record's idle TTL, in one round
    /// trip that Redis serves even when it is out of memory. Every request makes it, so its
    /// commands are built at their size.
    async fn read(&self, keys: &Keys) -> Result<Read, StoreError> {
        let (record, upstreams) = (keys.record.as_bytes(), keys.upstreams.as_bytes());
        let idle_ttl = self.idle_ttl_ms.to_string();
        let mut pipe = Pipeline::with_capacity(3);
        pipe.add_command(sized(&[b"HGETALL", record]))
            .add_command(sized(&[b"PEXPIRE", record, idle_ttl.as_bytes()]))
            .add_command(sized(&[b"HGETALL", upstreams]));
        self.run("session_load", |mut conn| async move {
            match pipe
                .query_async::<(HashFields, i64, HashFields)>(&mut conn)
                .await
            {
                Ok((record, _, upstreams)) => Ok(Read::Hashes { record, upstreams }),
                Err(error) if is_wrong_type(&error) => Ok(Read::Legacy),
                Err(error) => Err(error),
            }
        })
        .await
    }

    /// Rewrites a schema-1 record as schema 2, in place (a no-op when another replica did).
    async fn upgrade(&self, keys: &Keys) -> Result<(), StoreError> {
        let record_key = keys.record.clone();
        let json: Option<String> = self
            .run("session_upgrade_read", |mut conn| async move {
                ::redis::cmd("GET")
                    .arg(&record_key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let Some(json) = json else { return Ok(()) };
        let legacy: SessionRecord = decode_json(&json)?;
        let fields = record_fields(&legacy)?;
        let upstreams = upstream_fields(&legacy.upstreams)?;
        let mut invocation = self.upgrade.prepare_invoke();
        invocation
            .key(&keys.record)
            .key(&keys.upstreams)
            .arg(json)
            .arg(self.tombstone_ttl_ms)
            .arg(fields.len());
        for (field, value) in fields.iter().chain(&upstreams) {
            invocation.arg(field).arg(value);
        }
        self.run("session_upgrade", |mut conn| async move {
            invocation.invoke_async::<()>(&mut conn).await
        })
        .await
    }

    /// The record is gone: classifies the id by its tombstone, flipping a `live` one.
    async fn gone(&self, keys: &Keys) -> Result<Lookup, StoreError> {
        self.run_expire(keys, ExpireMode::Notice)
            .await?
            .ok_or_else(|| StoreError::Unavailable("the record came back during its load".into()))
    }

    /// Ends a timed-out session whatever its record says; only the caller that flips the
    /// tombstone gets the first notice and the orphaned upstream sessions.
    async fn expire(&self, keys: &Keys) -> Result<Lookup, StoreError> {
        let lookup = self.run_expire(keys, ExpireMode::Force).await?;
        Ok(lookup.unwrap_or(Lookup::Unknown))
    }

    /// Runs the expire script; `None` when the record is there and `mode` is `Notice`.
    async fn run_expire(
        &self,
        keys: &Keys,
        mode: ExpireMode,
    ) -> Result<Option<Lookup>, StoreError> {
        let mut invocation = self.expire.prepare_invoke();
        invocation
            .key(&keys.record)
            .key(&keys.tombstone)
            .key(&keys.upstreams)
            .arg(match mode {
                ExpireMode::Force => "force",
                ExpireMode::Notice => "notice",
            });
        let (previous, orphans): (String, Vec<String>) = self
            .run("session_expire", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if previous == "present" {
            return Ok(None);
        }
        let previous = Some(previous).filter(|p| !p.is_empty());
        let orphans = decode_upstreams(pairs(orphans))?;
        Ok(Some(Tombstone::classify(
            Tombstone::parse(previous)?,
            orphans,
        )))
    }

    /// After a successful load: pins the record's TTL to the absolute cap when that is nearer
    /// than the idle TTL, and slides the tombstone and upstream sessions when they are due.
    /// Usually nothing to do.
    async fn fix_up(
        &self,
        keys: &Keys,
        cap: u64,
        now: u64,
        kept: Option<u64>,
    ) -> Result<(), StoreError> {
        if cap.saturating_sub(now) < self.idle_ttl_ms {
            let mut pipe = ::redis::pipe();
            pipe.pexpire_at(&keys.record, ms_i64(cap)).ignore();
            self.query::<()>("session_load_fixup", pipe).await?;
        }
        let due = now + self.idle_ttl_ms + self.keep_margin_ms;
        if kept.is_none_or(|kept| kept < due) {
            self.keep(keys, now).await;
        }
        Ok(())
    }

    /// Slides the tombstone and the upstream sessions (the keep script). A failure is logged,
    /// not returned: the session is live, and the next load tries again.
    async fn keep(&self, keys: &Keys, now: u64) {
        let mut invocation = self.keep.prepare_invoke();
        invocation
            .key(&keys.record)
            .key(&keys.tombstone)
            .key(&keys.upstreams)
            .arg(self.tombstone_ttl_ms)
            .arg(FIELD_KEPT)
            .arg(now + self.tombstone_ttl_ms);
        let kept = self.run("session_keep", |mut conn| async move {
            invocation.invoke_async::<()>(&mut conn).await
        });
        if let Err(error) = kept.await {
            tracing::warn!(%error, "could not slide a session's tombstone");
        }
    }

    /// Sets `field` of hash `target` to `value` while the session's record exists.
    async fn set_field(
        &self,
        keys: &Keys,
        target: &str,
        field: &str,
        value: String,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        let mut invocation = self.set_field.prepare_invoke();
        invocation
            .key(&keys.record)
            .key(target)
            .arg(field)
            .arg(value)
            .arg(ttl_ms);
        self.run("session_update", |mut conn| async move {
            invocation.invoke_async::<()>(&mut conn).await
        })
        .await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        let keys = Keys::new(id);
        let (cap, now) = (cap_ms(record), now_ms());
        let mut fields = record_fields(record)?;
        let kept = now + self.tombstone_ttl_ms;
        fields.push((FIELD_KEPT.to_owned(), kept.to_string()));
        let upstreams = upstream_fields(&record.upstreams)?;
        let mut pipe = ::redis::pipe();
        pipe.atomic().hset_multiple(&keys.record, &fields).ignore();
        if cap.saturating_sub(now) < self.idle_ttl_ms {
            pipe.pexpire_at(&keys.record, ms_i64(cap)).ignore();
        } else {
            pipe.pexpire(&keys.record, ms_i64(self.idle_ttl_ms))
                .ignore();
        }
        if !upstreams.is_empty() {
            pipe.hset_multiple(&keys.upstreams, &upstreams)
                .ignore()
                .pexpire(&keys.upstreams, ms_i64(self.tombstone_ttl_ms))
                .ignore();
        }
        pipe.set_options(
            &keys.tombstone,
            Tombstone::Live.as_str(),
            self.tombstone_options(),
        )
        .ignore();
        self.query("session_create", pipe).await
    }

    async fn load(&self, id: &SessionId) -> Result<Lookup, StoreError> {
        let keys = Keys::new(id);
        let mut read = self.read(&keys).await?;
        if matches!(read, Read::Legacy) {
            self.upgrade(&keys).await?;
            read = self.read(&keys).await?;
        }
        let Read::Hashes { record, upstreams } = read else {
            return Err(StoreError::Corrupt(
                "the record is still schema 1 after its upgrade".into(),
            ));
        };
        if record.is_empty() {
            return self.gone(&keys).await;
        }
        let kept = kept_until(&record);
        let record = decode(record, upstreams)?;
        let (cap, now) = (cap_ms(&record), now_ms());
        if cap <= now {
            // Past the absolute cap: Redis would have dropped it had the clocks agreed.
            return self.expire(&keys).await;
        }
        self.fix_up(&keys, cap, now, kept).await?;
        Ok(Lookup::Live(Arc::new(record)))
    }

    async fn update(&self, id: &SessionId, change: &RecordChange) -> Result<(), StoreError> {
        let keys = Keys::new(id);
        match change {
            RecordChange::Upstream { name, session } => {
                let value = encode(session)?;
                let (target, ttl) = (keys.upstreams.clone(), self.tombstone_ttl_ms);
                self.set_field(&keys, &target, name, value, ttl).await
            }
            RecordChange::LogLevel(level) => {
                let target = keys.record.clone();
                self.set_field(&keys, &target, FIELD_LOG, level.clone(), 0)
                    .await
            }
            RecordChange::Subscribe { uri, upstream } => {
                let (target, field) = (keys.record.clone(), subscription_field(uri));
                self.set_field(&keys, &target, &field, upstream.clone(), 0)
                    .await
            }
            RecordChange::Unsubscribe { uri } => {
                let mut pipe = ::redis::pipe();
                pipe.hdel(&keys.record, subscription_field(uri)).ignore();
                self.query("session_update", pipe).await
            }
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        let keys = Keys::new(id);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .del(&keys.record)
            .del(&keys.upstreams)
            .ignore()
            .set_options(
                &keys.tombstone,
                Tombstone::Deleted.as_str(),
                self.tombstone_options(),
            )
            .ignore();
        let (removed,): (u64,) = self.query("session_delete", pipe).await?;
        Ok(removed > 0)
    }

    async fn exists(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut pipe = ::redis::pipe();
        pipe.exists(Keys::new(id).record);
        let (exists,): (bool,) = self.query("session_exists", pipe).await?;
        Ok(exists)
    }

    async fn notice_gone(&self, id: &SessionId) -> Result<Option<Lookup>, StoreError> {
        self.run_expire(&Keys::new(id), ExpireMode::Notice).await
    }

    async fn hold(
        &self,
        id: &SessionId,
        upstream: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Hold, StoreError> {
        let mut invocation = self.hold.prepare_invoke();
        invocation
            .key(keys::session_record(id))
            .key(keys::holder_lease(id, upstream))
            .arg(holder)
            .arg(millis(lease));
        let answer: i64 = self
            .run("session_hold", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(hold_answer(answer))
    }

    async fn renew_holds(
        &self,
        streams: &[StreamLease],
        holder: &str,
        lease: Duration,
    ) -> Result<Vec<Hold>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        // EVAL rather than EVALSHA: a batch cannot load a script Redis lacks (NOSCRIPT would
        // fail it), and Redis keeps the compiled script by its hash either way.
        let commands = streams
            .iter()
            .map(|stream| {
                let mut command = ::redis::cmd("EVAL");
                command
                    .arg(HOLD_SCRIPT)
                    .arg(2)
                    .arg(keys::session_record(&stream.session))
                    .arg(keys::holder_lease(&stream.session, &stream.upstream))
                    .arg(holder)
                    .arg(millis(lease));
                command
            })
            .collect();
        let answers: Vec<i64> = self
            .run("session_renew", |conn| conn.query_each(commands))
            .await?;
        Ok(answers.into_iter().map(hold_answer).collect())
    }

    async fn claim_upstream(
        &self,
        id: &SessionId,
        upstream: &str,
        session: &UpstreamSession,
        lease: Option<LeaseWanted<'_>>,
    ) -> Result<Claimed, StoreError> {
        let keys = Keys::new(id);
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(&keys.record)
            .key(&keys.upstreams)
            .arg(upstream)
            .arg(encode(session)?)
            .arg(self.tombstone_ttl_ms);
        if let Some(lease) = lease {
            invocation
                .key(keys::holder_lease(id, upstream))
                .arg(lease.holder)
                .arg(millis(lease.time));
        }
        let (answer, saved): (i64, String) = self
            .run("session_claim_upstream", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(match answer {
            1 => Claimed::Won {
                holding: saved == "held",
            },
            0 => Claimed::Taken(decode_json(&saved)?),
            _ => Claimed::SessionGone,
        })
    }

    async fn holders(
        &self,
        id: &SessionId,
        upstreams: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if upstreams.is_empty() {
            return Ok(Vec::new());
        }
        let leases: Vec<String> = upstreams
            .iter()
            .map(|upstream| keys::holder_lease(id, upstream))
            .collect();
        let mut pipe = ::redis::pipe();
        pipe.cmd("MGET").arg(leases);
        let (holders,): (Vec<Option<String>>,) = self.query("session_holders", pipe).await?;
        Ok(holders)
    }

    async fn release(
        &self,
        id: &SessionId,
        upstream: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        let mut invocation = self.release.prepare_invoke();
        invocation.key(keys::holder_lease(id, upstream)).arg(holder);
        self.run("session_release", |mut conn| async move {
            invocation.invoke_async::<()>(&mut conn).await
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut pipe = ::redis::pipe();
        pipe.pexpire(keys::READINESS_PROBE, 1).ignore();
        self.query("session_ping", pipe).await
    }
}

/// Whether a (pipeline) error says that a key holds another type: a schema-1 record.
fn is_wrong_type(error: &::redis::RedisError) -> bool {
    error
        .clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "WRONGTYPE"))
}

/// The record's hash fields (all but the upstream sessions).
fn record_fields(record: &SessionRecord) -> Result<Vec<(String, String)>, StoreError> {
    let mut fields = vec![
        (FIELD_SCHEMA.to_owned(), RECORD_SCHEMA.to_string()),
        (FIELD_CORE.to_owned(), encode(&record.core())?),
    ];
    if let Some(level) = &record.log_level {
        fields.push((FIELD_LOG.to_owned(), level.clone()));
    }
    for (uri, upstream) in &record.subscriptions {
        fields.push((subscription_field(uri), upstream.clone()));
    }
    Ok(fields)
}

/// The upstream-sessions hash fields.
fn upstream_fields(
    upstreams: &std::collections::BTreeMap<String, UpstreamSession>,
) -> Result<Vec<(String, String)>, StoreError> {
    upstreams
        .iter()
        .map(|(name, session)| Ok((name.clone(), encode(session)?)))
        .collect()
}

fn subscription_field(uri: &str) -> String {
    format!("{SUBSCRIPTION_PREFIX}{uri}")
}

/// Until when the last slide kept the tombstone and the upstream sessions; `None` (due) when
/// no slide noted it (a record an older release wrote) or the field is not a number.
fn kept_until(fields: &HashFields) -> Option<u64> {
    fields.get(FIELD_KEPT)?.parse().ok()
}

/// Rebuilds a record from its two hashes; a newer schema is refused, not guessed at.
fn decode(fields: HashFields, upstreams: HashFields) -> Result<SessionRecord, StoreError> {
    let schema = fields
        .get(FIELD_SCHEMA)
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| StoreError::Corrupt("record has no readable schema field".into()))?;
    if schema > RECORD_SCHEMA {
        return Err(StoreError::NewerSchema {
            found: schema,
            supported: RECORD_SCHEMA,
        });
    }
    let core = fields
        .get(FIELD_CORE)
        .ok_or_else(|| StoreError::Corrupt("record has no core field".into()))?;
    let core: RecordCore = decode_json(core)?;
    let mut record = SessionRecord::from_parts(core);
    record.log_level = fields.get(FIELD_LOG).map(str::to_owned);
    record.subscriptions = fields
        .into_iter()
        .filter_map(|(field, upstream)| {
            let uri = field.strip_prefix(SUBSCRIPTION_PREFIX)?.to_owned();
            Some((uri, upstream))
        })
        .collect();
    record.upstreams = decode_upstreams(upstreams)?;
    Ok(record)
}

fn decode_upstreams(
    upstreams: impl IntoIterator<Item = (String, String)>,
) -> Result<Orphans, StoreError> {
    upstreams
        .into_iter()
        .map(|(name, json)| Ok((name, decode_json(&json)?)))
        .collect()
}

/// A flat `[field, value, …]` reply as pairs.
fn pairs(flat: Vec<String>) -> Vec<(String, String)> {
    let mut items = flat.into_iter();
    std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
}

fn encode(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// What [`encode`] wrote; anything else is corrupt.
fn decode_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
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

/// The hold script's answer: -1 the session is gone, 1 held by the caller, 0 by another.
fn hold_answer(answer: i64) -> Hold {
    match answer {
        1 => Hold::Held,
        0 => Hold::HeldElsewhere,
        _ => Hold::SessionGone,
    }
}

/// Whole milliseconds, at least 1 (Redis refuses a zero TTL).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Milliseconds as Redis's signed argument.
fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

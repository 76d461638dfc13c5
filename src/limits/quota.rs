//! Live sessions per principal, counted without any scan.
//!
//! Each principal has a set of its sessions, each with a deadline: when its slot runs out
//! unless refreshed. Taking a slot first drops the members whose deadline passed, then
//! refuses at the cap. A slot's deadline is a full idle TTL (at most the session's lifetime
//! left) plus one refresh period from when it was taken or last refreshed; a replica refreshes
//! the slot of a session it serves once per refresh period at most
//! ([`super::Limits::refresh_every`]). So a live session is always counted, and a session that
//! expired unnoticed stops counting at most one refresh period after it expired. Whoever
//! deletes a session, or notices its expiry, frees its slot at once.
//!
//! [`RedisSessionQuota`] keeps the set as the sorted set [`keys::principal_quota`]
//! (members: session ids; scores: deadlines in ms on the Redis server's clock), with a TTL
//! that follows its latest deadline. Taking a slot is one Lua script (ZREMRANGEBYSCORE,
//! ZSCORE, ZCARD, ZADD, PEXPIRE), refreshing another (ZADD XX GT, PEXPIRE), freeing one ZREM.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::redis::Script;
use async_trait::async_trait;

use super::{LimitError, PrincipalKey};
use crate::redis::{RedisPool, keys};
use crate::session::SessionId;

/// Takes a slot. KEYS: the principal's set. ARGV: session id, hold in ms, cap.
/// Returns 1 when the session has a slot (again), 0 at the cap.
const ADMIT_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local hold = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + hold), ARGV[1])
if redis.call('PTTL', KEYS[1]) < hold then
  redis.call('PEXPIRE', KEYS[1], hold)
end
return 1
";

/// Moves a slot's deadline later, if the session still has one. KEYS: the principal's set.
/// ARGV: session id, hold in ms.
const REFRESH_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local hold = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', 'GT', string.format('%.0f', now + hold), ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('PTTL', KEYS[1]) < hold then
  redis.call('PEXPIRE', KEYS[1], hold)
end
return 1
";

/// Where principals' session slots live.
#[async_trait]
pub trait SessionQuota: Send + Sync {
    /// Takes a slot for `session`, held for `hold` unless refreshed; `false` when `principal`
    /// already has as many live sessions as the cap allows.
    async fn admit(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
        hold: Duration,
    ) -> Result<bool, LimitError>;
    /// Holds the slot of a session that still has one for `hold` from now (never shorter
    /// than it was).
    async fn refresh(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
        hold: Duration,
    ) -> Result<(), LimitError>;
    /// Frees the slot of a session that ended.
    async fn release(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
    ) -> Result<(), LimitError>;
}

/// Principals the memory quota keeps before it first drops those without a live slot.
const MEMORY_PRUNE_AT: usize = 1024;

/// Slots in this process.
pub struct MemorySessionQuota {
    cap: u32,
    state: Mutex<MemorySlots>,
}

struct MemorySlots {
    /// Deadlines of each principal's slots.
    slots: HashMap<PrincipalKey, HashMap<SessionId, Instant>>,
    /// Size at which principals without a live slot are dropped next.
    prune_at: usize,
}

impl MemorySlots {
    /// Drops principals whose slots all ran out once the map doubled since the last prune,
    /// so memory follows the principals with live sessions at an amortized O(1).
    fn prune(&mut self, now: Instant) {
        if self.slots.len() < self.prune_at {
            return;
        }
        self.slots
            .retain(|_, sessions| sessions.values().any(|deadline| *deadline > now));
        self.prune_at = (self.slots.len() * 2).max(MEMORY_PRUNE_AT);
    }
}

impl MemorySessionQuota {
    pub fn new(cap: u32) -> Self {
        Self {
            cap,
            state: Mutex::new(MemorySlots {
                slots: HashMap::new(),
                prune_at: MEMORY_PRUNE_AT,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemorySlots> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl SessionQuota for MemorySessionQuota {
    async fn admit(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
        hold: Duration,
    ) -> Result<bool, LimitError> {
        let now = Instant::now();
        let mut state = self.lock();
        state.prune(now);
        let sessions = state.slots.entry(principal.clone()).or_default();
        sessions.retain(|_, deadline| *deadline > now);
        if !sessions.contains_key(session) && sessions.len() >= self.cap as usize {
            return Ok(false);
        }
        sessions.insert(session.clone(), now + hold);
        Ok(true)
    }

    async fn refresh(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
        hold: Duration,
    ) -> Result<(), LimitError> {
        let deadline = Instant::now() + hold;
        if let Some(slot) = self
            .lock()
            .slots
            .get_mut(principal)
            .and_then(|sessions| sessions.get_mut(session))
        {
            *slot = deadline.max(*slot);
        }
        Ok(())
    }

    async fn release(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
    ) -> Result<(), LimitError> {
        let slots = &mut self.lock().slots;
        if let Some(sessions) = slots.get_mut(principal) {
            sessions.remove(session);
            if sessions.is_empty() {
                slots.remove(principal);
            }
        }
        Ok(())
    }
}

/// Slots in Redis, shared by the fleet.
pub struct RedisSessionQuota {
    pool: RedisPool,
    cap: u32,
    admit: Script,
    refresh: Script,
}

impl RedisSessionQuota {
    pub fn new(pool: RedisPool, cap: u32) -> Self {
        Self {
            pool,
            cap,
            admit: Script::new(ADMIT_SCRIPT),
            refresh: Script::new(REFRESH_SCRIPT),
        }
    }

    fn key(principal: &PrincipalKey) -> String {
        keys::principal_quota(principal)
    }
}

#[async_trait]
impl SessionQuota for RedisSessionQuota {
    async fn admit(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
        hold: Duration,
    ) -> Result<bool, LimitError> {
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(Self::key(principal))
            .arg(session.as_str())
            .arg(millis(hold))
            .arg(self.cap);
        let admitted: bool = self
            .pool
            .run("limit_session_admit", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(admitted)
    }

    async fn refresh(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
        hold: Duration,
    ) -> Result<(), LimitError> {
        let mut invocation = self.refresh.prepare_invoke();
        invocation
            .key(Self::key(principal))
            .arg(session.as_str())
            .arg(millis(hold));
        self.pool
            .run("limit_session_refresh", |mut conn| async move {
                invocation.invoke_async::<()>(&mut conn).await
            })
            .await?;
        Ok(())
    }

    async fn release(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
    ) -> Result<(), LimitError> {
        let key = Self::key(principal);
        self.pool
            .run("limit_session_release", |mut conn| async move {
                ::redis::cmd("ZREM")
                    .arg(key)
                    .arg(session.as_str())
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }
}

/// A duration in whole milliseconds, at least 1 (Redis refuses a 0 TTL).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> PrincipalKey {
        PrincipalKey::from_tag(name.into())
    }

    #[tokio::test]
    async fn refuses_at_the_cap_until_a_slot_is_freed_or_runs_out() {
        let quota = MemorySessionQuota::new(2);
        let hold = Duration::from_secs(60);
        let [a, b, c] = std::array::from_fn(|_| SessionId::generate());
        let alice = key("alice");
        assert!(quota.admit(&alice, &a, hold).await.unwrap());
        assert!(
            quota
                .admit(&alice, &b, Duration::from_millis(30))
                .await
                .unwrap()
        );
        assert!(!quota.admit(&alice, &c, hold).await.unwrap());
        assert!(
            quota.admit(&alice, &a, hold).await.unwrap(),
            "a held slot is kept"
        );
        assert!(quota.admit(&key("bob"), &c, hold).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(quota.admit(&alice, &c, hold).await.unwrap(), "b ran out");
        quota.release(&alice, &a).await.unwrap();
        assert!(quota.admit(&alice, &b, hold).await.unwrap(), "a was freed");
    }

    #[tokio::test]
    async fn refreshing_extends_only_held_slots() {
        let quota = MemorySessionQuota::new(1);
        let [a, b] = std::array::from_fn(|_| SessionId::generate());
        let alice = key("alice");
        assert!(
            quota
                .admit(&alice, &a, Duration::from_millis(30))
                .await
                .unwrap()
        );
        quota
            .refresh(&alice, &a, Duration::from_secs(60))
            .await
            .unwrap();
        quota
            .refresh(&alice, &b, Duration::from_secs(60))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !quota
                .admit(&alice, &b, Duration::from_secs(60))
                .await
                .unwrap()
        );
    }
}

//! Requests per principal: the generic cell rate algorithm (GCRA). Each principal has a
//! theoretical arrival time (TAT); a request is admitted when the TAT, moved one emission
//! interval on, is at most `burst` intervals ahead of now, and then moves it. A principal idle
//! for a while can so make `burst` requests at once, and `per_second` per second after that.
//! A refused request does not move the TAT.
//!
//! [`RedisRateLimiter`] keeps the TAT of every principal in [`keys::principal_rate`]
//! and checks and moves it in one Lua script (one round trip per request), on the Redis
//! server's clock (`TIME`), so the replicas' clocks do not matter. The key expires when the
//! TAT is reached: by then it holds nothing a fresh start would not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::redis::Script;
use async_trait::async_trait;

use super::{LimitError, PrincipalKey};
use crate::redis::{RedisPool, keys};

/// Entries the memory limiter keeps before it first drops those that are past their TAT.
const MEMORY_PRUNE_AT: usize = 1024;

/// Checks and moves a principal's TAT. KEYS: the TAT key. ARGV: emission interval and burst
/// tolerance, in microseconds. Returns 0 when admitted, else the microseconds to wait.
const GCRA_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local next = tat + interval
local wait = next - tolerance - now
if wait > 0 then
  return wait
end
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000))
return 0
";

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_second: u32,
    burst: u32,
}

impl Rate {
    /// `per_second` and `burst` must be greater than 0.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: per_second.max(1),
            burst: burst.max(1),
        }
    }

    pub fn per_second(self) -> u32 {
        self.per_second
    }

    pub fn burst(self) -> u32 {
        self.burst
    }

    /// Time between two requests at the sustained rate.
    fn interval(self) -> Duration {
        Duration::from_secs(1) / self.per_second
    }

    /// How far ahead of now the TAT may run: `burst` intervals.
    fn tolerance(self) -> Duration {
        self.interval() * self.burst
    }
}

/// What a rate check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Refused: the next request would be admitted after this long.
    RetryAfter(Duration),
}

/// Where principals' TATs live.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request of `principal` if its rate allows it.
    async fn acquire(&self, principal: &PrincipalKey) -> Result<Admission, LimitError>;
}

/// TATs in this process.
pub struct MemoryRateLimiter {
    rate: Rate,
    state: Mutex<MemoryTats>,
}

struct MemoryTats {
    tats: HashMap<PrincipalKey, Instant>,
    /// Size at which entries past their TAT are dropped next.
    prune_at: usize,
}

impl MemoryRateLimiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            state: Mutex::new(MemoryTats {
                tats: HashMap::new(),
                prune_at: MEMORY_PRUNE_AT,
            }),
        }
    }
}

impl MemoryTats {
    /// Drops entries past their TAT once the map doubled since the last prune, so memory
    /// follows the principals active within the last `burst` intervals at an amortized O(1).
    fn prune(&mut self, now: Instant) {
        if self.tats.len() < self.prune_at {
            return;
        }
        self.tats.retain(|_, tat| *tat > now);
        self.prune_at = (self.tats.len() * 2).max(MEMORY_PRUNE_AT);
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(&self, principal: &PrincipalKey) -> Result<Admission, LimitError> {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.prune(now);
        let tat = state.tats.get(principal).copied().unwrap_or(now).max(now);
        let next = tat + self.rate.interval();
        let wait = (next - now).saturating_sub(self.rate.tolerance());
        if !wait.is_zero() {
            return Ok(Admission::RetryAfter(wait));
        }
        state.tats.insert(principal.clone(), next);
        Ok(Admission::Admitted)
    }
}

/// TATs in Redis, shared by the fleet.
pub struct RedisRateLimiter {
    pool: RedisPool,
    rate: Rate,
    script: Script,
}

impl RedisRateLimiter {
    pub fn new(pool: RedisPool, rate: Rate) -> Self {
        Self {
            pool,
            rate,
            script: Script::new(GCRA_SCRIPT),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(&self, principal: &PrincipalKey) -> Result<Admission, LimitError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(keys::principal_rate(principal))
            .arg(self.rate.interval().as_micros() as u64)
            .arg(self.rate.tolerance().as_micros() as u64);
        let wait: u64 = self
            .pool
            .run("limit_rate", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(match wait {
            0 => Admission::Admitted,
            micros => Admission::RetryAfter(Duration::from_micros(micros)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> PrincipalKey {
        PrincipalKey::from_tag(name.into())
    }

    #[tokio::test]
    async fn admits_a_burst_then_the_rate_and_keeps_principals_apart() {
        let limiter = MemoryRateLimiter::new(Rate::new(10, 3));
        for _ in 0..3 {
            assert_eq!(
                limiter.acquire(&key("a")).await.unwrap(),
                Admission::Admitted
            );
        }
        let Admission::RetryAfter(wait) = limiter.acquire(&key("a")).await.unwrap() else {
            panic!("the burst is 3");
        };
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(
            limiter.acquire(&key("b")).await.unwrap(),
            Admission::Admitted
        );
        tokio::time::sleep(wait).await;
        assert_eq!(
            limiter.acquire(&key("a")).await.unwrap(),
            Admission::Admitted
        );
    }

    #[test]
    fn pruning_keeps_only_principals_within_their_burst() {
        let now = Instant::now();
        let mut state = MemoryTats {
            tats: (0..MEMORY_PRUNE_AT)
                .map(|i| (key(&i.to_string()), now))
                .collect(),
            prune_at: MEMORY_PRUNE_AT,
        };
        state.tats.insert(key("busy"), now + Duration::from_secs(1));
        state.prune(now);
        assert_eq!(state.tats.len(), 1);
        assert_eq!(state.prune_at, MEMORY_PRUNE_AT);
    }
}

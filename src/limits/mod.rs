//! Limits: what one principal or one session may use.
//!
//! This module owns the two limits that concern a principal and hold fleet-wide: its request
//! rate ([`rate`], GCRA) and its number of live sessions ([`quota`]). Both have an in-process
//! implementation for the memory store and a Redis one (one Lua script per check, Redis server
//! time, keys named by a keyed hash of the principal, every key with a TTL) shared by every
//! replica. [`Limits`] applies the settings to them, counts refusals and decides what a
//! failing Redis means: the request is admitted unchecked (fail open, logged and counted), so
//! a Redis that still serves sessions, or one that is full and refuses writes, never turns a
//! limit check into 503.
//!
//! The per-session limits (requests in flight, GET streams open) are counts this replica
//! keeps in [`crate::dispatch::Hub`]; their caps come from here. A refusal is a
//! [`LimitExceeded`]; `crate::http` turns it into 429.

pub mod quota;
pub mod rate;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::ErrorCode;

use crate::config::limits::{
    DEFAULT_BURST_FACTOR, DEFAULT_REQUESTS_PER_SECOND, DEFAULT_SESSIONS_PER_PRINCIPAL, LimitsConfig,
};
use crate::redis::{RedisError, RedisPool};
use crate::session::SessionId;
use crate::telemetry::Metrics;

pub use quota::{MemorySessionQuota, RedisSessionQuota, SessionQuota};
pub use rate::{Admission, MemoryRateLimiter, Rate, RateLimiter, RedisRateLimiter};

/// Longest time a live session's slot goes without being refreshed (see [`Limits::refresh_every`]).
const MAX_REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Most one warning per this long about limits admitted unchecked; the rest are debug logs.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// What a client refused for too many requests in flight is told to wait.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// A principal as the limits name it: a keyed hash of its id and team (the owner tag a session
/// record stores), never the id itself, so no Redis key reveals who a caller is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrincipalKey(String);

impl PrincipalKey {
    /// The key for a principal's keyed hash (base64url, as `IdSigner::owner_tag` makes it).
    pub fn from_tag(tag: String) -> Self {
        Self(tag)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The limits, as metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Requests,
    Sessions,
    ConcurrentRequests,
    Streams,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::Requests => "requests",
            Limit::Sessions => "sessions",
            Limit::ConcurrentRequests => "concurrent_requests",
            Limit::Streams => "streams",
        }
    }
}

/// A request refused by a limit; the message is what the client reads.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "Too Many Requests: this principal may make {per_second} requests per second (bursts of {burst}); retry in {} s",
        whole_seconds(*retry_after)
    )]
    Requests {
        per_second: u32,
        burst: u32,
        retry_after: Duration,
    },
    #[error(
        "Too Many Requests: this principal may hold at most {cap} sessions at once; end one with DELETE or wait until one expires"
    )]
    Sessions { cap: u32 },
    #[error(
        "Too Many Requests: this session may have at most {cap} requests in flight at once; retry when one is answered"
    )]
    ConcurrentRequests { cap: usize },
    #[error(
        "Too Many Requests: this principal may have at most {cap} requests of protocol 2026-07-28 in flight at once; retry when one is answered"
    )]
    ConcurrentModernRequests { cap: usize },
    #[error(
        "Too Many Requests: this session may have at most {cap} streams open with GET at once; close one first"
    )]
    Streams { cap: usize },
}

impl LimitExceeded {
    /// The JSON-RPC error code of every limit refusal (implementation-defined server error).
    pub const CODE: ErrorCode = ErrorCode(-32000);

    pub fn limit(&self) -> Limit {
        match self {
            LimitExceeded::Requests { .. } => Limit::Requests,
            LimitExceeded::Sessions { .. } => Limit::Sessions,
            LimitExceeded::ConcurrentRequests { .. }
            | LimitExceeded::ConcurrentModernRequests { .. } => Limit::ConcurrentRequests,
            LimitExceeded::Streams { .. } => Limit::Streams,
        }
    }

    /// How long the client should wait before trying again, where waiting alone helps (not
    /// for sessions and streams, which the client must end first).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LimitExceeded::Requests { retry_after, .. } => Some(*retry_after),
            LimitExceeded::ConcurrentRequests { .. }
            | LimitExceeded::ConcurrentModernRequests { .. } => Some(IN_FLIGHT_RETRY),
            LimitExceeded::Sessions { .. } | LimitExceeded::Streams { .. } => None,
        }
    }
}

/// A duration in whole seconds, rounded up, at least 1 (as `Retry-After` gives it).
pub fn whole_seconds(duration: Duration) -> u64 {
    duration.as_micros().div_ceil(1_000_000).max(1) as u64
}

/// Why a limit could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("limit store unavailable: {0}")]
    Unavailable(#[from] RedisError),
}

/// The limits in force, resolved from `[limits]`.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// `None`: no rate limit.
    pub rate: Option<Rate>,
    /// `None`: no session cap.
    pub sessions_per_principal: Option<u32>,
    pub concurrent_requests_per_session: usize,
    pub concurrent_modern_requests_per_principal: usize,
    pub streams_per_session: usize,
    /// `session.idle_ttl`: how long a session's slot is held without use.
    pub idle_ttl: Duration,
}

impl LimitSettings {
    /// The settings in force; `authenticated` is false with `server.auth.mode = "none"`, where
    /// unset per-principal limits are off.
    pub fn new(config: &LimitsConfig, authenticated: bool, idle_ttl: Duration) -> Self {
        let default = |value| if authenticated { value } else { 0 };
        let per_second = config
            .requests_per_second
            .unwrap_or_else(|| default(DEFAULT_REQUESTS_PER_SECOND));
        let burst = config
            .burst
            .unwrap_or(per_second.saturating_mul(DEFAULT_BURST_FACTOR));
        let sessions = config
            .sessions_per_principal
            .unwrap_or_else(|| default(DEFAULT_SESSIONS_PER_PRINCIPAL));
        Self {
            rate: (per_second > 0).then(|| Rate::new(per_second, burst.max(1))),
            sessions_per_principal: (sessions > 0).then_some(sessions),
            concurrent_requests_per_session: config.concurrent_requests_per_session as usize,
            concurrent_modern_requests_per_principal: config
                .concurrent_modern_requests_per_principal
                as usize,
            streams_per_session: config.streams_per_session as usize,
            idle_ttl,
        }
    }
}

/// The limits of this gateway over their store, with the metrics and logs of their outcomes.
pub struct Limits {
    settings: LimitSettings,
    rate: Option<Arc<dyn RateLimiter>>,
    sessions: Option<Arc<dyn SessionQuota>>,
    metrics: Arc<Metrics>,
    last_warning: Mutex<Option<Instant>>,
}

impl Limits {
    /// Limits kept in this process (the memory store: one replica).
    pub fn memory(settings: LimitSettings, metrics: Arc<Metrics>) -> Self {
        let rate = settings
            .rate
            .map(|rate| Arc::new(MemoryRateLimiter::new(rate)) as Arc<dyn RateLimiter>);
        let sessions = settings
            .sessions_per_principal
            .map(|cap| Arc::new(MemorySessionQuota::new(cap)) as Arc<dyn SessionQuota>);
        Self::over(settings, rate, sessions, metrics)
    }

    /// Limits kept in Redis, shared by every replica.
    pub fn redis(settings: LimitSettings, pool: RedisPool, metrics: Arc<Metrics>) -> Self {
        let rate = settings.rate.map(|rate| {
            Arc::new(RedisRateLimiter::new(pool.clone(), rate)) as Arc<dyn RateLimiter>
        });
        let sessions = settings
            .sessions_per_principal
            .map(|cap| Arc::new(RedisSessionQuota::new(pool, cap)) as Arc<dyn SessionQuota>);
        Self::over(settings, rate, sessions, metrics)
    }

    fn over(
        settings: LimitSettings,
        rate: Option<Arc<dyn RateLimiter>>,
        sessions: Option<Arc<dyn SessionQuota>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            settings,
            rate,
            sessions,
            metrics,
            last_warning: Mutex::new(None),
        }
    }

    /// Counts one request of `principal` against its rate.
    pub async fn admit_request(&self, principal: &PrincipalKey) -> Result<(), LimitExceeded> {
        let (Some(limiter), Some(rate)) = (&self.rate, self.settings.rate) else {
            return Ok(());
        };
        match limiter.acquire(principal).await {
            Ok(Admission::Admitted) => Ok(()),
            Ok(Admission::RetryAfter(retry_after)) => Err(self.refused(LimitExceeded::Requests {
                per_second: rate.per_second(),
                burst: rate.burst(),
                retry_after,
            })),
            Err(error) => {
                self.admitted_unchecked(Limit::Requests, &error);
                Ok(())
            }
        }
    }

    /// Takes a slot for a new session of `principal`, held for the idle TTL (at most
    /// `lifetime`, the session's absolute lifetime) unless refreshed.
    pub async fn admit_session(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
        lifetime: Duration,
    ) -> Result<(), LimitExceeded> {
        let (Some(quota), Some(cap)) = (&self.sessions, self.settings.sessions_per_principal)
        else {
            return Ok(());
        };
        match quota.admit(principal, session, self.hold(lifetime)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.refused(LimitExceeded::Sessions { cap })),
            Err(error) => {
                self.admitted_unchecked(Limit::Sessions, &error);
                Ok(())
            }
        }
    }

    /// Moves a live session's slot deadline to a full idle TTL from now (at most `lifetime`
    /// left), after it was used.
    pub async fn refresh_session(
        &self,
        principal: &PrincipalKey,
        session: &SessionId,
        lifetime: Duration,
    ) {
        let Some(quota) = &self.sessions else { return };
        if let Err(error) = quota.refresh(principal, session, self.hold(lifetime)).await {
            tracing::debug!(%error, "could not refresh a session slot; it is refreshed on next use");
        }
    }

    /// Frees the slot of a session that ended.
    pub async fn release_session(&self, principal: &PrincipalKey, session: &SessionId) {
        let Some(quota) = &self.sessions else { return };
        if let Err(error) = quota.release(principal, session).await {
            tracing::warn!(%error, "could not free a session slot; it frees when its deadline passes");
        }
    }

    /// How often a replica refreshes the slot of a session it serves: a tenth of the idle
    /// TTL, at most a minute. A slot's deadline is never earlier than its session's, and at
    /// most this much later.
    pub fn refresh_every(&self) -> Duration {
        (self.settings.idle_ttl / 10).min(MAX_REFRESH_EVERY)
    }

    /// Whether requests are counted at all (no principal key needed otherwise).
    pub fn counts_requests(&self) -> bool {
        self.rate.is_some() && self.settings.rate.is_some()
    }

    /// Whether sessions are counted at all (no refreshes needed otherwise).
    pub fn counts_sessions(&self) -> bool {
        self.sessions.is_some()
    }

    pub fn concurrent_requests_per_session(&self) -> usize {
        self.settings.concurrent_requests_per_session
    }

    pub fn concurrent_modern_requests_per_principal(&self) -> usize {
        self.settings.concurrent_modern_requests_per_principal
    }

    pub fn streams_per_session(&self) -> usize {
        self.settings.streams_per_session
    }

    /// Counts a refusal; returns it.
    pub fn refused(&self, refusal: LimitExceeded) -> LimitExceeded {
        self.metrics.limited(refusal.limit().label());
        refusal
    }

    /// How long a slot is held from now: the idle TTL (at most the lifetime left) plus one
    /// refresh period, so it never runs out before its session does.
    fn hold(&self, lifetime: Duration) -> Duration {
        self.settings.idle_ttl.min(lifetime) + self.refresh_every()
    }

    /// Counts and logs (at most every [`WARN_EVERY`] as a warning) a limit not checked.
    fn admitted_unchecked(&self, limit: Limit, error: &LimitError) {
        self.metrics.limit_unchecked(limit.label());
        if self.warning_due() {
            tracing::warn!(%error, limit = limit.label(), "limit not checked; admitted without it");
        } else {
            tracing::debug!(%error, limit = limit.label(), "limit not checked; admitted without it");
        }
    }

    fn warning_due(&self) -> bool {
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(config: &LimitsConfig, authenticated: bool) -> LimitSettings {
        LimitSettings::new(config, authenticated, Duration::from_secs(600))
    }

    #[test]
    fn per_principal_defaults_apply_only_with_authentication() {
        let config = LimitsConfig::default();
        let shared = settings(&config, true);
        let rate = shared.rate.expect("a default rate");
        assert_eq!((rate.per_second(), rate.burst()), (20, 40));
        assert_eq!(shared.sessions_per_principal, Some(100));
        let anonymous = settings(&config, false);
        assert!(anonymous.rate.is_none());
        assert_eq!(anonymous.sessions_per_principal, None);
        assert_eq!(anonymous.concurrent_requests_per_session, 32);
        assert_eq!(anonymous.streams_per_session, 8);
    }

    #[test]
    fn explicit_values_apply_in_every_mode_and_zero_turns_a_limit_off() {
        let config = LimitsConfig {
            requests_per_second: Some(5),
            sessions_per_principal: Some(0),
            ..LimitsConfig::default()
        };
        let anonymous = settings(&config, false);
        let rate = anonymous.rate.expect("an explicit rate");
        assert_eq!((rate.per_second(), rate.burst()), (5, 10));
        assert_eq!(anonymous.sessions_per_principal, None);
    }

    #[test]
    fn slots_outlive_sessions_by_at_most_one_refresh_period() {
        let limits = Limits::memory(
            settings(&LimitsConfig::default(), true),
            Arc::new(Metrics::new().unwrap()),
        );
        assert_eq!(limits.refresh_every(), Duration::from_secs(60));
        assert_eq!(
            limits.hold(Duration::from_secs(3600)),
            Duration::from_secs(660)
        );
        assert_eq!(
            limits.hold(Duration::from_secs(30)),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }
}

//! `[limits]`: what one principal or one session may use, enforced fleet-wide where it concerns
//! a principal.
//!
//! The per-principal limits (`requests_per_second`, `sessions_per_principal`) default to values
//! for a shared gateway whose callers authenticate; with `server.auth.mode = "none"` every
//! caller is the same anonymous principal, so left unset they are off there (a per-principal
//! limit would limit the whole fleet). Set explicitly, they apply in every mode; `0` turns one
//! off. The per-session limits always apply.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Sustained requests per second per principal when authentication is on and nothing is set.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 20;
/// Live sessions per principal when authentication is on and nothing is set.
pub const DEFAULT_SESSIONS_PER_PRINCIPAL: u32 = 100;
/// `burst` when unset, as a multiple of `requests_per_second`.
pub const DEFAULT_BURST_FACTOR: u32 = 2;

/// Per-principal and per-session limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests (HTTP requests to `/mcp`: a POST, a GET stream, a DELETE) per second one
    /// principal may make across the fleet, sustained. Unset: 20, or off with
    /// `server.auth.mode = "none"`. `0`: no limit.
    pub requests_per_second: Option<u32>,
    /// Requests a principal may make at once after being idle, on top of the sustained rate.
    /// Unset: twice `requests_per_second`.
    pub burst: Option<u32>,
    /// Live sessions one principal may hold across the fleet; `initialize` beyond it is
    /// refused. Unset: 100, or off with `server.auth.mode = "none"`. `0`: no limit.
    pub sessions_per_principal: Option<u32>,
    /// Requests of one session in flight at once on one replica.
    pub concurrent_requests_per_session: u32,
    /// Modern (2026-07-28, sessionless) requests of one principal in flight at once on one
    /// replica, listen streams included.
    pub concurrent_modern_requests_per_principal: u32,
    /// SSE streams opened with GET (the standalone stream and resumptions) of one session open
    /// at once on one replica.
    pub streams_per_session: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_second: None,
            burst: None,
            sessions_per_principal: None,
            concurrent_requests_per_session: 32,
            concurrent_modern_requests_per_principal: 64,
            streams_per_session: 8,
        }
    }
}

impl LimitsConfig {
    /// Counts that would refuse everything are errors.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.burst == Some(0) && self.requests_per_second != Some(0) {
            return Err(invalid(
                "limits.burst",
                "must be greater than 0 (set limits.requests_per_second = 0 for no rate limit)",
            ));
        }
        for (key, value) in [
            (
                "concurrent_requests_per_session",
                self.concurrent_requests_per_session,
            ),
            (
                "concurrent_modern_requests_per_principal",
                self.concurrent_modern_requests_per_principal,
            ),
            ("streams_per_session", self.streams_per_session),
        ] {
            if value == 0 {
                return Err(invalid(format!("limits.{key}"), "must be greater than 0"));
            }
        }
        Ok(())
    }
}

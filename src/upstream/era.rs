//! Which era an upstream speaks, learned by probing it with `server/discover` and kept for
//! [`ERA_LIFETIME`], so that an upstream upgraded (or downgraded) in place is noticed.
//!
//! An upstream that answers the probe with a `DiscoverResult` listing a modern revision gets
//! modern requests in the modern form (per-request `_meta`; on HTTP, no session and the
//! mirrored headers); every other answer, an error or silence within [`PROBE_TIMEOUT`] makes it
//! legacy. A modern request that such an upstream then refuses at the HTTP level makes the
//! gateway forget what it learned, and probe again on the next one. Isolated stdio children are
//! always legacy: each is initialized for the sessions that start it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::protocol::era::{MODERN_VERSIONS, meta};

/// The revision modern requests to upstreams are made in.
pub const MODERN_VERSION: &str = MODERN_VERSIONS[0];

/// How long a probe's verdict stands.
pub const ERA_LIFETIME: Duration = Duration::from_secs(300);
/// Longest wait for the answer to a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the gateway knows of an upstream's era.
#[derive(Default)]
pub struct EraCache {
    verdict: tokio::sync::Mutex<Option<(bool, Instant)>>,
}

impl EraCache {
    /// Whether the upstream speaks the modern era, probing it with `probe()` when the last
    /// verdict is missing or old. Concurrent callers wait for one probe.
    pub async fn is_modern<P, F>(&self, probe: P) -> bool
    where
        P: FnOnce() -> F,
        F: std::future::Future<Output = bool>,
    {
        let mut verdict = self.verdict.lock().await;
        if let Some((modern, at)) = *verdict
            && at.elapsed() < ERA_LIFETIME
        {
            return modern;
        }
        let modern = probe().await;
        *verdict = Some((modern, Instant::now()));
        modern
    }

    /// Drops the verdict: the next modern request probes again.
    pub fn forget(&self) {
        if let Ok(mut verdict) = self.verdict.try_lock() {
            *verdict = None;
        }
    }
}

/// The params of the probe: the gateway's own identity, no client capabilities.
pub fn probe_params() -> Value {
    json!({"_meta": {
        meta::PROTOCOL_VERSION: MODERN_VERSION,
        meta::CLIENT_CAPABILITIES: {},
        meta::CLIENT_INFO: {"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")},
    }})
}

/// Whether a `server/discover` result lists a modern revision we speak.
pub fn lists_modern_version(result: &Value) -> bool {
    result
        .get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|versions| {
            versions
                .iter()
                .filter_map(Value::as_str)
                .any(|v| MODERN_VERSIONS.contains(&v))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_verdict_is_kept_until_forgotten() {
        let cache = EraCache::default();
        assert!(cache.is_modern(|| async { true }).await);
        assert!(
            cache.is_modern(|| async { false }).await,
            "kept, not probed again"
        );
        cache.forget();
        assert!(!cache.is_modern(|| async { false }).await, "probed again");
    }

    #[test]
    fn only_a_listed_modern_version_is_modern() {
        assert!(lists_modern_version(
            &json!({"supportedVersions": ["2025-11-25", "2026-07-28"]})
        ));
        assert!(!lists_modern_version(
            &json!({"supportedVersions": ["2025-11-25"]})
        ));
        assert!(!lists_modern_version(
            &json!({"protocolVersion": "2026-07-28"})
        ));
    }
}

//! Prometheus metrics (names from DESIGN.md §7). Every label value comes from a bounded set:
//! method names are folded to a fixed list, upstream names come from the configuration.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::protocol::Method;

/// Outcomes of looking a session up.
#[derive(Debug, Clone, Copy)]
pub enum LookupOutcome {
    Hit,
    /// A live session this replica had not served before (or since it restarted).
    Revived,
    Expired,
    Deleted,
    Unknown,
    /// A live session asked for by a principal other than its owner (answered as unknown).
    Foreign,
    StoreError,
}

impl LookupOutcome {
    fn label(self) -> &'static str {
        match self {
            LookupOutcome::Hit => "hit",
            LookupOutcome::Revived => "revived",
            LookupOutcome::Expired => "expired",
            LookupOutcome::Deleted => "deleted",
            LookupOutcome::Unknown => "unknown",
            LookupOutcome::Foreign => "foreign",
            LookupOutcome::StoreError => "store_error",
        }
    }
}

/// How a configuration reload ended: the `result` label of `mcpgate_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The upstreams changed and the new set serves.
    Applied,
    /// The file was valid and its upstreams the same.
    Unchanged,
    /// The file was unreadable or invalid; the running configuration stays.
    Invalid,
    /// The file was valid but a new upstream could not be built; the running set stays.
    Failed,
}

impl ReloadResult {
    fn label(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Invalid => "invalid",
            ReloadResult::Failed => "failed",
        }
    }

    fn succeeded(self) -> bool {
        matches!(self, ReloadResult::Applied | ReloadResult::Unchanged)
    }
}

/// Label values of what is not a request: a body of notifications or responses, and the
/// other HTTP methods.
const NOT_REQUESTS: [&str; 4] = ["notification", "response", "get", "delete"];

/// Folds a method name into the bounded label set: [`Method::metric_label`], or one of
/// [`NOT_REQUESTS`].
pub fn method_label(method: &str) -> &'static str {
    NOT_REQUESTS
        .into_iter()
        .find(|label| *label == method)
        .unwrap_or_else(|| Method::parse(method).metric_label())
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    pub sessions_created: IntCounter,
    pub sessions_deleted: IntCounter,
    pub sessions_expired: IntCounter,
    pub sessions_revived: IntCounter,
    session_lookups: IntCounterVec,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    upstream_reinitializations: IntCounterVec,
    upstream_messages_dropped: IntCounterVec,
    upstream_messages_coalesced: IntCounterVec,
    isolated_children: IntGaugeVec,
    upstream_up: IntGaugeVec,
    ready: IntGauge,
    isolated_children_started: IntCounterVec,
    isolated_children_stopped: IntCounterVec,
    isolated_children_refused: IntCounterVec,
    pub sse_streams_open: IntGauge,
    pub sessions_held: IntGauge,
    pub upstream_streams_held: IntGauge,
    upstream_streams_refused: IntCounterVec,
    pub sse_events_replayed: IntCounter,
    store_duration: HistogramVec,
    store_errors: IntCounterVec,
    limited: IntCounterVec,
    limits_unchecked: IntCounterVec,
    auth_failures: IntCounterVec,
    config_reloads: IntCounterVec,
    config_last_reload_successful: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("mcpgate".into()), None)?;
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let histogram_vec =
            |name: &str, help: &str, label: &str| -> Result<HistogramVec, prometheus::Error> {
                let metric = HistogramVec::new(HistogramOpts::new(name, help), &[label])?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let sse_streams_open = IntGauge::new(
            "sse_streams_open",
            "SSE streams currently open on this replica",
        )?;
        registry.register(Box::new(sse_streams_open.clone()))?;
        let sessions_held = IntGauge::new(
            "sessions_held",
            "Sessions this replica keeps in-memory state for (updated every 5 s)",
        )?;
        registry.register(Box::new(sessions_held.clone()))?;
        let upstream_streams_held = IntGauge::new(
            "upstream_streams_held",
            "Upstream standalone streams this replica holds for sessions (standalone = \"hold\")",
        )?;
        registry.register(Box::new(upstream_streams_held.clone()))?;
        let isolated_children = IntGaugeVec::new(
            Opts::new(
                "isolated_children",
                "Isolated stdio children running on this replica, by upstream",
            ),
            &["upstream"],
        )?;
        registry.register(Box::new(isolated_children.clone()))?;
        let upstream_up = IntGaugeVec::new(
            Opts::new(
                "upstream_up",
                "1 while this replica can reach the upstream (its stdio child runs, or its HTTP \
                 server answered the last connection), 0 otherwise; read at each scrape",
            ),
            &["upstream"],
        )?;
        registry.register(Box::new(upstream_up.clone()))?;
        let ready = IntGauge::new(
            "ready",
            "1 while this replica is ready (/readyz: started and not draining), 0 when draining",
        )?;
        registry.register(Box::new(ready.clone()))?;
        let config_last_reload_successful = IntGauge::new(
            "config_last_reload_successful",
            "1 when the last configuration reload (or the start) succeeded, 0 when the file was \
             refused and an older configuration serves",
        )?;
        config_last_reload_successful.set(1);
        registry.register(Box::new(config_last_reload_successful.clone()))?;
        Ok(Self {
            config_last_reload_successful,
            config_reloads: counter_vec(
                "config_reloads_total",
                "Configuration reloads (SIGHUP or a changed file), by result (applied, \
                 unchanged, invalid, failed)",
                &["result"],
            )?,
            isolated_children,
            upstream_up,
            ready,
            isolated_children_started: counter_vec(
                "isolated_children_started_total",
                "Isolated stdio children started, by upstream",
                &["upstream"],
            )?,
            isolated_children_stopped: counter_vec(
                "isolated_children_stopped_total",
                "Isolated stdio children stopped, by upstream and reason (idle, session_ended, exited)",
                &["upstream", "reason"],
            )?,
            isolated_children_refused: counter_vec(
                "isolated_children_refused_total",
                "Isolated stdio children not started because max_children were running, by upstream",
                &["upstream"],
            )?,
            sessions_created: counter("sessions_created_total", "Sessions created by initialize")?,
            sessions_deleted: counter("sessions_deleted_total", "Sessions ended by DELETE")?,
            sessions_expired: counter("sessions_expired_total", "Sessions found expired")?,
            sessions_revived: counter(
                "sessions_revived_total",
                "Sessions served by a replica that had not served them before",
            )?,
            upstream_reinitializations: counter_vec(
                "upstream_reinitializations_total",
                "Upstream sessions re-initialized after the upstream forgot them",
                &["upstream"],
            )?,
            upstream_streams_refused: counter_vec(
                "upstream_streams_hold_refused_total",
                "Upstream standalone streams not held because server.max_held_streams were, by upstream",
                &["upstream"],
            )?,
            upstream_messages_dropped: counter_vec(
                "upstream_messages_dropped_total",
                "Upstream messages dropped by a bound, by upstream and reason",
                &["upstream", "reason"],
            )?,
            upstream_messages_coalesced: counter_vec(
                "upstream_messages_coalesced_total",
                "Upstream list changes merged into one already waiting for delivery",
                &["upstream"],
            )?,
            session_lookups: counter_vec(
                "session_lookups_total",
                "Session lookups by outcome",
                &["outcome"],
            )?,
            requests: counter_vec(
                "requests_total",
                "Downstream requests by method and HTTP status",
                &["method", "status"],
            )?,
            request_duration: histogram_vec(
                "request_duration_seconds",
                "Downstream request latency",
                "method",
            )?,
            upstream_requests: counter_vec(
                "upstream_requests_total",
                "Upstream requests by outcome",
                &["upstream", "outcome"],
            )?,
            upstream_duration: histogram_vec(
                "upstream_duration_seconds",
                "Upstream request latency",
                "upstream",
            )?,
            store_duration: histogram_vec(
                "store_duration_seconds",
                "Redis operation latency",
                "op",
            )?,
            store_errors: counter_vec("store_errors_total", "Failed Redis operations", &["op"])?,
            limited: counter_vec(
                "limited_total",
                "Requests refused by a limit (429), by limit",
                &["limit"],
            )?,
            limits_unchecked: counter_vec(
                "limits_unchecked_total",
                "Requests admitted without a limit check because its store failed, by limit",
                &["limit"],
            )?,
            auth_failures: counter_vec(
                "auth_failures_total",
                "Requests refused by authentication (401/403), by reason",
                &["reason"],
            )?,
            sse_events_replayed: counter(
                "sse_events_replayed_total",
                "SSE events replayed after Last-Event-ID",
            )?,
            sse_streams_open,
            sessions_held,
            upstream_streams_held,
            registry,
        })
    }

    pub fn lookup(&self, outcome: LookupOutcome) {
        self.session_lookups
            .with_label_values(&[outcome.label()])
            .inc();
    }

    pub fn request(&self, method: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        self.requests
            .with_label_values(&[method, &status.to_string()])
            .inc();
        self.request_duration
            .with_label_values(&[method])
            .observe(seconds);
    }

    /// `upstream` is a configured name; `ok` tells success from error.
    pub fn upstream_request(&self, upstream: &str, ok: bool, seconds: f64) {
        let outcome = if ok { "ok" } else { "error" };
        self.upstream_requests
            .with_label_values(&[upstream, outcome])
            .inc();
        self.upstream_duration
            .with_label_values(&[upstream])
            .observe(seconds);
    }

    /// `upstream` is a configured name.
    pub fn upstream_reinitialized(&self, upstream: &str) {
        self.upstream_reinitializations
            .with_label_values(&[upstream])
            .inc();
    }

    /// `upstream` is a configured name.
    pub fn upstream_stream_refused(&self, upstream: &str) {
        self.upstream_streams_refused
            .with_label_values(&[upstream])
            .inc();
    }

    /// `upstream` is a configured name, `reason` one of [`crate::upstream::DropReason`]'s labels.
    pub fn upstream_message_dropped(&self, upstream: &str, reason: &'static str) {
        self.upstream_messages_dropped
            .with_label_values(&[upstream, reason])
            .inc();
    }

    /// `upstream` is a configured name.
    pub fn upstream_message_coalesced(&self, upstream: &str) {
        self.upstream_messages_coalesced
            .with_label_values(&[upstream])
            .inc();
    }

    /// An isolated child of `upstream` (a configured name) started.
    pub fn isolated_child_started(&self, upstream: &str) {
        self.isolated_children_started
            .with_label_values(&[upstream])
            .inc();
        self.isolated_children.with_label_values(&[upstream]).inc();
    }

    /// An isolated child of `upstream` stopped; `reason` is one of a fixed set.
    pub fn isolated_child_stopped(&self, upstream: &str, reason: &'static str) {
        self.isolated_children_stopped
            .with_label_values(&[upstream, reason])
            .inc();
        self.isolated_children.with_label_values(&[upstream]).dec();
    }

    /// An isolated child of `upstream` was not started: `max_children` were running.
    pub fn isolated_child_refused(&self, upstream: &str) {
        self.isolated_children_refused
            .with_label_values(&[upstream])
            .inc();
    }

    /// `op` is one of the store's fixed operation names.
    pub fn store_operation(&self, op: &str, ok: bool, seconds: f64) {
        self.store_duration
            .with_label_values(&[op])
            .observe(seconds);
        if !ok {
            self.store_errors.with_label_values(&[op]).inc();
        }
    }

    /// A refused request; `reason` is one of [`crate::auth::AuthError::reason`]'s labels.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// A request refused by `limit` (a [`crate::limits::Limit`] label).
    pub fn limited(&self, limit: &'static str) {
        self.limited.with_label_values(&[limit]).inc();
    }

    /// A request admitted without checking `limit` (a [`crate::limits::Limit`] label).
    pub fn limit_unchecked(&self, limit: &'static str) {
        self.limits_unchecked.with_label_values(&[limit]).inc();
    }

    /// Whether `upstream` is reachable from this replica now.
    pub fn upstream_health(&self, upstream: &str, up: bool) {
        self.upstream_up
            .with_label_values(&[upstream])
            .set(i64::from(up));
    }

    /// A configuration reload ended with `result`.
    pub fn config_reloaded(&self, result: ReloadResult) {
        self.config_reloads
            .with_label_values(&[result.label()])
            .inc();
        self.config_last_reload_successful
            .set(i64::from(result.succeeded()));
    }

    /// A live reload removed `upstream`: its gauges go, rather than stay at their last value.
    pub fn forget_upstream(&self, upstream: &str) {
        let _ = self.upstream_up.remove_label_values(&[upstream]);
        let _ = self.isolated_children.remove_label_values(&[upstream]);
    }

    /// Whether this replica is ready (not draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_prefix_and_bounded_method_labels() {
        let metrics = Metrics::new().unwrap();
        metrics.request("tools/call", 200, 0.01);
        metrics.request("some/attacker-chosen-method", 200, 0.01);
        metrics.lookup(LookupOutcome::Hit);
        let text = metrics.render();
        assert!(text.contains("mcpgate_requests_total{method=\"tools/call\",status=\"200\"} 1"));
        assert!(text.contains("method=\"other\""));
        assert!(!text.contains("attacker"));
        assert!(text.contains("mcpgate_session_lookups_total{outcome=\"hit\"} 1"));
    }
}

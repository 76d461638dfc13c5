//! The figures of a run, as one JSON object (`--json`) or as a table: counts, rates, errors by
//! kind, statuses and latency percentiles in milliseconds, with the extras of each mode.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::modes::Measured;
use super::options::{Mode, Plan};

/// The order in which the table shows the phases of sessions mode.
const PHASE_ORDER: [&str; 4] = ["initialize", "initialized", "call", "delete"];

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub url: String,
    pub connections: usize,
    pub sessions: u64,
    pub duration_s: f64,
    pub requests: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub statuses: BTreeMap<String, u64>,
    pub throughput_per_s: f64,
    pub latency_ms: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<BTreeMap<&'static str, Latency>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_per_s: Option<f64>,
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        let at = |quantile| millis(histogram.value_at_quantile(quantile) as f64);
        Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: millis(histogram.max() as f64),
            mean: millis(histogram.mean()),
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3} ms",
            self.p50, self.p90, self.p99, self.p999, self.max, self.mean
        )
    }
}

/// Microseconds to milliseconds, kept to the microsecond.
fn millis(micros: f64) -> f64 {
    micros.round() / 1000.0
}

impl Report {
    pub fn new(plan: &Plan, measured: &Measured) -> Report {
        let recorder = &measured.recorder;
        let seconds = measured.window.as_secs_f64();
        let rate = |count: u64| {
            if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            }
        };
        let named = |name: &str| recorder.phases.get(name).map(Latency::of);
        let revival = plan.mode == Mode::Revival;
        Report {
            mode: plan.mode.name(),
            url: plan.target.printable().to_owned(),
            connections: plan.connections,
            sessions: recorder.sessions,
            duration_s: seconds,
            requests: recorder.requests,
            ok: recorder.ok,
            errors: recorder
                .errors
                .iter()
                .map(|(f, n)| (f.to_string(), *n))
                .collect(),
            statuses: recorder
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            throughput_per_s: rate(recorder.requests),
            latency_ms: Latency::of(&recorder.latency),
            phases: (plan.mode == Mode::Sessions).then(|| {
                let phases = recorder.phases.iter();
                phases.map(|(name, h)| (*name, Latency::of(h))).collect()
            }),
            first: named("first").filter(|_| revival),
            steady: named("steady").filter(|_| revival),
            sessions_per_s: matches!(plan.mode, Mode::Sessions | Mode::Idle)
                .then(|| rate(recorder.ok)),
        }
    }

    /// The same figures, for people.
    pub fn table(&self) -> String {
        let mut text = format!("mcpgate bench: {} mode, {}\n", self.mode, self.url);
        let mut line = |label: &str, value: String| {
            let _ = writeln!(text, "  {label:<12} {value}");
        };
        line(
            "run",
            format!(
                "{} connections, {} sessions, {:.2} s measured",
                self.connections, self.sessions, self.duration_s
            ),
        );
        line(
            "requests",
            format!(
                "{} ({} ok), {:.1}/s",
                self.requests, self.ok, self.throughput_per_s
            ),
        );
        line("latency", self.latency_ms.line());
        line("statuses", listing(&self.statuses));
        line("errors", listing(&self.errors));
        if let Some(rate) = self.sessions_per_s {
            line("sessions", format!("{rate:.1}/s"));
        }
        for (name, latency) in self.extras() {
            line(name, latency.line());
        }
        text
    }

    /// The per-phase (sessions) or per-request (revival) latencies, in order.
    fn extras(&self) -> Vec<(&'static str, Latency)> {
        let phases = self.phases.iter().flat_map(|phases| {
            PHASE_ORDER
                .iter()
                .filter_map(|name| phases.get(name).map(|latency| (*name, *latency)))
        });
        let requests = [("first", self.first), ("steady", self.steady)];
        let requests = requests
            .into_iter()
            .filter_map(|(name, latency)| latency.map(|latency| (name, latency)));
        phases.chain(requests).collect()
    }
}

/// `key: count, key: count`, or `none`.
fn listing(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    let entries: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    entries.join(", ")
}

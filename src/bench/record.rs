//! What a worker saw: latency histograms (HDR, microseconds, 3 significant digits), measured
//! iterations and successes, HTTP statuses, and errors by kind. Each worker keeps its own;
//! they are merged once at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::client::{Exchange, Failure};

/// The longest latency told apart: an hour, in microseconds (longer ones count as this).
const MAX_MICROS: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

pub struct Recorder {
    /// Latency of successful measured iterations.
    pub latency: Histogram<u64>,
    /// Latency per phase (sessions mode) or per request (revival: `first`, `steady`).
    pub phases: BTreeMap<&'static str, Histogram<u64>>,
    pub requests: u64,
    pub ok: u64,
    /// Sessions opened.
    pub sessions: u64,
    pub errors: BTreeMap<Failure, u64>,
    pub statuses: BTreeMap<u16, u64>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder {
            latency: histogram(),
            phases: BTreeMap::new(),
            requests: 0,
            ok: 0,
            sessions: 0,
            errors: BTreeMap::new(),
            statuses: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Counts the failure of any exchange after the warm-up (setup included).
    pub fn failure(&mut self, exchange: &Exchange) {
        if let Err(failure) = exchange.result {
            *self.errors.entry(failure).or_default() += 1;
        }
    }

    /// A measured exchange: its failure and status, and its latency under `phase` if it
    /// succeeded.
    pub fn exchange(&mut self, exchange: &Exchange, phase: Option<&'static str>) {
        self.failure(exchange);
        if let Some(status) = exchange.status {
            *self.statuses.entry(status).or_default() += 1;
        }
        if let (Some(phase), true) = (phase, exchange.is_ok()) {
            let histogram = self.phases.entry(phase).or_insert_with(histogram);
            histogram.saturating_record(micros(exchange.elapsed));
        }
    }

    /// A measured iteration; `elapsed` when it succeeded.
    pub fn iteration(&mut self, elapsed: Option<Duration>) {
        self.requests += 1;
        if let Some(elapsed) = elapsed {
            self.ok += 1;
            self.latency.saturating_record(micros(elapsed));
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        add(&mut self.latency, &other.latency);
        for (phase, latency) in other.phases {
            add(self.phases.entry(phase).or_insert_with(histogram), &latency);
        }
        self.requests += other.requests;
        self.ok += other.ok;
        self.sessions += other.sessions;
        for (failure, count) in other.errors {
            *self.errors.entry(failure).or_default() += count;
        }
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
    }
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// Histograms with the same bounds always add up.
fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    into.add(from)
        .expect("histograms with the same bounds add up");
}

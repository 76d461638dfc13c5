//! When a run stops and what of it counts: the warm-up, the measured window (`--duration`)
//! and the budget of measured iterations, shared by the workers; and the progress line on
//! stderr (indicatif, drawn only on a terminal) fed by their counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the progress line is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// Whether an iteration about to start is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Warmup,
    Measured,
}

pub struct Control {
    /// The end of the warm-up: the start of the measured window.
    pub start: Instant,
    deadline: Instant,
    budget: Option<u64>,
    taken: AtomicU64,
    /// Measured iterations done, and failed, for the progress line.
    done: AtomicU64,
    failed: AtomicU64,
}

impl Control {
    pub fn new(warmup: Duration, duration: Duration, budget: Option<u64>) -> Control {
        let start = Instant::now() + warmup;
        Control {
            start,
            deadline: start + duration,
            budget,
            taken: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// The next iteration, or `None` once the time or the budget is spent.
    pub fn next(&self) -> Option<Slot> {
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        if now < self.start {
            return Some(Slot::Warmup);
        }
        let taken = self.taken.fetch_add(1, Ordering::Relaxed);
        match self.budget {
            Some(budget) if taken >= budget => None,
            _ => Some(Slot::Measured),
        }
    }

    /// Tells the progress line about a measured iteration.
    pub fn done(&self, ok: bool) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The progress line's text: measured iterations, their rate, failures.
    fn status(&self) -> String {
        let now = Instant::now();
        if now < self.start {
            return "warming up".to_owned();
        }
        let done = self.done.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let seconds = now.duration_since(self.start).as_secs_f64().max(0.001);
        let rate = done as f64 / seconds;
        format!("{done} measured, {rate:.0}/s, {failed} failed")
    }

    /// Draws the progress line until the returned [`Progress`] is finished.
    pub fn progress(self: &Arc<Self>, shown: bool) -> Progress {
        let target = match shown {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        };
        let style = ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .expect("the progress template is valid");
        let bar = ProgressBar::with_draw_target(None, target).with_style(style);
        let control = self.clone();
        let drawn = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_TICK);
            loop {
                tick.tick().await;
                drawn.set_message(control.status());
                drawn.tick();
            }
        });
        Progress { bar, ticker }
    }
}

/// The progress line while it is drawn.
pub struct Progress {
    bar: ProgressBar,
    ticker: JoinHandle<()>,
}

impl Progress {
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

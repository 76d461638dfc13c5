//! Observability: Prometheus metrics and log output.

mod logging;
mod metrics;

pub use logging::init_logging;
pub use metrics::{LookupOutcome, Metrics};

//! Observability: Prometheus metrics, log output, and traces (OpenTelemetry spans, their OTLP
//! export, W3C trace context in and out, and the MCP span conventions).

mod export_client;
mod log_ids;
mod logging;
pub mod mcp_spans;
mod metrics;
mod otlp;
pub mod propagation;

pub use logging::init_logging;
pub use metrics::{LookupOutcome, Metrics, ReloadResult};
pub use otlp::{Tracing, TracingError};

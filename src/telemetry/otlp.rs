//! Traces: the OpenTelemetry tracer behind `tracing`'s spans, and its OTLP export.
//!
//! Spans are recorded, and leave the process, only when the standard variables ask for it
//! (each request gets trace and span ids either way, so that log lines can name them and an
//! incoming `traceparent` is continued): `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and neither `OTEL_TRACES_EXPORTER=none` nor
//! `OTEL_SDK_DISABLED=true` says otherwise. Export is OTLP over HTTP with protobuf bodies, in
//! batches: ended spans wait in a queue of
//! `OTEL_BSP_MAX_QUEUE_SIZE` (2048) spans, which a thread of the SDK sends every
//! `OTEL_BSP_SCHEDULE_DELAY` (5 s) or when 512 are waiting. Requests never wait for it: when
//! the queue is full (a slow or unreachable collector), further spans are dropped, and the SDK
//! logs one warning (and the total dropped at shutdown). [`Tracing::shutdown`] sends what is
//! queued, for at most [`SHUTDOWN_LIMIT`].

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, LevelFilter};
use tracing_subscriber::registry::LookupSpan;

use super::export_client::ExportClient;

/// Longest wait at shutdown for queued spans to reach the collector.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
const SERVICE_NAME: &str = "mcpgate";

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("cannot configure OTLP trace export: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot start the OTLP export runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What the `OTEL_*` variables ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// Batches of spans to the OTLP/HTTP endpoint the variables name.
    Otlp,
    /// No export, for this reason.
    Off(&'static str),
}

impl Export {
    /// Reads the decision from the variables `var` returns.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| var(name).map(|v| v.trim().to_ascii_lowercase());
        if set("OTEL_SDK_DISABLED").as_deref() == Some("true") {
            return Export::Off("OTEL_SDK_DISABLED is true");
        }
        if let Some(exporters) = set("OTEL_TRACES_EXPORTER").filter(|v| !v.is_empty()) {
            let mut names = exporters.split(',').map(str::trim);
            if names.clone().any(|name| name == "none") {
                return Export::Off("OTEL_TRACES_EXPORTER is none");
            }
            if !names.any(|name| name == "otlp") {
                return Export::Off(
                    "OTEL_TRACES_EXPORTER names no exporter but otlp, the only one",
                );
            }
        }
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .any(|name| set(name).is_some_and(|v| !v.is_empty()));
        if endpoint {
            Export::Otlp
        } else {
            Export::Off("no OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        }
    }
}

/// The process's tracer; keep it until the end, then [`Tracing::shutdown`].
pub struct Tracing {
    provider: SdkTracerProvider,
    export: Export,
}

impl Tracing {
    /// The tracer the environment asks for (see the module documentation).
    pub fn from_env() -> Result<Self, TracingError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`Tracing::from_env`], but whether spans are exported is decided by the variables
    /// `var` returns (the exporter and the resource still read the environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, TracingError> {
        let export = Export::from_vars(&var);
        let mut builder = SdkTracerProvider::builder().with_resource(resource());
        if export == Export::Otlp {
            let exporter = SpanExporter::builder()
                .with_http()
                .with_http_client(ExportClient::new()?)
                .build()?;
            builder = builder.with_batch_exporter(exporter);
        }
        Ok(Self {
            provider: builder.build(),
            export,
        })
    }

    /// The `tracing` layer that turns mcpgate's spans into OpenTelemetry spans, whatever the
    /// log level: INFO spans and, as span events, WARN and ERROR events of mcpgate; `None`
    /// when spans are not exported. Recording spans only to drop them cost 13-15% of a call's
    /// CPU: without export, a request's trace ids come from
    /// [`propagation::request_context`](super::propagation::request_context) instead.
    pub fn layer<S>(&self) -> Option<impl Layer<S> + Send + Sync + 'static>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        if self.export != Export::Otlp {
            return None;
        }
        let ours = FilterFn::new(|meta| {
            let limit = if meta.is_span() {
                LevelFilter::INFO
            } else {
                LevelFilter::WARN
            };
            meta.target().starts_with("mcpgate") && *meta.level() <= limit
        })
        .with_max_level_hint(LevelFilter::INFO);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(self.tracer())
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(ours);
        Some(layer)
    }

    /// Says at start whether spans are exported.
    pub fn announce(&self) {
        match self.export {
            Export::Otlp => tracing::info!("traces are exported over OTLP/HTTP (OTEL_* variables)"),
            Export::Off(reason) => tracing::debug!(reason, "traces are not exported"),
        }
    }

    /// Sends the spans still queued (for at most [`SHUTDOWN_LIMIT`]) and stops exporting.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(SHUTDOWN_LIMIT) {
            tracing::warn!(%error, "not every span could be exported at shutdown");
        }
    }

    fn tracer(&self) -> SdkTracer {
        self.provider.tracer("mcpgate")
    }
}

/// The resource from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, named `mcpgate` where
/// they name no service.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if unnamed {
        builder.with_service_name(SERVICE_NAME).build()
    } else {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(vars: &[(&str, &str)]) -> Export {
        Export::from_vars(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn export_is_off_without_an_endpoint() {
        assert!(matches!(decide(&[]), Export::Off(_)));
        assert!(matches!(
            decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            Export::Off(_)
        ));
        assert!(matches!(
            decide(&[("OTEL_TRACES_EXPORTER", "otlp")]),
            Export::Off(_)
        ));
    }

    #[test]
    fn either_endpoint_variable_turns_export_on() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let traces = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces",
        );
        assert_eq!(decide(&[base]), Export::Otlp);
        assert_eq!(decide(&[traces]), Export::Otlp);
        assert_eq!(
            decide(&[base, ("OTEL_TRACES_EXPORTER", " OTLP ")]),
            Export::Otlp
        );
        assert_eq!(
            decide(&[base, ("OTEL_SDK_DISABLED", "false")]),
            Export::Otlp
        );
    }

    #[test]
    fn none_disabled_or_another_exporter_turns_export_off() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        for off in [
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_TRACES_EXPORTER", "otlp,none"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ] {
            assert!(matches!(decide(&[base, off]), Export::Off(_)), "{off:?}");
        }
    }
}

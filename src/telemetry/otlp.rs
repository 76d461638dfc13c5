//! Traces: the OpenTelemetry tracer behind `tracing`'s spans, and its OTLP export.
//!
//! Each request's server span always gets trace and span ids (so log lines can name them and
//! an incoming `traceparent` is continued), but spans are all recorded, and leave the process,
//! only when the standard variables ask for it: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and
//! neither `OTEL_TRACES_EXPORTER=none` nor `OTEL_SDK_DISABLED=true` says otherwise. Export is
//! OTLP over HTTP with protobuf bodies, in batches: ended spans wait in a queue of
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
use super::mcp_spans::SERVER_SPAN;

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
        let export = Export::from_vars(|name| std::env::var(name).ok());
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
    /// log level: INFO spans and, as span events, WARN and ERROR events of mcpgate. Without
    /// export, only the server span of each request: its ids are all that log lines and
    /// upstream `traceparent`s need, and the store and upstream spans under it cost a tenth of
    /// a call's CPU for nothing (the callsites of spans no layer wants are switched off).
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let exported = self.export == Export::Otlp;
        let ours = FilterFn::new(move |meta| {
            if !meta.target().starts_with("mcpgate") {
                return false;
            }
            if !meta.is_span() {
                return *meta.level() <= LevelFilter::WARN;
            }
            *meta.level() <= LevelFilter::INFO && (exported || meta.name() == SERVER_SPAN)
        });
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer())
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(ours)
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
    use opentelemetry::trace::TraceContextExt;
    use serde_json::json;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::protocol::jsonrpc::{Request, RequestId};
    use crate::telemetry::{mcp_spans, propagation};

    /// Spans go to a layer of a tracer that exports (or not) nowhere, and when `logged` to a
    /// log output that shows every span too (as `RUST_LOG=debug` does), on this thread, until
    /// the guard is dropped.
    fn traced(export: Export, logged: bool) -> (Tracing, tracing::subscriber::DefaultGuard) {
        let tracing = Tracing {
            provider: SdkTracerProvider::builder().build(),
            export,
        };
        let log_output =
            logged.then(|| tracing_subscriber::fmt::layer().with_writer(std::io::sink));
        let subscriber = tracing_subscriber::registry()
            .with(tracing.layer())
            .with(log_output);
        let guard = tracing::subscriber::set_default(subscriber);
        (tracing, guard)
    }

    /// Opens a request's server span and, inside it, an upstream call's span; returns whether
    /// the latter is recorded, and the span ids of the server span and of the `traceparent`
    /// sent upstream.
    fn call_upstream(export: Export, logged: bool) -> (bool, String, String) {
        let (_tracing, _guard) = traced(export, logged);
        let server = mcp_spans::request_span(opentelemetry::Context::new(), "1.1");
        let _in_server = server.enter();
        let server_id = opentelemetry::Context::current()
            .span()
            .span_context()
            .span_id();
        let request = Request {
            id: RequestId::Number(1),
            method: "tools/call".into(),
            params: Some(json!({"name": "echo"})),
        };
        let upstream = mcp_spans::upstream_span("remote", "tcp", &request);
        let _in_upstream = upstream.enter();
        let headers = propagation::outgoing_headers();
        let traceparent = headers["traceparent"].to_str().unwrap();
        let parent_id = traceparent.split('-').nth(2).unwrap().to_owned();
        let recorded = upstream.context().span().span_context().is_valid();
        (recorded, server_id.to_string(), parent_id)
    }

    #[test]
    fn without_export_an_upstream_call_has_no_span_of_its_own() {
        for logged in [false, true] {
            let (recorded, server_id, parent_id) = call_upstream(Export::Off("test"), logged);
            assert!(
                !recorded,
                "logged: {logged}: the upstream call's span is recorded"
            );
            assert_eq!(
                parent_id, server_id,
                "logged: {logged}: not the server span upstream"
            );
        }
    }

    #[test]
    fn with_export_an_upstream_call_is_its_own_span_and_the_upstream_s_parent() {
        for logged in [false, true] {
            let (recorded, server_id, parent_id) = call_upstream(Export::Otlp, logged);
            assert!(recorded, "logged: {logged}");
            assert_ne!(
                parent_id, server_id,
                "logged: {logged}: the server span upstream"
            );
        }
    }

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

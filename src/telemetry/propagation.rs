//! W3C trace context (`traceparent`, `tracestate`) across HTTP: read from a client's request,
//! written into requests to upstreams, so a call is one trace from client to upstream.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The client's trace context from its request headers (an empty context when it sent none or
/// an invalid one); `headers` reads one header by its lowercase name.
pub fn incoming_context(headers: &dyn Extractor) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(headers)
}

/// The trace context headers naming the innermost entered span the OpenTelemetry layer
/// records as the parent, for a request to an upstream; empty outside a traced span. (Not
/// `Span::current()`: without export the upstream call's own span is not recorded, and has no
/// context of its own.)
pub fn outgoing_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let context = opentelemetry::Context::current();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
    headers
}

//! The span of an incoming `/mcp` request, continuing the W3C trace context (`traceparent`,
//! `tracestate`) the client sent, read from actix-web's headers.

use actix_web::HttpRequest;
use actix_web::http::Version;
use actix_web::http::header::HeaderMap;
use opentelemetry::propagation::Extractor;
use tracing::Span;

use crate::telemetry::{mcp_spans, propagation};

/// A request's headers, as OpenTelemetry's propagators read them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// The server span of `request`, a child of the client's span when it sent a valid
/// `traceparent`, a new trace otherwise.
pub(super) fn request_span(request: &HttpRequest) -> Span {
    let parent = propagation::incoming_context(&Headers(request.headers()));
    let version = match request.version() {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    mcp_spans::request_span(parent, version)
}

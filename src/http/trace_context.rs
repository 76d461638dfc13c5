//! The span of an incoming `/mcp` request and the OpenTelemetry context it runs in, continuing
//! the W3C trace context (`traceparent`, `tracestate`) the client sent, read from actix-web's
//! headers.

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
/// `traceparent`, a new trace otherwise; and the context to run the request in, which stands
/// for the span when spans are not recorded (see [`propagation::request_context`]; a
/// recorded span's own context replaces it while the span is entered).
pub(super) fn request_trace(request: &HttpRequest) -> (Span, opentelemetry::Context) {
    let parent = propagation::incoming_context(&Headers(request.headers()));
    let context = propagation::request_context(&parent);
    let version = match request.version() {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    (mcp_spans::request_span(parent, version), context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_propagator_finds_the_headers_it_asks_for_in_any_case() {
        let request = actix_web::test::TestRequest::default()
            .insert_header(("accept", "*/*"))
            .insert_header((
                "TraceParent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ))
            .insert_header(("tracestate", "a=1"))
            .to_http_request();
        let headers = Headers(request.headers());
        let parent = headers.get("traceparent");
        assert_eq!(
            parent,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(headers.get("TRACESTATE"), Some("a=1"));
        assert_eq!(headers.get("baggage"), None);
    }
}

//! W3C trace context (`traceparent`, `tracestate`) across HTTP: read from a client's request,
//! written into requests to upstreams, so a call is one trace from client to upstream; and,
//! when spans are not recorded, the context a request runs in instead of its span's.
//!
//! Reading uses opentelemetry's propagator. Writing does not: its `inject_context` formats
//! the ids through `fmt` into a `String` and fills a `HeaderMap` of its own, about 4,700
//! instructions on every request to an upstream, where [`outgoing_headers`] writes the 55
//! bytes of a `traceparent` straight into its header value. A test holds the two to the same
//! output.

use http::header::{HeaderName, HeaderValue};
use http::request::Builder;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The client's trace context from its request headers (an empty context when it sent none or
/// an invalid one); `headers` reads one header by its lowercase name.
pub fn incoming_context(headers: &dyn Extractor) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(headers)
}

/// A request to an upstream, with the trace context headers of [`outgoing_headers`].
pub fn traced(request: Builder) -> Builder {
    outgoing_headers().fold(request, |request, (name, value)| {
        request.header(name, value)
    })
}

/// The trace context headers naming the current OpenTelemetry context as the parent, for a
/// request to an upstream: the innermost recorded span, or without export the request's own
/// context ([`request_context`]); none outside a request. `tracestate` only when the trace
/// has one.
fn outgoing_headers() -> impl Iterator<Item = (HeaderName, HeaderValue)> {
    let context = opentelemetry::Context::current();
    let span = context.span();
    let parent = span.span_context();
    let traceparent = parent
        .is_valid()
        .then(|| (TRACEPARENT, traceparent(parent)));
    let state = parent.trace_state().header();
    let tracestate = (traceparent.is_some() && !state.is_empty())
        .then(|| HeaderValue::try_from(state).ok())
        .flatten()
        .map(|value| (TRACESTATE, value));
    traceparent.into_iter().chain(tracestate)
}

/// `00-{trace id}-{span id}-{flags}`, the flags reduced to the sampled bit, in lowercase hex.
fn traceparent(parent: &SpanContext) -> HeaderValue {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let flags = [(parent.trace_flags() & TraceFlags::SAMPLED).to_u8()];
    let fields: [(&[u8], std::ops::Range<usize>); 3] = [
        (&parent.trace_id().to_bytes(), 3..35),
        (&parent.span_id().to_bytes(), 36..52),
        (&flags, 53..55),
    ];
    for (bytes, range) in fields {
        hex::encode_to_slice(bytes, &mut text[range]).expect("each range is twice its bytes");
    }
    HeaderValue::from_bytes(&text).expect("hex digits and dashes make a valid header value")
}

/// The context a request runs in when spans are not recorded (no export): the client's trace,
/// or a new one, with a new span id standing for the request's server span, and the client's
/// sampling flag and `tracestate` (a new trace is sampled, as the default sampler would have
/// it). Log lines name it, and upstreams get it as their parent, as they would the span.
pub fn request_context(parent: &opentelemetry::Context) -> opentelemetry::Context {
    let ids = RandomIdGenerator::default();
    let span = parent.span();
    let client = span.span_context();
    let (trace_id, flags, state) = if client.is_valid() {
        let state = client.trace_state().clone();
        (client.trace_id(), client.trace_flags(), state)
    } else {
        (ids.new_trace_id(), TraceFlags::SAMPLED, Default::default())
    };
    let own = SpanContext::new(trace_id, ids.new_span_id(), flags, false, state);
    opentelemetry::Context::new().with_remote_span_context(own)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use http::header::HeaderMap;
    use opentelemetry::context::FutureExt;
    use opentelemetry_http::HeaderInjector;

    use super::*;

    /// The `traceparent` an upstream gets from inside `context`, split into its four fields.
    fn traceparent_in(context: opentelemetry::Context) -> Vec<String> {
        let _entered = context.attach();
        let headers: HeaderMap = outgoing_headers().collect();
        let value = headers["traceparent"].to_str().unwrap();
        value.split('-').map(str::to_owned).collect()
    }

    fn client_context(traceparent: &str, tracestate: &str) -> opentelemetry::Context {
        let headers = HashMap::from([
            ("traceparent".to_owned(), traceparent.to_owned()),
            ("tracestate".to_owned(), tracestate.to_owned()),
        ]);
        incoming_context(&headers)
    }

    #[test]
    fn a_request_continues_the_client_s_trace_under_a_span_id_of_its_own() {
        let client_span = "00f067aa0ba902b7";
        let sent = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{client_span}-00");
        let client = client_context(&sent, "vendor=x");

        let context = request_context(&client);

        let own = context.span().span_context().clone();
        let fields = traceparent_in(context);
        assert_eq!(fields[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(fields[2], own.span_id().to_string());
        assert_ne!(fields[2], client_span);
        assert_eq!(fields[3], "00", "the client's sampling decision");
        assert_eq!(own.trace_state().header(), "vendor=x");
    }

    #[test]
    fn a_request_without_a_client_trace_starts_a_sampled_one() {
        let a = request_context(&opentelemetry::Context::new());
        let b = request_context(&opentelemetry::Context::new());

        let (a, b) = (traceparent_in(a), traceparent_in(b));
        assert_ne!(a[1], b[1], "each request is a trace of its own");
        assert_eq!(a[3], "01");
    }

    #[tokio::test]
    async fn work_a_request_hands_over_keeps_its_context() {
        let context = request_context(&opentelemetry::Context::new());
        let own = context.span().span_context().span_id().to_string();

        let handed_over = async {
            let work = async { outgoing_headers().collect::<HeaderMap>() };
            tokio::spawn(work.with_current_context()).await.unwrap()
        };
        let headers = handed_over.with_context(context).await;

        let traceparent = headers["traceparent"].to_str().unwrap();
        assert!(traceparent.contains(&own), "{traceparent}");
    }

    #[test]
    fn the_headers_are_those_opentelemetry_s_propagator_writes() {
        let traced = |traceparent: &str, tracestate: &str| {
            request_context(&client_context(traceparent, tracestate))
        };
        let contexts = [
            traced(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "a=1,b=2",
            ),
            traced(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
                "",
            ),
            request_context(&opentelemetry::Context::new()),
        ];
        for context in contexts {
            let mut injected = HeaderMap::new();
            TraceContextPropagator::new()
                .inject_context(&context, &mut HeaderInjector(&mut injected));
            // The propagator sends an empty `tracestate`; none is the same trace state.
            let expected: HeaderMap = injected
                .into_iter()
                .filter_map(|(name, value)| Some((name?, value)).filter(|(_, v)| !v.is_empty()))
                .collect();
            let _entered = context.attach();
            assert_eq!(outgoing_headers().collect::<HeaderMap>(), expected);
        }
        let outside: HeaderMap = outgoing_headers().collect();
        assert!(outside.is_empty(), "no trace context outside a request");
    }
}

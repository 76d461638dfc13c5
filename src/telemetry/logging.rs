//! Log output through `tracing`, to stderr, filtered by `RUST_LOG` (default `info`), next to
//! the OpenTelemetry layer of [`Tracing`] when spans are exported (which has its own filter, so
//! `RUST_LOG` never turns spans off). Log lines name the spans they happened in only when
//! `RUST_LOG` enables DEBUG: the log output formats every span's fields when the span opens,
//! which cost about 15% of a call's CPU; JSON lines always carry the request's trace and span
//! ids (see `log_ids.rs`).

use std::io::IsTerminal;

use tracing_subscriber::filter::{FilterExt, FilterFn, LevelFilter};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::log_ids::WithTraceIds;
use super::otlp::{Tracing, TracingError};

/// Where actix-web reports, at ERROR, a connection that ended badly: a request it could not
/// parse, a client that was too slow or went away. These are the client's doing.
const CONNECTION_ERRORS: &str = "actix_http::h1::dispatcher";

/// Installs the global subscriber with the tracer the `OTEL_*` variables ask for; `json`
/// selects one JSON object per line (with `trace_id` and `span_id` inside a traced span).
/// Keep the returned [`Tracing`] until the end, then shut it down.
pub fn init_logging(json: bool) -> Result<Tracing, TracingError> {
    let tracing = Tracing::from_env()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = client_mistakes_at_debug(filter);
    let spans_shown = filter
        .max_level_hint()
        .is_some_and(|level| level >= LevelFilter::DEBUG);
    let filter = filter.and(FilterFn::new(move |meta| spans_shown || !meta.is_span()));
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let output = if json {
        output
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds(tracing_subscriber::fmt::format().json()))
            .with_filter(filter)
            .boxed()
    } else {
        output.with_filter(filter).boxed()
    };
    tracing_subscriber::registry()
        .with(tracing.layer())
        .with(output)
        .init();
    tracing.announce();
    Ok(tracing)
}

/// Shows actix-web's connection errors only when DEBUG is on, as if they were DEBUG events: a
/// client must not be able to flood the log at ERROR with bad requests.
fn client_mistakes_at_debug(filter: EnvFilter) -> EnvFilter {
    if filter
        .max_level_hint()
        .is_some_and(|level| level >= LevelFilter::DEBUG)
    {
        return filter;
    }
    let silence = format!("{CONNECTION_ERRORS}=off")
        .parse()
        .expect("a valid directive");
    filter.add_directive(silence)
}

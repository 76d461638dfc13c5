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
use tracing_subscriber::registry::LookupSpan;
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
    subscriber(&tracing, json, filter).init();
    tracing.announce();
    Ok(tracing)
}

/// The log output under `filter`, next to the span layer when spans are exported. Without
/// export there is no span layer at all: an absent layer (`None`) counts as one that wants
/// every span, so the registry would build and drop every span the log output never shows.
fn subscriber(
    tracing: &Tracing,
    json: bool,
    filter: EnvFilter,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    match tracing.layer() {
        Some(spans) => Box::new(
            tracing_subscriber::registry()
                .with(spans)
                .with(log_output(json, filter)),
        ),
        None => Box::new(tracing_subscriber::registry().with(log_output(json, filter))),
    }
}

/// Log lines under `filter`, as text or (`json`) one JSON object per line; spans only when
/// `filter` enables DEBUG.
fn log_output<S>(json: bool, filter: EnvFilter) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let filter = client_mistakes_at_debug(filter);
    let spans_shown = filter
        .max_level_hint()
        .is_some_and(|level| level >= LevelFilter::DEBUG);
    // Without a hint of its own, the `FilterFn` would make the whole filter's hint "any level":
    // `log` and `tracing` would then hand every DEBUG and TRACE record of every dependency to
    // the subscriber, only for it to drop them.
    let spans_if_shown = FilterFn::new(move |meta| spans_shown || !meta.is_span())
        .with_max_level_hint(LevelFilter::TRACE);
    let filter = filter.and(spans_if_shown);
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        output
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds(tracing_subscriber::fmt::format().json()))
            .with_filter(filter)
            .boxed()
    } else {
        output.with_filter(filter).boxed()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn without_export() -> Tracing {
        Tracing::from_vars(|_| None).expect("a tracer without export")
    }

    /// A span of the request path, as the log output and the span layer see it.
    fn request_span_is_recorded(filter: &str) -> bool {
        let subscriber = subscriber(&without_export(), false, EnvFilter::new(filter));
        tracing::subscriber::with_default(subscriber, || {
            !tracing::info_span!(target: "mcpgate::http", "request").is_disabled()
        })
    }

    #[test]
    fn without_export_no_span_is_built_below_debug() {
        assert!(!request_span_is_recorded("info"));
        assert!(!request_span_is_recorded("warn"));
    }

    /// The most verbose level any layer wants: `tracing` skips every event above it at its
    /// callsite, and so does `log` (its level is set from this at start). Without it, every
    /// `log` record of a dependency (reqwest, actix-cors: two per call) went through the
    /// subscriber only to be dropped there.
    fn most_verbose_level(filter: &str, export: bool) -> Option<LevelFilter> {
        let tracing = if export {
            Tracing::from_vars(|name| {
                (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:9".to_owned())
            })
            .expect("a tracer with export")
        } else {
            without_export()
        };
        subscriber(&tracing, false, EnvFilter::new(filter)).max_level_hint()
    }

    #[test]
    fn the_subscriber_names_the_most_verbose_level_it_wants() {
        assert_eq!(most_verbose_level("info", false), Some(LevelFilter::INFO));
        assert_eq!(most_verbose_level("warn", false), Some(LevelFilter::WARN));
        assert_eq!(
            most_verbose_level("mcpgate=debug,warn", false),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(
            most_verbose_level("warn", true),
            Some(LevelFilter::INFO),
            "INFO spans"
        );
        assert_eq!(most_verbose_level("debug", true), Some(LevelFilter::DEBUG));
    }

    #[test]
    fn without_export_log_lines_show_spans_at_debug() {
        assert!(request_span_is_recorded("debug"));
    }
}

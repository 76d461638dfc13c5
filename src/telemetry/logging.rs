//! Log output through `tracing`, to stderr, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Where actix-web reports, at ERROR, a connection that ended badly: a request it could not
/// parse, a client that was too slow or went away. These are the client's doing.
const CONNECTION_ERRORS: &str = "actix_http::h1::dispatcher";

/// Installs the global subscriber; `json` selects one JSON object per line.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = client_mistakes_at_debug(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
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

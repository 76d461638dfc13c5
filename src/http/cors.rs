//! CORS, so browser clients on allowed origins can use the endpoint: preflights are answered,
//! and `Mcp-Session-Id` is exposed to scripts. Origins that are not allowed get no CORS
//! headers here and a 403 from [`super::guard`].

use actix_cors::Cors;
use actix_web::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName};

use super::guard::{self, LAST_EVENT_HEADER, SESSION_HEADER, VERSION_HEADER};

/// How long browsers may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: usize = 3600;

/// The CORS middleware for the `/mcp` endpoint.
pub fn layer(allowed_origins: Vec<String>) -> Cors {
    Cors::default()
        .allowed_origin_fn(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| guard::origin_allowed(o, &allowed_origins))
        })
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([
            ACCEPT,
            AUTHORIZATION,
            CONTENT_TYPE,
            HeaderName::from_static(SESSION_HEADER),
            HeaderName::from_static(VERSION_HEADER),
            HeaderName::from_static(LAST_EVENT_HEADER),
        ])
        .expose_headers([HeaderName::from_static(SESSION_HEADER)])
        .max_age(PREFLIGHT_MAX_AGE)
        .block_on_origin_mismatch(false)
}

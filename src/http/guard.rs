//! Header checks shared by POST, GET and DELETE: Origin and Host (DNS rebinding), Accept,
//! Content-Type, `MCP-Protocol-Version`, the session id, and WebSocket upgrades. A header that
//! carries one value (all of these but Accept) is refused when it comes more than once.

use actix_web::HttpRequest;
use actix_web::http::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, HeaderValue, ORIGIN, TRANSFER_ENCODING,
    UPGRADE,
};

use super::HttpSettings;
use super::error::HttpError;
use crate::protocol::ProtocolVersion;
use crate::protocol::era::MODERN_VERSIONS;
use crate::session::SessionId;

// Header names as `HeaderName`s: looked up by a `&str`, a name is parsed again, and a name
// that is not a standard one is copied into an allocation, on every lookup.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub const LAST_EVENT_HEADER: HeaderName = HeaderName::from_static("last-event-id");

fn header(request: &HttpRequest, name: impl actix_web::http::header::AsHeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The value of a header that carries one value; twice is 400, since acting on either value
/// would be a guess at what the client meant.
fn single<'r>(
    request: &'r HttpRequest,
    name: &HeaderName,
) -> Result<Option<&'r HeaderValue>, HttpError> {
    let mut values = request.headers().get_all(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(HttpError::BadRequest(format!(
            "Bad Request: the {name} header must appear at most once"
        )));
    }
    Ok(first)
}

/// [`single`] as text; a value that is not visible ASCII counts as absent.
fn single_text<'r>(
    request: &'r HttpRequest,
    name: &HeaderName,
) -> Result<Option<&'r str>, HttpError> {
    Ok(single(request, name)?.and_then(|v| v.to_str().ok()))
}

/// Refuses requests whose Origin or Host is not allowed (403).
pub fn check_origin_and_host(
    request: &HttpRequest,
    settings: &HttpSettings,
) -> Result<(), HttpError> {
    if let Some(origin) = single(request, &ORIGIN)? {
        let origin = origin.to_str().unwrap_or_default();
        if !origin_allowed(origin, &settings.allowed_origins) {
            return Err(HttpError::Forbidden(format!(
                "Origin {origin:?} is not allowed"
            )));
        }
    }
    let host = single_text(request, &HOST)?.unwrap_or_default();
    let allowed = if !settings.allowed_hosts.is_empty() {
        settings
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(host_name(host)))
    } else {
        !settings.loopback_only || is_local_name(host_name(host))
    };
    if allowed {
        Ok(())
    } else {
        Err(HttpError::Forbidden(format!(
            "Host {host:?} is not allowed"
        )))
    }
}

/// Whether a browser origin may call us: configured, or a localhost one.
pub fn origin_allowed(origin: &str, allowed_origins: &[String]) -> bool {
    allowed_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
        || is_local_origin(origin)
}

fn is_local_origin(origin: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(is_local_name)
}

fn is_local_name(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "localhost" | "127.0.0.1" | "[::1]" | "::1"
    )
}

/// The name part of a Host header value (`[::1]:8080` → `[::1]`, `a.b:80` → `a.b`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Whether the request's Accept header lists each of `media` (lowercase `type/subtype`s, fewer
/// than 8), by itself, its type's wildcard or `*/*`, in any case and whatever its parameters.
/// Read in place and in one pass: this runs on every request.
fn accepts(request: &HttpRequest, media: &[&str]) -> bool {
    let all = (1u8 << media.len()) - 1;
    let mut listed = 0u8;
    let ranges = header(request, ACCEPT).unwrap_or_default().split(',');
    for range in ranges.map(|range| range.split(';').next().unwrap_or_default().trim()) {
        for (bit, wanted) in media.iter().enumerate() {
            if range_covers(range, wanted) {
                listed |= 1 << bit;
            }
        }
        if listed == all {
            return true;
        }
    }
    false
}

/// Whether an Accept range (without parameters) covers `media` (lowercase ASCII): the media
/// itself first, as clients list it, and only then a wildcard.
fn range_covers(range: &str, media: &str) -> bool {
    if range.eq_ignore_ascii_case(media) {
        return true;
    }
    match range.strip_suffix("/*") {
        Some("*") => true,
        Some(kind) => {
            media
                .as_bytes()
                .split_at_checked(kind.len())
                .is_some_and(|(family, rest)| {
                    rest.first() == Some(&b'/') && family.eq_ignore_ascii_case(kind.as_bytes())
                })
        }
        None => false,
    }
}

/// POST needs both `application/json` and `text/event-stream` (406 otherwise).
pub fn check_post_accept(request: &HttpRequest) -> Result<(), HttpError> {
    if accepts(request, &["application/json", "text/event-stream"]) {
        Ok(())
    } else {
        Err(HttpError::NotAcceptable(
            "Not Acceptable: Accept must list both application/json and text/event-stream",
        ))
    }
}

/// A GET carries no body (400 otherwise): its answer is a stream that outlives the request, and
/// a body failing to arrive whole under way would end the connection without an answer.
pub fn check_no_body(request: &HttpRequest) -> Result<(), HttpError> {
    let headers = request.headers();
    let declared = headers
        .get(CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0");
    if declared || headers.contains_key(TRANSFER_ENCODING) {
        return Err(HttpError::BadRequest(
            "Bad Request: a GET request carries no body".into(),
        ));
    }
    Ok(())
}

/// GET needs `text/event-stream` (406 otherwise).
pub fn check_get_accept(request: &HttpRequest) -> Result<(), HttpError> {
    if accepts(request, &["text/event-stream"]) {
        Ok(())
    } else {
        Err(HttpError::NotAcceptable(
            "Not Acceptable: Accept must list text/event-stream",
        ))
    }
}

/// POST bodies must be `application/json` (415 otherwise).
pub fn check_content_type(request: &HttpRequest) -> Result<(), HttpError> {
    let media = single_text(request, &CONTENT_TYPE)?
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(HttpError::UnsupportedMediaType(
            "Unsupported Media Type: Content-Type must be application/json",
        ))
    }
}

/// The `MCP-Protocol-Version` header: absent is fine, unknown is 400.
pub fn protocol_version(request: &HttpRequest) -> Result<Option<ProtocolVersion>, HttpError> {
    let Some(value) = single(request, &VERSION_HEADER)? else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    ProtocolVersion::parse(text).map(Some).ok_or_else(|| {
        let supported: Vec<&str> = ProtocolVersion::ALL.iter().map(|v| v.as_str()).collect();
        HttpError::BadRequest(format!(
            "Bad Request: unsupported MCP-Protocol-Version {text:?}; supported: {}",
            supported.join(", ")
        ))
    })
}

/// The session id header: missing or repeated is 400; one we could never have issued is 404.
pub fn session_id(request: &HttpRequest) -> Result<SessionId, HttpError> {
    let value = single_text(request, &SESSION_HEADER)?.ok_or_else(|| {
        HttpError::BadRequest("Bad Request: Mcp-Session-Id header is required".into())
    })?;
    SessionId::parse(value).ok_or(HttpError::SessionNotFound)
}

/// The session id of a GET or DELETE. Without one, the request's era decides: one that
/// declares a modern `MCP-Protocol-Version` gets 405 (the modern era has only POST); a legacy
/// one (or one without the header, taken as 2025-03-26) gets the legacy 400.
pub fn legacy_session_id(
    request: &HttpRequest,
    method: &'static str,
) -> Result<SessionId, HttpError> {
    let modern = header(request, VERSION_HEADER).is_some_and(|v| MODERN_VERSIONS.contains(&v));
    if modern && !request.headers().contains_key(SESSION_HEADER) {
        return Err(HttpError::NoLegacySession(method));
    }
    session_id(request)
}

/// A POST asking to switch to WebSocket is refused (400) before its body is read: we do not
/// speak WebSocket, and actix-web reads the body of such a request until the connection ends.
/// Other `Upgrade` offers (such as `h2c`) are ignored, as HTTP allows.
pub fn check_no_websocket_upgrade(request: &HttpRequest) -> Result<(), HttpError> {
    let websocket = request
        .headers()
        .get_all(UPGRADE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|protocol| {
            let name = protocol.split('/').next().unwrap_or_default();
            name.trim().eq_ignore_ascii_case("websocket")
        });
    if websocket {
        Err(HttpError::BadRequest(
            "Bad Request: this endpoint does not speak WebSocket; POST without Upgrade".into(),
        ))
    } else {
        Ok(())
    }
}

pub fn last_event_id(request: &HttpRequest) -> Option<&str> {
    header(request, LAST_EVENT_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(accept: &str) -> HttpRequest {
        actix_web::test::TestRequest::default()
            .insert_header((ACCEPT, accept))
            .to_http_request()
    }

    #[test]
    fn accept_ranges_match_in_any_case_with_parameters_and_wildcards() {
        let request = accepting("Application/JSON;q=0.5 , TEXT/*");
        let both = ["application/json", "text/event-stream"];
        assert!(accepts(&request, &both));
        assert!(accepts(&accepting("*/*"), &both));
        assert!(!accepts(&accepting("text/*"), &both));
        assert!(accepts(&accepting("text/*"), &["text/event-stream"]));
        assert!(!accepts(&accepting("application/jsonx, text"), &both[..1]));
        assert!(!accepts(&accepting("*/json"), &both[..1]));
        assert!(!accepts(&accepting("textx/*, tex/*, text/"), &both[1..]));
        assert!(!accepts(&accepting("text/event-stream/*"), &both[1..]));
        assert!(!accepts(&accepting(""), &both[1..]));
    }

    #[test]
    fn host_names_strip_ports() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("example.com"), "example.com");
        assert!(is_local_origin("http://localhost:3000"));
        assert!(is_local_origin("https://127.0.0.1"));
        assert!(!is_local_origin("http://evil.example.com"));
        assert!(!is_local_origin("null"));
    }
}

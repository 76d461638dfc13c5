//! The request metadata a modern (2026-07-28) POST mirrors in headers: `MCP-Protocol-Version`,
//! `Mcp-Method` and `Mcp-Name`. `Mcp-Name` may carry its value Base64-encoded as
//! `=?base64?…?=` (for values that are not plain visible ASCII); it is decoded here, so
//! [`crate::protocol::era`] compares decoded values with the body. A header that comes twice,
//! or is not visible ASCII, counts as malformed.

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;

use super::guard::VERSION_HEADER;
use crate::protocol::Mirrored;
use crate::protocol::era::decode_header_value;
use crate::protocol::param_headers;

pub const METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
pub const NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");

/// The mirrored values of `request`, decoded.
pub fn read(request: &HttpRequest) -> Mirrored {
    Mirrored {
        protocol_version: plain(request, &VERSION_HEADER).and_then(Result::ok),
        method: plain(request, &METHOD_HEADER).and_then(Result::ok),
        name: plain(request, &NAME_HEADER).map(|value| value.and_then(|v| decode_header_value(&v))),
        params: param_headers(request),
    }
}

/// Every `Mcp-Param-*` header, by lower-case name; a value outside visible ASCII is kept
/// lossily, so that it matches no argument and is refused as a mismatch.
fn param_headers(request: &HttpRequest) -> Vec<(String, String)> {
    request
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with(param_headers::HEADER_PREFIX))
        .map(|(name, value)| {
            let text = value.to_str().map_or_else(
                |_| String::from_utf8_lossy(value.as_bytes()).into_owned(),
                str::to_owned,
            );
            (name.as_str().to_owned(), text)
        })
        .collect()
}

/// A header's one value as text; `Err` when it is repeated or not visible ASCII.
fn plain(request: &HttpRequest, name: &HeaderName) -> Option<Result<String, String>> {
    let mut values = request.headers().get_all(name);
    let first = values.next()?;
    if values.next().is_some() {
        return Some(Err(format!("the {name} header must appear at most once")));
    }
    Some(
        first
            .to_str()
            .map(str::to_owned)
            .map_err(|_| format!("the {name} header holds characters outside visible ASCII")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_decodes_the_headers() {
        let request = actix_web::test::TestRequest::post()
            .insert_header((VERSION_HEADER, "2026-07-28"))
            .insert_header((METHOD_HEADER, "tools/call"))
            .insert_header((NAME_HEADER, "=?base64?IHBhZGRlZCA=?="))
            .to_http_request();
        let mirrored = read(&request);
        assert_eq!(mirrored.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(mirrored.method.as_deref(), Some("tools/call"));
        assert_eq!(mirrored.name, Some(Ok(" padded ".into())));
    }
}

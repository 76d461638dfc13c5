//! What the checks need to know of a request: its request line and how its body is framed.

use serde_json::Value;

use super::find;

/// A request as the checks see it.
pub struct Sent {
    pub method: Vec<u8>,
    target: Vec<u8>,
    version: Vec<u8>,
    /// The body as JSON, when it is JSON and its Content-Length frames it exactly.
    pub(super) json: Option<Value>,
}

impl Sent {
    /// The words of the request line (empty when there are none), and the JSON body.
    pub fn of(request: &[u8]) -> Sent {
        let line_end = find(request, b"\r\n").unwrap_or(request.len());
        let mut words = request[..line_end].splitn(3, |b| *b == b' ');
        let mut word = || words.next().unwrap_or_default().to_vec();
        let framing = Framed::of(request);
        Sent {
            method: word(),
            target: word(),
            version: word(),
            json: framing.as_ref().and_then(Framed::exact_json),
        }
    }

    /// A HEAD request's answer has no body whatever its headers say.
    pub fn is_head(&self) -> bool {
        self.method == b"HEAD"
    }

    /// Whether the target is exactly `/mcp` (with a query perhaps), the one path we route.
    pub(super) fn targets_mcp(&self) -> bool {
        self.target == b"/mcp" || self.target.starts_with(b"/mcp?")
    }

    /// The HTTP minor versions an answer may carry: 0 only for an HTTP/1.0 request.
    pub(super) fn answer_minor_versions(&self) -> &'static [u8] {
        match self.version.as_slice() {
            b"HTTP/1.0" => &[0, 1],
            _ => &[1],
        }
    }
}

/// How a request frames its body, and the bytes after its head.
struct Framed<'a> {
    lengths: Vec<&'a [u8]>,
    codings: Vec<&'a [u8]>,
    body: &'a [u8],
}

impl<'a> Framed<'a> {
    /// The framing of `request`, when its head parses.
    fn of(request: &'a [u8]) -> Option<Framed<'a>> {
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut parsed = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head) = parsed.parse(request).ok()? else {
            return None;
        };
        let values = |name: &str| {
            parsed
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
                .collect()
        };
        Some(Framed {
            lengths: values("content-length"),
            codings: values("transfer-encoding"),
            body: &request[head..],
        })
    }

    /// The body as JSON when one Content-Length, and no Transfer-Encoding, says where it ends
    /// and that is where the bytes end (so the gateway read the same document).
    fn exact_json(&self) -> Option<Value> {
        let exact = match self.lengths.as_slice() {
            [length] => *length == self.body.len().to_string().as_bytes(),
            _ => false,
        };
        (exact && self.codings.is_empty())
            .then(|| serde_json::from_slice(self.body).ok())
            .flatten()
    }
}

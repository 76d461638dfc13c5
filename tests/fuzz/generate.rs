//! Whole HTTP/1.1 requests for the fuzzer: request line, headers, framing and body.
//!
//! Half the requests are *calm*: they name one of the live sessions and their headers are
//! mostly what a well-behaved client sends, so that the body reaches the dispatcher. The other
//! half are *wild*: any method, path, version, header set and framing, mostly without a live
//! session.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};

use super::{BATCH_SESSION, HOST, RawRequest, SESSION, json};

/// A header line: name and value, as bytes.
type Header = (Vec<u8>, Vec<u8>);

/// A session id in the gateway's format that it never issued.
const UNKNOWN_SESSION: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// How far a request strays from what a well-behaved client sends.
#[derive(Clone, Copy, Debug)]
enum Mood {
    Calm,
    Wild,
}

/// Any request: half calm, half wild.
pub fn request() -> BoxedStrategy<RawRequest> {
    prop_oneof![request_in(Mood::Calm), request_in(Mood::Wild)].boxed()
}

/// A request of one mood.
fn request_in(mood: Mood) -> BoxedStrategy<RawRequest> {
    let line = (method(mood), target(mood), version(mood));
    (line, headers(mood), json::body(), framing(mood))
        .prop_map(|((method, target, version), headers, body, framing)| {
            assemble(&method, &target, version, headers, &body, &framing)
        })
        .boxed()
}

/// The request's bytes: request line, headers, framing headers, blank line, framed body.
fn assemble(
    method: &[u8],
    target: &[u8],
    version: &str,
    mut headers: Vec<Header>,
    body: &[u8],
    framing: &Framing,
) -> RawRequest {
    let (framing_headers, framed) = framing.frame(body);
    headers.extend(framing_headers);
    let mut bytes = [method, b" ", target].concat();
    if !version.is_empty() {
        bytes.extend_from_slice(b" ");
        bytes.extend_from_slice(version.as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        bytes.extend([&name[..], b": ", &value[..], b"\r\n"].concat());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend(framed);
    RawRequest { bytes }
}

/// Methods that are not tokens.
const GARBAGE_METHODS: &[&[u8]] = &[b"PO ST", b"G\0ET", b"", b"\xffPOST", b"POST\t"];

/// Targets with bytes a request line must not hold.
const GARBAGE_TARGETS: &[&[u8]] = &[b"/m\xffcp", b"/mcp\x01", b"/mcp x", b"/\xe2\x82\xac"];

/// A request method: the MCP ones, others, and bytes that are no method at all.
fn method(mood: Mood) -> BoxedStrategy<Vec<u8>> {
    let named = |weights: [u32; 6]| {
        let [post, get, delete, options, put, head] = weights;
        prop_oneof![
            post => Just("POST"),
            get => Just("GET"),
            delete => Just("DELETE"),
            options => Just("OPTIONS"),
            put => Just("PUT"),
            head => Just("HEAD"),
        ]
        .prop_map(|m| m.as_bytes().to_vec())
    };
    match mood {
        Mood::Calm => named([80, 10, 2, 2, 2, 1]).boxed(),
        Mood::Wild => prop_oneof![
            12 => named([30, 15, 10, 10, 5, 3]),
            2 => select(&["PATCH", "CONNECT", "TRACE", "post", "Get", "PRI"][..])
                .prop_map(|m| m.as_bytes().to_vec()),
            1 => "[A-Z]{1,20}".prop_map(String::into_bytes),
            1 => select(GARBAGE_METHODS)
                .prop_map(<[u8]>::to_vec),
            1 => (1usize..20_000).prop_map(|n| vec![b'X'; n]),
        ]
        .boxed(),
    }
}

/// A request target: `/mcp`, near misses, other paths, huge ones and invalid bytes.
fn target(mood: Mood) -> BoxedStrategy<Vec<u8>> {
    const ODD: &[&str] = &[
        "/mcp?x",
        "/mcp?sessionId={{SESSION}}",
        "//mcp",
        "/mcp/",
        "/MCP",
        "/%6Dcp",
        "/%6dcp",
        "/mcp%00",
        "/mcp%2F",
        "/mcp#fragment",
        "/mcp;x",
        "/../mcp",
        "/%2e%2e/mcp",
        "/./mcp",
        "/mcp?%ff%fe",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "*",
        "http://{{HOST}}/mcp",
        "mcp",
        "/",
        "",
    ];
    let odd = select(ODD).prop_map(|t| t.as_bytes().to_vec());
    match mood {
        Mood::Calm => prop_oneof![20 => Just(b"/mcp".to_vec()), 1 => odd].boxed(),
        Mood::Wild => prop_oneof![
            8 => Just(b"/mcp".to_vec()),
            8 => odd,
            1 => (1usize..140_000).prop_map(|n| format!("/{}", "a".repeat(n)).into_bytes()),
            1 => (1usize..5_000).prop_map(|n| format!("/mcp?{}", "x=y&".repeat(n)).into_bytes()),
            1 => select(GARBAGE_TARGETS)
                .prop_map(<[u8]>::to_vec),
        ]
        .boxed(),
    }
}

/// The request line's protocol version, now and then not HTTP/1.1 or missing.
fn version(mood: Mood) -> BoxedStrategy<&'static str> {
    match mood {
        Mood::Calm => prop_oneof![50 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")].boxed(),
        Mood::Wild => prop_oneof![
            20 => Just("HTTP/1.1"),
            2 => Just("HTTP/1.0"),
            1 => select(&["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1", "HTTP/1.1 x", "HTTP/"][..]),
            1 => Just(""),
        ]
        .boxed(),
    }
}

/// A header the fuzzer knows: its usual values and odd ones.
struct Spec {
    name: &'static str,
    valid: &'static [&'static str],
    odd: &'static [&'static str],
    /// Whether a well-behaved client sends it on most requests.
    usual: bool,
}

const HOST_HEADER: Spec = Spec {
    name: "Host",
    valid: &[HOST],
    odd: &[
        "localhost",
        "127.0.0.1",
        "[::1]:1",
        "LOCALHOST:1",
        "evil.example.com",
        "localhost.evil.com",
        "{{HOST}}.evil",
        "localhost:99999",
        ":::",
        "",
    ],
    usual: true,
};

const CONTENT_TYPE: Spec = Spec {
    name: "Content-Type",
    valid: &["application/json"],
    odd: &[
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/json;",
        "text/plain",
        "application/jsonx",
        "application/json, text/plain",
        "multipart/form-data; boundary=x",
        "*/*",
        "",
    ],
    usual: true,
};

const ACCEPT: Spec = Spec {
    name: "Accept",
    valid: &["application/json, text/event-stream"],
    odd: &[
        "*/*",
        "application/*, text/*",
        "application/json",
        "text/event-stream",
        "application/json;q=0, text/event-stream;q=0",
        "text/html",
        ",,,",
        "",
    ],
    usual: true,
};

/// The session header of calm requests: one of the live sessions.
const LIVE_SESSION: Spec = Spec {
    name: "Mcp-Session-Id",
    valid: &[SESSION, BATCH_SESSION],
    odd: &[
        UNKNOWN_SESSION,
        "not a session id!",
        "{{SESSION}}x",
        " {{SESSION}} ",
        "{{SESSION}}, {{BATCH_SESSION}}",
        "AAAAAAAAAAAAAAA",
        "../../etc/passwd",
        "",
    ],
    usual: true,
};

/// The session header of wild requests: rarely a live one.
const STRANGE_SESSION: Spec = Spec {
    name: "Mcp-Session-Id",
    valid: &[UNKNOWN_SESSION],
    odd: &[
        SESSION,
        "not a session id!",
        "AAAAAAAAAAAAAAA",
        "{{SESSION}}{{SESSION}}{{SESSION}}{{SESSION}}",
        "",
    ],
    usual: false,
};

const PROTOCOL_VERSION: Spec = Spec {
    name: "MCP-Protocol-Version",
    valid: &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"],
    odd: &[
        "2024-10-07",
        "2026-07-28",
        "2025-13-45",
        "latest",
        "2025-11-25, 2025-06-18",
        "",
    ],
    usual: true,
};

const LAST_EVENT_ID: Spec = Spec {
    name: "Last-Event-ID",
    valid: &["0", "standalone-0"],
    odd: &["", "-1", "x-18446744073709551616", "{{SESSION}}-1", "a-b-c"],
    usual: false,
};

const ORIGIN: Spec = Spec {
    name: "Origin",
    valid: &["http://localhost:3000", "http://127.0.0.1"],
    odd: &[
        "null",
        "http://evil.example",
        "http://localhost.evil.com",
        "file://",
        "javascript:alert(1)",
        "http://[::1]:80",
        "",
    ],
    usual: false,
};

const AUTHORIZATION: Spec = Spec {
    name: "Authorization",
    valid: &["Bearer fuzz"],
    odd: &[
        "Basic Zm9vOmJhcg==",
        "Bearer",
        "Bearer a.b.c",
        "Negotiate x",
        "",
    ],
    usual: false,
};

const UPGRADE: Spec = Spec {
    name: "Upgrade",
    valid: &["h2c"],
    odd: &[
        "websocket",
        "WebSocket",
        "h2c, websocket",
        "websocket/13",
        "",
    ],
    usual: false,
};

const CONNECTION: Spec = Spec {
    name: "Connection",
    valid: &["close"],
    odd: &[
        "keep-alive",
        "Upgrade",
        "close, Upgrade",
        "Upgrade, HTTP2-Settings",
        "",
    ],
    usual: true,
};

const EXPECT: Spec = Spec {
    name: "Expect",
    valid: &["100-continue"],
    odd: &["200-ok", ""],
    usual: false,
};

const PREFLIGHT_METHOD: Spec = Spec {
    name: "Access-Control-Request-Method",
    valid: &["POST"],
    odd: &["PUT", "DELETE", "GET, POST", ""],
    usual: false,
};

const PREFLIGHT_HEADERS: Spec = Spec {
    name: "Access-Control-Request-Headers",
    valid: &["content-type, mcp-session-id, mcp-protocol-version"],
    odd: &["x-evil", ",", "content-type,,", ""],
    usual: false,
};

/// Every header of a request but its framing.
fn headers(mood: Mood) -> BoxedStrategy<Vec<Header>> {
    let session = match mood {
        Mood::Calm => &LIVE_SESSION,
        Mood::Wild => &STRANGE_SESSION,
    };
    let first = (
        header(&HOST_HEADER, mood),
        header(&CONTENT_TYPE, mood),
        header(&ACCEPT, mood),
        header(session, mood),
        header(&PROTOCOL_VERSION, mood),
        header(&CONNECTION, mood),
    );
    let second = (
        header(&LAST_EVENT_ID, mood),
        header(&ORIGIN, mood),
        header(&AUTHORIZATION, mood),
        header(&UPGRADE, mood),
        header(&EXPECT, mood),
        header(&PREFLIGHT_METHOD, mood),
        header(&PREFLIGHT_HEADERS, mood),
        extra_headers(),
    );
    (first, second)
        .prop_map(|((a, b, c, d, e, f), (g, h, i, j, k, l, m, n))| {
            [a, b, c, d, e, f, g, h, i, j, k, l, m, n].concat()
        })
        .boxed()
}

/// How often a header is absent, valid, odd, mangled or repeated.
fn weights(mood: Mood, usual: bool) -> [u32; 5] {
    match (mood, usual) {
        (Mood::Calm, true) => [1, 200, 4, 2, 2],
        (Mood::Wild, true) => [15, 40, 25, 10, 10],
        (Mood::Calm, false) => [200, 4, 4, 2, 1],
        (Mood::Wild, false) => [50, 15, 20, 10, 5],
    }
}

/// Zero, one or two lines of the header `spec`.
fn header(spec: &'static Spec, mood: Mood) -> BoxedStrategy<Vec<Header>> {
    let [absent, valid, odd, mangled, repeated] = weights(mood, spec.usual);
    let any_value = select([spec.valid, spec.odd].concat());
    let name = header_name(spec.name, mood);
    let line = |name: Vec<u8>, value: &str| vec![(name, value.as_bytes().to_vec())];
    prop_oneof![
        absent => Just(Vec::new()),
        valid => (name.clone(), select(spec.valid)).prop_map(move |(n, v)| line(n, v)),
        odd => (name.clone(), select(spec.odd)).prop_map(move |(n, v)| line(n, v)),
        mangled => (name.clone(), any_value.clone(), mangle())
            .prop_map(|(n, v, m)| vec![(n, m.apply(v.as_bytes()))]),
        repeated => (name, any_value.clone(), any_value).prop_map(|(n, a, b)| {
            vec![(n.clone(), a.as_bytes().to_vec()), (n, b.as_bytes().to_vec())]
        }),
    ]
    .boxed()
}

/// A header name as given, in another case, or (rarely) no longer a valid name.
fn header_name(name: &'static str, mood: Mood) -> BoxedStrategy<Vec<u8>> {
    let [given, lower, upper, invalid] = match mood {
        Mood::Calm => [200, 8, 4, 1],
        Mood::Wild => [16, 2, 1, 1],
    };
    prop_oneof![
        given => Just(name.to_owned()),
        lower => Just(name.to_ascii_lowercase()),
        upper => Just(name.to_ascii_uppercase()),
        invalid => select(&[" ", "\t", "\u{e9}", "(", ""][..]).prop_map(move |s| format!("{name}{s}")),
    ]
    .prop_map(String::into_bytes)
    .boxed()
}

/// Headers nobody asked for: a few random ones, or more than actix parses (96).
fn extra_headers() -> BoxedStrategy<Vec<Header>> {
    let one = ("X-[A-Za-z0-9-]{1,15}", "[ -~]{0,40}")
        .prop_map(|(n, v): (String, String)| (n.into_bytes(), v.into_bytes()));
    prop_oneof![
        30 => vec(one, 0..3),
        1 => (90usize..130).prop_map(|n| {
            (0..n).map(|i| (format!("X-Many-{i}").into_bytes(), b"v".to_vec())).collect()
        }),
    ]
    .boxed()
}

/// A change to a header value.
#[derive(Clone, Debug)]
enum Mangle {
    /// A byte above 0x7F (obs-text: HTTP allows it, `to_str` does not).
    NonAscii(Index, u8),
    /// A control byte, including bare CR and LF.
    Control(Index, u8),
    /// The value repeated to this length (past actix's 128 KiB head buffer now and then).
    Huge(usize),
    /// Surrounding whitespace.
    Padded,
}

impl Mangle {
    /// The value changed.
    fn apply(&self, value: &[u8]) -> Vec<u8> {
        let mut value = value.to_vec();
        let at = |i: &Index, v: &[u8]| i.index(v.len() + 1);
        match self {
            Mangle::NonAscii(i, byte) => value.insert(at(i, &value), byte | 0x80),
            Mangle::Control(i, byte) => value.insert(at(i, &value), *byte),
            Mangle::Huge(n) => {
                let unit = if value.is_empty() {
                    b"a".to_vec()
                } else {
                    value
                };
                value = unit.iter().copied().cycle().take(*n).collect();
            }
            Mangle::Padded => value = [b" \t", &value[..], b" "].concat(),
        }
        value
    }
}

/// A change to a header value.
fn mangle() -> BoxedStrategy<Mangle> {
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mangle::NonAscii(i, b)),
        2 => (any::<Index>(), select(&[0u8, 1, 0x7f, b'\t', b'\r', b'\n'][..]))
            .prop_map(|(i, b)| Mangle::Control(i, b)),
        2 => prop_oneof![4 => 200usize..20_000, 1 => 120_000usize..140_000].prop_map(Mangle::Huge),
        1 => Just(Mangle::Padded),
    ]
    .boxed()
}

/// How the body's end is told: Content-Length (right or wrong), chunks (well-formed or not),
/// or nothing at all.
#[derive(Clone, Debug)]
enum Framing {
    Length,
    /// Neither Content-Length nor Transfer-Encoding: the body is read as the next request.
    Absent,
    /// A Content-Length below the body's length: the rest is read as the next request.
    Shorter(Index),
    /// A Content-Length above it: the gateway waits for bytes that never come.
    Longer(u16),
    /// A Content-Length that is not a number of bytes.
    BadLength(&'static str),
    /// Two Content-Length headers, equal or not.
    TwoLengths(bool),
    /// Chunks cut at these places, with one fault.
    Chunked(Vec<Index>, ChunkFault),
    /// Content-Length and chunked together (a request smuggling shape).
    LengthAndChunked,
    /// A transfer coding other than plain `chunked`.
    Coding(&'static str),
}

/// What is wrong with a chunked body, if anything.
#[derive(Clone, Copy, Debug)]
enum ChunkFault {
    None,
    NotHex,
    Overstated,
    Understated,
    Unterminated,
    Extension,
    Trailer,
    NoCrlf,
    LeadingZeros,
}

impl Framing {
    /// The framing headers and the body as sent.
    fn frame(&self, body: &[u8]) -> (Vec<Header>, Vec<u8>) {
        let length = |n: usize| (b"Content-Length".to_vec(), n.to_string().into_bytes());
        let te = |v: &str| (b"Transfer-Encoding".to_vec(), v.as_bytes().to_vec());
        let len = body.len();
        match self {
            Framing::Length => (vec![length(len)], body.to_vec()),
            Framing::Absent => (Vec::new(), body.to_vec()),
            Framing::Shorter(i) => (vec![length(i.index(len.max(1)))], body.to_vec()),
            Framing::Longer(extra) => (vec![length(len + *extra as usize + 1)], body.to_vec()),
            Framing::BadLength(value) => (
                vec![(b"Content-Length".to_vec(), value.as_bytes().to_vec())],
                body.to_vec(),
            ),
            Framing::TwoLengths(same) => {
                let second = if *same { len } else { len + 1 };
                (vec![length(len), length(second)], body.to_vec())
            }
            Framing::Chunked(cuts, fault) => (vec![te("chunked")], chunk(body, cuts, *fault)),
            Framing::LengthAndChunked => (
                vec![length(len), te("chunked")],
                chunk(body, &[], ChunkFault::None),
            ),
            Framing::Coding(value) => (vec![te(value)], body.to_vec()),
        }
    }
}

/// `body` as chunks cut at `cuts`, with `fault` in the first chunk (or at the end).
fn chunk(body: &[u8], cuts: &[Index], fault: ChunkFault) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
    points.extend([0, body.len()]);
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    for (n, pair) in points.windows(2).enumerate() {
        let piece = &body[pair[0]..pair[1]];
        let first = n == 0;
        out.extend(chunk_size_line(
            piece.len(),
            if first { fault } else { ChunkFault::None },
        ));
        out.extend_from_slice(piece);
        if !(first && matches!(fault, ChunkFault::NoCrlf)) {
            out.extend_from_slice(b"\r\n");
        }
    }
    match fault {
        ChunkFault::Unterminated => {}
        ChunkFault::Trailer => out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n"),
        _ => out.extend_from_slice(b"0\r\n\r\n"),
    }
    out
}

/// The size line of one chunk.
fn chunk_size_line(size: usize, fault: ChunkFault) -> Vec<u8> {
    let line = match fault {
        ChunkFault::NotHex => "zz".to_owned(),
        ChunkFault::Overstated => format!("{:x}", size + 7),
        ChunkFault::Understated => format!("{:x}", size.saturating_sub(1)),
        ChunkFault::Extension => format!("{size:X};name=\"value\""),
        ChunkFault::LeadingZeros => format!("0000{size:x}"),
        _ => format!("{size:x}"),
    };
    format!("{line}\r\n").into_bytes()
}

/// Usually no fault, sometimes each of the others.
fn chunk_fault() -> BoxedStrategy<ChunkFault> {
    use ChunkFault::*;
    prop_oneof![
        12 => Just(None),
        2 => Just(NotHex),
        1 => Just(Overstated),
        2 => Just(Understated),
        1 => Just(Unterminated),
        2 => Just(Extension),
        2 => Just(Trailer),
        2 => Just(NoCrlf),
        2 => Just(LeadingZeros),
    ]
    .boxed()
}

/// How the body is framed: mostly right for calm requests, anything for wild ones.
fn framing(mood: Mood) -> BoxedStrategy<Framing> {
    let chunked = (vec(any::<Index>(), 0..4), chunk_fault())
        .prop_map(|(cuts, fault)| Framing::Chunked(cuts, fault));
    let bad_length = select(
        &[
            "-1",
            "+5",
            "abc",
            "0x10",
            "1e3",
            "18446744073709551616",
            "",
            " 5",
            "5, 5",
        ][..],
    )
    .prop_map(Framing::BadLength);
    let [
        length,
        absent,
        shorter,
        longer,
        bad,
        two,
        chunks,
        both,
        coding,
    ] = match mood {
        Mood::Calm => [90, 2, 2, 1, 1, 1, 6, 1, 1],
        Mood::Wild => [50, 8, 6, 2, 6, 4, 12, 4, 4],
    };
    prop_oneof![
        length => Just(Framing::Length),
        absent => Just(Framing::Absent),
        shorter => any::<Index>().prop_map(Framing::Shorter),
        longer => (0u16..64).prop_map(Framing::Longer),
        bad => bad_length,
        two => any::<bool>().prop_map(Framing::TwoLengths),
        chunks => chunked,
        both => Just(Framing::LengthAndChunked),
        coding => select(&["gzip", "chunked, gzip", "identity", "Chunked", "chunked;q=1"][..])
            .prop_map(Framing::Coding),
    ]
    .boxed()
}

//! POST bodies for the fuzzer: JSON-RPC messages of every MCP method (valid templates, then
//! mutated anywhere in the tree), batches, deep nesting, corrupted bytes and huge strings.
//!
//! JSON is built as [`Json`] rather than `serde_json::Value` so that it can hold what a
//! `Value` cannot: numbers past `u64`/`f64`, lone surrogate escapes and other raw tokens.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Value, json};

/// A JSON document as text pieces; [`Json::Raw`] is written verbatim.
#[derive(Clone, Debug)]
pub enum Json {
    /// A literal token: `null`, a number, or anything else to be written as is.
    Raw(String),
    Str(String),
    Array(Vec<Json>),
    /// Entries in order; the same key may appear twice.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The document as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Appends the document to `out`.
    fn write(&self, out: &mut String) {
        match self {
            Json::Raw(token) => out.push_str(token),
            Json::Str(text) => out.push_str(&Value::String(text.clone()).to_string()),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(entries) => {
                out.push('{');
                for (i, (key, item)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    item.write(out);
                }
                out.push('}');
            }
        }
    }

    /// The same document as a [`Json`].
    fn from_value(value: &Value) -> Json {
        match value {
            Value::String(text) => Json::Str(text.clone()),
            Value::Array(items) => Json::Array(items.iter().map(Json::from_value).collect()),
            Value::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Json::from_value(v)))
                    .collect(),
            ),
            other => Json::Raw(other.to_string()),
        }
    }

    /// How many nodes the tree has (itself included).
    fn size(&self) -> usize {
        1 + match self {
            Json::Array(items) => items.iter().map(Json::size).sum(),
            Json::Object(entries) => entries.iter().map(|(_, v)| v.size()).sum(),
            _ => 0,
        }
    }

    /// Applies `mutation` to the node at `index` of a pre-order walk.
    fn mutate(&mut self, mutation: Mutation) {
        let mut position = mutation.at.index(self.size());
        self.visit(&mut position, &mut |node| mutation.change.apply(node));
    }

    /// Calls `f` on the node `position` steps into a pre-order walk; true once it has.
    fn visit(&mut self, position: &mut usize, f: &mut dyn FnMut(&mut Json)) -> bool {
        if *position == 0 {
            f(self);
            return true;
        }
        *position -= 1;
        let children: Vec<&mut Json> = match self {
            Json::Array(items) => items.iter_mut().collect(),
            Json::Object(entries) => entries.iter_mut().map(|(_, v)| v).collect(),
            _ => Vec::new(),
        };
        children.into_iter().any(|child| child.visit(position, f))
    }
}

/// One change somewhere in a message.
#[derive(Clone, Debug)]
struct Mutation {
    at: Index,
    change: Change,
}

/// What a [`Mutation`] does to its node.
#[derive(Clone, Debug)]
enum Change {
    /// The node becomes another value (often of another type).
    Replace(Json),
    /// A container loses one of its children.
    Prune(Index),
    /// A container gains a child.
    Add(String, Json),
    /// An object gains a second entry under one of its keys.
    Twin(Index, Json),
    /// The node is wrapped in an array.
    Wrap,
}

impl Change {
    /// Changes `node`; a change that does not fit the node (pruning a number) does nothing.
    fn apply(&self, node: &mut Json) {
        match (self, node) {
            (Change::Replace(value), node) => *node = value.clone(),
            (Change::Prune(i), Json::Array(items)) if !items.is_empty() => {
                items.remove(i.index(items.len()));
            }
            (Change::Prune(i), Json::Object(entries)) if !entries.is_empty() => {
                entries.remove(i.index(entries.len()));
            }
            (Change::Add(_, value), Json::Array(items)) => items.push(value.clone()),
            (Change::Add(key, value), Json::Object(entries)) => {
                entries.push((key.clone(), value.clone()))
            }
            (Change::Twin(i, value), Json::Object(entries)) if !entries.is_empty() => {
                let key = entries[i.index(entries.len())].0.clone();
                entries.push((key, value.clone()));
            }
            (Change::Wrap, node) => *node = Json::Array(vec![node.clone()]),
            _ => {}
        }
    }
}

/// Numbers at the edges of what JSON parsers and `i64`/`u64`/`f64` hold.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1.0",
    "1e3",
    "1E+2",
    "-1e-7",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "1e308",
    "1e309",
    "-1e309",
    "4.9e-324",
    "1e-400",
    "0.1",
];

/// Tokens that are not valid JSON, or valid JSON that decodes to no Rust string.
const ODD_TOKENS: &[&str] = &[
    r#""\ud800""#,
    r#""\udc00\ud800""#,
    r#""\u0000""#,
    "NaN",
    "Infinity",
    "undefined",
    "01",
    "+1",
    ".5",
    "1.",
    "'single'",
    r#""\x41""#,
];

/// Strings that mean something to the gateway or to text handling.
const ODD_STRINGS: &[&str] = &[
    "",
    "\u{0}",
    "\u{feff}",
    "\u{10ffff}",
    "\u{2028}",
    "🙂",
    "local__echo",
    "local__",
    "__",
    "mcpgate.WyJsb2NhbCIsMV0.AAAA",
    "mcpgate..",
    "../../etc/passwd",
    "%00",
    "\\",
    "test://static-text",
];

/// Keys MCP messages use, so that added entries often collide with meaningful ones.
const KEYS: &[&str] = &[
    "jsonrpc",
    "id",
    "method",
    "params",
    "result",
    "error",
    "name",
    "arguments",
    "uri",
    "cursor",
    "_meta",
    "progressToken",
    "requestId",
    "level",
    "code",
    "message",
    "data",
    "protocolVersion",
    "capabilities",
    "clientInfo",
];

/// Requests of every MCP method (and some that are not ours to receive), with valid params;
/// `null` params are left out.
fn calls() -> Vec<(&'static str, Value)> {
    let tool = |name: &str, arguments: Value| json!({"name": name, "arguments": arguments});
    vec![
        (
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "fuzz", "version": "0"}}),
        ),
        ("ping", Value::Null),
        ("tools/list", json!({})),
        ("tools/call", tool("local__echo", json!({"text": "hi"}))),
        ("tools/call", tool("local__whoami", json!({}))),
        ("tools/call", tool("local__test_simple_text", json!({}))),
        ("tools/call", tool("local__test_error_handling", json!({}))),
        (
            "tools/call",
            json!({"name": "local__test_tool_with_progress", "arguments": {},
                "_meta": {"progressToken": "fuzz"}}),
        ),
        (
            "tools/call",
            tool("local__test_tool_with_logging", json!({})),
        ),
        (
            "tools/call",
            tool("local__test_sampling", json!({"prompt": "hi"})),
        ),
        (
            "tools/call",
            tool("local__test_elicitation", json!({"message": "name?"})),
        ),
        ("tools/call", tool("local__slow", json!({"ms": 20}))),
        ("tools/call", tool("local__nope", json!({}))),
        ("resources/list", json!({"cursor": "bm90IGEgY3Vyc29y"})),
        ("resources/templates/list", json!({})),
        ("resources/read", json!({"uri": "test://static-text"})),
        ("resources/read", json!({"uri": "test://template/7/data"})),
        (
            "resources/subscribe",
            json!({"uri": "test://watched-resource"}),
        ),
        (
            "resources/unsubscribe",
            json!({"uri": "test://watched-resource"}),
        ),
        ("prompts/list", json!({})),
        ("prompts/get", json!({"name": "local__test_simple_prompt"})),
        (
            "prompts/get",
            json!({"name": "local__test_prompt_with_arguments",
                "arguments": {"arg1": "a", "arg2": "b"}}),
        ),
        (
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "local__test_prompt_with_arguments"},
                "argument": {"name": "arg1", "value": "a"}}),
        ),
        ("logging/setLevel", json!({"level": "debug"})),
        ("server/discover", json!({})),
        (
            "sampling/createMessage",
            json!({"messages": [], "maxTokens": 1}),
        ),
        ("roots/list", json!({})),
        ("tools/explode", json!({})),
        ("", json!({})),
    ]
}

/// Notifications a client sends (and some it should not).
fn notices() -> Vec<(&'static str, Value)> {
    vec![
        ("notifications/initialized", Value::Null),
        (
            "notifications/cancelled",
            json!({"requestId": 1, "reason": "fuzz"}),
        ),
        (
            "notifications/progress",
            json!({"progressToken": "fuzz", "progress": 1, "total": 2}),
        ),
        ("notifications/roots/list_changed", json!({})),
        (
            "notifications/message",
            json!({"level": "info", "data": "x"}),
        ),
        ("notifications/unknown", json!({})),
    ]
}

/// Short printable, any Unicode, meaningful, or huge text.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[ -~]{0,16}",
        2 => ".{0,16}",
        2 => select(ODD_STRINGS).prop_map(str::to_owned),
        1 => huge_text(),
    ]
    .boxed()
}

/// One character repeated 1 000 to 150 000 times.
fn huge_text() -> BoxedStrategy<String> {
    (
        select(&["a", "é", "🙂", "\u{0}", "\""][..]),
        1_000usize..150_000,
    )
        .prop_map(|(c, n)| c.repeat(n))
        .boxed()
}

/// A JSON scalar, including numbers at the edges and invalid tokens.
fn scalar() -> BoxedStrategy<Json> {
    prop_oneof![
        2 => Just(Json::Raw("null".into())),
        2 => any::<bool>().prop_map(|b| Json::Raw(b.to_string())),
        3 => any::<i64>().prop_map(|n| Json::Raw(n.to_string())),
        1 => any::<f64>().prop_filter_map("not finite", |x| {
            serde_json::Number::from_f64(x).map(|n| Json::Raw(n.to_string()))
        }),
        3 => select(EDGE_NUMBERS).prop_map(|n| Json::Raw(n.into())),
        1 => select(ODD_TOKENS).prop_map(|t| Json::Raw(t.into())),
        5 => text().prop_map(Json::Str),
    ]
    .boxed()
}

/// An object key, usually one MCP uses.
fn key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z_$]{0,8}",
    ]
    .boxed()
}

/// Any JSON value, a few levels deep.
pub fn value() -> BoxedStrategy<Json> {
    scalar()
        .prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Json::Array),
                vec((key(), inner), 0..4).prop_map(Json::Object),
            ]
        })
        .boxed()
}

/// A request id: usually a small integer, sometimes anything.
fn id() -> BoxedStrategy<Json> {
    prop_oneof![
        6 => (0i64..1000).prop_map(|n| Json::Raw(n.to_string())),
        2 => text().prop_map(Json::Str),
        1 => any::<i64>().prop_map(|n| Json::Raw(n.to_string())),
        1 => select(EDGE_NUMBERS).prop_map(|n| Json::Raw(n.into())),
        1 => value(),
    ]
    .boxed()
}

/// `{"jsonrpc":"2.0", ...}` with the given entries after it.
fn envelope(entries: Vec<(&str, Json)>) -> Json {
    let mut object = vec![("jsonrpc".to_owned(), Json::Str("2.0".into()))];
    object.extend(entries.into_iter().map(|(k, v)| (k.to_owned(), v)));
    Json::Object(object)
}

/// `method` and, unless `null`, `params`.
fn call_entries(method: &str, params: &Value) -> Vec<(&'static str, Json)> {
    let mut entries = vec![("method", Json::Str(method.to_owned()))];
    if !params.is_null() {
        entries.push(("params", Json::from_value(params)));
    }
    entries
}

/// A valid request of one of [`calls`].
fn request() -> BoxedStrategy<Json> {
    (id(), select(calls()))
        .prop_map(|(id, (method, params))| {
            let mut entries = vec![("id", id)];
            entries.extend(call_entries(method, &params));
            envelope(entries)
        })
        .boxed()
}

/// A valid notification of one of [`notices`].
fn notification() -> BoxedStrategy<Json> {
    select(notices())
        .prop_map(|(method, params)| envelope(call_entries(method, &params)))
        .boxed()
}

/// A response to a request the gateway may or may not have sent.
fn response() -> BoxedStrategy<Json> {
    let error = (any::<i32>(), text()).prop_map(|(code, message)| {
        Json::Object(vec![
            ("code".into(), Json::Raw(code.to_string())),
            ("message".into(), Json::Str(message)),
        ])
    });
    let outcome = prop_oneof![
        value().prop_map(|v| ("result", v)),
        error.prop_map(|e| ("error", e)),
    ];
    (id(), outcome)
        .prop_map(|(id, (field, outcome))| envelope(vec![("id", id), (field, outcome)]))
        .boxed()
}

/// A change to a message.
fn mutation() -> BoxedStrategy<Mutation> {
    let change = prop_oneof![
        4 => value().prop_map(Change::Replace),
        2 => any::<Index>().prop_map(Change::Prune),
        2 => (key(), value()).prop_map(|(k, v)| Change::Add(k, v)),
        1 => (any::<Index>(), value()).prop_map(|(i, v)| Change::Twin(i, v)),
        1 => Just(Change::Wrap),
    ];
    (any::<Index>(), change)
        .prop_map(|(at, change)| Mutation { at, change })
        .boxed()
}

/// A request, notification or response, as often valid as changed in one to three places.
pub fn message() -> BoxedStrategy<Json> {
    let valid = prop_oneof![6 => request(), 2 => notification(), 2 => response()];
    let mutations = prop_oneof![
        1 => Just(Vec::new()),
        1 => vec(mutation(), 1..4),
    ];
    (valid, mutations)
        .prop_map(|(mut message, mutations)| {
            for mutation in mutations {
                message.mutate(mutation);
            }
            message
        })
        .boxed()
}

/// A batch of messages and stray values; now and then longer than `max_batch_len` (64).
fn batch() -> BoxedStrategy<Json> {
    let entry = prop_oneof![6 => message(), 1 => value()];
    prop_oneof![
        9 => vec(entry, 1..6).prop_map(Json::Array),
        1 => vec(message(), 60..70).prop_map(Json::Array),
    ]
    .boxed()
}

/// Deep nesting, as the whole body or inside a `tools/call`'s arguments (where it reaches
/// the upstream when shallow enough), balanced or not; often around serde_json's recursion
/// limit (128).
fn nested() -> BoxedStrategy<Vec<u8>> {
    let opener = select(&["[", "{\"a\":"][..]);
    let depth = prop_oneof![1usize..115, 115usize..135, 135usize..20_000];
    (opener, depth, any::<bool>(), any::<bool>())
        .prop_map(|(open, depth, balanced, in_arguments)| {
            let close = if open == "[" { "]" } else { "}" };
            let closing = if balanced { depth } else { depth / 2 };
            let inner = format!("{}1{}", open.repeat(depth), close.repeat(closing));
            let text = if in_arguments {
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"local__echo","arguments":{{"text":"deep","deep":{inner}}}}}}}"#
                )
            } else {
                inner
            };
            text.into_bytes()
        })
        .boxed()
}

/// A `tools/call` of `local__echo` with a huge text (past `max_body_bytes` now and then).
fn huge_echo() -> BoxedStrategy<Vec<u8>> {
    huge_text()
        .prop_map(|text| {
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "local__echo", "arguments": {"text": text}}})
            .to_string()
            .into_bytes()
        })
        .boxed()
}

/// A byte-level corruption of a rendered message.
#[derive(Clone, Debug)]
enum Corruption {
    Truncate(Index),
    /// Bytes that are not UTF-8 (a stray continuation byte, an overlong or surrogate form).
    NotUtf8(Index, &'static [u8]),
    Flip(Index, u8),
    Append(Vec<u8>),
    /// A byte order mark, or whitespace, around the message.
    Pad(&'static str, &'static str),
}

impl Corruption {
    /// The bytes corrupted.
    fn apply(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        let at = |i: &Index, len: usize| i.index(len + 1);
        match self {
            Corruption::Truncate(i) => bytes.truncate(at(i, bytes.len())),
            Corruption::NotUtf8(i, junk) => {
                let at = at(i, bytes.len());
                bytes.splice(at..at, junk.iter().copied());
            }
            Corruption::Flip(i, byte) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] ^= byte | 1;
            }
            Corruption::Append(tail) => bytes.extend_from_slice(tail),
            Corruption::Pad(before, after) => {
                bytes.splice(0..0, before.bytes());
                bytes.extend_from_slice(after.as_bytes());
            }
            Corruption::Flip(..) => {}
        }
        bytes
    }
}

/// A corruption of a rendered message.
fn corruption() -> BoxedStrategy<Corruption> {
    let junk: &'static [&'static [u8]] =
        &[b"\x80", b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xc3"];
    prop_oneof![
        3 => any::<Index>().prop_map(Corruption::Truncate),
        2 => (any::<Index>(), select(junk)).prop_map(|(i, j)| Corruption::NotUtf8(i, j)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Corruption::Flip(i, b)),
        1 => vec(any::<u8>(), 1..16).prop_map(Corruption::Append),
        1 => select(&[("\u{feff}", ""), ("\r\n\t ", " \n"), ("", "\0")][..])
            .prop_map(|(a, b)| Corruption::Pad(a, b)),
    ]
    .boxed()
}

/// A POST body: mostly JSON-RPC, valid or mutated, and every kind of malformed input.
pub fn body() -> BoxedStrategy<Vec<u8>> {
    let rendered = |json: Json| json.render().into_bytes();
    prop_oneof![
        55 => message().prop_map(rendered),
        12 => batch().prop_map(rendered),
        4 => value().prop_map(rendered),
        10 => (message(), corruption()).prop_map(move |(m, c)| c.apply(rendered(m))),
        3 => nested(),
        3 => huge_echo(),
        3 => Just(Vec::new()),
        3 => vec(any::<u8>(), 0..512),
    ]
    .boxed()
}

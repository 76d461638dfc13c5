//! The two eras of MCP served on one endpoint, and how a request is sorted into one.
//!
//! - **Legacy** (2025-03-26 … 2025-11-25): `initialize` opens a session, and every later
//!   request names it. See [`super::ProtocolVersion`].
//! - **Modern** (2026-07-28): no handshake and no session. Every request carries its protocol
//!   version and the client's capabilities in `params._meta`, and, on HTTP, mirrors its
//!   version, method and name in headers that must agree with the body.
//!
//! [`ModernRequest::parse`] checks a modern request in the order the 2026-07-28 text gives its
//! errors, and yields what the gateway serves it with. Nothing here knows about HTTP: the
//! transport hands in the [`Mirrored`] values it read (decoded), and maps [`ModernError`] to its
//! own status codes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rmcp::model::ErrorCode;
use serde_json::{Value, json};

use super::ProtocolVersion;
use super::method::Method;

/// The modern revisions this gateway serves, newest first.
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];

/// `_meta` keys of the modern era.
pub mod meta {
    pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
    pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
    pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
    pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
    pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
    pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
}

/// Every revision this gateway speaks, modern first: what `server/discover` and
/// `UnsupportedProtocolVersionError` list.
pub fn supported_versions() -> Vec<&'static str> {
    let legacy = ProtocolVersion::ALL.iter().map(|v| v.as_str());
    MODERN_VERSIONS.into_iter().chain(legacy).collect()
}

/// Whether a request without a session belongs to the modern era: its `_meta` names a
/// protocol version, or it is `server/discover`, which only the modern era has.
pub fn is_modern(method: &Method, params: Option<&Value>) -> bool {
    *method == Method::Discover
        || request_meta(params).is_some_and(|m| m.contains_key(meta::PROTOCOL_VERSION))
}

/// What the transport mirrors of a request outside its body, already decoded (on HTTP: the
/// `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers).
#[derive(Debug, Default, Clone)]
pub struct Mirrored {
    pub protocol_version: Option<String>,
    pub method: Option<String>,
    /// `Err` when the value was present but could not be decoded.
    pub name: Option<Result<String, String>>,
    /// Every `Mcp-Param-*` header, by lower-case name, as sent (see `param_headers.rs`).
    pub params: Vec<(String, String)>,
}

/// Log levels of `notifications/message`, least severe first (both eras).
pub const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// A modern request's per-request protocol fields, checked.
#[derive(Debug, Clone)]
pub struct ModernRequest {
    pub version: &'static str,
    pub client_info: Option<Value>,
    pub client_capabilities: Value,
    /// The least severe log level the client wants `notifications/message` for; none at all
    /// when absent.
    log_level: Option<usize>,
    /// The `Mcp-Param-*` headers it came with, checked against a tool's arguments once the
    /// tool is known.
    pub param_headers: Vec<(String, String)>,
}

/// Why a modern request is refused before any work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModernError {
    /// `_meta` lacks a required field or holds a malformed one (-32602).
    #[error("Invalid params: {0}")]
    InvalidMeta(String),
    /// The requested revision is not one this gateway speaks (-32022).
    #[error("Unsupported protocol version: {requested:?}")]
    UnsupportedVersion { requested: String },
    /// A mirrored value is missing, malformed or disagrees with the body (-32020).
    #[error("Header mismatch: {0}")]
    HeaderMismatch(String),
    /// The method does not exist in the modern era (-32601; HTTP 404).
    #[error("Method not found: {0}")]
    MethodNotFound(String),
}

impl ModernError {
    pub const HEADER_MISMATCH: ErrorCode = ErrorCode(-32020);
    pub const MISSING_CLIENT_CAPABILITY: ErrorCode = ErrorCode(-32021);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(-32022);

    pub fn code(&self) -> ErrorCode {
        match self {
            ModernError::InvalidMeta(_) => ErrorCode::INVALID_PARAMS,
            ModernError::UnsupportedVersion { .. } => Self::UNSUPPORTED_VERSION,
            ModernError::HeaderMismatch(_) => Self::HEADER_MISMATCH,
            ModernError::MethodNotFound(_) => ErrorCode::METHOD_NOT_FOUND,
        }
    }

    /// The error's `data`, for the errors that define one.
    pub fn data(&self) -> Option<Value> {
        match self {
            ModernError::UnsupportedVersion { requested } => Some(json!({
                "supported": supported_versions(),
                "requested": requested,
            })),
            _ => None,
        }
    }
}

impl ModernRequest {
    /// Checks a modern request: `_meta` first (a request without a version is malformed), then
    /// what the transport mirrored against the body, then the version, then the method.
    pub fn parse(
        method: &Method,
        params: Option<&Value>,
        mirrored: &Mirrored,
    ) -> Result<Self, ModernError> {
        let meta = request_meta(params).ok_or_else(|| {
            ModernError::InvalidMeta(format!(
                "params._meta must carry {}",
                meta::PROTOCOL_VERSION
            ))
        })?;
        let requested = meta
            .get(meta::PROTOCOL_VERSION)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ModernError::InvalidMeta(format!(
                    "_meta[{:?}] must be a string",
                    meta::PROTOCOL_VERSION
                ))
            })?;
        check_mirrored(method, params, requested, mirrored)?;
        let version = MODERN_VERSIONS
            .into_iter()
            .find(|v| *v == requested)
            .ok_or_else(|| ModernError::UnsupportedVersion {
                requested: requested.to_owned(),
            })?;
        if !method.served_in_modern_era() {
            return Err(ModernError::MethodNotFound(method.as_str().to_owned()));
        }
        let client_capabilities = meta
            .get(meta::CLIENT_CAPABILITIES)
            .filter(|c| c.is_object())
            .cloned()
            .ok_or_else(|| {
                ModernError::InvalidMeta(format!(
                    "_meta[{:?}] is required and must be an object",
                    meta::CLIENT_CAPABILITIES
                ))
            })?;
        let client_info = meta.get(meta::CLIENT_INFO).cloned();
        if client_info.as_ref().is_some_and(|info| !info.is_object()) {
            return Err(ModernError::InvalidMeta(format!(
                "_meta[{:?}] must be an object",
                meta::CLIENT_INFO
            )));
        }
        let log_level = match meta.get(meta::LOG_LEVEL) {
            None => None,
            Some(level) => Some(log_level_rank(level)?),
        };
        Ok(Self {
            version,
            client_info,
            client_capabilities,
            log_level,
            param_headers: mirrored.params.clone(),
        })
    }

    /// The gateway's own fields, for what it asks on its own behalf (discovery).
    pub fn gateway() -> Self {
        Self {
            version: MODERN_VERSIONS[0],
            client_info: None,
            client_capabilities: json!({}),
            log_level: None,
            param_headers: Vec::new(),
        }
    }

    /// The `_meta` of a request the gateway makes on this request's behalf.
    pub fn meta(&self) -> Value {
        let mut meta = json!({
            meta::PROTOCOL_VERSION: self.version,
            meta::CLIENT_CAPABILITIES: self.client_capabilities,
        });
        if let Some(info) = &self.client_info {
            meta[meta::CLIENT_INFO] = info.clone();
        }
        meta
    }

    /// Whether a `notifications/message` of this level may reach the client: only when the
    /// request asked for logs, and only at or above the level it asked for.
    pub fn wants_log(&self, level: Option<&str>) -> bool {
        let Some(wanted) = self.log_level else {
            return false;
        };
        let rank = level.and_then(|l| LOG_LEVELS.iter().position(|known| *known == l));
        rank.is_none_or(|rank| rank >= wanted)
    }
}

/// Who makes a request in the modern form on behalf of a legacy session: what that session's
/// `initialize` declared, and the log level it set.
pub struct LegacyCaller<'a> {
    pub client_info: &'a Value,
    pub client_capabilities: &'a Value,
    pub log_level: Option<&'a str>,
}

/// Adds the modern `_meta` (revision, client info and capabilities, log level) to `params`,
/// beside what `_meta` already holds (a progress token).
pub fn add_modern_meta(params: &mut Value, caller: &LegacyCaller) {
    if !params.is_object() {
        *params = json!({});
    }
    let meta = params
        .as_object_mut()
        .map(|fields| fields.entry("_meta").or_insert_with(|| json!({})));
    let Some(meta) = meta.and_then(Value::as_object_mut) else {
        return;
    };
    meta.insert(meta::PROTOCOL_VERSION.into(), json!(MODERN_VERSIONS[0]));
    meta.insert(meta::CLIENT_INFO.into(), caller.client_info.clone());
    meta.insert(
        meta::CLIENT_CAPABILITIES.into(),
        caller.client_capabilities.clone(),
    );
    if let Some(level) = caller.log_level {
        meta.insert(meta::LOG_LEVEL.into(), json!(level));
    }
}

/// Removes from a modern upstream's result what a legacy client does not know: `resultType`,
/// `ttlMs`, `cacheScope` and the upstream's `serverInfo` in `_meta`.
pub fn strip_modern_result(result: &mut Value) {
    let Some(fields) = result.as_object_mut() else {
        return;
    };
    for key in ["resultType", "ttlMs", "cacheScope"] {
        fields.remove(key);
    }
    let Some(meta) = fields.get_mut("_meta").and_then(Value::as_object_mut) else {
        return;
    };
    meta.remove(meta::SERVER_INFO);
    if meta.is_empty() {
        fields.remove("_meta");
    }
}

/// Removes the modern per-request fields from a request's `_meta` (and `_meta` itself when
/// nothing else is left), for an upstream spoken to in the legacy era: such an upstream takes
/// a request carrying them for a modern one. `progressToken` and trace context stay.
pub fn strip_modern_meta(params: &mut Value) {
    let Some(fields) = params.as_object_mut() else {
        return;
    };
    let Some(meta) = fields.get_mut("_meta").and_then(Value::as_object_mut) else {
        return;
    };
    for key in [
        meta::PROTOCOL_VERSION,
        meta::CLIENT_INFO,
        meta::CLIENT_CAPABILITIES,
        meta::LOG_LEVEL,
    ] {
        meta.remove(key);
    }
    if meta.is_empty() {
        fields.remove("_meta");
    }
}

const SENTINEL_PREFIX: &str = "=?base64?";
const SENTINEL_SUFFIX: &str = "?=";

/// A mirrored value as a header carries it: as it is when it is plain visible ASCII without
/// leading or trailing blanks, else Base64 in the `=?base64?…?=` sentinel form (also when it
/// looks like that form itself, so that decoding gives it back).
pub fn encode_header_value(value: &str) -> String {
    let plain = value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && value.trim() == value
        && !(value.starts_with(SENTINEL_PREFIX) && value.ends_with(SENTINEL_SUFFIX));
    if plain {
        return value.to_owned();
    }
    format!(
        "{SENTINEL_PREFIX}{}{SENTINEL_SUFFIX}",
        STANDARD.encode(value)
    )
}

/// Decodes the `=?base64?…?=` form; other values are taken as they are.
pub fn decode_header_value(value: &str) -> Result<String, String> {
    let Some(encoded) = value
        .strip_prefix(SENTINEL_PREFIX)
        .and_then(|rest| rest.strip_suffix(SENTINEL_SUFFIX))
    else {
        return Ok(value.to_owned());
    };
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| "the =?base64?…?= value is not valid Base64".to_owned())?;
    String::from_utf8(bytes).map_err(|_| "the =?base64?…?= value is not UTF-8".to_owned())
}

/// The `Mcp-Name` value of a request, for the methods that mirror one, encoded for a header.
pub fn mirrored_name(method: &str, params: Option<&Value>) -> Option<String> {
    let field = Method::parse(method).mirrored_name_field()?;
    let name = params?.get(field)?.as_str()?;
    Some(encode_header_value(name))
}

/// Who may cache a result (`cacheScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// The same for every principal: shared caches may keep it.
    Public,
    /// May differ per principal (team policy filters lists, upstreams may answer per user).
    Private,
}

impl CacheScope {
    fn as_str(self) -> &'static str {
        match self {
            CacheScope::Public => "public",
            CacheScope::Private => "private",
        }
    }
}

/// Makes a result a modern one: `resultType` (`complete` unless the result says otherwise),
/// the gateway's `serverInfo` in `_meta`, and, for the cacheable methods, `ttlMs` and
/// `cacheScope`. The gateway promises no freshness: `ttlMs` is 0.
pub fn complete_result(method: &Method, result: &mut Value, scope: CacheScope) {
    let Some(fields) = result.as_object_mut() else {
        return;
    };
    fields
        .entry("resultType")
        .or_insert_with(|| json!("complete"));
    let meta = fields.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(
            meta::SERVER_INFO.into(),
            json!({"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
    let complete = fields.get("resultType").and_then(Value::as_str) == Some("complete");
    if complete && method.is_cacheable() {
        fields.insert("ttlMs".into(), json!(0));
        fields.insert("cacheScope".into(), json!(scope.as_str()));
    }
}

fn log_level_rank(level: &Value) -> Result<usize, ModernError> {
    level
        .as_str()
        .and_then(|l| LOG_LEVELS.iter().position(|known| *known == l))
        .ok_or_else(|| {
            ModernError::InvalidMeta(format!(
                "_meta[{:?}] must be one of {}",
                meta::LOG_LEVEL,
                LOG_LEVELS.join(", ")
            ))
        })
}

/// The request's `params._meta`, when it is an object.
fn request_meta(params: Option<&Value>) -> Option<&serde_json::Map<String, Value>> {
    params?.get("_meta")?.as_object()
}

/// The mirrored version, method and (for the methods that name something) name must be present
/// and equal to the body's.
fn check_mirrored(
    method: &Method,
    params: Option<&Value>,
    version: &str,
    mirrored: &Mirrored,
) -> Result<(), ModernError> {
    compare(
        "MCP-Protocol-Version",
        mirrored.protocol_version.as_deref(),
        version,
    )?;
    compare("Mcp-Method", mirrored.method.as_deref(), method.as_str())?;
    let Some(field) = method.mirrored_name_field() else {
        return Ok(());
    };
    let body = params
        .and_then(|p| p.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default();
    match &mirrored.name {
        Some(Err(reason)) => Err(ModernError::HeaderMismatch(format!("Mcp-Name: {reason}"))),
        Some(Ok(header)) => compare("Mcp-Name", Some(header), body),
        None => compare("Mcp-Name", None, body),
    }
}

fn compare(header: &str, mirrored: Option<&str>, body: &str) -> Result<(), ModernError> {
    match mirrored {
        None => Err(ModernError::HeaderMismatch(format!(
            "the {header} header is required"
        ))),
        Some(value) if value != body => Err(ModernError::HeaderMismatch(format!(
            "{header} header value {value:?} does not match body value {body:?}"
        ))),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(meta: Value) -> Value {
        json!({"name": "echo", "_meta": meta})
    }

    fn good_meta() -> Value {
        json!({
            meta::PROTOCOL_VERSION: "2026-07-28",
            meta::CLIENT_CAPABILITIES: {},
            meta::CLIENT_INFO: {"name": "t", "version": "1"},
        })
    }

    fn mirrored(method: &str, name: Option<&str>) -> Mirrored {
        Mirrored {
            protocol_version: Some("2026-07-28".into()),
            method: Some(method.into()),
            name: name.map(|n| Ok(n.to_owned())),
            params: Vec::new(),
        }
    }

    fn parse(
        method: &str,
        params: &Value,
        mirrored: &Mirrored,
    ) -> Result<ModernRequest, ModernError> {
        ModernRequest::parse(&Method::parse(method), Some(params), mirrored)
    }

    #[test]
    fn a_complete_request_is_accepted() {
        let request = parse(
            "tools/call",
            &params(good_meta()),
            &mirrored("tools/call", Some("echo")),
        );
        let request = request.expect("valid");
        assert_eq!(request.version, "2026-07-28");
        assert!(
            !request.wants_log(Some("emergency")),
            "no logs unless asked for"
        );
    }

    #[test]
    fn errors_come_in_the_order_of_the_text() {
        let no_version = json!({meta::CLIENT_CAPABILITIES: {}});
        let m = mirrored("tools/call", Some("echo"));
        assert!(matches!(
            parse("tools/call", &params(no_version), &m),
            Err(ModernError::InvalidMeta(_))
        ));
        let old = json!({meta::PROTOCOL_VERSION: "1900-01-01", meta::CLIENT_CAPABILITIES: {}});
        let mismatch = parse("tools/call", &params(old.clone()), &m).unwrap_err();
        assert_eq!(
            mismatch.code(),
            ModernError::HEADER_MISMATCH,
            "a mismatch wins over the version"
        );
        let old_header = Mirrored {
            protocol_version: Some("1900-01-01".into()),
            ..m.clone()
        };
        let error = parse("tools/call", &params(old), &old_header).unwrap_err();
        assert_eq!(error.code(), ModernError::UNSUPPORTED_VERSION);
        assert_eq!(error.data().unwrap()["requested"], "1900-01-01");
        assert_eq!(error.data().unwrap()["supported"][0], "2026-07-28");
        let other_name = mirrored("tools/call", Some("other"));
        assert!(matches!(
            parse("tools/call", &params(good_meta()), &other_name),
            Err(ModernError::HeaderMismatch(_))
        ));
        let no_name = mirrored("tools/call", None);
        assert!(matches!(
            parse("tools/call", &params(good_meta()), &no_name),
            Err(ModernError::HeaderMismatch(_))
        ));
        let no_caps = json!({meta::PROTOCOL_VERSION: "2026-07-28"});
        assert!(matches!(
            parse("tools/call", &params(no_caps), &m),
            Err(ModernError::InvalidMeta(_))
        ));
    }

    #[test]
    fn removed_methods_are_not_found() {
        for method in [
            "ping",
            "logging/setLevel",
            "resources/subscribe",
            "initialize",
            "nope/nope",
        ] {
            let error = parse(method, &params(good_meta()), &mirrored(method, None)).unwrap_err();
            assert_eq!(
                error,
                ModernError::MethodNotFound(method.into()),
                "{method}"
            );
        }
    }

    #[test]
    fn logs_follow_the_requested_level() {
        let mut meta = good_meta();
        meta[meta::LOG_LEVEL] = json!("warning");
        let request = parse("tools/list", &params(meta), &mirrored("tools/list", None)).unwrap();
        assert!(request.wants_log(Some("error")));
        assert!(!request.wants_log(Some("info")));
        let mut bad = good_meta();
        bad[meta::LOG_LEVEL] = json!("loud");
        assert!(matches!(
            parse("tools/list", &params(bad), &mirrored("tools/list", None)),
            Err(ModernError::InvalidMeta(_))
        ));
    }

    #[test]
    fn results_get_their_type_the_server_and_cache_hints() {
        let mut list = json!({"tools": []});
        complete_result(&Method::parse("tools/list"), &mut list, CacheScope::Private);
        assert_eq!(list["resultType"], "complete");
        assert_eq!(
            (list["ttlMs"].clone(), list["cacheScope"].clone()),
            (json!(0), json!("private"))
        );
        assert_eq!(list["_meta"][meta::SERVER_INFO]["name"], "mcpgate");
        let mut call = json!({"content": [], "_meta": {"x": 1}});
        complete_result(&Method::CallTool, &mut call, CacheScope::Private);
        assert_eq!(call["resultType"], "complete");
        assert_eq!(call["_meta"]["x"], 1);
        assert!(call.get("ttlMs").is_none(), "tools/call is not cacheable");
    }

    #[test]
    fn modern_meta_is_stripped_for_legacy_upstreams() {
        let mut with_token = params(good_meta());
        with_token["_meta"]["progressToken"] = json!(7);
        strip_modern_meta(&mut with_token);
        assert_eq!(with_token["_meta"], json!({"progressToken": 7}));
        let mut only_modern = params(good_meta());
        strip_modern_meta(&mut only_modern);
        assert_eq!(only_modern, json!({"name": "echo"}));
    }

    #[test]
    fn header_values_round_trip_through_the_sentinel_form() {
        for value in [
            "get_weather",
            "Hello, 世界",
            " padded ",
            "line1\nline2",
            "=?base64?literal?=",
        ] {
            let encoded = encode_header_value(value);
            assert!(
                encoded.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                "{encoded}"
            );
            assert_eq!(decode_header_value(&encoded).as_deref(), Ok(value));
        }
        assert_eq!(encode_header_value("us-west1"), "us-west1");
        assert_eq!(
            encode_header_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert!(decode_header_value("=?base64?!!!?=").is_err());
    }

    #[test]
    fn discover_and_meta_make_a_request_modern() {
        assert!(is_modern(&Method::Discover, None));
        assert!(is_modern(&Method::CallTool, Some(&params(good_meta()))));
        assert!(!is_modern(&Method::CallTool, Some(&json!({"name": "x"}))));
    }
}

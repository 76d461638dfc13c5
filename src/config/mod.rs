//! Configuration: one TOML file plus `MCPGATE_<SECTION>__<KEY>` environment overrides,
//! loaded with the `config` crate, then validated so that a bad value fails at start with its key.
//!
//! Secrets (upstream header values, stdio environment values, the fleet HMAC key) are held in
//! [`Secret`], which never prints its content: not in `Debug`, not in `check-config` output.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

pub mod auth;
pub mod isolation;
pub mod limits;
mod paths;
pub mod policy;
mod secret_files;

/// Everything mcpgate reads at start.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Per-principal and per-session limits.
    #[serde(default)]
    pub limits: limits::LimitsConfig,
    /// What each team may see and call.
    #[serde(default)]
    pub policy: policy::PolicyConfig,
}

/// The downstream MCP endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the `/mcp` listener.
    pub listen: SocketAddr,
    /// Browser origins allowed besides localhost ones, e.g. `https://app.example.com`.
    pub allowed_origins: Vec<String>,
    /// `Host` header values allowed (name or name:port). Empty means: only localhost names when
    /// `listen` is a loopback address, anything otherwise (a load balancer in front decides).
    pub allowed_hosts: Vec<String>,
    /// Largest accepted POST body, in bytes.
    pub max_body_bytes: usize,
    /// Largest `clientInfo` plus `capabilities` of an `initialize`, serialized, in bytes: what
    /// a session record keeps of the client for its whole life.
    pub max_client_metadata_bytes: usize,
    /// Most entries in one JSON-RPC batch (protocol 2025-03-26).
    pub max_batch_len: usize,
    /// Longest wait for a whole POST body once its headers arrived; then 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Longest wait for a request's headers on a new connection; then 408.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long an idle connection is kept open between requests.
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Most connections one worker holds open; beyond it new connections wait to be accepted.
    pub max_connections: usize,
    /// Most upstream standalone streams (`standalone = "hold"`) this replica holds for sessions;
    /// beyond it a session's stream is not held here (see the README).
    pub max_held_streams: usize,
    /// The `retry` hint sent on SSE streams.
    #[serde(with = "humantime_serde")]
    pub sse_retry: Duration,
    /// How long a `GET /sse` stream (the HTTP+SSE transport) waits for its client to POST
    /// `initialize` before it ends.
    #[serde(with = "humantime_serde")]
    pub sse_initialize_timeout: Duration,
    /// On SIGTERM, how long requests in flight get to finish before the process stops (SSE
    /// streams end at once with a resume hint). Kubernetes' termination grace period must
    /// cover it, plus any preStop delay.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
    /// How often the configuration file is read to see whether it changed; a change (or
    /// SIGHUP) reloads its `[[upstreams]]` live.
    #[serde(with = "humantime_serde")]
    pub config_check_interval: Duration,
    /// How long a 2026-07-28 client has to retry a request answered `input_required`: the
    /// lifetime of the `requestState` the gateway seals.
    #[serde(with = "humantime_serde")]
    pub request_state_ttl: Duration,
    /// Key for signing the ids of server-to-client requests; random per process when unset.
    /// Every replica of a fleet must share it.
    pub hmac_key: Option<Secret>,
    /// Read `hmac_key` from this file (e.g. a mounted Kubernetes Secret) when set.
    pub hmac_key_file: Option<PathBuf>,
    /// actix-web worker threads; the number of cores when unset.
    pub workers: Option<usize>,
    /// Who may call `/mcp`.
    pub auth: auth::AuthConfig,
}

impl ServerConfig {
    /// The default of [`ServerConfig::max_held_streams`].
    pub const DEFAULT_MAX_HELD_STREAMS: usize = 8192;
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            max_client_metadata_bytes: 16 * 1024,
            max_batch_len: 64,
            body_read_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(75),
            max_connections: 8192,
            max_held_streams: Self::DEFAULT_MAX_HELD_STREAMS,
            sse_retry: Duration::from_secs(2),
            sse_initialize_timeout: Duration::from_secs(30),
            drain_grace: Duration::from_secs(30),
            config_check_interval: Duration::from_secs(5),
            request_state_ttl: Duration::from_secs(600),
            hmac_key: None,
            hmac_key_file: None,
            workers: None,
            auth: auth::AuthConfig::default(),
        }
    }
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

/// Where sessions live and for how long.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub store: StoreKind,
    /// A session unused this long expires.
    #[serde(with = "humantime_serde")]
    pub idle_ttl: Duration,
    /// No session outlives this, however busy.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How long the events of an SSE stream stay replayable.
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    /// How many events one SSE stream keeps for replay.
    pub replay_max_events: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            idle_ttl: Duration::from_secs(7 * 24 * 3600),
            max_lifetime: Duration::from_secs(30 * 24 * 3600),
            replay_window: Duration::from_secs(600),
            replay_max_events: 1000,
        }
    }
}

/// Session store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In-process; sessions die with the process. For development and single-replica use.
    Memory,
    /// Redis (see `[redis]`): every replica can serve every session.
    Redis,
}

/// How mcpgate finds its Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server at `url`.
    #[default]
    Standalone,
    /// The master named `master_name`, as reported by the Sentinels at `sentinels`.
    Sentinel,
    /// A Redis Cluster, discovered from the seed `nodes`.
    Cluster,
}

impl RedisMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
        }
    }
}

/// The default `redis.url`.
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The Redis server behind `store = "redis"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `standalone` (default), `sentinel` or `cluster`.
    pub mode: RedisMode,
    /// Standalone only: `redis://host:port/db` or `rediss://` for TLS. Credentials go in
    /// `username`/`password`, never in a URL, so that URLs can be printed.
    pub url: String,
    /// Cluster only: seed nodes, `redis://host:port` (or all `rediss://`); the rest of the
    /// cluster is discovered from them.
    pub nodes: Vec<String>,
    /// Sentinel only: the Sentinels, `redis://host:port` (`rediss://` for TLS to the Sentinels
    /// and to the master).
    pub sentinels: Vec<String>,
    /// Sentinel only: the name of the monitored master.
    pub master_name: Option<String>,
    /// Credentials for the Redis data nodes (not for the Sentinels).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Read the password from this file (e.g. a mounted Kubernetes secret) when set.
    pub password_file: Option<PathBuf>,
    /// Database number; overrides the one in the URL. Not with `mode = "cluster"`.
    pub db: Option<i64>,
    /// Sentinel mode: pooled connections per replica (standalone and cluster multiplex one).
    pub pool_size: usize,
    /// Longest wait for one Redis operation; beyond it clients get 503.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            mode: RedisMode::Standalone,
            url: DEFAULT_REDIS_URL.into(),
            nodes: Vec::new(),
            sentinels: Vec::new(),
            master_name: None,
            username: None,
            password: None,
            password_file: None,
            db: None,
            pool_size: 32,
            timeout: Duration::from_secs(1),
        }
    }
}

/// How mcpgate reaches one upstream MCP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Stdio,
    /// Streamable HTTP.
    Http,
    /// The legacy HTTP+SSE transport (2024-11-05): a GET stream per upstream session, bound to
    /// the replica holding it (`upstream/sse.rs`).
    Sse,
}

/// One `[[upstreams]]` entry. Equality compares every value, secrets included: a live reload
/// restarts an upstream whose entry changed in any way.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub transport: TransportKind,
    /// Namespace for tools and prompts (`<prefix>__<name>`); the name when unset, none when "".
    pub prefix: Option<String>,
    /// Tool-name globs to expose; everything when empty.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Tool-name globs to hide; applied after `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Longest wait for one upstream request.
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// stdio: the program to run.
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    pub cwd: Option<PathBuf>,
    /// http: the Streamable HTTP endpoint; sse: the URL of the GET stream.
    pub url: Option<UpstreamUrl>,
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// http: who keeps the upstream's standalone GET stream of a session open (default `hold`).
    pub standalone: Option<StandaloneMode>,
    /// Which protocol era requests reach this upstream in: `auto` (probe it with
    /// `server/discover`, the default), `legacy` (always the `initialize` handshake) or
    /// `modern` (only 2026-07-28, from legacy sessions too; HTTP only).
    #[serde(default)]
    pub era: UpstreamEra,
    /// Largest message read from this upstream, in bytes: a stdio line, an HTTP JSON answer or
    /// one SSE event. A longer one is abandoned as it arrives, never read whole, and the call
    /// it answered fails with a JSON-RPC error.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Messages a second this upstream may send outside any request (in bursts of as many).
    /// Beyond it a list change is put off and merged with the next, anything else dropped.
    #[serde(default = "default_unsolicited_per_second")]
    pub unsolicited_per_second: NonZeroU32,
    /// stdio: who shares a child process (`shared`, `team`, `session`; see `isolation.rs`).
    pub isolation: Option<isolation::Isolation>,
    /// stdio, isolated: a child without requests in flight for this long is stopped; sse: a
    /// connection without requests for this long is closed.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// stdio, isolated: most children of this upstream running on one replica.
    pub max_children: Option<usize>,
    /// sse: most connections (upstream sessions) to this upstream open on one replica.
    pub max_connections: Option<usize>,
    /// stdio, isolated: the environment of a team's children, instead of `env`.
    #[serde(default)]
    pub team_env: isolation::TeamEnv,
}

/// An upstream's URL. It may carry credentials (userinfo, a `?token=` query), so it prints
/// redacted, in `Debug` and in `check-config` output alike; [`UpstreamUrl::expose`] gives it.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct UpstreamUrl(String);

impl UpstreamUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password, every query value and any fragment replaced by
    /// `<redacted>`; only `<redacted>` when it does not parse.
    pub fn redacted(&self) -> String {
        let Ok(url) = url::Url::parse(&self.0) else {
            return REDACTED.to_owned();
        };
        let mut text = url[..url::Position::AfterUsername].to_owned();
        if url.password().is_some() {
            text.push(':');
            text.push_str(REDACTED);
        }
        if !url.username().is_empty() || url.password().is_some() {
            text.push('@');
        }
        text.push_str(&url[url::Position::BeforeHost..url::Position::AfterPath]);
        if let Some(query) = url.query() {
            let pairs: Vec<String> = query.split('&').map(redacted_pair).collect();
            text.push('?');
            text.push_str(&pairs.join("&"));
        }
        if url.fragment().is_some() {
            text.push('#');
            text.push_str(REDACTED);
        }
        text
    }
}

/// What stands for a value that is not printed.
const REDACTED: &str = "<redacted>";

/// `key=<redacted>`, or `<redacted>` for a query part without a key.
fn redacted_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((key, _)) => format!("{key}={REDACTED}"),
        None => REDACTED.to_owned(),
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Which era an upstream is spoken to in, for modern clients' requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamEra {
    /// Probe it with `server/discover`; modern when it lists 2026-07-28 (see `upstream/era.rs`).
    #[default]
    Auto,
    /// Never probe: an upstream that mishandles a probe, or must see one client per session.
    Legacy,
    /// It speaks only 2026-07-28 (HTTP only): legacy sessions' requests reach it in the modern
    /// form too, its `input_required` answered by their clients (`dispatch/legacy_bridge.rs`).
    Modern,
}

/// How an HTTP upstream's standalone GET stream (its messages outside any request) is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StandaloneMode {
    /// One replica of the fleet holds it from `initialize` until the session ends, and logs
    /// what it carries for the client's next GET: nothing the upstream sends is lost, even by
    /// an upstream that keeps no events. Costs one upstream connection per session.
    #[default]
    Hold,
    /// Open only while the client has its own GET stream open, resumed from the last upstream
    /// event relayed. Lossless only for upstreams that keep their events for replay.
    Follow,
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Bounds of `max_message_bytes`: room for an `initialize` answer, and far below what a
/// replica can hold.
const MESSAGE_BYTES_RANGE: std::ops::RangeInclusive<usize> = 4096..=1 << 30;

fn default_max_message_bytes() -> usize {
    8 * 1024 * 1024
}

fn default_unsolicited_per_second() -> NonZeroU32 {
    const DEFAULT: NonZeroU32 = NonZeroU32::new(100).unwrap();
    DEFAULT
}

impl UpstreamConfig {
    /// The namespace actually used: the configured prefix, or the name.
    pub fn effective_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.name)
    }

    /// sse: `max_connections`, or its default.
    pub fn max_connections(&self) -> usize {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }
}

/// Default `max_connections` of an sse upstream: per replica, an open connection costs a
/// socket and a small task.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// A configuration value that must never be printed.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(config::ConfigError),
    #[error("invalid configuration at `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

/// A Redis URL: `redis://` or `rediss://`, without credentials.
fn redis_url(key: &str, value: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(value).map_err(|e| invalid(key, e.to_string()))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(invalid(key, "scheme must be redis or rediss"));
    }
    if url.password().is_some() || !url.username().is_empty() {
        return Err(invalid(
            key,
            "put credentials in redis.username and redis.password, not in the URL",
        ));
    }
    Ok(url)
}

/// The node list of cluster or sentinel mode: not empty, `redis[s]://host:port` each, without
/// a database (cluster nodes have only db 0; a Sentinel has none), all with the same scheme.
fn redis_urls(key: &str, values: &[String]) -> Result<(), ConfigError> {
    if values.is_empty() {
        return Err(invalid(key, "list at least one redis://host:port"));
    }
    let mut scheme = None;
    for (index, value) in values.iter().enumerate() {
        let key = format!("{key}[{index}]");
        let url = redis_url(&key, value)?;
        if !matches!(url.path(), "" | "/") {
            return Err(invalid(key, "no database in this URL (use redis.db)"));
        }
        if *scheme.get_or_insert(url.scheme().to_owned()) != url.scheme() {
            return Err(invalid(
                key,
                "use the same scheme (redis or rediss) for all",
            ));
        }
    }
    Ok(())
}

/// The environment variables that are overrides: `MCPGATE_<SECTION>__<KEY>`. Other `MCPGATE_*`
/// variables (a launcher's `MCPGATE_URL`, say) are not configuration and are left alone.
fn override_variables(vars: impl Iterator<Item = (String, String)>) -> config::Map<String, String> {
    vars.filter(|(name, _)| {
        name.strip_prefix("MCPGATE_")
            .is_some_and(|rest| rest.contains("__"))
    })
    .collect()
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

impl Config {
    /// Loads `path` (when given), applies `MCPGATE_*` overrides, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let environment = config::Environment::with_prefix("MCPGATE")
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("server.allowed_origins")
            .with_list_parse_key("server.allowed_hosts")
            .with_list_parse_key("redis.nodes")
            .with_list_parse_key("redis.sentinels")
            .with_list_parse_key("server.auth.authorization_servers")
            .with_list_parse_key("server.auth.scopes_supported")
            .with_list_parse_key("server.auth.required_scopes")
            .try_parsing(true)
            .source(Some(override_variables(std::env::vars())));
        let mut config: Config = builder
            .add_source(environment)
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(ConfigError::Load)?;
        if let Some(folder) = path.and_then(Path::parent) {
            config.resolve_paths_from(folder);
        }
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: cross-field rules, names, globs and URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        if self.session.idle_ttl.is_zero() {
            return Err(invalid("session.idle_ttl", "must be greater than 0"));
        }
        if self.session.max_lifetime < self.session.idle_ttl {
            return Err(invalid(
                "session.max_lifetime",
                "must be at least session.idle_ttl",
            ));
        }
        self.validate_redis()?;
        self.server.auth.validate()?;
        if matches!(&self.server.hmac_key, Some(k) if k.expose().len() < 32) {
            return Err(invalid("server.hmac_key", "must be at least 32 characters"));
        }
        self.validate_upstreams()?;
        self.limits.validate()?;
        self.policy.validate()
    }

    /// Every size, count and timeout of `[server]` must be greater than 0.
    fn validate_server(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        let counts = [
            ("max_body_bytes", server.max_body_bytes),
            (
                "max_client_metadata_bytes",
                server.max_client_metadata_bytes,
            ),
            ("max_batch_len", server.max_batch_len),
            ("max_connections", server.max_connections),
            ("max_held_streams", server.max_held_streams),
        ];
        let timeouts = [
            ("body_read_timeout", server.body_read_timeout),
            ("header_read_timeout", server.header_read_timeout),
            ("keep_alive", server.keep_alive),
            ("sse_initialize_timeout", server.sse_initialize_timeout),
            ("config_check_interval", server.config_check_interval),
        ];
        let zero_counts = counts.into_iter().filter(|(_, n)| *n == 0);
        let zero_timeouts = timeouts.into_iter().filter(|(_, d)| d.is_zero());
        let first_zero = zero_counts
            .map(|(key, _)| key)
            .chain(zero_timeouts.map(|(key, _)| key))
            .next();
        match first_zero {
            Some(key) => Err(invalid(format!("server.{key}"), "must be greater than 0")),
            None => Ok(()),
        }
    }

    fn validate_redis(&self) -> Result<(), ConfigError> {
        let redis = &self.redis;
        let mode = redis.mode;
        let only = |key: &str, wanted: RedisMode| {
            invalid(
                format!("redis.{key}"),
                format!(
                    "only used with redis.mode = \"{}\" (mode is \"{}\")",
                    wanted.as_str(),
                    mode.as_str()
                ),
            )
        };
        if mode != RedisMode::Standalone && redis.url != DEFAULT_REDIS_URL {
            return Err(only("url", RedisMode::Standalone));
        }
        if mode != RedisMode::Cluster && !redis.nodes.is_empty() {
            return Err(only("nodes", RedisMode::Cluster));
        }
        if mode != RedisMode::Sentinel && !redis.sentinels.is_empty() {
            return Err(only("sentinels", RedisMode::Sentinel));
        }
        if mode != RedisMode::Sentinel && redis.master_name.is_some() {
            return Err(only("master_name", RedisMode::Sentinel));
        }
        match mode {
            RedisMode::Standalone => {
                redis_url("redis.url", &redis.url)?;
            }
            RedisMode::Cluster => {
                if redis.db.is_some() {
                    return Err(invalid(
                        "redis.db",
                        "Redis Cluster has only database 0; remove redis.db",
                    ));
                }
                redis_urls("redis.nodes", &redis.nodes)?;
            }
            RedisMode::Sentinel => {
                redis_urls("redis.sentinels", &redis.sentinels)?;
                if redis.master_name.as_deref().is_none_or(str::is_empty) {
                    return Err(invalid(
                        "redis.master_name",
                        "required with redis.mode = \"sentinel\"",
                    ));
                }
            }
        }
        if redis.pool_size == 0 {
            return Err(invalid("redis.pool_size", "must be greater than 0"));
        }
        if redis.timeout.is_zero() {
            return Err(invalid("redis.timeout", "must be greater than 0"));
        }
        if redis.password.is_some() && redis.password_file.is_some() {
            return Err(invalid(
                "redis.password_file",
                "set redis.password or redis.password_file, not both",
            ));
        }
        Ok(())
    }

    fn validate_upstreams(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        let mut prefixes = std::collections::HashSet::new();
        for (index, upstream) in self.upstreams.iter().enumerate() {
            let key = format!("upstreams[{index}]");
            validate_upstream(&key, upstream)?;
            if !names.insert(upstream.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("duplicate name {:?}", upstream.name),
                ));
            }
            if !prefixes.insert(upstream.effective_prefix()) {
                let reason = format!(
                    "prefix {:?} is used twice; an empty prefix is allowed for one upstream only",
                    upstream.effective_prefix()
                );
                return Err(invalid(format!("{key}.prefix"), reason));
            }
        }
        Ok(())
    }
}

fn validate_upstream(key: &str, upstream: &UpstreamConfig) -> Result<(), ConfigError> {
    let name_ok = !upstream.name.is_empty()
        && upstream
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(invalid(
            format!("{key}.name"),
            "must be non-empty ASCII letters, digits, '-' or '_'",
        ));
    }
    if upstream.effective_prefix().contains("__") {
        return Err(invalid(
            format!("{key}.prefix"),
            "must not contain \"__\" (the namespace separator)",
        ));
    }
    if upstream.timeout.is_zero() {
        return Err(invalid(format!("{key}.timeout"), "must be greater than 0"));
    }
    if !MESSAGE_BYTES_RANGE.contains(&upstream.max_message_bytes) {
        let reason = format!(
            "must be between {} and {}",
            MESSAGE_BYTES_RANGE.start(),
            MESSAGE_BYTES_RANGE.end()
        );
        return Err(invalid(format!("{key}.max_message_bytes"), reason));
    }
    for (field, globs) in [("allow", &upstream.allow), ("deny", &upstream.deny)] {
        for glob in globs {
            globset::Glob::new(glob).map_err(|e| {
                invalid(format!("{key}.{field}"), format!("bad glob {glob:?}: {e}"))
            })?;
        }
    }
    isolation::validate(key, upstream)?;
    match upstream.transport {
        TransportKind::Stdio => validate_stdio(key, upstream),
        TransportKind::Http => validate_http(key, upstream),
        TransportKind::Sse => validate_sse(key, upstream),
    }
}

fn validate_stdio(key: &str, upstream: &UpstreamConfig) -> Result<(), ConfigError> {
    match &upstream.command {
        Some(command) if !command.is_empty() => {}
        _ => {
            return Err(invalid(
                format!("{key}.command"),
                "required for transport = \"stdio\"",
            ));
        }
    }
    if upstream.url.is_some() || !upstream.headers.is_empty() {
        return Err(invalid(
            format!("{key}.url"),
            "url and headers belong to transport = \"http\" or \"sse\"",
        ));
    }
    if upstream.max_connections.is_some() {
        return Err(invalid(
            format!("{key}.max_connections"),
            "max_connections belongs to transport = \"sse\"",
        ));
    }
    if upstream.standalone.is_some() {
        return Err(invalid(
            format!("{key}.standalone"),
            "standalone belongs to transport = \"http\"",
        ));
    }
    if upstream.era == UpstreamEra::Modern {
        return Err(invalid(
            format!("{key}.era"),
            "\"modern\" needs transport = \"http\" (a stdio child is started with the initialize handshake)",
        ));
    }
    Ok(())
}

fn validate_http(key: &str, upstream: &UpstreamConfig) -> Result<(), ConfigError> {
    if upstream.max_connections.is_some() {
        return Err(invalid(
            format!("{key}.max_connections"),
            "max_connections belongs to transport = \"sse\"",
        ));
    }
    validate_url_and_headers(key, upstream, "http")
}

/// An sse upstream is an http one without the keys of Streamable HTTP: its session is its
/// connection, so there is no standalone stream to keep and no modern era to speak.
fn validate_sse(key: &str, upstream: &UpstreamConfig) -> Result<(), ConfigError> {
    if upstream.standalone.is_some() {
        return Err(invalid(
            format!("{key}.standalone"),
            "standalone belongs to transport = \"http\" (an sse upstream's messages all come on its one stream)",
        ));
    }
    if upstream.era == UpstreamEra::Modern {
        return Err(invalid(
            format!("{key}.era"),
            "\"modern\" needs transport = \"http\" (the HTTP+SSE transport predates 2026-07-28)",
        ));
    }
    if upstream.max_connections == Some(0) {
        return Err(invalid(
            format!("{key}.max_connections"),
            "must be greater than 0",
        ));
    }
    validate_url_and_headers(key, upstream, "sse")
}

/// `url` (required, http or https) and `headers` of an http or sse upstream, and none of the
/// stdio keys.
fn validate_url_and_headers(
    key: &str,
    upstream: &UpstreamConfig,
    transport: &str,
) -> Result<(), ConfigError> {
    let Some(raw) = &upstream.url else {
        return Err(invalid(
            format!("{key}.url"),
            format!("required for transport = \"{transport}\""),
        ));
    };
    let url =
        url::Url::parse(raw.expose()).map_err(|e| invalid(format!("{key}.url"), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            format!("{key}.url"),
            "scheme must be http or https",
        ));
    }
    if upstream.command.is_some() || !upstream.args.is_empty() || !upstream.env.is_empty() {
        return Err(invalid(
            format!("{key}.command"),
            "command, args and env belong to transport = \"stdio\"",
        ));
    }
    for name in upstream.headers.keys() {
        http::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            invalid(
                format!("{key}.headers"),
                format!("{name:?} is not a valid header name"),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Config::load(Some(file.path()))
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let example = include_str!("../../deploy/mcpgate.example.toml");
        let config = load_str(example).expect("deploy/mcpgate.example.toml is valid");
        assert!(!config.upstreams.is_empty());
    }

    #[test]
    fn defaults_are_sensible() {
        let config = load_str("").unwrap();
        assert_eq!(config.session.idle_ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(config.session.store, StoreKind::Memory);
        assert!(config.upstreams.is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[server]\nbogus = 1", "bogus"),
            ("[server]\nmax_batch_len = 0", "server.max_batch_len"),
            ("[server]\nmax_held_streams = 0", "server.max_held_streams"),
            (
                "[server]\nbody_read_timeout = \"0s\"",
                "server.body_read_timeout",
            ),
            (
                "[[upstreams]]\nname = \"a\"\ntransport = \"stdio\"",
                "upstreams[0].command",
            ),
            (
                "[[upstreams]]\nname = \"a\"\ntransport = \"http\"\nurl = \"ftp://x\"",
                "upstreams[0].url",
            ),
            (
                "[[upstreams]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x\"\nprefix = \"\"\n\
                 [[upstreams]]\nname = \"b\"\ntransport = \"http\"\nurl = \"http://y\"\nprefix = \"\"",
                "upstreams[1].prefix",
            ),
            (
                "[[upstreams]]\nname = \"a b\"\ntransport = \"http\"\nurl = \"http://x\"",
                "upstreams[0].name",
            ),
            (
                "[[upstreams]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\nstandalone = \"hold\"",
                "upstreams[0].standalone",
            ),
            (
                "[[upstreams]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"x\"\nera = \"modern\"",
                "upstreams[0].era",
            ),
            (
                "[[upstreams]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x\"\nstandalone = \"always\"",
                "standalone",
            ),
            (
                "[session]\nidle_ttl = \"2d\"\nmax_lifetime = \"1d\"",
                "session.max_lifetime",
            ),
            ("[redis]\nurl = \"redis://user:pw@localhost\"", "redis.url"),
            ("[redis]\nurl = \"http://localhost\"", "redis.url"),
            ("[redis]\npool_size = 0", "redis.pool_size"),
            ("[redis]\nmode = \"primary\"", "mode"),
            ("[redis]\nmode = \"cluster\"", "redis.nodes"),
            (
                "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:1\"]\ndb = 2",
                "redis.db",
            ),
            (
                "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:1\", \"redis://u:p@b:2\"]",
                "redis.nodes[1]",
            ),
            (
                "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:1\", \"rediss://b:2\"]",
                "redis.nodes[1]",
            ),
            (
                "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:1/3\"]",
                "redis.nodes[0]",
            ),
            (
                "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:1\"]\nurl = \"redis://b:2\"",
                "redis.url",
            ),
            ("[redis]\nnodes = [\"redis://a:1\"]", "redis.nodes"),
            (
                "[redis]\nmode = \"sentinel\"\nmaster_name = \"m\"",
                "redis.sentinels",
            ),
            (
                "[redis]\nmode = \"sentinel\"\nsentinels = [\"redis://a:26379\"]",
                "redis.master_name",
            ),
            (
                "[redis]\nmode = \"sentinel\"\nmaster_name = \"m\"\nsentinels = [\"redis://:pw@a:1\"]",
                "redis.sentinels[0]",
            ),
            ("[redis]\nmaster_name = \"m\"", "redis.master_name"),
        ];
        for (toml, key) in cases {
            let error = load_str(toml).unwrap_err().to_string();
            assert!(
                error.contains(key),
                "{toml:?} gave {error:?}, expected key {key}"
            );
        }
    }

    #[test]
    fn sse_upstreams_load_and_refuse_what_they_cannot_use() {
        let base = "[[upstreams]]\nname = \"a\"\ntransport = \"sse\"\n";
        let config = load_str(&format!(
            "{base}url = \"http://x/sse\"\nheaders = {{ A = \"b\" }}\nidle_timeout = \"1m\"\nmax_connections = 3"
        ))
        .unwrap();
        let upstream = &config.upstreams[0];
        assert_eq!(upstream.transport, TransportKind::Sse);
        assert_eq!(upstream.max_connections, Some(3));
        assert_eq!(upstream.idle_timeout(), Duration::from_secs(60));
        let refused = [
            ("", "upstreams[0].url", "required for transport = \"sse\""),
            ("url = \"ftp://x\"", "upstreams[0].url", "http or https"),
            (
                "url = \"http://x\"\nstandalone = \"hold\"",
                "upstreams[0].standalone",
                "one stream",
            ),
            (
                "url = \"http://x\"\nera = \"modern\"",
                "upstreams[0].era",
                "predates",
            ),
            (
                "url = \"http://x\"\nmax_connections = 0",
                "upstreams[0].max_connections",
                "greater than 0",
            ),
            (
                "url = \"http://x\"\ncommand = \"x\"",
                "upstreams[0].command",
                "stdio",
            ),
            (
                "url = \"http://x\"\nmax_children = 2",
                "upstreams[0].max_children",
                "isolation",
            ),
        ];
        for (extra, key, reason) in refused {
            let error = load_str(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(
                error.contains(key) && error.contains(reason),
                "{extra:?} gave {error:?}"
            );
        }
        let http = "[[upstreams]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x\"\n";
        for extra in ["max_connections = 2", "idle_timeout = \"1m\""] {
            let error = load_str(&format!("{http}{extra}")).unwrap_err().to_string();
            let key = extra.split(' ').next().unwrap();
            assert!(error.contains(key), "http with {extra:?} gave {error:?}");
        }
    }

    #[test]
    fn redis_modes_load() {
        let config = load_str(
            "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:7000\", \"redis://b:7001\"]",
        )
        .unwrap();
        assert_eq!(config.redis.mode, RedisMode::Cluster);
        assert_eq!(config.redis.nodes.len(), 2);
        let config = load_str(
            "[redis]\nmode = \"sentinel\"\nsentinels = [\"redis://a:26379\"]\n\
             master_name = \"mymaster\"\ndb = 3\npassword = \"pw\"",
        )
        .unwrap();
        assert_eq!(config.redis.mode, RedisMode::Sentinel);
        assert_eq!(config.redis.master_name.as_deref(), Some("mymaster"));
        assert_eq!(load_str("").unwrap().redis.mode, RedisMode::Standalone);
    }

    #[test]
    fn only_section_key_variables_are_overrides() {
        let vars = [
            ("MCPGATE_SERVER__LISTEN", "0.0.0.0:1"),
            ("MCPGATE_URL", "http://x"),
            ("MCPGATE_BIN_DIR", "/tmp"),
            ("OTHER__THING", "y"),
        ];
        let kept = override_variables(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            vec!["MCPGATE_SERVER__LISTEN"]
        );
    }

    #[test]
    fn upstream_limits_have_defaults_and_are_checked() {
        let http = "[[upstreams]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x\"\n";
        let config = load_str(http).unwrap();
        assert_eq!(config.upstreams[0].max_message_bytes, 8 * 1024 * 1024);
        assert_eq!(config.upstreams[0].unsolicited_per_second.get(), 100);
        for (line, key) in [
            ("max_message_bytes = 100", "upstreams[0].max_message_bytes"),
            (
                "max_message_bytes = 2147483648",
                "upstreams[0].max_message_bytes",
            ),
            ("unsolicited_per_second = 0", "unsolicited_per_second"),
        ] {
            let error = load_str(&format!("{http}{line}")).unwrap_err().to_string();
            assert!(error.contains(key), "{line:?} gave {error:?}");
        }
    }

    #[test]
    fn upstream_urls_print_without_credentials() {
        let printed = |raw: &str| UpstreamUrl(raw.to_owned()).redacted();
        assert_eq!(
            printed("https://u:pw@h:8443/mcp?token=t&flag&a=b#frag"),
            "https://u:<redacted>@h:8443/mcp?token=<redacted>&<redacted>&a=<redacted>#<redacted>"
        );
        assert_eq!(printed("http://h/mcp"), "http://h/mcp");
        assert_eq!(printed("http://u@[::1]:1/"), "http://u@[::1]:1/");
        assert_eq!(printed("not a url with a secret"), "<redacted>");
        let url = UpstreamUrl("http://h/?token=t".into());
        assert_eq!(format!("{url:?}"), "http://h/?token=<redacted>");
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let config = load_str(
            "[[upstreams]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x\"\n\
             headers = { Authorization = \"Bearer hunter2\" }",
        )
        .unwrap();
        let printed = toml::to_string(&config).unwrap();
        assert!(!printed.contains("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(
            config.upstreams[0].headers["Authorization"].expose(),
            "Bearer hunter2"
        );
    }
}

//! Shared harness for the Rust integration tests: real processes, real HTTP, loopback only.
//!
//! [`Gateway::builder`] writes a config file, starts `mcpgate serve` on `127.0.0.1:0` (both the
//! `/mcp` and the admin listener) with the fixture as a stdio upstream named `local`, and
//! optionally a second fixture over Streamable HTTP named `remote`. Every child is killed when
//! the [`Gateway`] is dropped, and its stderr (gateway + stdio children) is kept in a file that
//! is printed when the test panics. Every wait is bounded.
//!
//! Client helpers: [`Gateway::initialize`], [`Gateway::post`], [`Gateway::get`],
//! [`Gateway::delete`], [`Gateway::raw`] (hand-written HTTP/1.1 for headers reqwest would fix
//! up, such as `Host`), [`Reply::assert_error`] for JSON-RPC error bodies and [`SseReader`]
//! for event streams.

pub mod answering;
pub mod hostile;
pub mod redis;
pub mod tls;
pub mod web_intermediaries;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The newest protocol revision the gateway speaks.
pub const LATEST: &str = "2025-11-25";
/// The only revision with JSON-RPC batches.
pub const BATCH_VERSION: &str = "2025-03-26";
/// What a well-behaved client sends on POST.
pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";
/// JSON-RPC error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
pub const SESSION_NOT_FOUND: i64 = -32001;

/// Longest wait for a process to announce its listener.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one ordinary HTTP exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcpgate")
}

fn fixture_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcpgate-fixture")
}

/// An `[[upstreams]]` entry running the fixture over stdio as `name`.
pub fn stdio_upstream(name: &str) -> String {
    format!(
        "[[upstreams]]\nname = {}\ntransport = \"stdio\"\ncommand = {}\nargs = [\"stdio\", \"--name\", {}]\ntimeout = \"10s\"\n",
        toml_str(name),
        toml_str(fixture_bin()),
        toml_str(name)
    )
}

/// A TOML string literal.
pub fn toml_str(text: &str) -> String {
    // JSON string escaping is valid TOML basic-string escaping for everything we write.
    Value::String(text.to_owned()).to_string()
}

/// The `Authorization` header value for API key `key`.
pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A `[[server.auth.api_keys]]` entry admitting `key` as `principal` of `team`.
pub fn api_key_entry(key: &str, principal: &str, team: &str) -> String {
    format!(
        "[[server.auth.api_keys]]\nhash = \"{}\"\nprincipal = \"{principal}\"\nteam = \"{team}\"\n",
        mcpgate::auth::hash_key(key)
    )
}

/// What to start. Lines are raw TOML `key = value` lines added to the named table.
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    server: Vec<String>,
    local: Option<Vec<String>>,
    remote: Option<Vec<String>>,
    extra: String,
    env: Vec<(String, String)>,
}

impl GatewayBuilder {
    /// Adds a `key = value` line under `[server]`.
    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.to_owned());
        self
    }

    /// Adds a `key = value` line to the stdio upstream `local`.
    pub fn local(mut self, line: &str) -> Self {
        self.local
            .get_or_insert_with(Vec::new)
            .push(line.to_owned());
        self
    }

    /// Leaves the stdio upstream `local` out.
    pub fn without_local(mut self) -> Self {
        self.local = None;
        self
    }

    /// Adds the HTTP upstream `remote` at a fixture the test started (and stops) itself.
    pub fn remote_at(self, fixture: &Fixture) -> Self {
        self.toml(&format!(
            "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\ntimeout = \"10s\"",
            toml_str(&fixture.url)
        ))
    }

    /// Also starts `mcpgate-fixture http --name remote` and configures it as upstream `remote`.
    pub fn remote(mut self) -> Self {
        self.remote.get_or_insert_with(Vec::new);
        self
    }

    /// Adds a `key = value` line to the HTTP upstream `remote` (and starts it).
    pub fn remote_line(mut self, line: &str) -> Self {
        self.remote
            .get_or_insert_with(Vec::new)
            .push(line.to_owned());
        self
    }

    /// Appends raw TOML at the end of the file (e.g. more `[[upstreams]]`, or `[session]`).
    pub fn toml(mut self, raw: &str) -> Self {
        self.extra.push('\n');
        self.extra.push_str(raw);
        self.extra.push('\n');
        self
    }

    /// Sets an environment variable for the gateway process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts everything and waits until the gateway listens.
    pub async fn start(self) -> Gateway {
        let dir = tempfile::tempdir().expect("cannot create a temp dir");
        let remote = match &self.remote {
            Some(_) => Some(Fixture::start_http("remote", dir.path()).await),
            None => None,
        };
        let config = self.config_text(remote.as_ref().map(|r| r.url.as_str()));
        let config_path = dir.path().join("mcpgate.toml");
        std::fs::write(&config_path, &config).expect("cannot write the config");
        let log_path = dir.path().join("mcpgate.log");
        let log = std::fs::File::create(&log_path).expect("cannot create the log file");
        let mut command = Command::new(gateway_bin());
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("MCPGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command.spawn().expect("cannot spawn mcpgate");
        let stdout = child.stdout.take().expect("mcpgate has no stdout");
        let lines = read_announcements(stdout, 2, &log_path).await;
        let mcp_url = announced(&lines[0], "listening on ", &log_path);
        let admin_url = announced(&lines[1], "admin on ", &log_path);
        let authority = mcp_url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_owned();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("cannot build the HTTP client");
        Gateway {
            mcp_url,
            admin_url,
            authority,
            http,
            config,
            next_id: AtomicI64::new(1000),
            child,
            remote,
            log_path,
            config_path,
            _dir: dir,
        }
    }

    fn config_text(&self, remote_url: Option<&str>) -> String {
        let mut text = String::new();
        text.push_str("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n");
        for line in &self.server {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
        if let Some(lines) = &self.local {
            text.push_str(&format!(
                "\n[[upstreams]]\nname = \"local\"\ntransport = \"stdio\"\ncommand = {}\nargs = [\"stdio\", \"--name\", \"local\"]\n",
                toml_str(fixture_bin())
            ));
            push_timeout(&mut text, lines);
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        if let (Some(lines), Some(url)) = (&self.remote, remote_url) {
            text.push_str(&format!(
                "\n[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\n",
                toml_str(url)
            ));
            push_timeout(&mut text, lines);
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        text.push_str(&self.extra);
        text
    }
}

/// A 10 s upstream timeout unless the test sets its own.
fn push_timeout(text: &mut String, lines: &[String]) {
    if !lines.iter().any(|l| l.trim_start().starts_with("timeout")) {
        text.push_str("timeout = \"10s\"\n");
    }
}

/// Reads the first `count` stdout lines, then keeps draining stdout in the background.
async fn read_announcements(stdout: ChildStdout, count: usize, log: &Path) -> Vec<String> {
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    while lines.len() < count {
        match tokio::time::timeout_at(deadline, reader.next_line()).await {
            Ok(Ok(Some(line))) => lines.push(line),
            Ok(Ok(None)) | Ok(Err(_)) => panic!(
                "the process exited before announcing its listeners (got {lines:?})\n--- log ---\n{}",
                read_log(log)
            ),
            Err(_) => panic!(
                "no listener announcement within {START_TIMEOUT:?} (got {lines:?})\n--- log ---\n{}",
                read_log(log)
            ),
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = reader.next_line().await {} });
    lines
}

fn announced(line: &str, prefix: &str, log: &Path) -> String {
    line.strip_prefix(prefix)
        .unwrap_or_else(|| {
            panic!(
                "expected {prefix:?}, got {line:?}\n--- log ---\n{}",
                read_log(log)
            )
        })
        .trim()
        .to_owned()
}

fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(16 * 1024);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// A fixture process serving Streamable HTTP (or the legacy HTTP+SSE transport).
pub struct Fixture {
    pub url: String,
    child: Child,
    log_path: PathBuf,
}

impl Fixture {
    pub async fn start_http(name: &str, dir: &Path) -> Fixture {
        Fixture::start_http_at(name, dir, "127.0.0.1:0").await
    }

    /// Starts on a given address, e.g. the one of a fixture that was stopped.
    pub async fn start_http_at(name: &str, dir: &Path, listen: &str) -> Fixture {
        Fixture::start_http_with(name, dir, listen, &[]).await
    }

    /// Starts one that serves only protocol 2026-07-28 (`--modern-only`).
    pub async fn start_http_modern_only(name: &str, dir: &Path) -> Fixture {
        Fixture::start_http_with(name, dir, "127.0.0.1:0", &["--modern-only"]).await
    }

    /// Starts one serving the legacy HTTP+SSE transport; its `url` is the GET stream's.
    pub async fn start_sse(name: &str, dir: &Path) -> Fixture {
        Fixture::start_mode("sse", name, dir, "127.0.0.1:0", &[]).await
    }

    async fn start_http_with(name: &str, dir: &Path, listen: &str, extra: &[&str]) -> Fixture {
        Fixture::start_mode("http", name, dir, listen, extra).await
    }

    async fn start_mode(
        mode: &str,
        name: &str,
        dir: &Path,
        listen: &str,
        extra: &[&str],
    ) -> Fixture {
        let log_path = dir.join(format!("fixture-{name}.log"));
        let log = std::fs::File::create(&log_path).expect("cannot create the fixture log");
        let mut child = Command::new(fixture_bin())
            .args([mode, "--listen", listen, "--name", name])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("cannot spawn mcpgate-fixture");
        let stdout = child.stdout.take().expect("fixture has no stdout");
        let lines = read_announcements(stdout, 1, &log_path).await;
        let url = announced(&lines[0], "listening on ", &log_path);
        Fixture {
            url,
            child,
            log_path,
        }
    }
}

impl Fixture {
    /// `127.0.0.1:PORT` of the listener.
    pub fn address(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .to_owned()
    }

    /// `http://127.0.0.1:PORT`, without the endpoint's path.
    fn base(&self) -> &str {
        self.url
            .rsplit_once('/')
            .map_or(&self.url, |(base, _)| base)
    }

    /// The fixture's count of open MCP sessions.
    pub async fn open_sessions(&self) -> u64 {
        let url = format!("{}/sessions", self.base());
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body["open"].as_u64().expect("open count")
    }

    /// How many TCP connections an HTTP fixture has accepted (this query's own included).
    pub async fn accepted_connections(&self) -> u64 {
        let url = format!("{}/connections", self.base());
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body["accepted"].as_u64().expect("accepted count")
    }

    /// Ends every connection of an SSE fixture, as a network failure would; how many there were.
    pub async fn drop_connections(&self) -> u64 {
        let url = format!("{}/drop-connections", self.base());
        let reply = reqwest::Client::new().post(url).send().await.unwrap();
        let body: Value = reply.json().await.unwrap();
        body["dropped"].as_u64().expect("dropped count")
    }

    /// Stops the process and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A running gateway.
pub struct Gateway {
    /// `http://127.0.0.1:PORT/mcp`
    pub mcp_url: String,
    /// `http://127.0.0.1:PORT`
    pub admin_url: String,
    /// `127.0.0.1:PORT` of the `/mcp` listener.
    pub authority: String,
    pub http: reqwest::Client,
    /// The config file it was started with.
    pub config: String,
    next_id: AtomicI64,
    child: Child,
    remote: Option<Fixture>,
    log_path: PathBuf,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- mcpgate config ---\n{}", self.config);
            eprintln!("--- mcpgate log (tail) ---\n{}", read_log(&self.log_path));
            if let Some(remote) = &self.remote {
                eprintln!(
                    "--- remote fixture log (tail) ---\n{}",
                    read_log(&remote.log_path)
                );
            }
        }
    }
}

/// A session as the client knows it.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// Sent as `MCP-Protocol-Version` by [`Gateway::post`] and friends.
    pub version: String,
}

impl Session {
    /// A session id the gateway never issued, in the gateway's own format (43 base64url chars).
    pub fn unknown() -> Session {
        Session {
            id: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            version: LATEST.into(),
        }
    }

    /// A session id the gateway could never have issued.
    pub fn malformed() -> Session {
        Session {
            id: "not a session id!".into(),
            version: LATEST.into(),
        }
    }
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            server: Vec::new(),
            local: Some(Vec::new()),
            remote: None,
            extra: String::new(),
            env: Vec::new(),
        }
    }

    /// The default setup: the stdio fixture as `local`.
    pub async fn start() -> Gateway {
        Self::builder().start().await
    }

    /// The configuration file it watches.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces its configuration file at once (written aside, then renamed over it), as a
    /// deploy tool would; the gateway sees it at its next check.
    pub fn rewrite_config(&self, text: &str) {
        let aside = self.config_path.with_extension("new");
        std::fs::write(&aside, text).expect("cannot write the new config");
        std::fs::rename(&aside, &self.config_path).expect("cannot replace the config");
    }

    /// Sends the gateway SIGHUP.
    pub fn hang_up(&self) {
        self.signal(nix::sys::signal::Signal::SIGHUP);
    }

    /// Sends the gateway SIGTERM.
    pub fn terminate(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).expect("cannot signal");
    }

    /// How the process ended; it must end `within`.
    pub async fn exit_status(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the gateway did not exit in time")
            .expect("cannot wait for the gateway")
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the gateway has exited")
    }

    /// Process ids of the gateway's direct children (its stdio upstreams).
    pub fn child_pids(&self) -> Vec<u32> {
        let pid = self.pid();
        let path = format!("/proc/{pid}/task/{pid}/children");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Everything the gateway (and its stdio children) logged so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path)
    }

    /// A fresh JSON-RPC request id.
    pub fn next_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// `initialize` with the newest revision and no client capabilities.
    pub async fn initialize(&self) -> Session {
        self.initialize_with(LATEST, json!({})).await
    }

    /// `initialize` with a given revision and client capabilities, then `notifications/initialized`.
    pub async fn initialize_with(&self, version: &str, capabilities: Value) -> Session {
        let body = json!({
            "jsonrpc": "2.0",
            "id": self.next_id(),
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": capabilities,
                "clientInfo": {"name": "mcpgate-tests", "version": "0"}
            }
        });
        let reply = self.post(None, body.to_string(), &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "initialize failed: {reply:?}");
        let id = reply
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("initialize answered without Mcp-Session-Id: {reply:?}"));
        let result = &reply.json()["result"];
        assert_eq!(
            result["protocolVersion"],
            json!(version),
            "negotiated version: {reply:?}"
        );
        let session = Session {
            id,
            version: version.to_owned(),
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let reply = self.post(Some(&session), note.to_string(), &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "notifications/initialized: {reply:?}"
        );
        session
    }

    /// Initializes a session as the caller with API key `key` (see [`api_key_entry`]).
    pub async fn initialize_as(&self, key: &str) -> Session {
        let authorization = bearer(key);
        let body = json!({"jsonrpc": "2.0", "id": self.next_id(), "method": "initialize", "params": {
            "protocolVersion": LATEST, "capabilities": {},
            "clientInfo": {"name": "mcpgate-tests", "version": "0"}}});
        let headers = [("authorization", authorization.as_str())];
        let reply = self.post(None, body.to_string(), &headers).await;
        assert_eq!(reply.status, StatusCode::OK, "initialize failed: {reply:?}");
        let session = Session {
            id: reply.header("mcp-session-id").expect("a session id"),
            version: LATEST.into(),
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let reply = self.post(Some(&session), note.to_string(), &headers).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
        session
    }

    /// The headers a well-behaved client sends, with `overrides` applied: a pair with an empty
    /// value removes that header, any other pair replaces it.
    pub fn headers(
        &self,
        session: Option<&Session>,
        defaults: &[(&str, &str)],
        overrides: &[(&str, &str)],
    ) -> HeaderMap {
        let mut map = HeaderMap::new();
        let mut set = |name: &str, value: &str| {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("bad header name");
            if value.is_empty() {
                map.remove(&name);
            } else {
                map.insert(
                    name,
                    HeaderValue::from_bytes(value.as_bytes()).expect("bad header value"),
                );
            }
        };
        for (name, value) in defaults {
            set(name, value);
        }
        if let Some(session) = session {
            set("mcp-session-id", &session.id);
            set("mcp-protocol-version", &session.version);
        }
        for (name, value) in overrides {
            set(name, value);
        }
        map
    }

    /// POST /mcp with a client's usual headers (see [`Gateway::headers`] for `overrides`).
    pub async fn post(
        &self,
        session: Option<&Session>,
        body: impl Into<reqwest::Body>,
        overrides: &[(&str, &str)],
    ) -> Reply {
        let headers = self.headers(
            session,
            &[
                ("content-type", "application/json"),
                ("accept", ACCEPT_BOTH),
            ],
            overrides,
        );
        let request = self
            .http
            .post(&self.mcp_url)
            .headers(headers)
            .body(body)
            .timeout(REQUEST_TIMEOUT);
        Reply::read(request.send().await.expect("POST /mcp failed")).await
    }

    /// POST /mcp returning as soon as the response headers arrive (for SSE answers that need
    /// the client to act before they end).
    pub async fn post_stream(&self, session: Option<&Session>, body: &Value) -> reqwest::Response {
        let headers = self.headers(
            session,
            &[
                ("content-type", "application/json"),
                ("accept", ACCEPT_BOTH),
            ],
            &[],
        );
        let send = self
            .http
            .post(&self.mcp_url)
            .headers(headers)
            .body(body.to_string())
            .send();
        tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .expect("POST /mcp: no response headers in time")
            .expect("POST /mcp failed")
    }

    /// POST of a JSON value.
    pub async fn post_json(&self, session: Option<&Session>, body: &Value) -> Reply {
        self.post(session, body.to_string(), &[]).await
    }

    /// One request; returns the whole reply.
    pub async fn request(&self, session: &Session, method: &str, params: Value) -> Reply {
        let body =
            json!({"jsonrpc": "2.0", "id": self.next_id(), "method": method, "params": params});
        self.post_json(Some(session), &body).await
    }

    /// `tools/call`; asserts a 200 JSON answer and returns the JSON-RPC response.
    pub async fn call_tool(&self, session: &Session, name: &str, arguments: Value) -> Value {
        let reply = self
            .request(
                session,
                "tools/call",
                json!({"name": name, "arguments": arguments}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "tools/call {name}: {reply:?}");
        assert!(
            reply.content_type().starts_with("application/json"),
            "tools/call {name}: {reply:?}"
        );
        reply.json()
    }

    /// Calls `remote__echo` (the HTTP fixture named `remote`) on `session` and asserts that
    /// `text` comes back.
    pub async fn assert_remote_echo(&self, session: &Session, text: &str) {
        let response = self
            .call_tool(session, "remote__echo", json!({"text": text}))
            .await;
        assert_eq!(response["result"]["content"][0]["text"], json!(text));
    }

    /// Asserts that `local__echo` works on `session`.
    pub async fn assert_echo(&self, session: &Session, context: &str) {
        let text = format!("still alive after {context}");
        let response = self
            .call_tool(session, "local__echo", json!({"text": text}))
            .await;
        assert_eq!(
            response["result"]["content"][0]["text"],
            json!(text),
            "local__echo after {context}: {response}"
        );
    }

    /// The tool names `tools/list` shows on `session`.
    pub async fn tool_names(&self, session: &Session) -> Vec<String> {
        let reply = self.request(session, "tools/list", json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "tools/list: {reply:?}");
        let body = reply.json();
        body["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list without tools: {body}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// GET /mcp with `Accept: text/event-stream` (see [`Gateway::headers`] for `overrides`).
    /// Returns the response as soon as its headers arrive.
    pub async fn get(
        &self,
        session: Option<&Session>,
        overrides: &[(&str, &str)],
    ) -> reqwest::Response {
        let headers = self.headers(session, &[("accept", "text/event-stream")], overrides);
        let send = self.http.get(&self.mcp_url).headers(headers).send();
        tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .expect("GET /mcp: no response headers in time")
            .expect("GET /mcp failed")
    }

    /// GET /mcp that is expected to be refused: reads the whole (short) body.
    pub async fn get_reply(&self, session: Option<&Session>, overrides: &[(&str, &str)]) -> Reply {
        Reply::read(self.get(session, overrides).await).await
    }

    /// DELETE /mcp.
    pub async fn delete(&self, session: Option<&Session>, overrides: &[(&str, &str)]) -> Reply {
        let headers = self.headers(session, &[], overrides);
        let request = self
            .http
            .delete(&self.mcp_url)
            .headers(headers)
            .timeout(REQUEST_TIMEOUT);
        Reply::read(request.send().await.expect("DELETE /mcp failed")).await
    }

    /// Any method on /mcp, with exactly the given headers.
    pub async fn method(&self, method: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("bad method");
        let headers = self.headers(None, headers, &[]);
        let request = self
            .http
            .request(method, &self.mcp_url)
            .headers(headers)
            .body(body.to_owned())
            .timeout(REQUEST_TIMEOUT);
        Reply::read(request.send().await.expect("request to /mcp failed")).await
    }

    /// The value of the first `/metrics` line starting with `line_prefix` (e.g.
    /// `mcpgate_sessions_revived_total`), 0 when there is none.
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text = self.admin("/metrics").await.text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(line_prefix)
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Waits, at most `limit`, until the metric `line_prefix` is `want`, from above or below;
    /// returns its last value (metrics move a moment after the event they count).
    pub async fn metric_reaching(&self, line_prefix: &str, want: f64, limit: Duration) -> f64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let value = self.metric(line_prefix).await;
            if value == want || tokio::time::Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET on the admin listener.
    pub async fn admin(&self, path: &str) -> Reply {
        let request = self
            .http
            .get(format!("{}{path}", self.admin_url))
            .timeout(REQUEST_TIMEOUT);
        Reply::read(request.send().await.expect("admin request failed")).await
    }

    /// A hand-written HTTP/1.1 request to the `/mcp` listener, for what reqwest would not send
    /// as is (a foreign `Host`, a chunked body of our choosing). `headers` are sent verbatim;
    /// `Host` (unless given), `Connection: close` and, without `Transfer-Encoding`,
    /// `Content-Length` are added. The body is sent as given.
    pub async fn raw(&self, method: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut head = format!("{method} /mcp HTTP/1.1\r\n");
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !has("host") {
            head.push_str(&format!("Host: {}\r\n", self.authority));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !has("transfer-encoding") && !has("content-length") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .expect("cannot connect");
            stream
                .write_all(head.as_bytes())
                .await
                .expect("cannot write the request head");
            // The server may answer (and close) before reading the whole body: ignore write errors.
            let _ = stream.write_all(body).await;
            let mut answer = Vec::new();
            let mut buffer = [0u8; 8192];
            // Stop at the end of the response (Content-Length) rather than waiting for the close.
            while !response_complete(&answer) {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                }
            }
            answer
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .expect("raw HTTP exchange timed out");
        Reply::parse_raw(&answer)
    }
}

/// Whether `answer` holds a whole HTTP response with a `Content-Length` (or a chunked body's end).
fn response_complete(answer: &[u8]) -> bool {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let body = &answer[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(length) => body.len() >= length,
        None => false,
    }
}

/// A chunked request body, as raw bytes (for [`Gateway::raw`]).
pub fn chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for chunk in chunks {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// A whole HTTP answer.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {:?} {}", self.status, self.headers, self.text())
    }
}

impl Reply {
    /// Reads a response to its end (bounded in time).
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.bytes())
            .await
            .expect("response body did not end in time")
            .expect("cannot read the response body");
        Reply {
            status,
            headers,
            body: body.to_vec(),
        }
    }

    fn parse_raw(answer: &[u8]) -> Reply {
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(answer)));
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let code: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':')
                && let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.trim().as_bytes()),
                    HeaderValue::from_str(value.trim()),
                )
            {
                headers.append(name, value);
            }
        }
        let mut body = answer[split + 4..].to_vec();
        let is_chunked = headers
            .get("transfer-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if is_chunked {
            body = dechunk(&body);
        }
        Reply {
            status: StatusCode::from_u16(code).expect("bad status"),
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn content_type(&self) -> String {
        self.header("content-type").unwrap_or_default()
    }

    /// Asserts an HTTP status with a JSON-RPC error body of `code` whose message contains every
    /// one of `needles` (case-insensitive). Returns the body.
    pub fn assert_error(&self, status: u16, code: i64, needles: &[&str]) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status: {self:?}");
        assert!(
            self.content_type().starts_with("application/json"),
            "error body is not JSON: {self:?}"
        );
        let body = self.json();
        assert_eq!(
            body["jsonrpc"],
            json!("2.0"),
            "not a JSON-RPC message: {self:?}"
        );
        assert!(
            body.get("id").is_some(),
            "JSON-RPC error without id (must be null when unknown): {self:?}"
        );
        assert!(
            body.get("result").is_none(),
            "error with a result: {self:?}"
        );
        assert_eq!(
            body["error"]["code"],
            json!(code),
            "unexpected JSON-RPC error code: {self:?}"
        );
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        for needle in needles {
            assert!(
                message.contains(&needle.to_ascii_lowercase()),
                "error message {message:?} does not mention {needle:?}: {self:?}"
            );
        }
        body
    }

    /// The body parsed as a complete SSE stream.
    pub fn sse_events(&self) -> Vec<SseEvent> {
        assert!(
            self.content_type().starts_with("text/event-stream"),
            "not an SSE response: {self:?}"
        );
        let mut parser = SseParser::default();
        parser.push(&self.body);
        let mut events = parser.drain();
        events.extend(parser.finish());
        events
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&body[..end]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            return out;
        };
        if size == 0 || body.len() < end + 2 + size {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[(end + 4 + size).min(body.len())..];
    }
}

/// One SSE event (comments are skipped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    /// `None` when the event had no `data` field at all.
    pub data: Option<String>,
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        let data = self.data.as_deref().unwrap_or_default();
        serde_json::from_str(data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {self:?}"))
    }

    /// The stream and sequence parts of a `<stream>-<seq>` id.
    pub fn id_parts(&self) -> (String, u64) {
        let id = self
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("event without id: {self:?}"));
        let (stream, seq) = id
            .rsplit_once('-')
            .unwrap_or_else(|| panic!("event id {id:?} is not <stream>-<seq>"));
        let seq = seq
            .parse()
            .unwrap_or_else(|_| panic!("event id {id:?}: sequence is not a number"));
        (stream.to_owned(), seq)
    }
}

/// Incremental SSE parser (text/event-stream rules: `\n`, `\r\n` or `\r` line ends).
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_field: bool,
    ready: Vec<SseEvent>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        loop {
            let Some(end) = self.buffer.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                return;
            };
            // A lone `\r` at the end of the buffer may be the first half of `\r\n`.
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                return;
            }
            let skip = if self.buffer[end] == b'\r' && self.buffer.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
            self.buffer.drain(..end + skip);
            self.line(&line);
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if self.has_field {
                self.ready.push(std::mem::take(&mut self.current));
                self.has_field = false;
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        self.has_field = true;
        match field {
            "id" => self.current.id = Some(value.to_owned()),
            "event" => self.current.event = Some(value.to_owned()),
            "retry" => self.current.retry = value.parse().ok(),
            "data" => match &mut self.current.data {
                None => self.current.data = Some(value.to_owned()),
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
            },
            _ => {}
        }
    }

    fn drain(&mut self) -> Vec<SseEvent> {
        std::mem::take(&mut self.ready)
    }

    /// Dispatches a last event not followed by a blank line (the stream ended abruptly).
    fn finish(&mut self) -> Option<SseEvent> {
        self.has_field.then(|| {
            self.has_field = false;
            std::mem::take(&mut self.current)
        })
    }
}

/// Reads events from a live SSE response.
pub struct SseReader {
    response: reqwest::Response,
    parser: SseParser,
    pending: std::collections::VecDeque<SseEvent>,
    /// The server ended the response.
    pub ended: bool,
}

impl SseReader {
    /// Wraps a response after checking it is a 200 event stream.
    pub fn new(response: reqwest::Response) -> SseReader {
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "expected an SSE stream: {response:?}"
        );
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "expected text/event-stream, got {content_type:?}"
        );
        SseReader {
            response,
            parser: SseParser::default(),
            pending: Default::default(),
            ended: false,
        }
    }

    /// The next event, or `None` when the stream ended ([`SseReader::ended`]) or `wait` passed.
    pub async fn next_event(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => {
                    self.parser.push(&bytes);
                    self.pending.extend(self.parser.drain());
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    self.ended = true;
                    self.pending.extend(self.parser.finish());
                }
            }
        }
    }

    /// Events up to and including the first one for which `done` holds; panics after `wait`.
    pub async fn until(
        &mut self,
        wait: Duration,
        mut done: impl FnMut(&SseEvent) -> bool,
    ) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(event) => {
                    let stop = done(&event);
                    events.push(event);
                    if stop {
                        return events;
                    }
                }
                None if self.ended => {
                    panic!("SSE stream ended before the expected event; got {events:#?}")
                }
                None => panic!("no expected SSE event within {wait:?}; got {events:#?}"),
            }
        }
    }

    /// Every event until the server ends the stream; panics after `wait`.
    pub async fn until_end(&mut self, wait: Duration) -> Vec<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(event) => events.push(event),
                None if self.ended => return events,
                None => panic!("SSE stream did not end within {wait:?}; got {events:#?}"),
            }
        }
    }
}

/// Runs `mcpgate check-config` on a config text; returns (success, stdout, stderr).
pub async fn check_config(config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("cannot create a temp dir");
    let path = dir.path().join("check.toml");
    std::fs::write(&path, config).expect("cannot write the config");
    let run = Command::new(gateway_bin())
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(REQUEST_TIMEOUT, run)
        .await
        .expect("check-config did not finish in time")
        .expect("cannot run check-config");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

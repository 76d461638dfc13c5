//! Shared stdio upstreams (`isolation = "shared"`, the default): one child process per
//! replica, shared by every session this replica serves.
//!
//! The connection (id rewriting, attribution, the clean environment, bounded lines) is in
//! `child.rs`. A message the child sends on its own (sampling, elicitation, roots, logging) is
//! attributed to the session with requests in flight when exactly one session has; otherwise
//! it cannot be attributed safely: a request is refused with the reason (no session, or
//! several sessions, have requests in flight), a log message is dropped.
//! A child that dies is restarted with exponential backoff; its in-flight requests fail.
//! An upstream retired by a live reload stops its child the stdio way once the child has no
//! request in flight (or after the upstream's `timeout`), and restarts it no more.
//!
//! The child is initialized once, on the gateway's behalf, with every client capability the
//! gateway can relay (sampling, elicitation in both modes, roots), since the sessions sharing it
//! declared different ones. Whether the session a request is attributed to may receive it is
//! decided in dispatch (`dispatch/capabilities.rs`), which answers the child with an error when
//! that session's client did not declare the capability. `isolated.rs` gives each team or
//! session a child of its own instead.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::child::{self, Audience, Connection, Wire};
use super::outlet::Outlet;
use super::{InitInfo, UpstreamError, UpstreamEvent};
use crate::config::UpstreamConfig;
use crate::protocol::ProtocolVersion;
use crate::protocol::jsonrpc::{Message, Request, RequestId};
use crate::session::{SessionId, UpstreamSession};
use crate::sync::lock;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that lived this long is considered healthy again: backoff restarts from the bottom.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

enum Link {
    Starting,
    Up(Arc<Connection>),
    Down(String),
}

struct Shared {
    wire: Arc<Wire>,
    link: Mutex<Link>,
    last_init: Mutex<Option<Arc<InitInfo>>>,
    /// Cancelled when the upstream is retired: the supervisor stops the child and ends.
    retired: CancellationToken,
}

/// A supervised stdio child.
pub struct StdioUpstream {
    shared: Arc<Shared>,
}

impl StdioUpstream {
    /// Starts the supervisor, which spawns the child and keeps it running.
    pub fn start(config: &UpstreamConfig, outlet: Outlet) -> Self {
        let wire = Wire {
            name: config.name.clone(),
            outlet,
            max_message_bytes: config.max_message_bytes,
            audience: Audience::Replica,
        };
        let shared = Arc::new(Shared {
            wire: Arc::new(wire),
            link: Mutex::new(Link::Starting),
            last_init: Mutex::new(None),
            retired: CancellationToken::new(),
        });
        tokio::spawn(supervise(shared.clone(), config.clone()));
        Self { shared }
    }

    /// The last `initialize` answer, shared with [`super::Upstream::has_capability`].
    pub fn last_init(&self) -> &Mutex<Option<Arc<InitInfo>>> {
        &self.shared.last_init
    }

    /// Whether the first start attempt is still under way.
    pub fn is_starting(&self) -> bool {
        matches!(*lock(&self.shared.link), Link::Starting)
    }

    /// Whether a child is running and initialized.
    pub fn is_up(&self) -> bool {
        matches!(*lock(&self.shared.link), Link::Up(_))
    }

    /// The child is shared, so there is nothing per session to open; report its state.
    pub async fn open_session(&self) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let connection = self.connection()?;
        let init = connection
            .init()
            .ok_or_else(|| self.unavailable("still starting"))?;
        Ok((upstream_session(&init), init))
    }

    pub async fn request(
        &self,
        ctx: &super::CallContext,
        request: Request,
    ) -> Result<mpsc::Receiver<UpstreamEvent>, UpstreamError> {
        let connection = self.connection()?;
        connection
            .request(&ctx.session, request)
            .await
            .map_err(|e| self.transport(e))
    }

    /// Writes a notification or a response to the child.
    pub async fn send(&self, message: Message) -> Result<(), UpstreamError> {
        let connection = self.connection()?;
        connection
            .send(message)
            .await
            .map_err(|e| self.transport(e))
    }

    /// Cancels the session's request that the client knows as `client_id`.
    pub async fn cancel(&self, session: &SessionId, client_id: &RequestId, reason: &str) {
        if let Ok(connection) = self.connection() {
            connection.cancel(session, client_id, reason).await;
        }
    }

    /// Stops the child for good once it has no request in flight (looked at every `poll`),
    /// or after `limit`.
    pub async fn retire(&self, limit: Duration, poll: Duration) {
        if let Ok(connection) = self.connection() {
            let deadline = tokio::time::Instant::now() + limit;
            while connection.idle_for().is_none() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(poll).await;
            }
        }
        self.shared.retired.cancel();
    }

    fn connection(&self) -> Result<Arc<Connection>, UpstreamError> {
        match &*lock(&self.shared.link) {
            Link::Up(connection) => Ok(connection.clone()),
            Link::Starting => Err(self.unavailable("still starting")),
            Link::Down(reason) => Err(self.unavailable(reason)),
        }
    }

    fn unavailable(&self, reason: &str) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.shared.wire.name.clone(),
            reason: reason.to_owned(),
        }
    }

    fn transport(&self, error: std::io::Error) -> UpstreamError {
        UpstreamError::Transport {
            upstream: self.shared.wire.name.clone(),
            reason: error.to_string(),
        }
    }
}

/// The last holder of the upstream is gone (a reload replaced it, or the gateway ends): the
/// child is stopped, and not restarted.
impl Drop for StdioUpstream {
    fn drop(&mut self) {
        self.shared.retired.cancel();
    }
}

/// What a session records of a stdio child: no upstream session id, the revision it speaks.
pub(super) fn upstream_session(init: &InitInfo) -> UpstreamSession {
    UpstreamSession {
        session_id: None,
        protocol_version: Some(init.protocol_version.clone()),
    }
}

/// Why a retired upstream's requests are refused.
const RETIRED: &str = "removed from the configuration";

/// Keeps the child running: spawn, handshake, serve until it exits, back off, repeat; until
/// the upstream is retired.
async fn supervise(shared: Arc<Shared>, config: UpstreamConfig) {
    let mut backoff = FIRST_BACKOFF;
    while !shared.retired.is_cancelled() {
        let started = Instant::now();
        let reason = match run_child(&shared, &config).await {
            Ok(status) => format!("process exited ({status})"),
            Err(reason) => reason,
        };
        if shared.retired.is_cancelled() {
            break;
        }
        tracing::warn!(upstream = %shared.wire.name, %reason, retry_in = ?backoff, "stdio upstream is down");
        *lock(&shared.link) = Link::Down(reason);
        if started.elapsed() > HEALTHY_AFTER {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.retired.cancelled() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    *lock(&shared.link) = Link::Down(RETIRED.into());
    tracing::info!(upstream = %shared.wire.name, "stdio upstream retired; its child is stopped");
}

/// Runs one child until it exits, or until the upstream is retired (then it is stopped).
/// Returns how it ended.
async fn run_child(shared: &Arc<Shared>, config: &UpstreamConfig) -> Result<String, String> {
    let params = gateway_params();
    let mut process = child::start(shared.wire.clone(), config, &config.env, &params).await?;
    *lock(&shared.last_init) = Some(process.init.clone());
    if shared.retired.is_cancelled() {
        process.stop().await;
        process.finish(&shared.wire);
        return Ok("stopped: retired".into());
    }
    come_up(shared, &process.connection, &process.init);
    let result = tokio::select! {
        status = process.child.wait() => status.map(|s| s.to_string()).map_err(|e| e.to_string()),
        _ = shared.retired.cancelled() => {
            process.stop().await;
            Ok("stopped: retired".into())
        }
    };
    process.finish(&shared.wire);
    result
}

/// The child serves from now on; a child that replaces one that went down is a recovery.
fn come_up(shared: &Shared, connection: &Arc<Connection>, init: &InitInfo) {
    let previous = std::mem::replace(&mut *lock(&shared.link), Link::Up(connection.clone()));
    tracing::info!(upstream = %shared.wire.name, "stdio upstream is up");
    if let Link::Down(_) = previous {
        super::announce_recovery(&shared.wire.outlet, &shared.wire.name, init);
    }
}

/// The `initialize` params of a shared child: mcpgate itself, with every client capability
/// the gateway can relay.
fn gateway_params() -> Value {
    super::initialize_params(
        ProtocolVersion::LATEST.as_str(),
        &json!({"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")}),
        &super::relayable_capabilities(),
    )
}

//! stdio upstreams: one child process per replica, shared by every session this replica serves.
//!
//! Request ids are rewritten to ids unique on the child's connection, and progress tokens to
//! the same number, so answers never cross sessions. A message the child sends on its own
//! (sampling, elicitation, roots, logging) is attributed to the session with requests in flight
//! when exactly one session has; otherwise it cannot be attributed safely: a request is
//! refused with the reason (no session, or several sessions, have requests in flight).
//! A child that dies is restarted with exponential backoff; its in-flight requests fail.
//!
//! The child is initialized once, on the gateway's behalf, with every client capability the
//! gateway can relay (sampling, elicitation in both modes, roots), since the sessions sharing it
//! declared different ones. Whether the session a request is attributed to may receive it is
//! decided in dispatch (`dispatch/capabilities.rs`), which answers the child with an error when
//! that session's client did not declare the capability.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use super::{
    InitInfo, Unsolicited, UnsolicitedSink, UpstreamError, UpstreamEvent, request_channel,
};
use crate::config::UpstreamConfig;
use crate::jsonrpc::{
    Message, Notification, Request, RequestId, Response, error_value, notification_value,
};
use crate::protocol::ProtocolVersion;
use crate::session::{SessionId, UpstreamSession};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that lived this long is considered healthy again: backoff restarts from the bottom.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A request forwarded to the child and not yet answered.
struct Pending {
    session: SessionId,
    client_id: RequestId,
    progress_token: Option<Value>,
    reply: mpsc::Sender<UpstreamEvent>,
}

/// One running child.
struct Connection {
    stdin: tokio::sync::Mutex<ChildStdin>,
    next_id: AtomicI64,
    pending: Mutex<HashMap<i64, Pending>>,
    /// Server-to-client requests by the child's id, to the session they were sent to.
    server_requests: Mutex<HashMap<RequestId, SessionId>>,
    init: Mutex<Option<InitInfo>>,
}

enum Link {
    Starting,
    Up(Arc<Connection>),
    Down(String),
}

struct Shared {
    name: String,
    link: Mutex<Link>,
    last_init: Mutex<Option<InitInfo>>,
    sink: UnsolicitedSink,
}

/// A supervised stdio child.
pub struct StdioUpstream {
    shared: Arc<Shared>,
}

impl StdioUpstream {
    /// Starts the supervisor, which spawns the child and keeps it running.
    pub fn start(config: &UpstreamConfig, sink: UnsolicitedSink) -> Self {
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            link: Mutex::new(Link::Starting),
            last_init: Mutex::new(None),
            sink,
        });
        tokio::spawn(supervise(shared.clone(), config.clone()));
        Self { shared }
    }

    /// The last `initialize` answer, shared with [`super::Upstream::has_capability`].
    pub fn last_init(&self) -> &Mutex<Option<InitInfo>> {
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
    pub async fn open_session(&self) -> Result<(UpstreamSession, InitInfo), UpstreamError> {
        let connection = self.connection()?;
        let init = lock(&connection.init)
            .clone()
            .ok_or_else(|| self.unavailable("still starting"))?;
        let session = UpstreamSession {
            session_id: None,
            protocol_version: Some(init.protocol_version.clone()),
        };
        Ok((session, init))
    }

    pub async fn request(
        &self,
        ctx: &super::CallContext,
        request: Request,
    ) -> Result<mpsc::Receiver<UpstreamEvent>, UpstreamError> {
        let connection = self.connection()?;
        let id = connection.next_id.fetch_add(1, Ordering::Relaxed);
        let mut params = request.params.clone();
        let progress_token = params.as_mut().and_then(|p| rewrite_progress_token(p, id));
        let (reply, receiver) = request_channel();
        let pending = Pending {
            session: ctx.session.clone(),
            client_id: request.id.clone(),
            progress_token,
            reply,
        };
        lock(&connection.pending).insert(id, pending);
        let line =
            crate::jsonrpc::request_value(&RequestId::Number(id), &request.method, params.as_ref());
        if let Err(e) = write_line(&connection, &line).await {
            lock(&connection.pending).remove(&id);
            return Err(self.transport(e));
        }
        Ok(receiver)
    }

    /// Writes a notification or a response to the child.
    pub async fn send(&self, message: Message) -> Result<(), UpstreamError> {
        let connection = self.connection()?;
        if let Message::Response(response) = &message {
            lock(&connection.server_requests).remove(&response.id);
        }
        write_line(&connection, &message.to_value())
            .await
            .map_err(|e| self.transport(e))
    }

    /// Cancels the session's request that the client knows as `client_id`.
    pub async fn cancel(&self, session: &SessionId, client_id: &RequestId, reason: &str) {
        let Ok(connection) = self.connection() else {
            return;
        };
        let id = {
            let mut pending = lock(&connection.pending);
            let found = pending
                .iter()
                .find(|(_, p)| &p.session == session && &p.client_id == client_id);
            let Some((&id, _)) = found else { return };
            pending.remove(&id);
            id
        };
        let params = json!({"requestId": id, "reason": reason});
        let _ = write_line(
            &connection,
            &notification_value("notifications/cancelled", Some(&params)),
        )
        .await;
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
            upstream: self.shared.name.clone(),
            reason: reason.to_owned(),
        }
    }

    fn transport(&self, error: std::io::Error) -> UpstreamError {
        UpstreamError::Transport {
            upstream: self.shared.name.clone(),
            reason: error.to_string(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Replaces `params._meta.progressToken` with our id; returns the client's token.
fn rewrite_progress_token(params: &mut Value, id: i64) -> Option<Value> {
    let token = params.get_mut("_meta")?.get_mut("progressToken")?;
    Some(std::mem::replace(token, json!(id)))
}

async fn write_line(connection: &Connection, message: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut stdin = connection.stdin.lock().await;
    stdin.write_all(&line).await?;
    stdin.flush().await
}

/// Keeps the child running: spawn, handshake, serve until it exits, back off, repeat.
async fn supervise(shared: Arc<Shared>, config: UpstreamConfig) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let reason = match run_child(&shared, &config).await {
            Ok(status) => format!("process exited ({status})"),
            Err(reason) => reason,
        };
        tracing::warn!(upstream = %shared.name, %reason, retry_in = ?backoff, "stdio upstream is down");
        *lock(&shared.link) = Link::Down(reason);
        if started.elapsed() > HEALTHY_AFTER {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs one child to completion. Returns how it ended.
async fn run_child(shared: &Arc<Shared>, config: &UpstreamConfig) -> Result<String, String> {
    let mut child = spawn(config).map_err(|e| {
        format!(
            "cannot start {:?}: {e}",
            config.command.as_deref().unwrap_or("")
        )
    })?;
    let stdin = child.stdin.take().ok_or("child has no stdin")?;
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    let connection = Arc::new(Connection {
        stdin: tokio::sync::Mutex::new(stdin),
        next_id: AtomicI64::new(1),
        pending: Mutex::new(HashMap::new()),
        server_requests: Mutex::new(HashMap::new()),
        init: Mutex::new(None),
    });
    let (init_tx, init_rx) = oneshot::channel();
    let reader = tokio::spawn(read_loop(
        shared.clone(),
        connection.clone(),
        stdout,
        init_tx,
    ));
    let outcome = handshake(shared, &connection, init_rx).await;
    let result = match outcome {
        Ok(()) => {
            come_up(shared, &connection);
            child
                .wait()
                .await
                .map(|s| s.to_string())
                .map_err(|e| e.to_string())
        }
        Err(reason) => {
            let _ = child.kill().await;
            Err(reason)
        }
    };
    reader.abort();
    fail_pending(shared, &connection);
    result
}

/// The child serves from now on; a child that replaces one that went down is a recovery.
fn come_up(shared: &Shared, connection: &Arc<Connection>) {
    let previous = std::mem::replace(&mut *lock(&shared.link), Link::Up(connection.clone()));
    tracing::info!(upstream = %shared.name, "stdio upstream is up");
    let init = lock(&connection.init).clone();
    if let (Link::Down(_), Some(init)) = (previous, init) {
        super::announce_recovery(&shared.sink, &shared.name, &init);
    }
}

fn spawn(config: &UpstreamConfig) -> std::io::Result<Child> {
    let mut command = Command::new(config.command.as_deref().unwrap_or_default());
    command
        .args(&config.args)
        .envs(config.env.iter().map(|(k, v)| (k, v.expose())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        command.current_dir(cwd);
    }
    command.spawn()
}

/// Initializes the child on the gateway's own behalf, with every client capability the
/// gateway can relay.
async fn handshake(
    shared: &Shared,
    connection: &Connection,
    init_rx: oneshot::Receiver<Value>,
) -> Result<(), String> {
    let params = super::initialize_params(
        ProtocolVersion::LATEST.as_str(),
        &json!({"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")}),
        &json!({"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": true}}),
    );
    let request = crate::jsonrpc::request_value(&RequestId::Number(0), "initialize", Some(&params));
    write_line(connection, &request)
        .await
        .map_err(|e| format!("cannot write initialize: {e}"))?;
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, init_rx)
        .await
        .map_err(|_| "no initialize answer in time".to_owned())?
        .map_err(|_| "exited during initialize".to_owned())?;
    let init = super::init_info_from(&result, &shared.name).map_err(|e| e.to_string())?;
    write_line(
        connection,
        &notification_value("notifications/initialized", None),
    )
    .await
    .map_err(|e| format!("cannot write initialized: {e}"))?;
    *lock(&connection.init) = Some(init.clone());
    *lock(&shared.last_init) = Some(init);
    Ok(())
}

async fn read_loop(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    stdout: ChildStdout,
    init_tx: oneshot::Sender<Value>,
) {
    let mut init_tx = Some(init_tx);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let message = match serde_json::from_str(&line)
            .map_err(|e| e.to_string())
            .and_then(|v| Message::from_value(v).map_err(|e| e.to_string()))
        {
            Ok(message) => message,
            Err(reason) => {
                tracing::warn!(upstream = %shared.name, %reason, "ignoring a malformed line from a stdio upstream");
                continue;
            }
        };
        match message {
            Message::Response(Response {
                id: RequestId::Number(0),
                outcome,
            }) if init_tx.is_some() => {
                if let (Ok(result), Some(tx)) = (outcome, init_tx.take()) {
                    let _ = tx.send(result);
                }
            }
            Message::Response(response) => route_response(&connection, response).await,
            Message::Notification(notification) => {
                route_notification(&shared, &connection, notification).await
            }
            Message::Request(request) => route_server_request(&shared, &connection, request).await,
        }
    }
}

async fn route_response(connection: &Connection, response: Response) {
    let RequestId::Number(id) = response.id else {
        return;
    };
    let Some(pending) = lock(&connection.pending).remove(&id) else {
        return;
    };
    let response = Response {
        id: pending.client_id,
        outcome: response.outcome,
    };
    let _ = pending.reply.send(Message::Response(response).into()).await;
}

async fn route_notification(
    shared: &Shared,
    connection: &Connection,
    mut notification: Notification,
) {
    let target = match notification.method.as_str() {
        "notifications/progress" => progress_target(connection, &mut notification),
        "notifications/cancelled" => cancelled_target(connection, &notification),
        "notifications/message" => attributed(connection).map(|(_, reply)| reply),
        _ => None,
    };
    let message = Message::Notification(notification);
    match target {
        Some(reply) => {
            let _ = reply.send(message.into()).await;
        }
        None if is_broadcast(&message) => {
            let _ = shared.sink.send(Unsolicited {
                upstream: shared.name.clone(),
                session: None,
                message,
                event_id: None,
                logged: None,
            });
        }
        None => {
            tracing::debug!(upstream = %shared.name, "dropping a notification no session can own")
        }
    }
}

fn is_broadcast(message: &Message) -> bool {
    let Message::Notification(n) = message else {
        return false;
    };
    n.method.ends_with("/list_changed") || n.method == "notifications/resources/updated"
}

/// Restores the client's progress token and finds the request it belongs to.
fn progress_target(
    connection: &Connection,
    notification: &mut Notification,
) -> Option<mpsc::Sender<UpstreamEvent>> {
    let params = notification.params.as_mut()?;
    let id = params.get("progressToken")?.as_i64()?;
    let pending = lock(&connection.pending);
    let entry = pending.get(&id)?;
    params["progressToken"] = entry.progress_token.clone()?;
    Some(entry.reply.clone())
}

/// The child gave up on one of its own requests: tell the session it went to.
fn cancelled_target(
    connection: &Connection,
    notification: &Notification,
) -> Option<mpsc::Sender<UpstreamEvent>> {
    let id = RequestId::from_value(notification.params.as_ref()?.get("requestId")?)?;
    let session = lock(&connection.server_requests).remove(&id)?;
    let pending = lock(&connection.pending);
    pending
        .values()
        .find(|p| p.session == session)
        .map(|p| p.reply.clone())
}

/// Why a message the child sent on its own belongs to no single session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Unattributable {
    #[error("no session has a request in flight on this stdio server")]
    Idle,
    #[error("several sessions have requests in flight on this stdio server")]
    Shared,
}

/// The session with requests in flight, if exactly one has, and its newest request's channel.
fn attributed(connection: &Connection) -> Option<(SessionId, mpsc::Sender<UpstreamEvent>)> {
    owner(&lock(&connection.pending)).ok()
}

/// The only session among `pending`, with its newest request's channel.
fn owner(
    pending: &HashMap<i64, Pending>,
) -> Result<(SessionId, mpsc::Sender<UpstreamEvent>), Unattributable> {
    let mut newest: Option<(&i64, &Pending)> = None;
    for (id, entry) in pending.iter() {
        match newest {
            Some((_, current)) if current.session != entry.session => {
                return Err(Unattributable::Shared);
            }
            Some((current_id, _)) if current_id > id => {}
            _ => newest = Some((id, entry)),
        }
    }
    newest
        .map(|(_, entry)| (entry.session.clone(), entry.reply.clone()))
        .ok_or(Unattributable::Idle)
}

/// The error the child gets for a request of its own that mcpgate cannot give to a client.
fn unattributable_error(reason: Unattributable) -> rmcp::model::ErrorData {
    crate::jsonrpc::error_data(
        rmcp::model::ErrorCode::INTERNAL_ERROR,
        format!("mcpgate cannot attribute this request to a client: {reason}"),
    )
}

async fn route_server_request(shared: &Shared, connection: &Connection, request: Request) {
    let attribution = owner(&lock(&connection.pending));
    let (session, reply) = match attribution {
        Ok(owner) => owner,
        Err(reason) => {
            tracing::warn!(upstream = %shared.name, method = %request.method, %reason,
                "refusing a server-to-client request that no single session can own");
            let error = unattributable_error(reason);
            let _ = write_line(connection, &error_value(Some(&request.id), &error)).await;
            return;
        }
    };
    lock(&connection.server_requests).insert(request.id.clone(), session);
    let _ = reply.send(Message::Request(request).into()).await;
}

/// The child is gone: every request it held fails with a JSON-RPC error.
fn fail_pending(shared: &Shared, connection: &Connection) {
    let drained: Vec<Pending> = lock(&connection.pending).drain().map(|(_, p)| p).collect();
    for pending in drained {
        let error = crate::jsonrpc::error_data(
            rmcp::model::ErrorCode::INTERNAL_ERROR,
            format!("upstream {} exited before answering", shared.name),
        );
        let outcome = Err(serde_json::to_value(error).unwrap_or_default());
        let _ = pending.reply.try_send(
            Message::Response(Response {
                id: pending.client_id,
                outcome,
            })
            .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(session: &SessionId) -> Pending {
        Pending {
            session: session.clone(),
            client_id: RequestId::Number(1),
            progress_token: None,
            reply: request_channel().0,
        }
    }

    #[test]
    fn a_request_belongs_to_the_only_session_with_requests_in_flight() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let mut in_flight = HashMap::new();
        assert_eq!(owner(&in_flight).err(), Some(Unattributable::Idle));
        in_flight.insert(1, pending(&a));
        in_flight.insert(2, pending(&a));
        assert_eq!(owner(&in_flight).ok().map(|(s, _)| s), Some(a));
        in_flight.insert(3, pending(&b));
        assert_eq!(owner(&in_flight).err(), Some(Unattributable::Shared));
    }

    #[test]
    fn a_refusal_states_the_real_reason() {
        let prefix = "mcpgate cannot attribute this request to a client: ";
        assert_eq!(
            unattributable_error(Unattributable::Idle).message,
            format!("{prefix}no session has a request in flight on this stdio server")
        );
        assert_eq!(
            unattributable_error(Unattributable::Shared).message,
            format!("{prefix}several sessions have requests in flight on this stdio server")
        );
    }
}

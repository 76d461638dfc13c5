//! One stdio child process and its connection, whoever shares it (`stdio.rs`: every session of
//! the replica; `isolated.rs`: one team's or one session's).
//!
//! Request ids are rewritten to ids unique on the child's connection, and progress tokens to
//! the same number, so answers never cross sessions; a notification of a
//! `subscriptions/listen` stream names its request in `_meta` the same way, and goes to it.
//! What the child sends on its own
//! (sampling, elicitation, roots, logging) goes, in this order:
//! 1. to the request in flight when exactly one session of the child's [`Audience`] has
//!    requests in flight (its newest request);
//! 2. otherwise, for an isolated child: a notification to every session of its audience, a
//!    server-to-client request to its only session (on that session's standalone stream) and,
//!    when the audience has several sessions, it is refused with the reason;
//! 3. otherwise, for a shared child: a list change or resource update to every session of the
//!    replica; a request is refused with the reason, anything else is dropped.
//!
//! A child gets a clean environment: the environment given for it, plus the few variables of
//! the gateway's own named in [`INHERITED_ENV`], so it never sees the gateway's secrets. A line
//! longer than the upstream's `max_message_bytes` is discarded unread (`framing.rs`) and the
//! request it answered fails.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::time::timeout;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use super::framing::{BoundedLines, Frame, Oversized};
use super::outlet::{DropReason, Outlet};
use super::stderr;
use super::{InitInfo, UpstreamError, UpstreamEvent, request_channel};
use crate::config::{Secret, UpstreamConfig};
use crate::protocol::jsonrpc::{
    Message, Notification, Request, RequestId, Response, error_value, notification_value,
};
use crate::protocol::{Method, era};
use crate::session::SessionId;
use crate::sync::lock;

/// Longest wait for a child's `initialize` answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping child gets to exit after its input is closed, and again after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The variables of the gateway's environment a child inherits (when set), besides its own
/// environment: what programs need to find other programs, a home, temporary files, a locale
/// and a time zone. Nothing else, so no secret of the gateway's reaches a child.
const INHERITED_ENV: [&str; 9] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// The sessions a child's own messages may go to.
pub(super) enum Audience {
    /// Every session of this replica (a shared child).
    Replica,
    /// The sessions using an isolated child on this replica: one session, or one team's.
    Members(Arc<Mutex<HashSet<SessionId>>>),
}

/// What reading a child needs to know about it.
pub(super) struct Wire {
    pub name: String,
    pub outlet: Outlet,
    /// Longest line read from the child.
    pub max_message_bytes: usize,
    pub audience: Audience,
}

/// A request forwarded to the child and not yet answered.
struct Pending {
    session: SessionId,
    client_id: RequestId,
    progress_token: Option<Value>,
    reply: mpsc::Sender<UpstreamEvent>,
    /// A 2026-07-28 request (its `_meta` names the version): never the origin of a request the
    /// child sends the client, since that era has none (it asks through `input_required`).
    modern: bool,
}

/// One running child's connection.
pub(super) struct Connection {
    /// `None` once closed, which tells the child to exit.
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    next_id: AtomicI64,
    pending: Mutex<HashMap<i64, Pending>>,
    /// Server-to-client requests by the child's id, to the session they were sent to.
    server_requests: Mutex<HashMap<RequestId, SessionId>>,
    init: Mutex<Option<Arc<InitInfo>>>,
    /// When a request was last sent or answered.
    last_active: Mutex<Instant>,
}

/// A child that answered `initialize`.
pub(super) struct Process {
    pub child: Child,
    pub connection: Arc<Connection>,
    pub init: Arc<InitInfo>,
    reader: JoinHandle<()>,
}

impl Process {
    /// The child exited or was killed: stop reading, and fail every request it held.
    /// Stops the child as the stdio transport asks: its input is closed, then it gets
    /// SIGTERM, then SIGKILL, each after [`STOP_GRACE`] without exiting.
    pub async fn stop(&mut self) {
        self.connection.close_input().await;
        if timeout(STOP_GRACE, self.child.wait()).await.is_ok() {
            return;
        }
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            if timeout(STOP_GRACE, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    pub fn finish(self, wire: &Wire) {
        self.reader.abort();
        fail_pending(wire, &self.connection);
    }
}

/// Spawns a child with `env` (plus [`INHERITED_ENV`]) and initializes it with `params`.
pub(super) async fn start(
    wire: Arc<Wire>,
    config: &UpstreamConfig,
    env: &BTreeMap<String, Secret>,
    params: &Value,
) -> Result<Process, String> {
    let mut child = spawn(config, env).map_err(|e| {
        format!(
            "cannot start {:?}: {e}",
            config.command.as_deref().unwrap_or("")
        )
    })?;
    let stdin = child.stdin.take().ok_or("child has no stdin")?;
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    if let Some(stderr) = child.stderr.take() {
        stderr::relay(wire.name.clone(), stderr);
    }
    let connection = Arc::new(Connection::new(stdin));
    let (init_tx, init_rx) = oneshot::channel();
    let reader = tokio::spawn(read_loop(wire.clone(), connection.clone(), stdout, init_tx));
    match handshake(&wire, &connection, init_rx, params).await {
        Ok(init) => Ok(Process {
            child,
            connection,
            init,
            reader,
        }),
        Err(reason) => {
            let _ = child.kill().await;
            reader.abort();
            Err(reason)
        }
    }
}

impl Connection {
    fn new(stdin: ChildStdin) -> Self {
        Self {
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            next_id: AtomicI64::new(1),
            pending: Mutex::new(HashMap::new()),
            server_requests: Mutex::new(HashMap::new()),
            init: Mutex::new(None),
            last_active: Mutex::new(Instant::now()),
        }
    }

    /// What the child answered to `initialize`.
    pub fn init(&self) -> Option<Arc<InitInfo>> {
        lock(&self.init).clone()
    }

    /// How long the child has had nothing to do; `None` while a request is in flight.
    pub fn idle_for(&self) -> Option<Duration> {
        if !lock(&self.pending).is_empty() {
            return None;
        }
        Some(lock(&self.last_active).elapsed())
    }

    /// Forwards `session`'s request under an id of this connection.
    pub async fn request(
        &self,
        session: &SessionId,
        request: Request,
    ) -> std::io::Result<mpsc::Receiver<UpstreamEvent>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let modern = era::is_modern(&Method::parse(&request.method), request.params.as_ref());
        let mut params = request.params;
        let progress_token = params.as_mut().and_then(|p| rewrite_progress_token(p, id));
        let (reply, receiver) = request_channel();
        let pending = Pending {
            session: session.clone(),
            client_id: request.id,
            progress_token,
            reply,
            modern,
        };
        lock(&self.pending).insert(id, pending);
        self.touch();
        let line = crate::protocol::jsonrpc::request_value(
            &RequestId::Number(id),
            &request.method,
            params.as_ref(),
        );
        if let Err(e) = self.write_line(&line).await {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        Ok(receiver)
    }

    /// Writes a notification or a response (to a request of the child's) to the child.
    pub async fn send(&self, message: Message) -> std::io::Result<()> {
        if let Message::Response(response) = &message {
            lock(&self.server_requests).remove(&response.id);
        }
        self.write_line(&message.to_value()).await
    }

    /// Cancels the session's request that the client knows as `client_id`.
    pub async fn cancel(&self, session: &SessionId, client_id: &RequestId, reason: &str) {
        let id = {
            let mut pending = lock(&self.pending);
            let found = pending
                .iter()
                .find(|(_, p)| &p.session == session && &p.client_id == client_id);
            let Some((&id, _)) = found else { return };
            pending.remove(&id);
            id
        };
        self.touch();
        let params = json!({"requestId": id, "reason": reason});
        let _ = self
            .write_line(&notification_value(
                "notifications/cancelled",
                Some(&params),
            ))
            .await;
    }

    fn touch(&self) {
        *lock(&self.last_active) = Instant::now();
    }

    async fn write_line(&self, message: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        let stdin = stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        stdin.write_all(&line).await?;
        stdin.flush().await
    }

    /// Closes the child's input: the first step of a stdio server's shutdown.
    async fn close_input(&self) {
        self.stdin.lock().await.take();
    }
}

/// Replaces `params._meta.progressToken` with our id; returns the client's token.
fn rewrite_progress_token(params: &mut Value, id: i64) -> Option<Value> {
    let token = params.get_mut("_meta")?.get_mut("progressToken")?;
    Some(std::mem::replace(token, json!(id)))
}

fn spawn(config: &UpstreamConfig, env: &BTreeMap<String, Secret>) -> std::io::Result<Child> {
    let mut command = Command::new(config.command.as_deref().unwrap_or_default());
    let inherited = INHERITED_ENV
        .iter()
        .filter_map(|name| std::env::var_os(name).map(|value| (name, value)));
    command
        .args(&config.args)
        .env_clear()
        .envs(inherited)
        .envs(env.iter().map(|(k, v)| (k, v.expose())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        command.current_dir(cwd);
    }
    command.spawn()
}

/// Sends `initialize` with `params` and `notifications/initialized`; the child's answer.
async fn handshake(
    wire: &Wire,
    connection: &Connection,
    init_rx: oneshot::Receiver<Value>,
    params: &Value,
) -> Result<Arc<InitInfo>, String> {
    let request =
        crate::protocol::jsonrpc::request_value(&RequestId::Number(0), "initialize", Some(params));
    connection
        .write_line(&request)
        .await
        .map_err(|e| format!("cannot write initialize: {e}"))?;
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, init_rx)
        .await
        .map_err(|_| "no initialize answer in time".to_owned())?
        .map_err(|_| "exited during initialize".to_owned())?;
    let init = super::init_info_from(&result, &wire.name).map_err(|e| e.to_string())?;
    connection
        .write_line(&notification_value("notifications/initialized", None))
        .await
        .map_err(|e| format!("cannot write initialized: {e}"))?;
    *lock(&connection.init) = Some(init.clone());
    Ok(init)
}

async fn read_loop(
    wire: Arc<Wire>,
    connection: Arc<Connection>,
    stdout: ChildStdout,
    init_tx: oneshot::Sender<Value>,
) {
    let mut init_tx = Some(init_tx);
    let mut frames = FramedRead::new(stdout, BoundedLines::new(wire.max_message_bytes));
    while let Some(Ok(frame)) = frames.next().await {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Oversized(oversized) => {
                refuse_oversized(&wire, &connection, &oversized).await;
                continue;
            }
        };
        let message = match Message::from_json(&line) {
            Ok(message) => message,
            Err(reason) => {
                tracing::warn!(upstream = %wire.name, %reason, "ignoring a malformed line from a stdio upstream");
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
                route_notification(&wire, &connection, notification, line.len()).await
            }
            Message::Request(request) => route_server_request(&wire, &connection, request).await,
        }
    }
}

/// A line over `max_message_bytes` was discarded: the request it answered (when its id came
/// through) fails, and the line is logged and counted.
async fn refuse_oversized(wire: &Wire, connection: &Connection, oversized: &Oversized) {
    let error = UpstreamError::TooLarge {
        upstream: wire.name.clone(),
        limit: wire.max_message_bytes,
    };
    tracing::warn!(upstream = %wire.name, bytes = oversized.bytes, %error, "discarded an oversized line from a stdio upstream");
    wire.outlet.dropped(DropReason::TooLarge);
    let Some(RequestId::Number(id)) = oversized.answered() else {
        return;
    };
    let Some(pending) = lock(&connection.pending).remove(&id) else {
        return;
    };
    let _ = pending
        .reply
        .send(error.response(pending.client_id).into())
        .await;
}

async fn route_response(connection: &Connection, response: Response) {
    let RequestId::Number(id) = response.id else {
        return;
    };
    let Some(pending) = lock(&connection.pending).remove(&id) else {
        return;
    };
    connection.touch();
    let response = Response {
        id: pending.client_id,
        outcome: response.outcome,
    };
    let _ = pending.reply.send(Message::Response(response).into()).await;
}

/// Routes a notification of `bytes` bytes (as the child sent it).
async fn route_notification(
    wire: &Wire,
    connection: &Connection,
    mut notification: Notification,
    bytes: usize,
) {
    if let Some(reply) = subscription_target(connection, &mut notification) {
        let _ = reply.send(Message::Notification(notification).into()).await;
        return;
    }
    let target = match Method::parse(&notification.method) {
        Method::Progress => Target::Request(progress_target(connection, &mut notification)),
        Method::Cancelled => Target::Request(cancelled_target(connection, &notification)),
        Method::LogMessage => match attributed(connection) {
            Some((_, reply)) => Target::Request(Some(reply)),
            None => Target::Audience,
        },
        _ => Target::Audience,
    };
    let message = Message::Notification(notification);
    match (target, &wire.audience) {
        (Target::Request(Some(reply)), _) => {
            let _ = reply.send(message.into()).await;
        }
        (Target::Audience, Audience::Members(members)) => {
            for session in lock(members).iter() {
                wire.outlet.send_to(session.clone(), message.clone(), bytes);
            }
        }
        (Target::Audience, Audience::Replica) if is_broadcast(&message) => {
            wire.outlet.broadcast(message, bytes)
        }
        _ => {
            tracing::debug!(upstream = %wire.name, "dropping a notification no session can own")
        }
    }
}

/// Where a notification from a child goes.
enum Target {
    /// The stream of a request in flight; `None` when it belongs to a request that is over.
    Request(Option<mpsc::Sender<UpstreamEvent>>),
    /// The child's audience.
    Audience,
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

/// A notification of a `subscriptions/listen` stream (2026-07-28) names the listen request in
/// its `_meta`: it goes to that request, with the client's id put back.
fn subscription_target(
    connection: &Connection,
    notification: &mut Notification,
) -> Option<mpsc::Sender<UpstreamEvent>> {
    let meta = notification.params.as_mut()?.get_mut("_meta")?;
    let tag = meta.get_mut(SUBSCRIPTION_ID)?;
    let id = tag.as_i64()?;
    let pending = lock(&connection.pending);
    let entry = pending.get(&id)?;
    *tag = entry.client_id.to_value();
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

const SUBSCRIPTION_ID: &str = crate::protocol::era::meta::SUBSCRIPTION_ID;

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
    owner(&lock(&connection.pending), Asking::Notification).ok()
}

/// What the child sends on its own, for [`owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asking {
    Notification,
    /// A request (sampling, elicitation, roots): only a legacy request's call can ask one; a
    /// 2026-07-28 request in flight (a `subscriptions/listen` stream, say) never does.
    Request,
}

/// The only session among `pending` that may have sent `asking`, with its newest request's
/// channel.
fn owner(
    pending: &HashMap<i64, Pending>,
    asking: Asking,
) -> Result<(SessionId, mpsc::Sender<UpstreamEvent>), Unattributable> {
    let may_ask = |entry: &Pending| asking == Asking::Notification || !entry.modern;
    let mut newest: Option<(&i64, &Pending)> = None;
    for (id, entry) in pending.iter().filter(|(_, entry)| may_ask(entry)) {
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

/// The only session of an isolated child's audience, for a request outside any request.
fn only_member(audience: &Audience) -> Option<SessionId> {
    let Audience::Members(members) = audience else {
        return None;
    };
    let members = lock(members);
    let mut sessions = members.iter();
    match (sessions.next(), sessions.next()) {
        (Some(only), None) => Some(only.clone()),
        _ => None,
    }
}

/// The error the child gets for a request of its own that mcpgate cannot give to a client.
fn unattributable_error(reason: Unattributable) -> rmcp::model::ErrorData {
    crate::protocol::jsonrpc::error_data(
        rmcp::model::ErrorCode::INTERNAL_ERROR,
        format!("mcpgate cannot attribute this request to a client: {reason}"),
    )
}

async fn route_server_request(wire: &Wire, connection: &Connection, request: Request) {
    let attribution = owner(&lock(&connection.pending), Asking::Request);
    let idle_member = match attribution {
        Err(Unattributable::Idle) => only_member(&wire.audience),
        _ => None,
    };
    match (attribution, idle_member) {
        (Ok((session, reply)), _) => {
            lock(&connection.server_requests).insert(request.id.clone(), session);
            let _ = reply.send(Message::Request(request).into()).await;
        }
        (Err(_), Some(session)) => {
            lock(&connection.server_requests).insert(request.id.clone(), session.clone());
            wire.outlet.send_to(session, Message::Request(request), 0);
        }
        (Err(reason), None) => {
            tracing::warn!(upstream = %wire.name, method = %request.method, %reason,
                "refusing a server-to-client request that no single session can own");
            let error = unattributable_error(reason);
            let _ = connection
                .write_line(&error_value(Some(&request.id), &error))
                .await;
        }
    }
}

/// The child is gone: every request it held fails with a JSON-RPC error.
fn fail_pending(wire: &Wire, connection: &Connection) {
    let drained: Vec<Pending> = lock(&connection.pending).drain().map(|(_, p)| p).collect();
    for pending in drained {
        let error = crate::protocol::jsonrpc::error_data(
            rmcp::model::ErrorCode::INTERNAL_ERROR,
            format!("upstream {} exited before answering", wire.name),
        );
        let outcome = Err(error);
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
            modern: false,
        }
    }

    #[test]
    fn a_request_belongs_to_the_only_session_with_requests_in_flight() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let mut in_flight = HashMap::new();
        let owner = |in_flight: &HashMap<i64, Pending>| owner(in_flight, Asking::Request);
        assert_eq!(owner(&in_flight).err(), Some(Unattributable::Idle));
        in_flight.insert(1, pending(&a));
        in_flight.insert(2, pending(&a));
        assert_eq!(owner(&in_flight).ok().map(|(s, _)| s), Some(a));
        in_flight.insert(3, pending(&b));
        assert_eq!(owner(&in_flight).err(), Some(Unattributable::Shared));
    }

    #[test]
    fn a_modern_request_in_flight_owns_no_request_the_child_asks() {
        let (legacy, modern) = (SessionId::generate(), SessionId::generate());
        let mut in_flight = HashMap::new();
        in_flight.insert(
            1,
            Pending {
                modern: true,
                ..pending(&modern)
            },
        );
        let asked = |in_flight: &HashMap<i64, Pending>| owner(in_flight, Asking::Request);
        let told = |in_flight: &HashMap<i64, Pending>| owner(in_flight, Asking::Notification);
        assert_eq!(asked(&in_flight).err(), Some(Unattributable::Idle));
        assert_eq!(
            told(&in_flight).ok().map(|(s, _)| s),
            Some(modern),
            "its logs"
        );
        in_flight.insert(2, pending(&legacy));
        assert_eq!(asked(&in_flight).ok().map(|(s, _)| s), Some(legacy));
        assert_eq!(told(&in_flight).err(), Some(Unattributable::Shared));
    }

    #[test]
    fn an_idle_request_goes_to_the_only_member_of_an_isolated_child() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let members = Arc::new(Mutex::new(HashSet::from([a.clone()])));
        let audience = Audience::Members(members.clone());
        assert_eq!(only_member(&audience), Some(a));
        lock(&members).insert(b);
        assert_eq!(only_member(&audience), None);
        assert_eq!(only_member(&Audience::Replica), None);
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

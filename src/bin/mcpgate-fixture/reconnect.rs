//! SSE polling (SEP-1699) support for `test_reconnection`.
//!
//! rmcp's `LocalSessionHandle::close_sse_stream` closes a POST response stream,
//! but needs rmcp's internal per-POST stream number, which a tool handler cannot
//! see. [`ReconnectingSessions`] wraps `LocalSessionManager`, opens the POST
//! streams itself to learn that number for `test_reconnection` calls, and
//! notices when the client resumes one with `Last-Event-ID`, so the tool can
//! answer only once the client is listening again. Everything else is delegated.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::Stream;
use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{ClientJsonRpcMessage, ClientRequest, RequestId, ServerJsonRpcMessage},
    service::RequestContext,
    transport::streamable_http_server::{
        SessionId, SessionManager,
        session::{
            ServerSseMessage,
            local::{
                LocalSessionHandle, LocalSessionManager, LocalSessionManagerError, SessionError,
                SessionTransport,
            },
        },
    },
};
use tokio::sync::Notify;

use crate::tools::{RECONNECTION_TOOL, text};

/// Reconnection delay advertised in the priming event sent before closing.
const CLOSE_RETRY: Duration = Duration::from_millis(500);

/// How long the tool waits for the client to resume before answering anyway.
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);

/// Header carrying the session id on Streamable HTTP requests.
const SESSION_HEADER: &str = "mcp-session-id";

/// rmcp's in-memory session manager plus control over `test_reconnection` streams, and a
/// count of each session's open standalone (GET) streams.
#[derive(Default)]
pub struct ReconnectingSessions {
    local: LocalSessionManager,
    closable: Mutex<HashMap<(SessionId, RequestId), ClosableStream>>,
    standalone: Arc<Mutex<HashMap<SessionId, usize>>>,
}

/// Counts one open standalone stream for as long as it lives.
struct StandaloneOpen {
    counts: Arc<Mutex<HashMap<SessionId, usize>>>,
    session: SessionId,
}

impl StandaloneOpen {
    fn new(counts: &Arc<Mutex<HashMap<SessionId, usize>>>, session: &SessionId) -> Self {
        *lock_counts(counts).entry(session.clone()).or_default() += 1;
        Self {
            counts: counts.clone(),
            session: session.clone(),
        }
    }
}

impl Drop for StandaloneOpen {
    fn drop(&mut self) {
        let mut counts = lock_counts(&self.counts);
        if let Some(count) = counts.get_mut(&self.session) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.session);
            }
        }
    }
}

fn lock_counts(
    counts: &Mutex<HashMap<SessionId, usize>>,
) -> std::sync::MutexGuard<'_, HashMap<SessionId, usize>> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps `open` alive exactly as long as `stream`.
fn tracked<S: Stream + Send + Sync + 'static>(
    stream: S,
    open: impl Into<Option<StandaloneOpen>>,
) -> impl Stream<Item = S::Item> + Send + Sync + 'static {
    use futures::StreamExt as _;
    let open = open.into();
    stream.map(move |item| {
        let _ = &open;
        item
    })
}

/// The POST stream carrying one `test_reconnection` call.
#[derive(Clone)]
struct ClosableStream {
    session: LocalSessionHandle,
    http_request_id: u64,
    resumed: Arc<Notify>,
}

impl ClosableStream {
    /// Sends a priming event with [`CLOSE_RETRY`], ends the HTTP response, and
    /// waits up to [`RESUME_TIMEOUT`] for the client to resume.
    async fn close_and_await_resume(&self) -> Result<bool, SessionError> {
        self.session
            .close_sse_stream(self.http_request_id, Some(CLOSE_RETRY))
            .await?;
        let resumed = tokio::time::timeout(RESUME_TIMEOUT, self.resumed.notified()).await;
        Ok(resumed.is_ok())
    }
}

impl ReconnectingSessions {
    /// Closes the SSE stream of call `request` and waits until the client
    /// resumes it; `Ok(false)` if it did not within [`RESUME_TIMEOUT`].
    async fn close_and_await_resume(
        &self,
        session: &SessionId,
        request: &RequestId,
    ) -> Result<bool, McpError> {
        let key = (session.clone(), request.clone());
        let stream = self.lock().get(&key).cloned().ok_or_else(|| {
            McpError::internal_error("this call has no SSE stream of its own to close", None)
        })?;
        let outcome = stream.close_and_await_resume().await;
        self.lock().remove(&key);
        outcome.map_err(|e| {
            McpError::internal_error(format!("cannot close the SSE stream: {e}"), None)
        })
    }

    /// The table of closable streams (poisoning is harmless for plain data).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SessionId, RequestId), ClosableStream>> {
        self.closable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live handle of session `id`.
    async fn handle(&self, id: &SessionId) -> Result<LocalSessionHandle, LocalSessionManagerError> {
        self.local
            .sessions
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| LocalSessionManagerError::SessionNotFound(id.clone()))
    }

    /// Wakes the tool waiting on the stream that `last_event_id` belongs to.
    fn note_resume(&self, session: &SessionId, last_event_id: &str) {
        let Some(http_request_id) = http_request_id(last_event_id) else {
            return;
        };
        let streams = self.lock();
        let resumed = streams
            .iter()
            .find(|((s, _), stream)| s == session && stream.http_request_id == http_request_id);
        if let Some((_, stream)) = resumed {
            stream.resumed.notify_one();
        }
    }
}

/// The POST stream number in an rmcp event id of the form `index/stream`.
fn http_request_id(event_id: &str) -> Option<u64> {
    event_id.split_once('/')?.1.parse().ok()
}

/// The JSON-RPC id of a `tools/call` for [`RECONNECTION_TOOL`].
fn reconnection_call(message: &ClientJsonRpcMessage) -> Option<RequestId> {
    let ClientJsonRpcMessage::Request(request) = message else {
        return None;
    };
    match &request.request {
        ClientRequest::CallToolRequest(call) if call.params.name == RECONNECTION_TOOL => {
            Some(request.id.clone())
        }
        _ => None,
    }
}

impl ReconnectingSessions {
    /// Sessions open right now (tests check that the gateway closes what it opened).
    pub async fn open_sessions(&self) -> usize {
        self.local.sessions.read().await.len()
    }

    /// Whether the session has a standalone (GET) stream open right now.
    pub fn standalone_open(&self, session: &SessionId) -> bool {
        lock_counts(&self.standalone).contains_key(session)
    }
}

impl SessionManager for ReconnectingSessions {
    type Error = LocalSessionManagerError;
    type Transport = SessionTransport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.local.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.local.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.local.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.lock().retain(|(session, _), _| session != id);
        self.local.close_session(id).await
    }

    /// Same as `LocalSessionManager::create_stream`, but remembers the stream
    /// number of `test_reconnection` calls.
    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let session = self.handle(id).await?;
        let mut receiver = session.establish_request_wise_channel().await?;
        let closable = reconnection_call(&message).zip(receiver.http_request_id);
        if let Some((request, http_request_id)) = &closable {
            let stream = ClosableStream {
                session: session.clone(),
                http_request_id: *http_request_id,
                resumed: Arc::default(),
            };
            self.lock().insert((id.clone(), request.clone()), stream);
        }
        let pushed = session
            .push_message(message, receiver.http_request_id)
            .await;
        if let (Err(_), Some((request, _))) = (&pushed, closable) {
            self.lock().remove(&(id.clone(), request));
        }
        pushed?;
        Ok(futures::stream::poll_fn(move |cx| {
            receiver.inner.poll_recv(cx)
        }))
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.local.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.local.create_standalone_stream(id).await?;
        Ok(tracked(stream, StandaloneOpen::new(&self.standalone, id)))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.local.resume(id, last_event_id.clone()).await?;
        self.note_resume(id, &last_event_id);
        // Standalone event ids are a bare index; request streams' are `<index>/<request>`.
        let standalone =
            (!last_event_id.contains('/')).then(|| StandaloneOpen::new(&self.standalone, id));
        Ok(tracked(stream, standalone))
    }
}

/// Body of `test_reconnection`: over HTTP, close this call's SSE stream and
/// answer after the client resumes; elsewhere there is no stream to close.
pub async fn run_tool(
    streams: Option<&ReconnectingSessions>,
    context: &RequestContext<RoleServer>,
) -> Result<rmcp::model::CallToolResult, McpError> {
    let Some(streams) = streams else {
        return Ok(text(
            "No SSE stream on this transport; nothing to reconnect.",
        ));
    };
    let session = session_id(context)
        .ok_or_else(|| McpError::internal_error("request carries no Mcp-Session-Id", None))?;
    let resumed = streams
        .close_and_await_resume(&session, &context.id)
        .await?;
    Ok(text(if resumed {
        "Reconnection test completed: the client resumed the stream with Last-Event-ID."
    } else {
        "Reconnection test completed, but the client did not resume the stream in time."
    }))
}

/// The session id of the HTTP request that carried this call.
pub fn session_id(context: &RequestContext<RoleServer>) -> Option<SessionId> {
    let parts = context.extensions.get::<hyper::http::request::Parts>()?;
    let value = parts.headers.get(SESSION_HEADER)?.to_str().ok()?;
    Some(value.into())
}

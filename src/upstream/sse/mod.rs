//! Legacy HTTP+SSE upstreams (`transport = "sse"`, the 2024-11-05 transport), as a client.
//!
//! An upstream session is a GET stream: its first event (`endpoint`) says where to POST
//! messages, and every message of the session arrives on the stream. The session lives as
//! long as the connection, so it cannot move between replicas: the session record names the
//! connection (an id of mcpgate's own), and a replica that does not hold it, or whose
//! connection dropped or expired, answers [`UpstreamError::SessionGone`]; `dispatch/forward.rs`
//! then re-initializes the upstream with the session's stored client info and capabilities,
//! counts it in `upstream_reinitializations_total`, restores the session's state and retries
//! the call. What the old connection had in flight fails with a JSON-RPC error.
//!
//! Bounds: the connections of this replica (`table.rs`: `max_connections`, and `idle_timeout`
//! without use), the requests waiting on one connection (`connection.rs`), each event by
//! `max_message_bytes` (an event over it closes the connection: a stream cannot skip an
//! event), the wait for `endpoint` and every POST by the upstream's `timeout`.
//!
//! Health: a connection attempt that fails marks the upstream down for [`RETRY_DOWN`], which
//! leaves it out of merged lists; the first connection that succeeds after that announces its
//! recovery to every session.

mod connection;
mod table;

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Request as HttpRequest, Uri};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::framing::{bounded_events, event_message, is_too_large};
use super::http_client::{Clients, EVENT_STREAM, JSON, SendError, json_body, uri_of};
use super::outlet::{DropReason, Outlet};
use super::{CallContext, InitInfo, UpstreamError, UpstreamEvent, request_channel};
use crate::config::UpstreamConfig;
use crate::protocol::jsonrpc::{Message, Request, RequestId, notification_value, request_value};
use crate::session::{SessionId, SessionRecord, UpstreamSession};
use crate::sync::lock;
use crate::telemetry::propagation::traced;
use connection::{Connection, Refused, Route, progress_token_of};
use table::Table;

/// How long an upstream that could not be reached stays out of merged lists before a session
/// tries it again.
const RETRY_DOWN: Duration = Duration::from_secs(5);
/// Bounds of the pause between two sweeps of idle connections.
const SWEEP_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(30));

/// The events of one connection's stream.
type Events = Box<dyn Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Send + Unpin>;

/// An HTTP+SSE upstream.
pub struct SseUpstream {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// The GET stream's URL, which `endpoint` events are resolved against.
    url: Uri,
    clients: Clients,
    last_init: Mutex<Option<Arc<InitInfo>>>,
    outlet: Outlet,
    max_message_bytes: usize,
    /// Longest wait for the `endpoint` event, the `initialize` answer, or one POST.
    timeout: Duration,
    idle_timeout: Duration,
    table: Table,
    /// When the last connection attempt failed, until one succeeds.
    down_since: Mutex<Option<Instant>>,
}

impl SseUpstream {
    pub fn new(config: &UpstreamConfig, outlet: Outlet) -> Result<Self, UpstreamError> {
        let (clients, url) = Clients::for_upstream(config)?;
        let inner = Arc::new(Inner {
            name: config.name.clone(),
            url,
            clients,
            last_init: Mutex::new(None),
            outlet,
            max_message_bytes: config.max_message_bytes,
            timeout: config.timeout,
            idle_timeout: config.idle_timeout(),
            table: Table::new(config.max_connections()),
            down_since: Mutex::new(None),
        });
        tokio::spawn(sweep_idle(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Whether the last connection attempt got through, or failed more than [`RETRY_DOWN`] ago.
    pub fn is_healthy(&self) -> bool {
        lock(&self.inner.down_since).is_none_or(|since| since.elapsed() >= RETRY_DOWN)
    }

    /// The last `initialize` answer, shared with [`super::Upstream::has_capability`].
    pub fn last_init(&self) -> &Mutex<Option<Arc<InitInfo>>> {
        &self.inner.last_init
    }

    /// Opens a connection for `owner` and initializes it with the record's client info and
    /// capabilities.
    pub async fn open_session(
        &self,
        owner: &SessionId,
        record: &SessionRecord,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let params = super::initialize_params(
            &record.protocol_version,
            &record.client_info,
            &record.client_capabilities,
        );
        self.inner.open(owner, &params).await
    }

    /// Forwards a request on the session's connection; [`UpstreamError::SessionGone`] when
    /// this replica holds none.
    pub async fn request(
        &self,
        ctx: &CallContext,
        request: Request,
    ) -> Result<mpsc::Receiver<UpstreamEvent>, UpstreamError> {
        let connection = self.inner.connection(ctx)?;
        self.inner.request(&connection, request).await
    }

    /// Posts a notification or an answer to a server-to-client request.
    pub async fn send(&self, ctx: &CallContext, message: Message) -> Result<(), UpstreamError> {
        let connection = self.inner.connection(ctx)?;
        self.inner.post(&connection, &message.to_value()).await
    }

    /// Tells the upstream to stop working on a request, by its id on the connection.
    pub async fn cancel(&self, ctx: &CallContext, request: &RequestId, reason: &str) {
        let Ok(connection) = self.inner.connection(ctx) else {
            return;
        };
        let Some(id) = connection.id_of(request) else {
            return;
        };
        connection.forget(id);
        let params = json!({"requestId": id, "reason": reason});
        let message = notification_value("notifications/cancelled", Some(&params));
        if let Err(error) = self.inner.post(&connection, &message).await {
            tracing::debug!(%error, "could not forward a cancellation");
        }
    }

    /// Closes the session's connection, which ends its upstream session.
    pub fn close_session(&self, ctx: &CallContext) {
        let id = ctx.upstream_session.session_id.as_deref();
        if let Some(connection) = id.and_then(|id| self.inner.table.take(id)) {
            connection.close(&self.inner.closed_by_mcpgate());
        }
    }

    /// A session ended: the connections opened for it close.
    pub fn session_ended(&self, session: &SessionId) {
        for connection in self.inner.table.take_owned_by(session) {
            connection.close(&self.inner.closed_by_mcpgate());
        }
    }
}

impl Drop for SseUpstream {
    fn drop(&mut self) {
        for connection in self.inner.table.take_all() {
            connection.close(&self.inner.closed_by_mcpgate());
        }
    }
}

/// Closes a connection being opened unless the opening succeeded.
struct CloseUnlessKept(Option<Arc<Connection>>, UpstreamError);

impl Drop for CloseUnlessKept {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            connection.close(&self.1);
        }
    }
}

impl Inner {
    /// A new connection, initialized with `params`, in the table.
    async fn open(
        self: &Arc<Self>,
        owner: &SessionId,
        params: &Value,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let (reservation, evicted) = self.table.reserve().map_err(|_| self.full())?;
        if let Some(evicted) = evicted {
            tracing::info!(upstream = %self.name, "closed the least recently used SSE connection for a new one (max_connections)");
            evicted.close(&self.closed_by_mcpgate());
        }
        let connection = self.connect(owner).await?;
        let mut guard = CloseUnlessKept(Some(connection.clone()), self.closed_by_mcpgate());
        let init = self.initialize(&connection, params).await?;
        guard.0 = None;
        for replaced in self.table.take_idle_owned_by(owner) {
            replaced.close(&self.closed_by_mcpgate());
        }
        reservation.fill(connection.clone());
        let recovered = lock(&self.down_since).take().is_some();
        *lock(&self.last_init) = Some(init.clone());
        if recovered {
            super::announce_recovery(&self.outlet, &self.name, &init);
        }
        let session = UpstreamSession {
            session_id: Some(connection.id.clone()),
            protocol_version: Some(init.protocol_version.clone()),
        };
        Ok((session, init))
    }

    /// Opens the GET stream and waits for its `endpoint`; the stream is then read by a task
    /// of its own.
    async fn connect(
        self: &Arc<Self>,
        owner: &SessionId,
    ) -> Result<Arc<Connection>, UpstreamError> {
        let attempt = async {
            let mut events = self.get_stream().await?;
            let endpoint = self.endpoint(&mut events).await?;
            Ok((events, endpoint))
        };
        let outcome = tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(self.timed_out()));
        let (events, endpoint) = outcome.inspect_err(|_| self.mark_down())?;
        let id = SessionId::generate().to_string();
        let connection = Arc::new(Connection::new(id, owner.clone(), endpoint));
        let reader = read_stream(Arc::downgrade(self), connection.clone(), events);
        connection.set_reader(tokio::spawn(reader));
        Ok(connection)
    }

    async fn get_stream(&self) -> Result<Events, UpstreamError> {
        let request = HttpRequest::get(self.url.clone())
            .header(ACCEPT, EVENT_STREAM)
            .body(Full::default());
        let response = self
            .clients
            .send(request)
            .await
            .map_err(|e| self.transport(e))?;
        match response.status().as_u16() {
            200 => Ok(Box::new(bounded_events(response, self.max_message_bytes))),
            status => Err(UpstreamError::Status {
                upstream: self.name.clone(),
                status,
            }),
        }
    }

    /// The POST URL the stream's `endpoint` event announces, resolved against the stream's
    /// URL; one on another origin is refused (the upstream's headers would go there).
    async fn endpoint(&self, events: &mut Events) -> Result<Uri, UpstreamError> {
        while let Some(event) = events.next().await {
            let event =
                event.map_err(|_| self.protocol("the stream failed before its endpoint"))?;
            if event.event.as_deref() != Some("endpoint") {
                continue;
            }
            let data = event.data.unwrap_or_default();
            return resolve_endpoint(&self.url, &data).map_err(|reason| self.protocol(reason));
        }
        Err(self.protocol("the stream ended before its endpoint"))
    }

    /// `initialize` and `notifications/initialized` on a new connection.
    async fn initialize(
        &self,
        connection: &Arc<Connection>,
        params: &Value,
    ) -> Result<Arc<InitInfo>, UpstreamError> {
        let request = Request {
            id: RequestId::String("mcpgate-initialize".into()),
            method: "initialize".into(),
            params: Some(params.clone()),
        };
        let messages = self.request(connection, request).await?;
        let answer = tokio::time::timeout(
            self.timeout,
            super::response_of(super::Replies::channel(messages)),
        );
        let result = match answer.await {
            Ok(Some(Ok(result))) => result,
            Ok(Some(Err(error))) => {
                return Err(self.protocol(&format!("initialize failed: {error}")));
            }
            Ok(None) => return Err(self.protocol("no answer to initialize")),
            Err(_) => return Err(self.timed_out()),
        };
        let init = super::init_info_from(&result, &self.name)?;
        let initialized = notification_value("notifications/initialized", None);
        self.post(connection, &initialized).await?;
        Ok(init)
    }

    /// The connection the record names, when this replica holds it.
    fn connection(&self, ctx: &CallContext) -> Result<Arc<Connection>, UpstreamError> {
        let id = ctx.upstream_session.session_id.as_deref();
        let connection = id
            .and_then(|id| self.table.get(id))
            .ok_or_else(|| self.gone())?;
        connection.touch();
        Ok(connection)
    }

    /// Posts a request on `connection` under an id of the connection's own.
    async fn request(
        &self,
        connection: &Arc<Connection>,
        request: Request,
    ) -> Result<mpsc::Receiver<UpstreamEvent>, UpstreamError> {
        let (tx, rx) = request_channel();
        let token = progress_token_of(&request.params);
        let id = connection
            .register(request.id, token, tx)
            .map_err(|refused| match refused {
                Refused::Closed => self.gone(),
                Refused::Busy => self.full(),
            })?;
        let message = request_value(
            &RequestId::Number(id),
            &request.method,
            request.params.as_ref(),
        );
        if let Err(error) = self.post(connection, &message).await {
            connection.forget(id);
            return Err(error);
        }
        Ok(rx)
    }

    /// POSTs one message to the connection's endpoint. A connection the upstream no longer
    /// knows (404), or that cannot be reached, is closed: the next call re-initializes.
    async fn post(
        &self,
        connection: &Arc<Connection>,
        message: &Value,
    ) -> Result<(), UpstreamError> {
        let request = traced(HttpRequest::post(connection.endpoint.clone()))
            .header(CONTENT_TYPE, JSON)
            .body(json_body(message));
        let request = self.clients.send(request);
        let outcome = match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(response)) => self.accepted(response.status().as_u16()),
            Ok(Err(error)) => Err(self.transport(error)),
            Err(_) => Err(self.timed_out()),
        };
        if let Err(error) = &outcome
            && !matches!(error, UpstreamError::Status { .. })
        {
            self.drop_connection(connection, error);
        }
        outcome
    }

    fn accepted(&self, status: u16) -> Result<(), UpstreamError> {
        match status {
            200..=299 => Ok(()),
            404 => Err(self.gone()),
            status => Err(UpstreamError::Status {
                upstream: self.name.clone(),
                status,
            }),
        }
    }

    /// Takes a connection out of the table and closes it, failing what waits on it.
    fn drop_connection(&self, connection: &Arc<Connection>, error: &UpstreamError) {
        if self.table.remove(connection) {
            tracing::info!(upstream = %self.name, %error, "SSE connection lost; the next call re-initializes");
        }
        connection.close(error);
    }

    /// Sends one message read from a connection's stream where it belongs.
    async fn deliver(&self, connection: &Connection, message: Message, bytes: usize) {
        match connection.route(message) {
            Route::Request(messages, message) => {
                let _ = messages.send(message.into()).await;
            }
            Route::Outlet(message) => {
                self.outlet
                    .send_to(connection.owner.clone(), message, bytes);
            }
            Route::Nowhere => {}
        }
    }

    fn mark_down(&self) {
        lock(&self.down_since).get_or_insert_with(Instant::now);
    }

    fn gone(&self) -> UpstreamError {
        UpstreamError::SessionGone {
            upstream: self.name.clone(),
        }
    }

    fn full(&self) -> UpstreamError {
        UpstreamError::TooManyConnections {
            upstream: self.name.clone(),
            limit: self.table.max(),
        }
    }

    fn timed_out(&self) -> UpstreamError {
        UpstreamError::Timeout {
            upstream: self.name.clone(),
            after: self.timeout,
        }
    }

    fn closed_by_mcpgate(&self) -> UpstreamError {
        self.unavailable("mcpgate closed the SSE connection")
    }

    fn unavailable(&self, reason: &str) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.name.clone(),
            reason: reason.to_owned(),
        }
    }

    fn protocol(&self, reason: &str) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.name.clone(),
            reason: reason.to_owned(),
        }
    }

    fn transport(&self, error: SendError) -> UpstreamError {
        UpstreamError::Transport {
            upstream: self.name.clone(),
            reason: error.to_string(),
        }
    }
}

/// The URL an `endpoint` event's data names, relative to the `stream`'s URL; refused when it is
/// not a URL or is on another origin.
fn resolve_endpoint(stream: &Uri, data: &str) -> Result<Uri, &'static str> {
    let not_a_url = "its endpoint is not a URL";
    let url = url::Url::parse(&stream.to_string()).map_err(|_| not_a_url)?;
    let endpoint = url.join(data.trim()).map_err(|_| not_a_url)?;
    if endpoint.origin() != url.origin() {
        return Err("its endpoint is on another origin");
    }
    uri_of(endpoint).ok_or(not_a_url)
}

/// Reads a connection's stream until it ends, delivering each message; then the connection
/// is dropped, failing what still waits on it.
async fn read_stream(upstream: Weak<Inner>, connection: Arc<Connection>, mut events: Events) {
    let error = loop {
        let event = events.next().await;
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(error)) if is_too_large(&error) => {
                upstream.outlet.dropped(DropReason::TooLarge);
                break UpstreamError::TooLarge {
                    upstream: upstream.name.clone(),
                    limit: upstream.max_message_bytes,
                };
            }
            Some(Err(_)) | None => break upstream.unavailable("its SSE stream ended"),
        };
        if !matches!(event.event.as_deref(), None | Some("message")) {
            continue;
        }
        let data = event.data.unwrap_or_default();
        if let Some(message) = event_message(&upstream.name, &data) {
            upstream.deliver(&connection, message, data.len()).await;
        }
    };
    if let Some(upstream) = upstream.upgrade() {
        upstream.drop_connection(&connection, &error);
    }
}

/// Closes the connections unused for `idle_timeout`, for as long as the upstream exists.
async fn sweep_idle(upstream: Weak<Inner>) {
    let pause = match upstream.upgrade() {
        Some(upstream) => (upstream.idle_timeout / 2).clamp(SWEEP_RANGE.0, SWEEP_RANGE.1),
        None => return,
    };
    loop {
        tokio::time::sleep(pause).await;
        let Some(upstream) = upstream.upgrade() else {
            return;
        };
        for connection in upstream.table.take_idle(upstream.idle_timeout) {
            tracing::debug!(upstream = %upstream.name, "closing an idle SSE connection");
            connection.close(&upstream.closed_by_mcpgate());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_against_the_stream_url_on_its_origin_only() {
        let url = Uri::from_static("http://up.example:8080/mcp/sse?token=t");
        let resolved = |data| resolve_endpoint(&url, data).map(|u| u.to_string());
        assert_eq!(
            resolved("/messages/?session_id=ab").as_deref(),
            Ok("http://up.example:8080/messages/?session_id=ab")
        );
        assert_eq!(
            resolved("messages?session_id=ab").as_deref(),
            Ok("http://up.example:8080/mcp/messages?session_id=ab")
        );
        assert_eq!(
            resolved(" http://up.example:8080/m?s=1 \n").as_deref(),
            Ok("http://up.example:8080/m?s=1")
        );
        for foreign in [
            "http://evil.example/m",
            "//evil.example/m",
            "https://up.example:8080/m",
        ] {
            assert_eq!(
                resolved(foreign),
                Err("its endpoint is on another origin"),
                "{foreign}"
            );
        }
    }
}

//! Streamable HTTP upstreams, as a client.
//!
//! The upstream's own session id lives in the session record, never in this object, so any
//! replica can carry an upstream session. Responses come as JSON or as an SSE stream; a stream
//! that ends before the response (SSE polling) is resumed with `Last-Event-ID`. For each
//! session, a standalone GET stream carries the upstream's unsolicited messages.
//!
//! Health: a POST that cannot reach the upstream marks it down, which leaves it out of the
//! merged lists. One task per upstream then probes it with `initialize` (on the gateway's own
//! behalf, the probe session deleted at once), backing off from 1 s to 30 s, until it answers;
//! then it is healthy again and its recovery is announced once to every session.
//!
//! Bodies are read within the upstream's `max_message_bytes`: a JSON answer, or one SSE event
//! (counted as it arrives, before `sse-stream` gathers it), over the bound is abandoned, and the
//! call it answered fails. A standalone stream that brings one is reopened after the last event
//! logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::request::Builder;
use http::{Request as HttpRequest, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::framing::{ReadError, bounded_events, event_message, is_too_large};
use super::http_client::{Clients, EVENT_STREAM, JSON, Response, SendError, json_body};
use super::outlet::{DropReason, Outlet};
use super::{CallContext, InitInfo, Replies, UpstreamError, UpstreamEvent, request_channel};
use crate::config::UpstreamConfig;
use crate::protocol::jsonrpc::{Message, Request, RequestId, notification_value, request_value};
use crate::protocol::{ProtocolVersion, era};
use crate::session::{SessionId, SessionRecord, UpstreamSession};
use crate::sync::lock;
use crate::telemetry::propagation::traced;

// Header names and fixed values as `http` types, so that no request parses them again.
const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
const LAST_EVENT_HEADER: HeaderName = HeaderName::from_static("last-event-id");
const METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
const NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");
const ACCEPT_JSON_OR_SSE: HeaderValue =
    HeaderValue::from_static("application/json, text/event-stream");
/// How many times one response stream is resumed before giving up.
const MAX_RESUMES: usize = 10;
/// How long the end of a response stream is awaited once its response went through (the
/// client has its answer by then). A server ends the stream right after the response, but its
/// last chunk often arrives in a read of its own, and a body dropped before its end closes the
/// connection instead of pooling it. Not shorter: tokio wakes its driver (an eventfd write and
/// one more `epoll_wait`) whenever a timer is set to expire before every other timer of the
/// thread, which a 10 ms wait did on nearly every call; a second is rarely the first to expire.
const STREAM_END_WAIT: Duration = Duration::from_secs(1);
/// Pause before resuming when the upstream gave no `retry` hint.
const DEFAULT_RETRY: Duration = Duration::from_millis(500);
/// Pause before reopening a standalone stream whose event could not be logged.
const UNLOGGED_RETRY: Duration = Duration::from_secs(1);
/// Pause before the first health probe of an upstream found down; it doubles after each failure.
const FIRST_PROBE: Duration = Duration::from_secs(1);
/// Longest pause between two health probes.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// A Streamable HTTP upstream.
pub struct HttpUpstream {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// Parsed once, when configured.
    url: Uri,
    clients: Clients,
    last_init: Mutex<Option<Arc<InitInfo>>>,
    outlet: Outlet,
    /// Longest JSON answer or SSE event read from the upstream.
    max_message_bytes: usize,
    health: Health,
    /// Longest wait for one health probe.
    probe_timeout: Duration,
}

/// Whether the upstream answers, and the wake-up of its probe when it stops answering.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    went_down: Notify,
}

impl Health {
    /// The upstream could not be reached; the first failure since it was healthy wakes the probe.
    fn mark_down(&self) {
        if !self.down.swap(true, Ordering::AcqRel) {
            self.went_down.notify_one();
        }
    }
}

impl HttpUpstream {
    pub fn new(config: &UpstreamConfig, outlet: Outlet) -> Result<Self, UpstreamError> {
        let name = config.name.clone();
        let (clients, url) = Clients::for_upstream(config)?;
        let inner = Inner {
            name,
            url,
            clients,
            last_init: Mutex::new(None),
            outlet,
            max_message_bytes: config.max_message_bytes,
            health: Health::default(),
            probe_timeout: config.timeout,
        };
        let inner = Arc::new(inner);
        tokio::spawn(inner.clone().watch_health());
        Ok(Self { inner })
    }

    /// Whether the last attempt to reach the upstream (a call or a probe) got through.
    pub fn is_healthy(&self) -> bool {
        !self.inner.health.down.load(Ordering::Acquire)
    }

    /// The last `initialize` answer, shared with [`super::Upstream::has_capability`].
    pub fn last_init(&self) -> &Mutex<Option<Arc<InitInfo>>> {
        &self.inner.last_init
    }

    /// Initializes an upstream session on the client's behalf.
    pub async fn open_session(
        &self,
        record: &SessionRecord,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let params = super::initialize_params(
            &record.protocol_version,
            &record.client_info,
            &record.client_capabilities,
        );
        let (upstream_session, init) = self.inner.handshake(&params).await?;
        *lock(&self.inner.last_init) = Some(init.clone());
        Ok((upstream_session, init))
    }

    /// Forwards a request, with `extra_headers` (a modern call's `Mcp-Param-*`).
    pub async fn request(
        &self,
        ctx: &CallContext,
        request: &Request,
        extra_headers: &[(String, String)],
    ) -> Result<Replies, UpstreamError> {
        let response = self
            .inner
            .post_with(request, &ctx.upstream_session, extra_headers)
            .await?;
        Ok(self.inner.clone().read_messages(
            response,
            ctx.upstream_session.clone(),
            request.id.clone(),
        ))
    }

    pub async fn send(&self, ctx: &CallContext, message: Message) -> Result<(), UpstreamError> {
        self.inner
            .post(&message.to_value(), &ctx.upstream_session)
            .await
            .map(drop)
    }

    pub async fn cancel(&self, ctx: &CallContext, request: &RequestId, reason: &str) {
        let params = json!({"requestId": request.to_value(), "reason": reason});
        let message = notification_value("notifications/cancelled", Some(&params));
        if let Err(error) = self.inner.post(&message, &ctx.upstream_session).await {
            tracing::debug!(%error, "could not forward a cancellation");
        }
    }

    /// Resumes a request's response stream after the upstream event `last_event_id`.
    pub fn resume_response(&self, ctx: &CallContext, last_event_id: String) -> Replies {
        let (tx, rx) = request_channel();
        let (inner, session) = (self.inner.clone(), ctx.upstream_session.clone());
        Replies::read_by(rx, async move {
            let cursor = SseCursor {
                last_event_id: Some(last_event_id),
                retry: Duration::ZERO,
                answers: None,
            };
            inner.resume_response_stream(cursor, session, &tx).await;
        })
    }

    /// Ends the upstream session (best effort).
    pub async fn close_session(&self, ctx: &CallContext) {
        self.inner.end_session(&ctx.upstream_session).await;
    }

    /// Opens the upstream's GET stream for one session until the returned task is aborted,
    /// the upstream refuses the stream, or, once `finish` is cancelled, the stream ends; the
    /// receiver says whether the upstream accepted it.
    pub fn listen(
        &self,
        ctx: &CallContext,
        resume_after: Option<String>,
        finish: CancellationToken,
    ) -> (JoinHandle<()>, oneshot::Receiver<bool>) {
        let (accepted, answer) = oneshot::channel();
        let stream = StandaloneStream {
            session: ctx.session.clone(),
            upstream_session: ctx.upstream_session.clone(),
            resume_after,
            accepted: Some(accepted),
            finish,
        };
        (tokio::spawn(self.inner.clone().listen(stream)), answer)
    }
}

impl Inner {
    /// `initialize` and `notifications/initialized`: a new upstream session.
    async fn handshake(
        self: &Arc<Self>,
        params: &Value,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let id = RequestId::String("mcpgate-initialize".into());
        let message = request_value(&id, "initialize", Some(params));
        let response = self.post(&message, &UpstreamSession::default()).await?;
        let session_id = header_text(response.headers(), SESSION_HEADER).map(str::to_owned);
        let mut messages = self
            .clone()
            .read_messages(response, UpstreamSession::default(), id);
        let result = loop {
            match messages.recv().await {
                Some(UpstreamEvent::Message(Message::Response(r))) => {
                    break r
                        .outcome
                        .map_err(|e| self.protocol(format!("initialize failed: {e}")))?;
                }
                Some(_) => continue,
                None => return Err(self.protocol("no answer to initialize".into())),
            }
        };
        let init = super::init_info_from(&result, &self.name)?;
        let upstream_session = UpstreamSession {
            session_id,
            protocol_version: Some(init.protocol_version.clone()),
        };
        let initialized = notification_value("notifications/initialized", None);
        self.post(&initialized, &upstream_session).await?;
        Ok((upstream_session, init))
    }

    /// DELETEs an upstream session (best effort).
    async fn end_session(&self, session: &UpstreamSession) {
        let Some(session_id) = &session.session_id else {
            return;
        };
        let request = HttpRequest::delete(self.url.clone())
            .header(SESSION_HEADER, session_id)
            .body(Full::default());
        if let Err(error) = self.clients.send(request).await {
            tracing::debug!(upstream = %self.name, %error, "upstream DELETE failed");
        }
    }

    /// Runs for the upstream's lifetime: each time it goes down, probes it until it is back.
    async fn watch_health(self: Arc<Self>) {
        loop {
            self.health.went_down.notified().await;
            tracing::warn!(upstream = %self.name, "HTTP upstream unreachable; probing it until it answers");
            self.probe_until_up().await;
        }
    }

    /// Probes with backoff until an `initialize` succeeds, then declares the recovery.
    async fn probe_until_up(self: &Arc<Self>) {
        let mut interval = FIRST_PROBE;
        loop {
            tokio::time::sleep(interval).await;
            match self.probe().await {
                Ok(init) => return self.recovered(init),
                Err(error) => {
                    tracing::debug!(upstream = %self.name, %error, "upstream still down")
                }
            }
            interval = (interval * 2).min(MAX_PROBE_INTERVAL);
        }
    }

    /// One health probe: an upstream session of the gateway's own, ended at once.
    async fn probe(self: &Arc<Self>) -> Result<Arc<InitInfo>, UpstreamError> {
        let params = super::initialize_params(
            ProtocolVersion::LATEST.as_str(),
            &json!({"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")}),
            &json!({}),
        );
        let timed_out = || UpstreamError::Timeout {
            upstream: self.name.clone(),
            after: self.probe_timeout,
        };
        let (session, init) = tokio::time::timeout(self.probe_timeout, self.handshake(&params))
            .await
            .map_err(|_| timed_out())??;
        self.end_session(&session).await;
        Ok(init)
    }

    /// The upstream answers again: its capabilities are known, it is listed, sessions are told.
    fn recovered(&self, init: Arc<InitInfo>) {
        *lock(&self.last_init) = Some(init.clone());
        self.health.down.store(false, Ordering::Release);
        super::announce_recovery(&self.outlet, &self.name, &init);
    }

    fn protocol(&self, reason: String) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.name.clone(),
            reason,
        }
    }

    fn transport(&self, error: SendError) -> UpstreamError {
        UpstreamError::Transport {
            upstream: self.name.clone(),
            reason: error.to_string(),
        }
    }

    fn with_session(&self, request: Builder, session: &UpstreamSession) -> Builder {
        let mut request = request;
        if let Some(id) = &session.session_id {
            request = request.header(SESSION_HEADER, id);
        }
        if let Some(version) = &session.protocol_version {
            request = request.header(VERSION_HEADER, version);
        }
        request
    }

    /// The headers a modern request mirrors its method and name in.
    fn with_mirrored(
        request: Builder,
        message: &impl Posted,
        session: &UpstreamSession,
    ) -> Builder {
        let Some(method) = message.method() else {
            return request;
        };
        if !session.is_modern() {
            return request;
        }
        let mut request = request.header(METHOD_HEADER, method);
        if let Some(name) = era::mirrored_name(method, message.params()) {
            request = request.header(NAME_HEADER, name);
        }
        request
    }

    /// POSTs one message, in the current trace (`traceparent`), and checks the status.
    async fn post(
        &self,
        message: &Value,
        session: &UpstreamSession,
    ) -> Result<Response, UpstreamError> {
        self.post_with(message, session, &[]).await
    }

    /// [`Inner::post`] with extra headers.
    async fn post_with(
        &self,
        message: &impl Posted,
        session: &UpstreamSession,
        extra_headers: &[(String, String)],
    ) -> Result<Response, UpstreamError> {
        let mut request = traced(HttpRequest::post(self.url.clone()))
            .header(ACCEPT, ACCEPT_JSON_OR_SSE)
            .header(CONTENT_TYPE, JSON);
        for (name, value) in extra_headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = Self::with_mirrored(request, message, session);
        let request = self.with_session(request, session).body(json_body(message));
        let response = self.clients.send(request).await.map_err(|e| {
            self.health.mark_down();
            self.transport(e)
        })?;
        if session.is_modern() && carries_rpc_error(&response) {
            return Ok(response);
        }
        self.check_status(response)
    }

    fn check_status(&self, response: Response) -> Result<Response, UpstreamError> {
        match response.status().as_u16() {
            200..=299 => Ok(response),
            404 => Err(UpstreamError::SessionGone {
                upstream: self.name.clone(),
            }),
            status => Err(UpstreamError::Status {
                upstream: self.name.clone(),
                status,
            }),
        }
    }

    /// Turns a POST answer (JSON, SSE or 202) to request `answers` into a channel of messages.
    fn read_messages(
        self: Arc<Self>,
        response: Response,
        session: UpstreamSession,
        answers: RequestId,
    ) -> Replies {
        let (tx, rx) = request_channel();
        Replies::read_by(rx, async move {
            let is_sse = header_text(response.headers(), CONTENT_TYPE)
                .is_some_and(|ct| ct.starts_with("text/event-stream"));
            if is_sse {
                self.relay_response_stream(response, session, answers, &tx)
                    .await;
                return;
            }
            match self.read_body(response).await {
                Ok(body) => self.relay_json(&body, &tx).await,
                Err(ReadError::TooLarge) => {
                    let _ = tx.send(self.too_large().response(answers).into()).await;
                }
                Err(error) => {
                    tracing::debug!(upstream = %self.name, %error, "could not read an answer")
                }
            }
        })
    }

    /// A whole body, if it is within `max_message_bytes`.
    async fn read_body(&self, response: Response) -> Result<Bytes, ReadError> {
        let body = Limited::new(response.into_body(), self.max_message_bytes);
        match body.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<LengthLimitError>() => Err(ReadError::TooLarge),
            Err(error) => Err(ReadError::Body(error.to_string())),
        }
    }

    /// The SSE events of a body, each bounded by `max_message_bytes`.
    fn events(
        &self,
        response: Response,
    ) -> impl Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Unpin + use<> {
        bounded_events(response, self.max_message_bytes)
    }

    /// Logs and counts a message over `max_message_bytes`; the error of the call it answered.
    fn too_large(&self) -> UpstreamError {
        let error = UpstreamError::TooLarge {
            upstream: self.name.clone(),
            limit: self.max_message_bytes,
        };
        tracing::warn!(upstream = %self.name, %error, "abandoned an oversized message from an HTTP upstream");
        self.outlet.dropped(DropReason::TooLarge);
        error
    }

    async fn relay_json(&self, body: &[u8], tx: &mpsc::Sender<UpstreamEvent>) {
        if body.is_empty() {
            return;
        }
        if let Some(message) = Message::from_object_text(body) {
            let _ = tx.send(message.into()).await;
            return;
        }
        let values = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => items,
            Ok(value) => vec![value],
            Err(error) => {
                return tracing::warn!(upstream = %self.name, %error, "upstream sent invalid JSON");
            }
        };
        for message in values
            .into_iter()
            .filter_map(|v| Message::from_value(v).ok())
        {
            let _ = tx.send(message.into()).await;
        }
    }

    /// Relays an SSE response until the response arrives, resuming the stream if it ends early.
    async fn relay_response_stream(
        &self,
        response: Response,
        session: UpstreamSession,
        answers: RequestId,
        tx: &mpsc::Sender<UpstreamEvent>,
    ) {
        let mut cursor = SseCursor {
            last_event_id: None,
            retry: DEFAULT_RETRY,
            answers: Some(answers),
        };
        if cursor.relay(self, response, tx).await {
            return;
        }
        if tx.send(UpstreamEvent::Paused).await.is_err() {
            return;
        }
        self.resume_response_stream(cursor, session, tx).await;
    }

    /// Resumes a response stream with `Last-Event-ID` (after `cursor.retry`) until the response
    /// arrives, at most [`MAX_RESUMES`] times.
    async fn resume_response_stream(
        &self,
        mut cursor: SseCursor,
        session: UpstreamSession,
        tx: &mpsc::Sender<UpstreamEvent>,
    ) {
        for _ in 0..MAX_RESUMES {
            let Some(last_event_id) = cursor.last_event_id.clone() else {
                return;
            };
            tokio::time::sleep(cursor.retry).await;
            let request = self
                .get_stream(&session)
                .header(LAST_EVENT_HEADER, last_event_id)
                .body(Full::default());
            let response = match self
                .clients
                .send(request)
                .await
                .map_err(|e| self.transport(e))
                .and_then(|r| self.check_status(r))
            {
                Ok(response) => response,
                Err(error) => {
                    return tracing::debug!(%error, "could not resume an upstream response stream");
                }
            };
            if cursor.relay(self, response, tx).await {
                return;
            }
            if tx.send(UpstreamEvent::Paused).await.is_err() {
                return;
            }
        }
    }

    fn get_stream(&self, session: &UpstreamSession) -> Builder {
        self.with_session(
            HttpRequest::get(self.url.clone()).header(ACCEPT, EVENT_STREAM),
            session,
        )
    }

    /// The standalone GET stream of one session, for as long as the upstream accepts it. Each
    /// event is logged before the next is read; when one cannot be logged (the event log is
    /// down), the stream is reopened after the last event logged, so an upstream that keeps
    /// its events sends the rest again.
    async fn listen(self: Arc<Self>, mut stream: StandaloneStream) {
        let mut logged = stream.resume_after.take();
        while !stream.finish.is_cancelled() {
            let mut request = self.get_stream(&stream.upstream_session);
            if let Some(id) = &logged {
                request = request.header(LAST_EVENT_HEADER, id);
            }
            let sent = self.clients.send(request.body(Full::default())).await;
            let retry = match sent.map(|r| (r.status().as_u16(), r)) {
                Ok((200, response)) => {
                    stream.answer(true);
                    self.relay_standalone(response, &stream, &mut logged).await
                }
                Ok((status, _)) => {
                    tracing::debug!(upstream = %self.name, status, "upstream offers no GET stream");
                    stream.answer(false);
                    return;
                }
                Err(error) => {
                    tracing::debug!(upstream = %self.name, %error, "GET stream failed");
                    DEFAULT_RETRY
                }
            };
            tokio::select! {
                () = tokio::time::sleep(retry.max(DEFAULT_RETRY)) => {}
                () = stream.finish.cancelled() => {}
            }
        }
    }

    /// Relays one standalone SSE body, an event at a time, updating `logged`; returns the
    /// pause before reconnecting (the upstream's `retry`, or [`UNLOGGED_RETRY`] when an event
    /// could not be logged). Once the stream is finishing, the rest of the body is read (so
    /// that its connection can be kept) but not relayed: its session ended.
    async fn relay_standalone(
        &self,
        response: Response,
        stream: &StandaloneStream,
        logged: &mut Option<String>,
    ) -> Duration {
        let session = &stream.session;
        let resumed_after = logged.clone();
        let mut retry = DEFAULT_RETRY;
        let mut events = self.events(response);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) if is_too_large(&error) => {
                    self.too_large();
                    break;
                }
                Err(_) => break,
            };
            if let Some(hint) = event.retry {
                retry = Duration::from_millis(hint);
            }
            if stream.finish.is_cancelled() || event.id.is_some() && event.id == resumed_after {
                continue;
            }
            let data = event.data.as_deref().unwrap_or_default();
            let Some(message) = self.parse_event(data) else {
                continue;
            };
            let (id, bytes) = (event.id.clone(), data.len());
            if !self
                .outlet
                .deliver(session.clone(), message, id, bytes)
                .await
            {
                return UNLOGGED_RETRY;
            }
            if event.id.is_some() {
                *logged = event.id;
            }
        }
        retry
    }

    /// One SSE event's data as a JSON-RPC message; `None` for a priming event or garbage.
    fn parse_event(&self, data: &str) -> Option<Message> {
        if data.trim().is_empty() {
            return None;
        }
        event_message(&self.name, data)
    }
}

/// One session's standalone stream, as [`Inner::listen`] keeps it.
struct StandaloneStream {
    session: SessionId,
    upstream_session: UpstreamSession,
    resume_after: Option<String>,
    /// Told once whether the upstream accepted the stream.
    accepted: Option<oneshot::Sender<bool>>,
    /// Cancelled when the stream is no longer wanted: it is not reopened, and what the
    /// current one still carries is read to its end but not relayed.
    finish: CancellationToken,
}

impl StandaloneStream {
    fn answer(&mut self, accepted: bool) {
        if let Some(sender) = self.accepted.take() {
            let _ = sender.send(accepted);
        }
    }
}

/// Where an SSE response stream from an upstream stands.
struct SseCursor {
    last_event_id: Option<String>,
    retry: Duration,
    /// The request whose answer this stream carries, when known: an event over
    /// `max_message_bytes` answers it with an error.
    answers: Option<RequestId>,
}

impl SseCursor {
    /// An event over `max_message_bytes` ends the stream: the call fails with an error when its
    /// id is known, or by the stream's end otherwise.
    async fn refuse_too_large(
        &mut self,
        upstream: &Inner,
        tx: &mpsc::Sender<UpstreamEvent>,
    ) -> bool {
        let error = upstream.too_large();
        if let Some(id) = self.answers.take() {
            let _ = tx.send(error.response(id).into()).await;
        }
        true
    }

    /// Relays one SSE body. Returns true when a response went through (the stream is done).
    async fn relay(
        &mut self,
        upstream: &Inner,
        response: Response,
        tx: &mpsc::Sender<UpstreamEvent>,
    ) -> bool {
        let resumed_after = self.last_event_id.clone();
        let mut events = upstream.events(response);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) if is_too_large(&error) => {
                    return self.refuse_too_large(upstream, tx).await;
                }
                Err(_) => return false,
            };
            if event.id.is_some() && event.id == resumed_after {
                continue;
            }
            let position = event.id.clone();
            if let Some(id) = event.id {
                self.last_event_id = Some(id);
            }
            if let Some(retry) = event.retry {
                self.retry = Duration::from_millis(retry);
            }
            let Some(message) = event.data.as_deref().and_then(|d| upstream.parse_event(d)) else {
                continue;
            };
            if let Some(id) = position
                && tx.send(UpstreamEvent::Position(id)).await.is_err()
            {
                return true;
            }
            let is_response = matches!(message, Message::Response(_));
            if tx.send(message.into()).await.is_err() {
                return true;
            }
            if is_response {
                finish_reading(events).await;
                return true;
            }
        }
        false
    }
}

/// A JSON-RPC message as POSTed: serialized as it is, and read for the headers a modern request
/// mirrors its method and name in. A forwarded request is posted as it is, its params not copied
/// into a `Value` first.
trait Posted: serde::Serialize {
    fn method(&self) -> Option<&str>;
    fn params(&self) -> Option<&Value>;
}

impl Posted for Value {
    fn method(&self) -> Option<&str> {
        self.get("method").and_then(Value::as_str)
    }

    fn params(&self) -> Option<&Value> {
        self.get("params")
    }
}

impl Posted for Request {
    fn method(&self) -> Option<&str> {
        Some(&self.method)
    }

    fn params(&self) -> Option<&Value> {
        self.params.as_ref()
    }
}

/// Reads what is left of a response stream after its response, for at most
/// [`STREAM_END_WAIT`], so that a stream ended as it should returns its connection to the pool.
async fn finish_reading<E>(mut events: impl Stream<Item = Result<sse_stream::Sse, E>> + Unpin) {
    let rest = async { while let Some(Ok(_)) = events.next().await {} };
    let _ = tokio::time::timeout(STREAM_END_WAIT, rest).await;
}

/// Whether a modern answer is a refusal with a JSON-RPC error body (400 for a bad request,
/// 404 for an unknown method): relayed to the client as the error it is.
fn carries_rpc_error(response: &Response) -> bool {
    matches!(response.status().as_u16(), 400 | 404)
        && header_text(response.headers(), CONTENT_TYPE)
            .is_some_and(|ct| ct.starts_with("application/json"))
}

fn header_text(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

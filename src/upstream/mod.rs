//! Upstream MCP servers: the registry and the two transports.
//!
//! An upstream turns one forwarded request into [`Replies`], a channel of [`Message`]s:
//! notifications and server-to-client requests that belong to that request, then the final
//! response; an HTTP upstream's answer is read by the task waiting on them (`replies.rs`). Messages
//! that belong to no request (list changes, resource updates) go to the bounded queue of
//! [`Unsolicited`] messages through the upstream's outlet (`outlet.rs`, which also applies the
//! upstream's `unsolicited_per_second`), and so do the list changes an upstream's recovery
//! implies (a stdio child restarted, an HTTP upstream that answers its health probe again).
//! No message longer than the upstream's `max_message_bytes` is read whole (`framing.rs`).
//!
//! stdio upstreams run one child per replica shared by every session (`stdio.rs`), or one per
//! team or per session (`isolated.rs`); `child.rs` is one child's connection either way. HTTP
//! upstreams speak Streamable HTTP (`http.rs`, an upstream session any replica can use) or the
//! legacy HTTP+SSE transport (`sse/`, an upstream session bound to one replica's connection).

mod child;
mod era;
mod framing;
mod http;
pub mod http_client;
mod isolated;
mod outlet;
mod reconcile;
mod replies;
mod sse;
mod stderr;
mod stdio;
mod tool_headers;

use crate::protocol::jsonrpc::RpcError;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::isolation::Isolation;
use crate::config::{StandaloneMode, TransportKind, UpstreamConfig, UpstreamEra};
use crate::glob_filter::GlobFilter;
use crate::protocol::jsonrpc::{Message, Notification, Request, RequestId, Response};
use crate::protocol::{Method, ServerCapability};
use crate::session::{SessionId, SessionRecord, UpstreamSession};

pub use http::HttpUpstream;
pub use isolated::IsolatedStdio;
pub use outlet::{DropReason, UnsolicitedQueue, UnsolicitedSink, unsolicited_queue};
pub use reconcile::{Reconciled, UpstreamChanges};
pub use replies::Replies;
pub use sse::SseUpstream;
pub use stdio::StdioUpstream;

use outlet::Outlet;

/// Buffer of one request's message channel.
const REQUEST_CHANNEL: usize = 64;
/// How often a retiring upstream looks for children without requests in flight.
const RETIRE_POLL: Duration = Duration::from_millis(50);
/// How long a retired upstream still serves as before: the requests that chose it just
/// before the reload replaced it reach it.
const RETIRE_SETTLE: Duration = Duration::from_secs(1);

/// What an upstream sends about one forwarded request.
#[derive(Debug)]
pub enum UpstreamEvent {
    /// A message: notifications and server-to-client requests first, the response last.
    Message(Message),
    /// The upstream closed its SSE stream before answering (SEP-1699 polling). mcpgate resumes
    /// the upstream stream itself; the client is asked to poll too.
    Paused,
    /// The upstream's SSE event id of the message that follows: where another replica resumes
    /// this response stream if the one relaying it dies.
    Position(String),
}

impl From<Message> for UpstreamEvent {
    fn from(message: Message) -> Self {
        UpstreamEvent::Message(message)
    }
}

/// What an upstream told us when it was initialized. Handed around as an `Arc`: every new
/// session's `initialize` answer is built from it, and a copy of its `Value`s cost about 5,000
/// instructions to make and as many to drop.
#[derive(Debug)]
pub struct InitInfo {
    pub protocol_version: String,
    pub capabilities: Value,
    pub server_info: Value,
    pub instructions: Option<String>,
}

/// A message from an upstream that belongs to no request.
#[derive(Debug)]
pub struct Unsolicited {
    pub upstream: String,
    /// The session it is for; `None` means every session of this replica that may see it.
    pub session: Option<SessionId>,
    pub message: Message,
    /// The upstream's SSE event id for it, where the upstream gave one (HTTP GET streams).
    pub event_id: Option<String>,
    /// Told whether the message was logged for its session, where the sender waits to know
    /// (an HTTP upstream's standalone stream reads its next event only after that).
    pub logged: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// The session-specific facts a call needs.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub session: SessionId,
    pub upstream_session: UpstreamSession,
}

/// Why an upstream could not serve a call. Every variant names the upstream; the details are
/// for the log only (see [`UpstreamError::client_message`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} is unavailable: {reason}")]
    Unavailable { upstream: String, reason: String },
    #[error("upstream {upstream} did not answer within {after:?}")]
    Timeout { upstream: String, after: Duration },
    #[error("upstream {upstream} failed: {reason}")]
    Transport { upstream: String, reason: String },
    #[error("upstream {upstream} answered HTTP {status}")]
    Status { upstream: String, status: u16 },
    #[error("upstream {upstream} no longer knows this session")]
    SessionGone { upstream: String },
    #[error("upstream {upstream} sent an invalid message: {reason}")]
    Protocol { upstream: String, reason: String },
    #[error("upstream {upstream} sent a message over the {limit}-byte limit")]
    TooLarge { upstream: String, limit: usize },
    #[error(
        "upstream {upstream} already runs {limit} processes on this replica (max_children); try again later"
    )]
    TooManyChildren { upstream: String, limit: usize },
    #[error(
        "upstream {upstream} already has {limit} connections busy on this replica (max_connections); try again later"
    )]
    TooManyConnections { upstream: String, limit: usize },
}

impl UpstreamError {
    /// What a client is told: which upstream failed and how, without the details (a path, an
    /// address, the upstream's own words), which only the log gets.
    pub fn client_message(&self) -> String {
        match self {
            UpstreamError::Unavailable { upstream, .. } => {
                format!("upstream {upstream} is unavailable")
            }
            UpstreamError::Transport { upstream, .. }
            | UpstreamError::Status { upstream, .. }
            | UpstreamError::Protocol { upstream, .. } => format!("upstream {upstream} failed"),
            UpstreamError::Timeout { .. }
            | UpstreamError::SessionGone { .. }
            | UpstreamError::TooLarge { .. }
            | UpstreamError::TooManyChildren { .. }
            | UpstreamError::TooManyConnections { .. } => self.to_string(),
        }
    }

    /// The JSON-RPC error response a client gets for request `id`, from the upstream's side.
    fn response(&self, id: RequestId) -> Message {
        let error = crate::protocol::jsonrpc::error_data(
            rmcp::model::ErrorCode::INTERNAL_ERROR,
            self.client_message(),
        );
        let outcome = Err(error);
        Message::Response(Response { id, outcome })
    }
}

/// An upstream GET stream kept open for one session; dropping it closes the stream.
pub struct UpstreamListener {
    task: tokio::task::JoinHandle<()>,
    /// Answers once: whether the upstream accepted the stream.
    accepted: Option<tokio::sync::oneshot::Receiver<bool>>,
    /// Asks the task to stop once the current stream ends.
    finish: tokio_util::sync::CancellationToken,
}

impl UpstreamListener {
    /// Waits, at most `limit`, until the upstream accepted the stream (`true`) or refused it.
    pub async fn accepted(&mut self, limit: Duration) -> bool {
        let Some(accepted) = self.accepted.take() else {
            return !self.task.is_finished();
        };
        matches!(tokio::time::timeout(limit, accepted).await, Ok(Ok(true)))
    }

    /// Resolves when the stream ended for good: the upstream refused it (its session is gone,
    /// or it offers no GET stream).
    pub async fn ended(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// Stops listening once the current stream ends, waiting at most `limit` for the upstream
    /// to end it (then it is cut): a stream that ends leaves its connection to the pool,
    /// where a cut one closes it. What it still carries is not relayed.
    pub async fn finish(mut self, limit: Duration) {
        self.finish.cancel();
        let _ = tokio::time::timeout(limit, self.ended()).await;
    }
}

impl Drop for UpstreamListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One configured upstream, whatever its transport.
pub enum Transport {
    Stdio(StdioUpstream),
    /// A stdio upstream with a child per team or per session.
    Isolated(IsolatedStdio),
    Http(HttpUpstream),
    /// A legacy HTTP+SSE upstream: a connection per session, held by one replica.
    Sse(SseUpstream),
}

/// An upstream with its namespace and tool filter.
pub struct Upstream {
    pub name: String,
    pub prefix: String,
    pub filter: GlobFilter,
    pub timeout: Duration,
    /// Who keeps a session's standalone GET stream open (HTTP upstreams).
    pub standalone: StandaloneMode,
    /// Shared with the upstream that replaces it when a reload changes only its view
    /// (`prefix`, `allow`, `deny`), so its children and connections carry on.
    transport: Arc<Transport>,
    era_setting: UpstreamEra,
    era: era::EraCache,
    /// Its tools' `x-mcp-header` annotations, as far as this replica has listed them.
    pub tool_headers: tool_headers::ToolHeaders,
    /// The entry it was built from, which a live reload compares with the new file's.
    config: UpstreamConfig,
}

impl Upstream {
    /// Builds an upstream from its configuration; stdio children start in the background.
    pub fn start(config: &UpstreamConfig, sink: &UnsolicitedSink) -> Result<Self, UpstreamError> {
        let outlet = || sink.outlet(&config.name, config.unsolicited_per_second);
        let transport = match (config.transport, config.isolation()) {
            (TransportKind::Stdio, Isolation::Shared) => {
                Transport::Stdio(StdioUpstream::start(config, outlet()))
            }
            (TransportKind::Stdio, _) => {
                Transport::Isolated(IsolatedStdio::start(config, sink.clone()))
            }
            (TransportKind::Http, _) => Transport::Http(HttpUpstream::new(config, outlet())?),
            (TransportKind::Sse, _) => Transport::Sse(SseUpstream::new(config, outlet())?),
        };
        Ok(Self::over(config, Arc::new(transport)))
    }

    /// The upstream `config` describes, over `transport`.
    fn over(config: &UpstreamConfig, transport: Arc<Transport>) -> Self {
        Self {
            name: config.name.clone(),
            prefix: config.effective_prefix().to_owned(),
            filter: GlobFilter::new(&config.allow, &config.deny),
            timeout: config.timeout,
            standalone: config.standalone.unwrap_or_default(),
            transport,
            era_setting: config.era,
            era: era::EraCache::default(),
            tool_headers: Default::default(),
            config: config.clone(),
        }
    }

    /// Whether it was built from exactly this entry (secrets included).
    pub fn is_configured_as(&self, config: &UpstreamConfig) -> bool {
        self.config == *config
    }

    /// Whether `config` reaches the same server the same way as this upstream's entry, and
    /// differs at most in how its tools are shown (`prefix`, `allow`, `deny`).
    pub fn serves_as(&self, config: &UpstreamConfig) -> bool {
        let server = |c: &UpstreamConfig| UpstreamConfig {
            prefix: None,
            allow: Vec::new(),
            deny: Vec::new(),
            ..c.clone()
        };
        server(&self.config) == server(config)
    }

    /// The same server under `config`'s view of it: the transport (its children, its
    /// connections) is shared, the namespace and tool filter are `config`'s.
    pub fn reviewed(&self, config: &UpstreamConfig) -> Self {
        Self::over(config, self.transport.clone())
    }

    /// Whether both run over one transport (one is the other, or its [`Upstream::reviewed`]).
    pub fn shares_transport_with(&self, other: &Upstream) -> bool {
        Arc::ptr_eq(&self.transport, &other.transport)
    }

    /// A live reload removed or replaced it: after [`RETIRE_SETTLE`], its stdio children stop
    /// once their requests in flight finish (within its `timeout`), and no new one starts.
    /// HTTP upstreams hold nothing to stop; an SSE upstream's connections close when the last
    /// request using it is done (the transport is dropped).
    pub async fn retire(&self) {
        tokio::time::sleep(RETIRE_SETTLE).await;
        match &*self.transport {
            Transport::Stdio(stdio) => stdio.retire(self.timeout, RETIRE_POLL).await,
            Transport::Isolated(pool) => pool.retire(self.timeout, RETIRE_POLL).await,
            Transport::Http(_) | Transport::Sse(_) => {}
        }
    }

    /// Prepares this upstream for a session; HTTP upstreams initialize an upstream session,
    /// isolated stdio upstreams start (or join) the session's child on this replica.
    pub async fn open_session(
        &self,
        session: &SessionId,
        record: &SessionRecord,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        match &*self.transport {
            Transport::Stdio(stdio) => stdio.open_session().await,
            Transport::Isolated(pool) => pool.open_session(session, record).await,
            Transport::Http(_) if self.only_modern() => self.open_modern().await,
            Transport::Http(http) => http.open_session(record).await,
            Transport::Sse(sse) => sse.open_session(session, record).await,
        }
    }

    /// What a session holds of an upstream that speaks only 2026-07-28: no upstream session,
    /// and what its discovery says in place of an `initialize` answer.
    async fn open_modern(&self) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        if !self.era.is_modern(|| Box::pin(self.probe_modern())).await {
            self.forget_era();
        }
        let info = self.last_init().ok_or_else(|| UpstreamError::Protocol {
            upstream: self.name.clone(),
            reason: "it does not answer server/discover with protocol 2026-07-28".into(),
        })?;
        Ok((UpstreamSession::modern(), info))
    }

    /// What a new legacy session is told of this upstream without opening a session on it:
    /// an HTTP (or SSE) upstream's last `initialize` answer on this replica. `None` for the transports
    /// that open at `initialize`, and before the first answer (that session opens at once).
    pub fn answer_without_opening(&self) -> Option<Arc<InitInfo>> {
        match &*self.transport {
            Transport::Http(_) if !self.only_modern() => self.last_init(),
            Transport::Sse(_) => self.last_init(),
            _ => None,
        }
    }

    /// Whether this upstream speaks only the modern era (`era = "modern"`): legacy sessions'
    /// requests reach it in the modern form too.
    pub fn only_modern(&self) -> bool {
        self.era_setting == UpstreamEra::Modern
    }

    /// Whether the upstream's last `initialize` answer declared a server capability.
    pub fn has_capability(&self, capability: ServerCapability) -> bool {
        crate::sync::lock(self.last_init_slot())
            .as_ref()
            .is_some_and(|init| capability.is_declared_in(&init.capabilities))
    }

    /// Whether an `initialize` (or `server/discover`) answer is known on this replica.
    pub fn is_known(&self) -> bool {
        crate::sync::lock(self.last_init_slot()).is_some()
    }

    /// The upstream's last `initialize` (or `server/discover`) answer on this replica; `None`
    /// before the first.
    pub fn last_init(&self) -> Option<Arc<InitInfo>> {
        crate::sync::lock(self.last_init_slot()).clone()
    }

    fn last_init_slot(&self) -> &std::sync::Mutex<Option<Arc<InitInfo>>> {
        match &*self.transport {
            Transport::Stdio(stdio) => stdio.last_init(),
            Transport::Isolated(pool) => pool.last_init(),
            Transport::Http(http) => http.last_init(),
            Transport::Sse(sse) => sse.last_init(),
        }
    }

    /// Keeps what a modern upstream's `server/discover` says, where no `initialize` has yet.
    fn learn_from_discovery(&self, result: &Value) {
        let mut slot = crate::sync::lock(self.last_init_slot());
        if slot.is_none() {
            *slot = Some(Arc::new(InitInfo {
                protocol_version: era::MODERN_VERSION.to_owned(),
                capabilities: result.get("capabilities").cloned().unwrap_or_default(),
                server_info: result
                    .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
                    .cloned()
                    .unwrap_or_default(),
                instructions: result
                    .get("instructions")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }));
        }
    }

    /// Whether the upstream answers now, as far as this replica knows: a stdio child that is up,
    /// an HTTP upstream whose last connection attempt did not fail; isolated children start on
    /// demand, so they are always worth a try.
    pub fn is_healthy(&self) -> bool {
        match &*self.transport {
            Transport::Stdio(stdio) => stdio.is_up(),
            Transport::Isolated(_) => true,
            Transport::Http(http) => http.is_healthy(),
            Transport::Sse(sse) => sse.is_healthy(),
        }
    }

    /// Whether this upstream speaks the modern era (see `era.rs`), probing it if need be. An
    /// SSE upstream never does: its transport predates 2026-07-28.
    pub async fn speaks_modern(&self) -> bool {
        let sse = matches!(*self.transport, Transport::Sse(_));
        if sse || self.is_isolated() || self.era_setting == UpstreamEra::Legacy {
            return false;
        }
        let probed = self.era.is_modern(|| Box::pin(self.probe_modern())).await;
        probed || self.only_modern()
    }

    /// Forgets the upstream's era: it refused a modern request at the transport level.
    pub fn forget_era(&self) {
        self.era.forget();
    }

    /// Asks the upstream `server/discover`. Its callers box it: it is rare, and its future as
    /// large as a request's.
    async fn probe_modern(&self) -> bool {
        let request = Request {
            id: RequestId::String("mcpgate-discover".into()),
            method: "server/discover".into(),
            params: Some(era::probe_params()),
        };
        let ctx = CallContext {
            session: SessionId::generate(),
            upstream_session: UpstreamSession::modern(),
        };
        let probe = async {
            let messages = self.request(&ctx, &request).await.ok()?;
            match response_of(messages).await? {
                Ok(result) if era::lists_modern_version(&result) => {
                    self.learn_from_discovery(&result);
                    Some(true)
                }
                Ok(_) | Err(_) => Some(false),
            }
        };
        let modern = tokio::time::timeout(era::PROBE_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false);
        tracing::info!(upstream = %self.name, modern, "probed the upstream's protocol era");
        modern
    }

    /// Whether this upstream needs a per-session upstream session (HTTP, SSE) or not (stdio).
    pub fn has_upstream_sessions(&self) -> bool {
        matches!(*self.transport, Transport::Http(_) | Transport::Sse(_))
    }

    /// Whether a replica holds each session's standalone GET stream of this upstream
    /// (`standalone = "hold"`, Streamable HTTP only: an SSE upstream's messages all come on
    /// the connection its session is bound to).
    pub fn holds_standalone(&self) -> bool {
        matches!(*self.transport, Transport::Http(_)) && self.standalone == StandaloneMode::Hold
    }

    /// Whether what a session does on this upstream can only be done on one replica: a stdio
    /// child's or an SSE connection's (answers to their requests, their tasks are routed
    /// there), as opposed to an HTTP upstream session, which any replica can use.
    pub fn is_replica_bound(&self) -> bool {
        !matches!(*self.transport, Transport::Http(_))
    }

    /// Whether sessions get children of their own (per team or per session), which restore
    /// a session's state from its record when they start.
    pub fn is_isolated(&self) -> bool {
        matches!(*self.transport, Transport::Isolated(_))
    }

    /// Forwards a request; the replies are related messages and then the response. Lent, as
    /// a caller may forward it again (after re-initializing a lost upstream session): an HTTP
    /// upstream only writes it out, where a child or an SSE connection takes a copy it rewrites.
    pub async fn request(
        &self,
        ctx: &CallContext,
        request: &Request,
    ) -> Result<Replies, UpstreamError> {
        let messages = match &*self.transport {
            Transport::Stdio(stdio) => stdio.request(ctx, request.clone()).await,
            Transport::Isolated(pool) => pool.request(ctx, request.clone()).await,
            Transport::Http(http) => {
                let headers = self.param_headers_for(ctx, request);
                return http.request(ctx, request, &headers).await;
            }
            Transport::Sse(sse) => sse.request(ctx, request.clone()).await,
        };
        messages.map(Replies::channel)
    }

    /// The `Mcp-Param-*` headers of a modern `tools/call` to this upstream.
    fn param_headers_for(&self, ctx: &CallContext, request: &Request) -> Vec<(String, String)> {
        if !ctx.upstream_session.is_modern() || Method::parse(&request.method) != Method::CallTool {
            return Vec::new();
        }
        let params = request.params.as_ref();
        let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
            return Vec::new();
        };
        let annotations = self.tool_headers.of(name).unwrap_or_default();
        crate::protocol::param_headers::outgoing(
            &annotations,
            params.and_then(|p| p.get("arguments")),
        )
    }

    /// Sends a notification or a response (to a server-to-client request) upstream.
    pub async fn send(&self, ctx: &CallContext, message: Message) -> Result<(), UpstreamError> {
        match &*self.transport {
            Transport::Stdio(stdio) => stdio.send(message).await,
            Transport::Isolated(pool) => pool.send(ctx, message).await,
            Transport::Http(http) => http.send(ctx, message).await,
            Transport::Sse(sse) => sse.send(ctx, message).await,
        }
    }

    /// Tells the upstream to stop working on a request we forwarded.
    pub async fn cancel(&self, ctx: &CallContext, request: &RequestId, reason: &str) {
        match &*self.transport {
            Transport::Stdio(stdio) => stdio.cancel(&ctx.session, request, reason).await,
            Transport::Isolated(pool) => pool.cancel(&ctx.session, request, reason).await,
            Transport::Http(http) => http.cancel(ctx, request, reason).await,
            Transport::Sse(sse) => sse.cancel(ctx, request, reason).await,
        }
    }

    /// Opens the upstream's GET stream for a session's unsolicited messages, for HTTP upstreams
    /// holding an upstream session, resuming after the upstream event `resume_after` when
    /// given; it closes when the returned listener is dropped.
    pub fn listen(
        &self,
        ctx: &CallContext,
        resume_after: Option<String>,
    ) -> Option<UpstreamListener> {
        match &*self.transport {
            Transport::Http(http) if ctx.upstream_session.session_id.is_some() => {
                let finish = tokio_util::sync::CancellationToken::new();
                let (task, accepted) = http.listen(ctx, resume_after, finish.clone());
                Some(UpstreamListener {
                    task,
                    accepted: Some(accepted),
                    finish,
                })
            }
            _ => None,
        }
    }

    /// Resumes, after the upstream event `last_event_id`, the response stream of a request
    /// that another replica was relaying (HTTP upstreams); `None` for other transports.
    pub fn resume_response(&self, ctx: &CallContext, last_event_id: String) -> Option<Replies> {
        match &*self.transport {
            Transport::Http(http) => Some(http.resume_response(ctx, last_event_id)),
            Transport::Stdio(_) | Transport::Isolated(_) | Transport::Sse(_) => None,
        }
    }

    /// Ends this upstream's part of a session.
    pub async fn close_session(&self, ctx: &CallContext) {
        match &*self.transport {
            Transport::Http(http) => http.close_session(ctx).await,
            Transport::Sse(sse) => sse.close_session(ctx),
            Transport::Stdio(_) | Transport::Isolated(_) => {}
        }
    }
}

/// All configured upstreams, in configuration order.
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
}

impl Upstreams {
    pub fn start(configs: &[UpstreamConfig], sink: UnsolicitedSink) -> Result<Self, UpstreamError> {
        let list = configs
            .iter()
            .map(|c| Upstream::start(c, &sink).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self { list })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.list.iter()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Upstream>> {
        self.list.iter().find(|u| u.name == name).cloned()
    }

    /// A session ended (however this replica learnt it): the isolated children it used here
    /// stop once no other session uses them, its SSE connections here close.
    pub fn session_ended(&self, session: &SessionId) {
        for upstream in &self.list {
            match &*upstream.transport {
                Transport::Isolated(pool) => pool.session_ended(session),
                Transport::Sse(sse) => sse.session_ended(session),
                Transport::Stdio(_) | Transport::Http(_) => {}
            }
        }
    }

    /// Waits, at most `limit`, for stdio children to finish their first start attempt.
    pub async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        for upstream in &self.list {
            if let Transport::Stdio(stdio) = &*upstream.transport {
                while stdio.is_starting() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// The lists a client may have to fetch again when an upstream recovers.
const LISTS: [&str; 3] = ["tools", "prompts", "resources"];

/// An upstream came (back) up: its lists may differ from what sessions saw while it was down,
/// so every session of this replica is told, as if the upstream had sent
/// `notifications/<list>/list_changed` for each list capability it declared.
fn announce_recovery(outlet: &Outlet, upstream: &str, init: &InitInfo) {
    tracing::info!(
        upstream,
        "upstream recovered; announcing its lists to the sessions"
    );
    for list in LISTS {
        if init.capabilities.get(list).is_none() {
            continue;
        }
        let message = Message::Notification(Notification {
            method: format!("notifications/{list}/list_changed"),
            params: None,
        });
        outlet.broadcast(message, 0);
    }
}

/// A request of mcpgate's own that puts a session's state (log level, subscriptions) back on
/// an upstream.
pub fn restore_request(method: &str, params: Value) -> Request {
    Request {
        id: RequestId::String(format!("mcpgate-restore-{method}")),
        method: method.into(),
        params: Some(params),
    }
}

/// Whether the response among `messages` is a success; whatever else the upstream sends
/// meanwhile is for no client. `None` when the exchange ended without a response.
pub async fn response_succeeded(messages: Replies) -> Option<bool> {
    Some(response_of(messages).await?.is_ok())
}

/// The outcome of the response among `messages`; `None` when none came.
pub async fn response_of(mut messages: Replies) -> Option<Result<Value, RpcError>> {
    loop {
        if let UpstreamEvent::Message(Message::Response(response)) = messages.recv().await? {
            return Some(response.outcome);
        }
    }
}

/// Every client capability the gateway can serve an upstream's requests for: what an
/// upstream connection shared by many clients is initialized with. Each request is then
/// gated by what its own client declared.
pub fn relayable_capabilities() -> Value {
    serde_json::json!({"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": true}})
}

/// Channel for one forwarded request.
fn request_channel() -> (mpsc::Sender<UpstreamEvent>, mpsc::Receiver<UpstreamEvent>) {
    mpsc::channel(REQUEST_CHANNEL)
}

/// Reads the parts of an `initialize` result that the gateway keeps.
fn init_info_from(result: &Value, upstream: &str) -> Result<Arc<InitInfo>, UpstreamError> {
    let protocol_version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| UpstreamError::Protocol {
            upstream: upstream.to_owned(),
            reason: "initialize result has no protocolVersion".into(),
        })?
        .to_owned();
    Ok(Arc::new(InitInfo {
        protocol_version,
        capabilities: result
            .get("capabilities")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({})),
        server_info: result.get("serverInfo").cloned().unwrap_or(Value::Null),
        instructions: result
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }))
}

/// The `initialize` params the gateway sends upstream.
fn initialize_params(protocol_version: &str, client_info: &Value, capabilities: &Value) -> Value {
    serde_json::json!({
        "protocolVersion": protocol_version,
        "capabilities": capabilities,
        "clientInfo": client_info,
    })
}

//! JSON-RPC dispatch: what a client message means, which upstreams it goes to, and what the
//! client gets back. Nothing here knows about HTTP; [`crate::http`] calls in with parsed
//! messages and a looked-up [`Session`], and gets back channels of outgoing JSON.

mod bus;
mod capabilities;
mod changes;
mod created_here;
mod ending;
mod exchange;
mod facade;
mod fanout;
mod first_open;
mod forward;
mod holder;
mod hub;
mod initialize;
mod legacy_bridge;
mod limited;
mod listen;
mod methods;
mod modern;
mod reload;
mod remote;
mod renewals;
mod request_state;
mod response_stream;
mod restore;
mod signing;
mod sse_transport;
mod stateless;
mod suspended;
mod tasks;
mod unsolicited;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use opentelemetry::context::FutureExt;
use rmcp::model::ErrorCode;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::auth::Principal;
use crate::catalog::ResourceRoutes;
use crate::config::StandaloneMode;
use crate::events::EventLog;
use crate::limits::{LimitExceeded, Limits};
use crate::policy::{Policy, TeamPolicy};
use crate::protocol::jsonrpc::{
    Notification, Request, RequestId, Response, error_data, error_value,
};
use crate::protocol::{Call, CallError, Method, ModernRequest};
use crate::session::{Lookup, SessionId, SessionRecord, SessionStore, StoreError};
use crate::telemetry::mcp_spans::{self, Side};
use crate::telemetry::{LookupOutcome, Metrics};
use crate::upstream::{CallContext, UnsolicitedSink, UpstreamError, UpstreamListener, Upstreams};

pub use bus::Bus;
use bus::BusMessage;
pub use ending::ExpiryEvents;
use holder::HeldElsewhere;
pub use holder::Resume;
pub use hub::Hub;
pub use initialize::InitializeError;
pub use limited::StreamSlot;
pub use signing::IdSigner;
pub use sse_transport::{SseEventIds, SseInitializeError};

/// What the client must receive about one request.
#[derive(Debug)]
pub enum Outgoing {
    /// A JSON-RPC message; the request's response is the last one.
    Message(Value),
    /// End the client's stream here; it resumes with `Last-Event-ID` (SEP-1699 polling).
    Pause,
    /// Where the upstream's own stream stands after the message that follows: logged with it,
    /// so another replica can resume the upstream stream if this one dies.
    Position(crate::events::Origin),
}

/// Where a request's task sends what the client must receive.
pub type Outbox = mpsc::Sender<Outgoing>;

pub use crate::protocol::jsonrpc::{Outcome, RpcError};

/// JSON-RPC code for a request the client cancelled. Its POST still needs an answer, which the
/// client ignores.
const REQUEST_CANCELLED: ErrorCode = ErrorCode(-32800);

/// Buffer of the per-request outgoing channel.
const OUTBOX_CAPACITY: usize = 64;

/// Who a session is looked up for.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// A client request, authenticated as this principal: only the session's owner may use it.
    Client(&'a Principal),
    /// The gateway itself (relaying an upstream's message to the session's client).
    Gateway,
}

/// A live session, as loaded for one HTTP request.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: SessionId,
    /// Shared, not copied, by the work a request hands over (a session is cloned for each
    /// request of a body and each upstream exchange).
    pub record: Arc<SessionRecord>,
    /// For a modern request's one-request session (see `stateless.rs`, never stored), the
    /// request's protocol fields and mirrored headers.
    modern: Option<Arc<ModernRequest>>,
}

impl Session {
    /// Whether this is a modern request's one-request session.
    fn is_stateless(&self) -> bool {
        self.modern.is_some()
    }
}

/// Why a session cannot be used. Only [`SessionError::Store`] is not the client's problem.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session expired")]
    Expired,
    #[error("session was deleted")]
    Deleted,
    #[error("session not found")]
    Unknown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a client message was refused before any work started.
#[derive(Debug, thiserror::Error)]
pub enum MessageRejected {
    #[error("request id {0} is already in use by a request in flight")]
    DuplicateId(RequestId),
    #[error("response id {0} does not answer any request of this session")]
    UnknownResponse(RequestId),
    #[error("Method not found: {method}")]
    UnknownMethod { id: RequestId, method: String },
    #[error("{method}: {reason}")]
    InvalidParams {
        id: RequestId,
        method: String,
        reason: String,
    },
    #[error("{limit}")]
    Limited { id: RequestId, limit: LimitExceeded },
}

impl MessageRejected {
    /// The id of the refused message.
    pub fn id(&self) -> &RequestId {
        match self {
            MessageRejected::DuplicateId(id) | MessageRejected::UnknownResponse(id) => id,
            MessageRejected::UnknownMethod { id, .. }
            | MessageRejected::InvalidParams { id, .. }
            | MessageRejected::Limited { id, .. } => id,
        }
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            MessageRejected::UnknownMethod { .. } => ErrorCode::METHOD_NOT_FOUND,
            MessageRejected::InvalidParams { .. } => ErrorCode::INVALID_PARAMS,
            MessageRejected::Limited { .. } => LimitExceeded::CODE,
            MessageRejected::DuplicateId(_) | MessageRejected::UnknownResponse(_) => {
                ErrorCode::INVALID_REQUEST
            }
        }
    }

    /// The error response for the refused request.
    pub fn response(&self) -> Value {
        error_response(Some(self.id()), self.code(), self.to_string())
    }
}

/// Where session state lives, and how replicas reach each other.
pub struct Backends {
    pub store: Arc<dyn SessionStore>,
    pub events: Arc<dyn EventLog>,
    /// `None` for a single replica (the memory store).
    pub bus: Option<Bus>,
    /// Redis keyspace events for expired records, where the deployment can publish them.
    pub expiry_events: Option<ExpiryEvents>,
    /// What principals and sessions may use, kept where the sessions are.
    pub limits: Limits,
}

/// Gateway-wide settings dispatch needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_lifetime: Duration,
    /// How long this replica keeps its in-memory entry of a session it is not using (see
    /// [`Hub::prune`]); the entry is rebuilt from the record when the session comes back.
    pub hub_idle: Duration,
    /// What each team may see and call.
    pub policy: Arc<Policy>,
    /// Lifetime of a sealed MRTR `requestState`.
    pub request_state_ttl: Duration,
    /// Most upstream standalone streams this replica holds for sessions.
    pub max_held_streams: usize,
}

impl Settings {
    /// Longest [`Settings::hub_idle`]: entries of sessions unused here go within minutes.
    pub const MAX_HUB_IDLE: Duration = Duration::from_secs(300);

    /// Settings for sessions with this idle TTL and absolute lifetime.
    pub fn new(idle_ttl: Duration, max_lifetime: Duration) -> Self {
        Self {
            max_lifetime,
            hub_idle: idle_ttl.min(Self::MAX_HUB_IDLE),
            policy: Arc::new(Policy::default()),
            request_state_ttl: Duration::from_secs(600),
            max_held_streams: crate::config::ServerConfig::DEFAULT_MAX_HELD_STREAMS,
        }
    }

    /// The same settings holding at most `max` upstream standalone streams.
    pub fn with_max_held_streams(self, max: usize) -> Self {
        Self {
            max_held_streams: max,
            ..self
        }
    }

    /// The same settings with `policy` instead of letting everyone use everything.
    pub fn with_policy(self, policy: Policy) -> Self {
        Self {
            policy: Arc::new(policy),
            ..self
        }
    }
}

/// The shared state behind every request.
pub struct Gateway {
    /// This gateway, for the tasks it starts (they end when it is gone).
    me: std::sync::Weak<Gateway>,
    store: Arc<dyn SessionStore>,
    events: Arc<dyn EventLog>,
    /// The configured upstreams; a live reload swaps in a new set (`reload.rs`).
    upstreams: ArcSwap<Upstreams>,
    /// Where new upstreams send what they say outside any request.
    sink: UnsolicitedSink,
    hub: Hub,
    metrics: Arc<Metrics>,
    routes: ResourceRoutes,
    signer: IdSigner,
    /// Cross-replica routing of answers and cancellations; `None` for a single replica.
    bus: Option<Bus>,
    settings: Settings,
    limits: Limits,
    /// Upstream sessions of modern (sessionless) requests.
    stateless: stateless::StatelessUpstreams,
    /// Seals the `requestState` of modern multi round-trip requests.
    sealer: request_state::StateSealer,
    /// Calls to legacy upstreams waiting for a modern client's input.
    suspended: suspended::SuspendedExchanges,
    /// Calls to modern-only upstreams waiting for a legacy client's answers.
    input_waiters: legacy_bridge::InputWaiters,
    /// Upstream list changes for listen streams.
    changes: changes::Changes,
    /// Modern requests in flight here, by principal.
    modern_in_flight: limited::ModernInFlight,
    /// Requests waiting for another replica to run them.
    remote: remote::Waiting,
    /// GET streams of the shared upstream sessions, held for listen streams.
    shared_streams: watch::SharedStreams,
    /// Upstream sessions being opened on a session's first request to them.
    first_opens: first_open::FirstOpens,
    /// Sessions created here that have not made a request here yet.
    created_here: created_here::CreatedHere,
    /// One permit per upstream standalone stream this replica may hold.
    held_streams: Arc<tokio::sync::Semaphore>,
    /// The leases of the streams held here, renewed together.
    renewals: renewals::LeaseRenewals,
}

impl Gateway {
    /// Builds the gateway and starts relaying unsolicited upstream messages to GET streams.
    pub fn start(
        backends: Backends,
        upstreams: impl FnOnce(UnsolicitedSink) -> Result<Upstreams, UpstreamError>,
        signer: IdSigner,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Result<Arc<Self>, UpstreamError> {
        let (sink, unsolicited) = crate::upstream::unsolicited_queue(metrics.clone());
        let expiry_events = backends.expiry_events;
        let upstreams = ArcSwap::from_pointee(upstreams(sink.clone())?);
        let sealer =
            request_state::StateSealer::new(signer.request_state_key(), settings.request_state_ttl);
        let created_here = created_here::CreatedHere::new(settings.hub_idle);
        let held_streams = Arc::new(tokio::sync::Semaphore::new(settings.max_held_streams));
        let gateway = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            store: backends.store,
            events: backends.events,
            bus: backends.bus,
            upstreams,
            sink,
            hub: Hub::default(),
            metrics,
            routes: ResourceRoutes::default(),
            signer,
            settings,
            limits: backends.limits,
            stateless: Default::default(),
            sealer,
            suspended: suspended::SuspendedExchanges::default(),
            input_waiters: legacy_bridge::InputWaiters::default(),
            changes: changes::Changes::default(),
            modern_in_flight: limited::ModernInFlight::default(),
            remote: remote::Waiting::default(),
            shared_streams: watch::SharedStreams::default(),
            first_opens: Default::default(),
            created_here,
            held_streams,
            renewals: Default::default(),
        });
        if gateway.bus.is_some() {
            tokio::spawn(remote::serve_inbox(Arc::downgrade(&gateway)));
        }
        tokio::spawn(unsolicited::relay(Arc::downgrade(&gateway), unsolicited));
        tokio::spawn(ending::keep_house(Arc::downgrade(&gateway)));
        tokio::spawn(renewals::renew_leases(Arc::downgrade(&gateway)));
        if let Some(events) = expiry_events {
            tokio::spawn(ending::watch_expiries(Arc::downgrade(&gateway), events));
        }
        Ok(gateway)
    }

    /// Loads a session for a request, sliding its TTL; this replica now serves it (a
    /// revival, when it did not).
    pub async fn lookup(
        self: &Arc<Self>,
        id: &SessionId,
        caller: Caller<'_>,
    ) -> Result<Session, SessionError> {
        self.load_session(id, caller, true).await
    }

    /// Loads a session for a body of notifications and answers only, or for its DELETE,
    /// sliding its TTL: this replica keeps nothing of the session for it (an idle session that
    /// only sent `notifications/initialized` costs no replica memory), and a revival waits for
    /// the session's next request (a DELETE on a replica that never served the session restores
    /// nothing upstream and holds no stream only to end it).
    pub async fn lookup_in_passing(
        self: &Arc<Self>,
        id: &SessionId,
        caller: Caller<'_>,
    ) -> Result<Session, SessionError> {
        self.load_session(id, caller, false).await
    }

    async fn load_session(
        self: &Arc<Self>,
        id: &SessionId,
        caller: Caller<'_>,
        serve_here: bool,
    ) -> Result<Session, SessionError> {
        let (loaded, held_elsewhere) = self.load_record(id, serve_here).await;
        let (outcome, result) = match loaded {
            Ok(Lookup::Live(record)) if !self.serves(caller, &record) => {
                (LookupOutcome::Foreign, Err(SessionError::Unknown))
            }
            Ok(Lookup::Live(record)) => {
                let session = Session {
                    id: id.clone(),
                    record,
                    modern: None,
                };
                let outcome = match serve_here {
                    true => self.serve_here(&session, &held_elsewhere).await,
                    false => LookupOutcome::Hit,
                };
                (outcome, Ok(session))
            }
            Ok(lookup @ Lookup::Expired { .. }) => {
                self.ended(id, lookup, caller);
                (LookupOutcome::Expired, Err(SessionError::Expired))
            }
            Ok(Lookup::Deleted) => {
                self.upstreams().session_ended(id);
                (LookupOutcome::Deleted, Err(SessionError::Deleted))
            }
            Ok(Lookup::Unknown) => (LookupOutcome::Unknown, Err(SessionError::Unknown)),
            Err(error) => (LookupOutcome::StoreError, Err(SessionError::Store(error))),
        };
        self.metrics.lookup(outcome);
        result
    }

    /// Loads a session's record; for a request that may revive the session here, also reads
    /// who holds its streams, in the same round trip, so that the revival waits only for the
    /// streams nobody holds.
    async fn load_record(
        &self,
        id: &SessionId,
        serve_here: bool,
    ) -> (Result<Lookup, StoreError>, HeldElsewhere) {
        if !serve_here || self.hub.serves(id) || self.created_here.contains(id) {
            return (self.store.load(id).await, HeldElsewhere::default());
        }
        tokio::join!(self.store.load(id), self.held_elsewhere(id))
    }

    /// Registers a live session with this replica; revives it when it is new here and was not
    /// created here: restores its upstream state and holds the upstream streams no other
    /// replica holds.
    async fn serve_here(&self, session: &Session, held_elsewhere: &HeldElsewhere) -> LookupOutcome {
        let (_, fresh_here) = self.hub.attach(&session.id, &session.record);
        self.refresh_session_slot(session);
        if !fresh_here || self.created_here.take(&session.id) {
            return LookupOutcome::Hit;
        }
        self.metrics.sessions_revived.inc();
        let restore = self.restore_on_revival(session);
        let _ = tokio::time::timeout(restore::REVIVAL_RESTORE_LIMIT, restore).await;
        self.hold_streams_except(session, Resume::AfterLastLogged, held_elsewhere)
            .await;
        LookupOutcome::Revived
    }

    /// What spans and logs show for a session id (see [`IdSigner::session_tag`]).
    pub fn session_tag(&self, session: &SessionId) -> String {
        self.signer.session_tag(session)
    }

    /// The rules of `session`'s team.
    pub(super) fn policy(&self, session: &Session) -> &TeamPolicy {
        self.settings
            .policy
            .for_team(session.record.team.as_deref())
    }

    /// Whether `caller` may use a session with this record: its owner, or the gateway.
    fn serves(&self, caller: Caller<'_>, record: &SessionRecord) -> bool {
        match caller {
            Caller::Client(principal) => self.signer.owns(principal, &record.owner),
            Caller::Gateway => true,
        }
    }

    /// Ends a session: record gone, tombstone set, streams closed, nothing of it kept here;
    /// then, all at once, its slot freed, its event log dropped and its upstream sessions ended.
    pub async fn delete(&self, session: &Session) -> Result<(), StoreError> {
        self.store.delete(&session.id).await?;
        self.metrics.sessions_deleted.inc();
        self.hub.close(&session.id);
        self.created_here.take(&session.id);
        let upstreams = self.upstreams();
        upstreams.session_ended(&session.id);
        let events_dropped = async {
            if let Err(error) = self.events.remove_session(&session.id).await {
                tracing::warn!(%error, "could not drop the event log of a deleted session");
            }
        };
        let upstream_sessions_closed = upstreams.iter().filter_map(|upstream| {
            let ctx = self.existing_context(session, &upstream.name)?;
            Some(async move { upstream.close_session(&ctx).await })
        });
        tokio::join!(
            self.free_session_slot(&session.id, &session.record),
            events_dropped,
            futures::future::join_all(upstream_sessions_closed),
        );
        Ok(())
    }

    /// Starts work on a request, as [`Gateway::check_request`] parsed it; the channel carries
    /// what the client must receive.
    pub fn handle_request(
        self: &Arc<Self>,
        session: Session,
        request: Request,
        call: Call,
    ) -> Result<mpsc::Receiver<Outgoing>, MessageRejected> {
        let cancel = self.begin_request(&session.id, &request.id)?;
        let (outbox, receiver) = mpsc::channel(OUTBOX_CAPACITY);
        let gateway = self.clone();
        let span = tracing::Span::current();
        let work = async move {
            let id = request.id.clone();
            let outcome = tokio::select! {
                outcome = gateway.run_method(&session, call, request, &outbox) => outcome,
                () = cancel.cancelled() => Err(error_object(REQUEST_CANCELLED, "request cancelled")),
            };
            mcp_spans::record_outcome(&tracing::Span::current(), Side::Server, &outcome);
            gateway.hub.end(&session.id, &id);
            let _ = outbox
                .send(Outgoing::Message(response_value(&id, outcome)))
                .await;
        };
        tokio::spawn(work.instrument(span).with_current_context());
        Ok(receiver)
    }

    /// Parses a request's method and the params it is routed by, refusing before any work a
    /// request whose method or parameters cannot be right.
    pub fn check_request(&self, request: &Request) -> Result<Call, MessageRejected> {
        let method = Method::parse(&request.method);
        Call::parse(&method, request.params.as_ref()).map_err(|error| {
            let (id, method) = (request.id.clone(), request.method.clone());
            match error {
                CallError::UnknownMethod => MessageRejected::UnknownMethod { id, method },
                CallError::InvalidParams(reason) => {
                    MessageRejected::InvalidParams { id, method, reason }
                }
            }
        })
    }

    /// Handles a client notification.
    pub async fn handle_notification(&self, session: &Session, notification: Notification) {
        match Method::parse(&notification.method) {
            Method::Cancelled => {
                let id = notification
                    .params
                    .as_ref()
                    .and_then(|p| p.get("requestId"))
                    .and_then(RequestId::from_value);
                if let Some(id) = id
                    && !self.hub.cancel(&session.id, &id)
                {
                    self.route(session, BusMessage::Cancel { request: id })
                        .await;
                }
            }
            Method::RootsListChanged => self.broadcast_notification(session, notification).await,
            _ => {}
        }
    }

    /// Routes a client's answer to a server-to-client request back to the upstream that asked.
    pub async fn handle_response(
        &self,
        session: &Session,
        response: Response,
    ) -> Result<(), MessageRejected> {
        let unknown = || MessageRejected::UnknownResponse(response.id.clone());
        let signed = self
            .signer
            .verify(&session.id, &response.id)
            .ok_or_else(unknown)?;
        let upstreams = self.upstreams();
        let upstream = upstreams.by_name(&signed.upstream).ok_or_else(unknown)?;
        if upstream.only_modern() {
            return self.answer_input(session, signed, response.outcome).await;
        }
        if upstream.is_replica_bound() && signed.replica != self.signer.replica() {
            let (replica, upstream, id) = (signed.replica, signed.upstream, signed.id);
            let answer = BusMessage::Answer {
                replica,
                upstream,
                id,
                outcome: response.outcome,
            };
            self.route(session, answer).await;
            return Ok(());
        }
        let ctx = self.context_for(session, &signed.upstream);
        let answer = Response {
            id: signed.id,
            outcome: response.outcome,
        };
        if let Err(error) = upstream
            .send(&ctx, crate::protocol::jsonrpc::Message::Response(answer))
            .await
        {
            tracing::warn!(%error, "could not deliver a client's answer upstream");
        }
        Ok(())
    }

    /// Sends a message to the replica holding the session's exchange; without a fleet there is
    /// no other replica, and the message concerns an exchange that no longer exists.
    async fn route(&self, session: &Session, message: BusMessage) {
        let Some(bus) = &self.bus else {
            tracing::debug!("dropping a message for an exchange that is gone");
            return;
        };
        if let Err(error) = bus.send(&session.id, &message).await {
            tracing::warn!(%error, "could not route a message to another replica");
        }
    }

    async fn broadcast_notification(&self, session: &Session, notification: Notification) {
        for upstream in self.upstreams().iter() {
            let ctx = self.context_for(session, &upstream.name);
            let message = crate::protocol::jsonrpc::Message::Notification(notification.clone());
            if let Err(error) = upstream.send(&ctx, message).await {
                tracing::debug!(%error, "could not forward a client notification");
            }
        }
    }

    /// Makes sure the session's upstream standalone streams are open while the client's own GET
    /// stream (on this replica) is: held ones are taken if no replica holds them; `follow` ones
    /// are opened for as long as the client's stream keeps the returned listeners, resumed
    /// after the last upstream event logged.
    pub async fn listen_upstreams(&self, session: &Session) -> Vec<UpstreamListener> {
        self.hold_streams(session, Resume::AfterLastLogged).await;
        let upstreams = self.upstreams();
        let mut followed = upstreams
            .iter()
            .filter(|u| u.standalone == StandaloneMode::Follow)
            .peekable();
        if followed.peek().is_none() {
            return Vec::new();
        }
        let mut positions = self.upstream_positions(&session.id).await;
        followed
            .filter_map(|upstream| {
                let ctx = self.context_for(session, &upstream.name);
                upstream.listen(&ctx, positions.remove(&upstream.name))
            })
            .collect()
    }

    /// The call context for an upstream of a session (its upstream session may be empty).
    fn context_for(&self, session: &Session, upstream: &str) -> CallContext {
        CallContext {
            session: session.id.clone(),
            upstream_session: session
                .record
                .upstreams
                .get(upstream)
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn existing_context(&self, session: &Session, upstream: &str) -> Option<CallContext> {
        session
            .record
            .upstreams
            .get(upstream)
            .map(|_| self.context_for(session, upstream))
    }
}

/// A gateway on the memory store with the given upstreams, for unit tests.
#[cfg(test)]
fn test_gateway(upstreams: &[crate::config::UpstreamConfig]) -> Arc<Gateway> {
    let backends = Backends {
        store: Arc::new(crate::session::MemoryStore::new(Duration::from_secs(60))),
        events: Arc::new(crate::events::MemoryEventLog::new(
            Duration::from_secs(60),
            10,
        )),
        bus: None,
        expiry_events: None,
        limits: Limits::memory(
            crate::limits::LimitSettings::new(&Default::default(), false, Duration::from_secs(60)),
            Arc::new(Metrics::new().expect("metrics")),
        ),
    };
    Gateway::start(
        backends,
        |sink| Upstreams::start(upstreams, sink),
        IdSigner::random(),
        Arc::new(Metrics::new().expect("metrics")),
        Settings::new(Duration::from_secs(60), Duration::from_secs(3600)),
    )
    .expect("gateway")
}

/// The JSON-RPC response for an outcome.
pub fn response_value(id: &RequestId, outcome: Outcome) -> Value {
    match outcome {
        Ok(result) => crate::protocol::jsonrpc::result_value(id, result),
        Err(error) => serde_json::json!({"jsonrpc": "2.0", "id": id.to_value(), "error": error}),
    }
}

/// A JSON-RPC error object.
pub fn error_object(code: ErrorCode, message: impl Into<String>) -> RpcError {
    error_data(code, message)
}

/// A whole error response for a request id.
pub fn error_response(
    id: Option<&RequestId>,
    code: ErrorCode,
    message: impl Into<String>,
) -> Value {
    error_value(id, &error_data(code, message))
}

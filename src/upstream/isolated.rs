//! Isolated stdio upstreams (`isolation = "team"` or `"session"`): a pool of child processes
//! per replica, one per team (sessions without a team share one) or one per session.
//!
//! - A child starts on a session's first use of the upstream on this replica (`initialize`, a
//!   request, a revival), initialized with the `clientInfo`, capabilities and protocol revision
//!   of the session that starts it, then given that session's log level and its resource
//!   subscriptions on this upstream. A session joining a team's running child adds its own
//!   subscriptions; the child keeps the clientInfo, capabilities and log level it has.
//! - What the child sends on its own goes only to its sessions (`child.rs`): to the request in
//!   flight when exactly one of its sessions has requests in flight; otherwise a notification
//!   goes to every one of its sessions on this replica, and a request to its only session, or
//!   is refused with the reason when it has several.
//! - Each child gets the environment of its team (`team_env.<team>`, else `env`) plus the
//!   inherited allow-list, and an outlet of its own, so `unsolicited_per_second` is per child.
//! - A child without requests in flight for `idle_timeout` is stopped, and so is a child whose
//!   sessions on this replica all ended (DELETE, or an end this replica noticed). One that
//!   exits is forgotten; its sessions start a new one on their next use.
//! - At most `max_children` run (or start) at once; beyond, [`UpstreamError::TooManyChildren`].
//! - A pool retired by a live reload starts no child; each of its children stops once it has
//!   no request in flight, and the last ones after the upstream's `timeout`.
//!
//! Counted in `mcpgate_isolated_children{upstream}` and `mcpgate_isolated_children_{started,
//! stopped,refused}_total`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use super::child::{self, Audience, Connection, Wire};
use super::outlet::UnsolicitedSink;
use super::stdio::upstream_session;
use super::{
    CallContext, InitInfo, UpstreamError, UpstreamEvent, response_succeeded, restore_request,
};
use crate::config::UpstreamConfig;
use crate::config::isolation::Isolation;
use crate::protocol::jsonrpc::{Message, Request, RequestId};
use crate::session::{SessionId, SessionRecord, UpstreamSession};
use crate::sync::lock;
use crate::telemetry::Metrics;

/// Bounds of how often idle children are looked for.
const REAP_EVERY: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(50)..=Duration::from_secs(5);

/// Whose child it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ChildKey {
    Team(Option<String>),
    Session(SessionId),
}

/// Why a child stopped: the `reason` label of `mcpgate_isolated_children_stopped_total`.
#[derive(Debug, Clone, Copy)]
enum StopReason {
    Idle,
    SessionEnded,
    Exited,
    /// The upstream was removed or changed by a live reload.
    Retired,
}

impl StopReason {
    fn label(self) -> &'static str {
        match self {
            StopReason::Idle => "idle",
            StopReason::SessionEnded => "session_ended",
            StopReason::Exited => "exited",
            StopReason::Retired => "retired",
        }
    }
}

/// A child that answered `initialize`.
struct Running {
    key: ChildKey,
    connection: Arc<Connection>,
    /// The sessions of this replica using it.
    members: Arc<Mutex<HashSet<SessionId>>>,
    stop: Mutex<Option<oneshot::Sender<StopReason>>>,
}

/// A child starting (`None`), running, or that failed to start.
type Started = Option<Result<Arc<Running>, UpstreamError>>;

#[derive(Default)]
struct State {
    children: HashMap<ChildKey, watch::Receiver<Started>>,
    /// The child each session of this replica uses.
    sessions: HashMap<SessionId, ChildKey>,
}

struct Pool {
    config: UpstreamConfig,
    sink: UnsolicitedSink,
    state: Mutex<State>,
    last_init: Mutex<Option<Arc<InitInfo>>>,
    /// Set by a live reload that removed or changed the upstream: no child starts any more.
    retired: AtomicBool,
}

/// The children of one isolated stdio upstream on this replica.
pub struct IsolatedStdio {
    pool: Arc<Pool>,
}

impl IsolatedStdio {
    /// An empty pool, and the task that stops idle children.
    pub fn start(config: &UpstreamConfig, sink: UnsolicitedSink) -> Self {
        let pool = Arc::new(Pool {
            config: config.clone(),
            sink,
            state: Mutex::default(),
            last_init: Mutex::new(None),
            retired: AtomicBool::new(false),
        });
        let every = (config.idle_timeout() / 4).clamp(*REAP_EVERY.start(), *REAP_EVERY.end());
        tokio::spawn(reap(Arc::downgrade(&pool), every));
        Self { pool }
    }

    /// The last `initialize` answer of any of its children.
    pub fn last_init(&self) -> &Mutex<Option<Arc<InitInfo>>> {
        &self.pool.last_init
    }

    /// Starts the session's child (or joins its team's) and reports what it answered.
    pub async fn open_session(
        &self,
        session: &SessionId,
        record: &SessionRecord,
    ) -> Result<(UpstreamSession, Arc<InitInfo>), UpstreamError> {
        let pool = &self.pool;
        let key = pool.key_for(session, record.team.as_deref());
        let (slot, starter) = pool.slot(&key, session, record)?;
        let running = pool.started(slot).await?;
        let joined = lock(&running.members).insert(session.clone());
        lock(&pool.state).sessions.insert(session.clone(), key);
        if joined && !starter {
            pool.subscribe(&running, session, record).await;
        }
        let init = running
            .connection
            .init()
            .ok_or_else(|| pool.unavailable("not initialized"))?;
        Ok((upstream_session(&init), init))
    }

    /// Forwards a request to the session's child; [`UpstreamError::SessionGone`] when the
    /// session has none on this replica (never opened here, or stopped), so that it opens one.
    pub async fn request(
        &self,
        ctx: &CallContext,
        request: Request,
    ) -> Result<mpsc::Receiver<UpstreamEvent>, UpstreamError> {
        let running = self.pool.running_for(&ctx.session)?;
        running
            .connection
            .request(&ctx.session, request)
            .await
            .map_err(|e| self.pool.transport(e))
    }

    /// Writes a notification or a response to the session's child.
    pub async fn send(&self, ctx: &CallContext, message: Message) -> Result<(), UpstreamError> {
        let running = self.pool.running_for(&ctx.session)?;
        running
            .connection
            .send(message)
            .await
            .map_err(|e| self.pool.transport(e))
    }

    /// Cancels the session's request that the client knows as `client_id`.
    pub async fn cancel(&self, session: &SessionId, client_id: &RequestId, reason: &str) {
        if let Ok(running) = self.pool.running_for(session) {
            running.connection.cancel(session, client_id, reason).await;
        }
    }

    /// Starts no more children, and stops each running one once it has no request in flight,
    /// polling every `poll`; what still runs after `limit` is stopped anyway.
    pub async fn retire(&self, limit: Duration, poll: Duration) {
        self.pool.retired.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + limit;
        while !self
            .pool
            .stop_retired(tokio::time::Instant::now() >= deadline)
        {
            tokio::time::sleep(poll).await;
        }
    }

    /// The session ended: it leaves its child, which stops when no session of this replica
    /// uses it any more (a session's child at once).
    pub fn session_ended(&self, session: &SessionId) {
        let pool = &self.pool;
        let mut state = lock(&pool.state);
        let Some(key) = state.sessions.remove(session) else {
            return;
        };
        let Some(running) = state.children.get(&key).and_then(running) else {
            return;
        };
        let mut members = lock(&running.members);
        members.remove(session);
        if members.is_empty() {
            drop(members);
            pool.stop(&mut state, &running, StopReason::SessionEnded);
        }
    }
}

/// The last holder of the upstream is gone: its children stop.
impl Drop for IsolatedStdio {
    fn drop(&mut self) {
        self.pool.retired.store(true, Ordering::Relaxed);
        self.pool.stop_retired(true);
    }
}

impl Pool {
    /// Stops the children without requests in flight, or all of them when `late`; `true` when
    /// none is left (children still starting are waited for even when late).
    fn stop_retired(&self, late: bool) -> bool {
        let mut state = lock(&self.state);
        let children: Vec<Arc<Running>> = state.children.values().filter_map(running).collect();
        let starting = state.children.len() > children.len();
        let stopping = children
            .into_iter()
            .filter(|child| late || child.connection.idle_for().is_some());
        for child in stopping {
            self.stop(&mut state, &child, StopReason::Retired);
        }
        state.children.is_empty() || (late && !starting)
    }

    fn key_for(&self, session: &SessionId, team: Option<&str>) -> ChildKey {
        match self.config.isolation() {
            Isolation::Session => ChildKey::Session(session.clone()),
            Isolation::Team | Isolation::Shared => ChildKey::Team(team.map(str::to_owned)),
        }
    }

    /// The child for `key`, starting one for `session` when there is none (`true`: this call
    /// started it), within `max_children`.
    fn slot(
        self: &Arc<Self>,
        key: &ChildKey,
        session: &SessionId,
        record: &SessionRecord,
    ) -> Result<(watch::Receiver<Started>, bool), UpstreamError> {
        if self.retired.load(Ordering::Relaxed) {
            return Err(self.unavailable("removed from the configuration"));
        }
        let mut state = lock(&self.state);
        if let Some(slot) = state.children.get(key) {
            return Ok((slot.clone(), false));
        }
        let limit = self.config.max_children();
        if state.children.len() >= limit {
            self.metrics().isolated_child_refused(&self.config.name);
            return Err(UpstreamError::TooManyChildren {
                upstream: self.config.name.clone(),
                limit,
            });
        }
        let (started, slot) = watch::channel(None);
        state.children.insert(key.clone(), slot.clone());
        let starting = Starting {
            key: key.clone(),
            session: session.clone(),
            record: record.clone(),
            started,
        };
        tokio::spawn(self.clone().run(starting));
        Ok((slot, true))
    }

    /// Waits until the child of `slot` answered `initialize` (or failed to).
    async fn started(
        &self,
        mut slot: watch::Receiver<Started>,
    ) -> Result<Arc<Running>, UpstreamError> {
        let started = slot
            .wait_for(Option::is_some)
            .await
            .map_err(|_| self.unavailable("stopped while starting"))?;
        match &*started {
            Some(outcome) => outcome.clone(),
            None => Err(self.unavailable("still starting")),
        }
    }

    /// The running child the session uses on this replica.
    fn running_for(&self, session: &SessionId) -> Result<Arc<Running>, UpstreamError> {
        let state = lock(&self.state);
        state
            .sessions
            .get(session)
            .and_then(|key| state.children.get(key))
            .and_then(running)
            .ok_or_else(|| UpstreamError::SessionGone {
                upstream: self.config.name.clone(),
            })
    }

    /// Starts a child, restores the starting session's state on it, and watches it until it
    /// stops.
    async fn run(self: Arc<Self>, starting: Starting) {
        let members = Arc::new(Mutex::new(HashSet::new()));
        let wire = Arc::new(Wire {
            name: self.config.name.clone(),
            outlet: self
                .sink
                .outlet(&self.config.name, self.config.unsolicited_per_second),
            max_message_bytes: self.config.max_message_bytes,
            audience: Audience::Members(members.clone()),
        });
        let record = &starting.record;
        let params = super::initialize_params(
            &record.protocol_version,
            &record.client_info,
            &record.client_capabilities,
        );
        let env = self.config.env_for(record.team.as_deref());
        let mut process = match child::start(wire.clone(), &self.config, env, &params).await {
            Ok(process) => process,
            Err(reason) => return self.failed(&starting, reason),
        };
        tracing::info!(upstream = %wire.name, "isolated stdio child started");
        self.metrics().isolated_child_started(&wire.name);
        *lock(&self.last_init) = Some(process.init.clone());
        let (stop, stopped) = oneshot::channel();
        let running = Arc::new(Running {
            key: starting.key.clone(),
            connection: process.connection.clone(),
            members,
            stop: Mutex::new(Some(stop)),
        });
        self.restore(&running, &starting.session, record).await;
        starting.started.send_replace(Some(Ok(running.clone())));
        let reason = tokio::select! {
            _ = process.child.wait() => StopReason::Exited,
            reason = stopped => {
                process.stop().await;
                reason.unwrap_or(StopReason::Exited)
            }
        };
        process.finish(&wire);
        self.stop(&mut lock(&self.state), &running, reason);
        tracing::info!(upstream = %wire.name, reason = reason.label(), "isolated stdio child stopped");
        self.metrics()
            .isolated_child_stopped(&wire.name, reason.label());
    }

    /// A child did not start: its slot goes, and whoever waits for it gets the error.
    fn failed(&self, starting: &Starting, reason: String) {
        tracing::warn!(upstream = %self.config.name, %reason, "isolated stdio child did not start");
        let mut state = lock(&self.state);
        let ours = state
            .children
            .get(&starting.key)
            .is_some_and(|slot| slot.same_channel(&starting.started.subscribe()));
        if ours {
            state.children.remove(&starting.key);
        }
        starting
            .started
            .send_replace(Some(Err(self.unavailable(&reason))));
    }

    /// Forgets `running` (when it is still the child of its key) and its sessions, and tells
    /// its task to stop it.
    fn stop(&self, state: &mut State, child: &Arc<Running>, reason: StopReason) {
        let current = state.children.get(&child.key).and_then(running);
        if current.is_some_and(|current| Arc::ptr_eq(&current, child)) {
            state.children.remove(&child.key);
            for session in lock(&child.members).iter() {
                state.sessions.remove(session);
            }
        }
        if let Some(stop) = lock(&child.stop).take() {
            let _ = stop.send(reason);
        }
    }

    /// Stops every child without requests in flight for `idle_timeout`.
    fn stop_idle(&self) {
        let timeout = self.config.idle_timeout();
        let mut state = lock(&self.state);
        let idle: Vec<Arc<Running>> = state
            .children
            .values()
            .filter_map(running)
            .filter(|r| r.connection.idle_for().is_some_and(|idle| idle >= timeout))
            .collect();
        for running in idle {
            self.stop(&mut state, &running, StopReason::Idle);
        }
    }

    /// Gives a new child the starting session's log level and subscriptions.
    async fn restore(&self, running: &Running, session: &SessionId, record: &SessionRecord) {
        let logs = running
            .connection
            .init()
            .is_some_and(|init| init.capabilities.get("logging").is_some());
        if let (Some(level), true) = (&record.log_level, logs) {
            let params = json!({"level": level});
            self.quietly(running, session, "logging/setLevel", params)
                .await;
        }
        self.subscribe(running, session, record).await;
    }

    /// Subscribes the child to the session's resources on this upstream.
    async fn subscribe(&self, running: &Running, session: &SessionId, record: &SessionRecord) {
        let subscribed = record
            .subscriptions
            .iter()
            .filter(|(_, upstream)| **upstream == self.config.name);
        for (uri, _) in subscribed {
            let params = json!({"uri": uri});
            self.quietly(running, session, "resources/subscribe", params)
                .await;
        }
    }

    /// Sends a request of mcpgate's own and waits (within the upstream's timeout) for its
    /// response.
    async fn quietly(
        &self,
        running: &Running,
        session: &SessionId,
        method: &str,
        params: serde_json::Value,
    ) {
        let request = restore_request(method, params);
        let answered = async {
            let messages = running.connection.request(session, request).await.ok()?;
            response_succeeded(super::Replies::channel(messages)).await
        };
        let outcome = tokio::time::timeout(self.config.timeout, answered).await;
        if !matches!(outcome, Ok(Some(true))) {
            tracing::warn!(upstream = %self.config.name, method, "could not restore session state on an isolated child");
        }
    }

    fn metrics(&self) -> &Metrics {
        self.sink.metrics()
    }

    fn unavailable(&self, reason: &str) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.config.name.clone(),
            reason: reason.to_owned(),
        }
    }

    fn transport(&self, error: std::io::Error) -> UpstreamError {
        UpstreamError::Transport {
            upstream: self.config.name.clone(),
            reason: error.to_string(),
        }
    }
}

/// What starting a child needs.
struct Starting {
    key: ChildKey,
    /// The session that starts it, whose record it is initialized from.
    session: SessionId,
    record: SessionRecord,
    started: watch::Sender<Started>,
}

/// The running child of a slot, if it runs.
fn running(slot: &watch::Receiver<Started>) -> Option<Arc<Running>> {
    match &*slot.borrow() {
        Some(Ok(running)) => Some(running.clone()),
        _ => None,
    }
}

/// Stops idle children every `every`, for as long as the pool exists.
async fn reap(pool: Weak<Pool>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.stop_idle();
    }
}

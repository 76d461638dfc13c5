//! The multi round-trip bridge from a modern client to a legacy upstream: exchanges suspended
//! on this replica while the client answers what the upstream asked.
//!
//! A legacy upstream asks for sampling, elicitation or roots *during* a call, as a request to
//! the client; a modern client has no server-to-client requests, only `input_required`
//! results and retries. When a modern request's upstream asks (and the client declared the
//! capability), the exchange is suspended here: the upstream's message stream, its pending
//! request and the call stay on this replica, and the client gets `input_required` with that
//! request under [`INPUT_KEY`] and a sealed `requestState` naming this replica and the
//! exchange ([`Held::Suspended`]).
//!
//! The retry may land on any replica. Here, it takes the exchange from the table; elsewhere it
//! sends a [`BusMessage::Resume`] over the caller's bus channel, and the [`keeper`] task of
//! the exchange takes it up and answers with `Claimed`, then the messages the exchange relays,
//! then the outcome. Either way the client's answer goes to the upstream as the response to
//! its request, and the exchange runs on: to the final result, or to the next request, which
//! suspends it again under a new state.
//!
//! Bounds: at most [`MAX_SUSPENDED`] exchanges per replica and [`MAX_PER_CALLER`] per
//! principal; a call that would exceed them is cancelled upstream and refused with -32000. A
//! suspended exchange lives as long as its state (`server.request_state_ttl`) and is then
//! cancelled upstream. A retry waits [`CLAIM_WAIT`] for the holding replica to take it up;
//! a state whose exchange is gone (answered already, expired, its replica stopped) is refused
//! with -32602, and the client starts over without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::Rng;
use rmcp::model::ErrorCode;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::RpcError;
use super::bus::{Bus, BusListener, BusMessage};
use super::capabilities::ClientCapabilities;
use super::modern::REQUEST_STATE;
use super::request_state::{Binding, Held, StateError};
use super::{Gateway, OUTBOX_CAPACITY, Outbox, Outcome, Outgoing, Session, error_object};
use crate::limits::LimitExceeded;
use crate::protocol::jsonrpc::{Message, Request, RequestId, Response};
use crate::session::SessionId;
use crate::sync::lock;
use crate::upstream::{CallContext, Replies, Upstream};

/// Suspended exchanges one replica holds at most.
pub const MAX_SUSPENDED: usize = 1024;
/// Suspended exchanges one principal may have at once.
pub const MAX_PER_CALLER: usize = 16;
/// How long a retry waits for the replica holding its exchange to take it up.
pub const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// The key of the upstream's request in `inputRequests` (one per round: a legacy upstream
/// waits for each answer before it asks again).
pub const INPUT_KEY: &str = "mcpgate-input";

/// An exchange with a legacy upstream, at the point where it asked the client for input.
pub(super) struct Suspension {
    pub ctx: CallContext,
    pub upstream: Arc<Upstream>,
    /// The call as the upstream knows it.
    pub id: RequestId,
    /// The upstream's request to the client.
    pub asked: Request,
    pub messages: Replies,
    pub capabilities: ClientCapabilities,
    pub binding: Binding,
}

/// Where a retry's exchange is held, and how long the holder may stay quiet once it took
/// the retry up (the upstream's timeout, which restarts with each of its messages, and the
/// claim's own wait).
struct Route {
    replica: String,
    exchange: String,
    quiet: Duration,
}

/// What a modern client's retry carries, taken out of its params: a legacy upstream knows
/// neither field.
pub(super) struct Retry {
    pub state: Option<Value>,
    pub responses: Value,
}

/// Takes `requestState` and `inputResponses` out of a request's params.
pub(super) fn take_retry(request: &mut Request) -> Retry {
    let params = request.params.as_mut().and_then(Value::as_object_mut);
    let Some(params) = params else {
        return Retry {
            state: None,
            responses: Value::Null,
        };
    };
    Retry {
        state: params.remove(REQUEST_STATE),
        responses: params.remove("inputResponses").unwrap_or(Value::Null),
    }
}

/// A suspension in the table; dropping it ends its keeper.
struct Entry {
    suspension: Suspension,
    _keeper: oneshot::Sender<()>,
}

/// Why an exchange could not be suspended or resumed.
#[derive(Debug, thiserror::Error)]
pub enum SuspendError {
    #[error(
        "Too Many Requests: this replica holds {MAX_SUSPENDED} calls waiting for client input; retry later"
    )]
    ReplicaFull,
    #[error(
        "Too Many Requests: this principal may have at most {MAX_PER_CALLER} calls waiting for its input; answer one first"
    )]
    CallerFull,
    #[error(
        "the call this requestState continues is no longer held (answered already, expired, or its replica stopped); send the request again without requestState"
    )]
    Gone,
}

impl SuspendError {
    fn to_rpc(&self) -> RpcError {
        let code = match self {
            SuspendError::ReplicaFull | SuspendError::CallerFull => LimitExceeded::CODE,
            SuspendError::Gone => ErrorCode::INVALID_PARAMS,
        };
        error_object(code, self.to_string())
    }
}

/// The exchanges suspended on this replica, by exchange id.
#[derive(Default)]
pub(super) struct SuspendedExchanges {
    entries: Mutex<HashMap<String, Entry>>,
}

impl SuspendedExchanges {
    /// Keeps `entry` under `exchange`; at a bound, refuses it and cancels its call upstream.
    fn insert(&self, exchange: &str, entry: Entry) -> Result<(), SuspendError> {
        let mut entries = lock(&self.entries);
        let owner = &entry.suspension.binding.owner;
        let held = entries
            .values()
            .filter(|e| e.suspension.binding.owner == *owner)
            .count();
        let refusal = if entries.len() >= MAX_SUSPENDED {
            SuspendError::ReplicaFull
        } else if held >= MAX_PER_CALLER {
            SuspendError::CallerFull
        } else {
            entries.insert(exchange.to_owned(), entry);
            return Ok(());
        };
        drop(entries);
        cancel_upstream(
            entry.suspension,
            "mcpgate holds too many calls waiting for input",
        );
        Err(refusal)
    }

    fn take(&self, exchange: &str) -> Option<Suspension> {
        lock(&self.entries)
            .remove(exchange)
            .map(|entry| entry.suspension)
    }
}

impl Gateway {
    /// Suspends `suspension` and returns the `input_required` result that asks the client
    /// what the upstream asked. At a bound, the call is cancelled upstream and refused.
    /// `listener` hears the caller's bus channel ([`Gateway::resume_listener`]): subscribed
    /// before the result goes out, since a retry may reach another replica at once.
    pub(super) fn suspend(
        &self,
        mut suspension: Suspension,
        listener: Option<BusListener>,
    ) -> Outcome {
        // Nobody waits on the upstream's messages until the retry: they are read meanwhile.
        suspension.messages.detach();
        let exchange = exchange_id();
        let held = Held::Suspended {
            replica: self.signer.replica().to_owned(),
            exchange: exchange.clone(),
        };
        let state = self
            .sealer
            .seal(&suspension.upstream.name, held, suspension.binding.clone());
        let asked = &suspension.asked;
        let result = json!({
            "resultType": "input_required",
            "inputRequests": {INPUT_KEY: {"method": asked.method, "params": asked.params}},
            REQUEST_STATE: state,
        });
        let session = suspension.ctx.session.clone();
        let (keeper, ended) = oneshot::channel();
        let entry = Entry {
            suspension,
            _keeper: keeper,
        };
        if let Err(error) = self.suspended.insert(&exchange, entry) {
            return Err(error.to_rpc());
        }
        let keeper = Keeper {
            gateway: self.me.clone(),
            session,
            exchange,
            replica: self.signer.replica().to_owned(),
            listener,
        };
        let ttl = self.settings.request_state_ttl;
        tokio::spawn(keeper.keep(ttl, ended));
        Ok(result)
    }

    /// Starts listening on a caller's bus channel for retries of a call about to be suspended.
    pub(super) async fn resume_listener(&self, session: &SessionId) -> Option<BusListener> {
        match &self.bus {
            Some(bus) => Some(bus.listen(session).await),
            None => None,
        }
    }

    /// Serves a modern client's retry of a call to a legacy upstream: its `requestState` must
    /// open for this caller and call, and name an exchange suspended for `upstream`.
    pub(super) async fn resume_retry(
        &self,
        session: &Session,
        upstream: &Upstream,
        state: &Value,
        responses: Value,
        binding: &Binding,
        outbox: &Outbox,
    ) -> Outcome {
        let invalid = |reason: String| error_object(ErrorCode::INVALID_PARAMS, reason);
        match self.open_state_for(upstream, state, binding) {
            Err(error) => Err(invalid(error.to_string())),
            Ok(Held::Upstream { .. }) => Err(invalid(StateError::Foreign.to_string())),
            Ok(Held::Suspended { replica, exchange }) => {
                let route = Route {
                    replica,
                    exchange,
                    quiet: upstream.timeout + CLAIM_WAIT,
                };
                self.resume(&session.id, route, responses, outbox).await
            }
        }
    }

    /// Continues the exchange `route` names with the client's `inputResponses`, here or on the
    /// replica holding it; the outcome is the final result or `input_required` again.
    async fn resume(
        &self,
        session: &SessionId,
        route: Route,
        responses: Value,
        outbox: &Outbox,
    ) -> Outcome {
        let Route {
            replica,
            exchange,
            quiet,
        } = route;
        if replica == self.signer.replica() {
            let suspension = self
                .suspended
                .take(&exchange)
                .ok_or_else(|| SuspendError::Gone.to_rpc())?;
            return self.continue_exchange(suspension, &responses, outbox).await;
        }
        let Some(bus) = &self.bus else {
            return Err(SuspendError::Gone.to_rpc());
        };
        let resume = BusMessage::Resume {
            replica,
            exchange,
            reply: exchange_id(),
            responses,
        };
        resume_elsewhere(bus, session, resume, quiet, outbox).await
    }

    /// Hands the client's answer to the upstream and runs the exchange on.
    async fn continue_exchange(
        &self,
        suspension: Suspension,
        responses: &Value,
        outbox: &Outbox,
    ) -> Outcome {
        let Some(answer) = responses.get(INPUT_KEY).cloned() else {
            let listener = self.resume_listener(&suspension.ctx.session).await;
            return self.suspend(suspension, listener);
        };
        let Suspension {
            ctx,
            upstream,
            id,
            asked,
            messages,
            capabilities,
            ..
        } = suspension;
        let response = Message::Response(Response {
            id: asked.id,
            outcome: Ok(answer),
        });
        if let Err(error) = upstream.send(&ctx, response).await {
            tracing::warn!(%error, "could not hand a client's input to the upstream");
        }
        self.exchange(&ctx, &capabilities, &upstream, &id, messages, outbox)
            .await
    }

    /// Serves a retry that reached another replica: claims it, relays what the exchange
    /// sends, then its outcome.
    async fn resume_for_peer(
        &self,
        session: &SessionId,
        suspension: Suspension,
        reply: String,
        responses: Value,
    ) {
        let Some(bus) = &self.bus else {
            return;
        };
        let claimed = BusMessage::Claimed {
            reply: reply.clone(),
        };
        if let Err(error) = bus.send(session, &claimed).await {
            tracing::warn!(%error, "could not claim a resumed call");
        }
        let (outbox, mut relayed) = mpsc::channel(OUTBOX_CAPACITY);
        let run = async {
            let outcome = self
                .continue_exchange(suspension, &responses, &outbox)
                .await;
            drop(outbox);
            outcome
        };
        let relay = async {
            while let Some(outgoing) = relayed.recv().await {
                if let Outgoing::Message(message) = outgoing {
                    let reply = reply.clone();
                    let _ = bus
                        .send(session, &BusMessage::Relayed { reply, message })
                        .await;
                }
            }
        };
        let (outcome, ()) = tokio::join!(run, relay);
        if let Err(error) = bus
            .send(session, &BusMessage::Resumed { reply, outcome })
            .await
        {
            tracing::warn!(%error, "could not send a resumed call's outcome");
        }
    }
}

/// Waits on the bus for the holding replica's claim, relays its messages, returns its outcome.
async fn resume_elsewhere(
    bus: &Bus,
    session: &SessionId,
    resume: BusMessage,
    quiet: Duration,
    outbox: &Outbox,
) -> Outcome {
    let BusMessage::Resume { reply, .. } = &resume else {
        return Err(SuspendError::Gone.to_rpc());
    };
    let reply = reply.clone();
    let mut listener = bus.listen(session).await;
    if let Err(error) = bus.send(session, &resume).await {
        tracing::warn!(%error, "could not route a retry to the replica holding its call");
        return Err(SuspendError::Gone.to_rpc());
    }
    let mut wait = CLAIM_WAIT;
    loop {
        let message = tokio::time::timeout(wait, listener.next()).await;
        match message {
            Err(_) => return Err(SuspendError::Gone.to_rpc()),
            Ok(BusMessage::Claimed { reply: r }) if r == reply => wait = quiet,
            Ok(BusMessage::Relayed { reply: r, message }) if r == reply => {
                let _ = outbox.send(Outgoing::Message(message)).await;
            }
            Ok(BusMessage::Resumed { reply: r, outcome }) if r == reply => return outcome,
            Ok(_) => {}
        }
    }
}

/// The task keeping one suspended exchange, listening for its retry from other replicas.
struct Keeper {
    gateway: Weak<Gateway>,
    session: SessionId,
    exchange: String,
    replica: String,
    listener: Option<BusListener>,
}

impl Keeper {
    /// Ends when the exchange is taken here (`ended`), cancels it upstream after `ttl`, and
    /// serves a retry that reached another replica.
    async fn keep(self, ttl: Duration, ended: oneshot::Receiver<()>) {
        let Keeper {
            gateway,
            session,
            exchange,
            replica,
            listener,
        } = self;
        tokio::select! {
            _ = ended => {}
            () = tokio::time::sleep(ttl) => {
                if let Some(gateway) = gateway.upgrade()
                    && let Some(suspension) = gateway.suspended.take(&exchange)
                {
                    cancel_upstream(suspension, "the client did not answer in time");
                }
            }
            (reply, responses) = next_resume(listener, &replica, &exchange) => {
                let Some(gateway) = gateway.upgrade() else { return };
                if let Some(suspension) = gateway.suspended.take(&exchange) {
                    gateway.resume_for_peer(&session, suspension, reply, responses).await;
                }
            }
        }
    }
}

/// The next retry for `exchange` on `replica`, or never without a bus.
async fn next_resume(
    listener: Option<BusListener>,
    replica: &str,
    exchange: &str,
) -> (String, Value) {
    let Some(mut listener) = listener else {
        return std::future::pending().await;
    };
    loop {
        if let BusMessage::Resume {
            replica: r,
            exchange: x,
            reply,
            responses,
        } = listener.next().await
            && r == replica
            && x == exchange
        {
            return (reply, responses);
        }
    }
}

/// Tells the upstream to stop a call that will not be continued.
fn cancel_upstream(suspension: Suspension, reason: &'static str) {
    tokio::spawn(async move {
        let Suspension {
            ctx, upstream, id, ..
        } = suspension;
        upstream.cancel(&ctx, &id, reason).await;
    });
}

/// A fresh, unguessable exchange or reply id.
fn exchange_id() -> String {
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

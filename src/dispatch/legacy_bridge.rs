//! The multi round-trip bridge from a legacy session to an upstream that speaks only
//! 2026-07-28 (`era = "modern"`).
//!
//! Such an upstream gets no `initialize` and no upstream session: each request carries the
//! modern `_meta` made from the session's record (its client info and capabilities, the log
//! level it set). When the upstream answers `input_required`, each of its `inputRequests` is put
//! to the session's client as an ordinary server-to-client request on the call's stream, with a
//! signed id naming this replica. The client's answers come back as responses, on any replica:
//! here they reach the waiting call through [`InputWaiters`]; elsewhere the receiving replica
//! routes them over the session's bus. Once every input is answered, the request is sent again
//! with `inputResponses` and the upstream's `requestState`, until the upstream's final result,
//! which reaches the client without the modern fields (`resultType`, `ttlMs`, `cacheScope`,
//! the upstream's `serverInfo`).
//!
//! Bounds: [`MAX_ROUNDS`] rounds per call, [`MAX_INPUTS`] inputs per round, and
//! [`MAX_WAITING`] answers awaited on one replica at once; beyond each the call fails with a
//! JSON-RPC error. Each answer is awaited for the upstream's timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;
use rmcp::model::ErrorCode;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::RpcError;
use super::bus::{BusListener, BusMessage};
use super::capabilities::ClientCapabilities;
use super::modern::REQUEST_STATE;
use super::signing::SignedRequest;
use super::{Gateway, MessageRejected, Outbox, Outcome, Outgoing, Session, error_object};
use crate::protocol::era::{self, LegacyCaller};
use crate::protocol::jsonrpc::{Message, Request, RequestId};
use crate::session::SessionId;
use crate::sync::lock;
use crate::upstream::Upstream;

/// Rounds of `input_required` one call may go through.
pub const MAX_ROUNDS: usize = 16;
/// Inputs one `input_required` may ask for.
pub const MAX_INPUTS: usize = 16;
/// Client answers one replica awaits at once.
pub const MAX_WAITING: usize = 4096;

/// An answer to one of the gateway's requests: its id and the client's outcome.
type Answer = (RequestId, Result<Value, RpcError>);

/// Why a bridged call failed on the gateway's side.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{upstream} asked for input more than {MAX_ROUNDS} times in one call")]
    TooManyRounds { upstream: String },
    #[error(
        "{upstream} answered input_required without inputRequests, or with more than {MAX_INPUTS}"
    )]
    BadInputRequests { upstream: String },
    #[error("mcpgate awaits {MAX_WAITING} client answers already; retry later")]
    Busy,
    #[error("the client did not answer {method} in time")]
    NoAnswer { method: String },
}

impl BridgeError {
    fn to_rpc(&self) -> RpcError {
        let code = match self {
            BridgeError::Busy => crate::limits::LimitExceeded::CODE,
            _ => ErrorCode::INTERNAL_ERROR,
        };
        error_object(code, self.to_string())
    }
}

/// The calls on this replica waiting for their client's answers, by session and request id.
#[derive(Default)]
pub(super) struct InputWaiters {
    waiting: Mutex<HashMap<(SessionId, RequestId), mpsc::Sender<Answer>>>,
}

impl InputWaiters {
    fn wait(
        &self,
        session: &SessionId,
        id: &RequestId,
        sender: &mpsc::Sender<Answer>,
    ) -> Result<(), BridgeError> {
        let mut waiting = lock(&self.waiting);
        if waiting.len() >= MAX_WAITING {
            return Err(BridgeError::Busy);
        }
        waiting.insert((session.clone(), id.clone()), sender.clone());
        Ok(())
    }

    fn forget(&self, session: &SessionId, ids: &[RequestId]) {
        let mut waiting = lock(&self.waiting);
        for id in ids {
            waiting.remove(&(session.clone(), id.clone()));
        }
    }

    /// Hands a client's answer to the call waiting for it; false when none is.
    fn deliver(
        &self,
        session: &SessionId,
        id: RequestId,
        outcome: Result<Value, RpcError>,
    ) -> bool {
        let key = (session.clone(), id);
        let Some(sender) = lock(&self.waiting).remove(&key) else {
            return false;
        };
        sender.try_send((key.1, outcome)).is_ok()
    }
}

impl Gateway {
    /// Forwards a legacy session's request to an upstream that speaks only 2026-07-28.
    pub(super) async fn forward_for_legacy(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
        mut request: Request,
        outbox: &Outbox,
    ) -> Outcome {
        let record = &session.record;
        let caller = LegacyCaller {
            client_info: &record.client_info,
            client_capabilities: &record.client_capabilities,
            log_level: record.log_level.as_deref(),
        };
        era::add_modern_meta(request.params.get_or_insert_with(|| json!({})), &caller);
        for _ in 0..MAX_ROUNDS {
            let mut result = self
                .send_modern(session, upstream, request.clone(), outbox)
                .await?;
            if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
                era::strip_modern_result(&mut result);
                return Ok(result);
            }
            let responses = self.ask_client(session, upstream, &result, outbox).await?;
            retry_with(&mut request, responses, result.get(REQUEST_STATE));
        }
        let upstream = upstream.name.clone();
        Err(BridgeError::TooManyRounds { upstream }.to_rpc())
    }

    /// Puts each of an `input_required` result's requests to the client and collects the
    /// answers, by input key.
    async fn ask_client(
        &self,
        session: &Session,
        upstream: &Upstream,
        result: &Value,
        outbox: &Outbox,
    ) -> Result<Value, RpcError> {
        let asked = input_requests(upstream, result)?;
        let capabilities = ClientCapabilities::from_declared(&session.record.client_capabilities);
        let mut listener = match &self.bus {
            Some(bus) => Some(bus.listen(&session.id).await),
            None => None,
        };
        let (sender, mut answers) = mpsc::channel(MAX_INPUTS);
        let nonce = rand::rng().next_u64();
        let mut keys = HashMap::new();
        for (key, entry) in asked {
            let request = Request {
                id: RequestId::String(format!("mcpgate-input-{nonce:016x}-{key}")),
                method: entry["method"].as_str().unwrap_or_default().to_owned(),
                params: entry.get("params").cloned(),
            };
            capabilities
                .allows_request(&request)
                .map_err(|missing| missing.required_error())?;
            self.input_waiters
                .wait(&session.id, &request.id, &sender)
                .map_err(|error| error.to_rpc())?;
            keys.insert(request.id.clone(), (key.clone(), request.method.clone()));
            let relayed = self.relayed(&session.id, &upstream.name, Message::Request(request));
            let _ = outbox.send(Outgoing::Message(relayed)).await;
        }
        let ids: Vec<RequestId> = keys.keys().cloned().collect();
        let collected = self
            .collect_answers(upstream, &mut keys, &mut answers, &mut listener)
            .await;
        self.input_waiters.forget(&session.id, &ids);
        collected
    }

    /// Waits for the answer to every request in `keys`, from this replica or over the bus.
    async fn collect_answers(
        &self,
        upstream: &Upstream,
        keys: &mut HashMap<RequestId, (String, String)>,
        answers: &mut mpsc::Receiver<Answer>,
        listener: &mut Option<BusListener>,
    ) -> Result<Value, RpcError> {
        let mut responses = Map::new();
        while !keys.is_empty() {
            let next = async {
                tokio::select! {
                    Some(answer) = answers.recv() => answer,
                    answer = routed_answer(listener, self.signer.replica(), &upstream.name) => answer,
                }
            };
            let Ok((id, outcome)) = tokio::time::timeout(upstream.timeout, next).await else {
                let method = keys
                    .values()
                    .next()
                    .map(|(_, m)| m.clone())
                    .unwrap_or_default();
                return Err(BridgeError::NoAnswer { method }.to_rpc());
            };
            let Some((key, _)) = keys.remove(&id) else {
                continue;
            };
            responses.insert(key, outcome?);
        }
        Ok(Value::Object(responses))
    }

    /// Routes a client's answer to one of the gateway's own requests for an upstream that
    /// speaks only 2026-07-28: to the call waiting here, or over the bus to the replica that
    /// asked.
    pub(super) async fn answer_input(
        &self,
        session: &Session,
        signed: SignedRequest,
        outcome: Result<Value, RpcError>,
    ) -> Result<(), MessageRejected> {
        if signed.replica != self.signer.replica() {
            let answer = BusMessage::Answer {
                replica: signed.replica,
                upstream: signed.upstream,
                id: signed.id,
                outcome,
            };
            self.route(session, answer).await;
            return Ok(());
        }
        let unknown = MessageRejected::UnknownResponse(signed.id.clone());
        if self.input_waiters.deliver(&session.id, signed.id, outcome) {
            Ok(())
        } else {
            Err(unknown)
        }
    }
}

/// The `inputRequests` of an `input_required` result, checked for shape and number.
fn input_requests<'a>(
    upstream: &Upstream,
    result: &'a Value,
) -> Result<&'a Map<String, Value>, RpcError> {
    result
        .get("inputRequests")
        .and_then(Value::as_object)
        .filter(|asked| !asked.is_empty() && asked.len() <= MAX_INPUTS)
        .filter(|asked| asked.values().all(|e| e["method"].is_string()))
        .ok_or_else(|| {
            let upstream = upstream.name.clone();
            BridgeError::BadInputRequests { upstream }.to_rpc()
        })
}

/// The next answer another replica routed here for one of `upstream`'s inputs, or never
/// without a bus.
async fn routed_answer(
    listener: &mut Option<BusListener>,
    replica: &str,
    upstream: &str,
) -> Answer {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    loop {
        if let BusMessage::Answer {
            replica: r,
            upstream: u,
            id,
            outcome,
        } = listener.next().await
            && r == replica
            && u == upstream
        {
            return (id, outcome);
        }
    }
}

/// Sets a request's params up for its next round: the client's answers, and the upstream's
/// state when it gave one.
fn retry_with(request: &mut Request, responses: Value, state: Option<&Value>) {
    let Some(params) = request.params.as_mut().and_then(Value::as_object_mut) else {
        return;
    };
    params.insert("inputResponses".into(), responses);
    match state {
        Some(state) => params.insert(REQUEST_STATE.into(), state.clone()),
        None => params.remove(REQUEST_STATE),
    };
}

//! The 2024-11-05 HTTP+SSE transport, for clients that predate Streamable HTTP.
//!
//! `GET /sse` opens a stream whose first event, `endpoint`, names where to POST:
//! `message?sessionId=<id>` (relative, so it works under any path prefix). `POST /message`
//! takes one JSON-RPC message and answers 202; whatever it causes (the response, progress,
//! server-to-client requests) arrives on the stream, appended to the session's standalone
//! stream in the event log by whichever replica ran it. The stream waits for `initialize`
//! (`server.sse_initialize_timeout`); the session then is a normal session.
//!
//! On a reconnect, `GET /sse` with `Last-Event-ID` resumes the session on any replica: the id
//! is signed and names the session ([`crate::dispatch::SseEventIds`]); the stream announces
//! the same endpoint again and replays what the client missed. An id that does not verify
//! (forged, or another principal's) is answered like an unknown session, 404. Without
//! `Last-Event-ID` the client gets a new session, as from any server of this transport.
//!
//! Refusals of the transport (bad JSON, unknown session, limits) are HTTP errors; a JSON-RPC
//! error of a well-formed message goes on the stream, as the client reads every answer there:
//! this transport's clients treat a failed POST as a broken connection.

use actix_web::web::{self, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::body::{self, Incoming};
use super::error::HttpError;
use super::get::{event_log_error, open_error};
use super::{AppState, authn, guard, session_error, sse, throttle};
use crate::auth::Principal;
use crate::delivery::standalone;
use crate::delivery::tail::{self, Awaiting, Framing, Tail};
use crate::dispatch::{Caller, Gateway, SseEventIds, SseInitializeError};
use crate::events::{Batch, StreamKey};
use crate::protocol::Method;
use crate::protocol::jsonrpc::{Message, Request};
use crate::session::SessionId;

/// The query of the endpoint `GET /sse` announces.
#[derive(Deserialize)]
pub struct Endpoint {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// `GET /sse`.
pub async fn open(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let started = std::time::Instant::now();
    let result = open_stream(&request, &state).await;
    super::observe(&state, "sse", started, &result);
    result
}

/// `POST /message?sessionId=<id>`.
pub async fn message(
    request: HttpRequest,
    endpoint: web::Query<Endpoint>,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let started = std::time::Instant::now();
    let result = post_message(&request, endpoint.into_inner(), payload, &state).await;
    super::observe(&state, "message", started, &result);
    result
}

async fn open_stream(request: &HttpRequest, state: &AppState) -> Result<HttpResponse, HttpError> {
    let principal = super::get::admit_stream(request, state).await?;
    let ids = state.gateway.sse_event_ids(&principal);
    let tail = match guard::last_event_id(request) {
        Some(last) => resume(state, &principal, ids, last).await?,
        None => await_session(state, principal, ids).await?,
    };
    Ok(sse::response(tail::events(state.gateway.clone(), tail)))
}

/// The stream of the session a `Last-Event-ID` names, after that event.
async fn resume(
    state: &AppState,
    principal: &Principal,
    ids: SseEventIds,
    last: &str,
) -> Result<Tail, HttpError> {
    let (id, seq) = ids.verify(last).ok_or(HttpError::SessionNotFound)?;
    let session = state
        .gateway
        .lookup(&id, Caller::Client(principal))
        .await
        .map_err(session_error)?;
    let framing = Framing::Sse {
        endpoint: endpoint_of(&id),
        ids,
    };
    let retry = state.settings.sse_retry;
    standalone::open(&state.gateway, session, Some(seq), retry, framing)
        .await
        .map_err(open_error)
}

/// A new session's stream, waiting for the client's `initialize`.
async fn await_session(
    state: &AppState,
    principal: Principal,
    ids: SseEventIds,
) -> Result<Tail, HttpError> {
    let key = StreamKey::standalone(SessionId::generate());
    state
        .gateway
        .event_log()
        .open(&key)
        .await
        .map_err(event_log_error)?;
    let until = tokio::time::Instant::now() + state.settings.sse_initialize_timeout;
    Ok(Tail {
        framing: Framing::Sse {
            endpoint: endpoint_of(&key.session),
            ids,
        },
        key,
        after: 0,
        backlog: Batch::default(),
        closed: Default::default(),
        track_delivery: false,
        honour_pauses: false,
        _upstream_listeners: Vec::new(),
        _get_stream: None,
        holds_for: None,
        awaiting: Some(Awaiting::until(principal, until)),
        retry: state.settings.sse_retry,
    })
}

/// Where the client of session `id` POSTs, relative to `/sse`.
fn endpoint_of(id: &SessionId) -> String {
    format!("message?sessionId={}", id.as_str())
}

async fn post_message(
    request: &HttpRequest,
    endpoint: Endpoint,
    payload: Payload,
    state: &AppState,
) -> Result<HttpResponse, HttpError> {
    guard::check_origin_and_host(request, &state.settings)?;
    let principal = authn::principal(request, state).await?;
    throttle::admit(state, &principal).await?;
    guard::check_content_type(request)?;
    let id = endpoint.session_id.ok_or_else(|| {
        HttpError::BadRequest("Bad Request: the sessionId query parameter is missing".into())
    })?;
    let id = SessionId::parse(&id).ok_or(HttpError::SessionNotFound)?;
    let message = read_message(request, payload, state).await?;
    deliver(state, &principal, &id, message).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// The one message of the body; this transport has no batches.
async fn read_message(
    request: &HttpRequest,
    payload: Payload,
    state: &AppState,
) -> Result<Message, HttpError> {
    let bytes = body::read(request, payload, &state.settings).await?;
    let Incoming {
        mut messages,
        batch,
    } = body::parse(&bytes, state.settings.max_batch_len)?;
    match (batch, messages.pop()) {
        (false, Some(message)) => Ok(message),
        _ => Err(HttpError::BadRequest(
            "Bad Request: the HTTP+SSE transport takes one JSON-RPC message per POST, not a batch"
                .into(),
        )),
    }
}

/// Hands the message to dispatch; what it causes goes to the session's stream.
async fn deliver(
    state: &AppState,
    principal: &Principal,
    id: &SessionId,
    message: Message,
) -> Result<(), HttpError> {
    let gateway = &state.gateway;
    if let Message::Request(request) = &message
        && Method::parse(&request.method) == Method::Initialize
    {
        return initialize(state, principal, id, request).await;
    }
    let caller = Caller::Client(principal);
    match message {
        Message::Request(request) => {
            let session = gateway.lookup(id, caller).await.map_err(session_error)?;
            let started = gateway
                .check_request(&request)
                .and_then(|call| gateway.handle_request(session, request, call));
            match started {
                Ok(outgoing) => {
                    tokio::spawn(gateway.clone().answer_on_sse_stream(id.clone(), outgoing));
                }
                Err(refusal) => post(gateway, id, &refusal.response()).await?,
            }
        }
        Message::Notification(notification) => {
            let session = gateway
                .lookup_in_passing(id, caller)
                .await
                .map_err(session_error)?;
            gateway.handle_notification(&session, notification).await;
        }
        Message::Response(response) => {
            let session = gateway
                .lookup_in_passing(id, caller)
                .await
                .map_err(session_error)?;
            if let Err(refusal) = gateway.handle_response(&session, response).await {
                tracing::debug!(%refusal, "an HTTP+SSE client's answer was dropped");
            }
        }
    }
    Ok(())
}

async fn initialize(
    state: &AppState,
    principal: &Principal,
    id: &SessionId,
    request: &Request,
) -> Result<(), HttpError> {
    let limit = state.settings.max_client_metadata_bytes;
    let created = state
        .gateway
        .initialize_sse_session(id, request, principal, limit)
        .await;
    created.map_err(|error| match error {
        SseInitializeError::NoStream => HttpError::SessionNotFound,
        SseInitializeError::EventLog(error) => event_log_error(error),
        SseInitializeError::Store(error) => super::store_unavailable(&error),
    })
}

/// Appends one answer of the gateway's own to the session's stream.
async fn post(gateway: &Gateway, id: &SessionId, message: &Value) -> Result<(), HttpError> {
    gateway
        .post_to_sse_stream(id, message)
        .await
        .map_err(event_log_error)
}

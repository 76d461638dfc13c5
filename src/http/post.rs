//! POST /mcp: one message or a 2025-03-26 batch.
//!
//! Notifications and responses alone get 202. Requests are dispatched; the answer is JSON when
//! every response comes before anything else, and an SSE stream (backed by the event log, so
//! it can be resumed from any replica) as soon as something else comes first.

use std::sync::Arc;

use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::web::{self, Payload};
use actix_web::{HttpRequest, HttpResponse};
use opentelemetry::context::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{Instrument, Span};

use super::body::{self, Incoming};
use super::error::HttpError;
use super::guard::{self, SESSION_HEADER};
use super::sse;
use super::stateless::ModernPost;
use super::{AppState, session_error};
use super::{authn, throttle, trace_context};
use crate::auth::Principal;
use crate::delivery::tail::{self, Framing, Tail};
use crate::dispatch::{Caller, Gateway, InitializeError, MessageRejected, Outgoing, Session};
use crate::events::{Batch, StreamId, StreamKey};
use crate::protocol::jsonrpc::{Message, Request, RequestId, is_response};
use crate::protocol::{Call, Method};
use crate::telemetry::mcp_spans;

/// The JSON media type as a header value made once (from a `&str`, every response copied it).
const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub async fn handle(
    request: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let started = std::time::Instant::now();
    let (span, context) = trace_context::request_trace(&request);
    let result = handle_post(&request, payload, &state)
        .instrument(span.clone())
        .with_context(context.clone())
        .await;
    let (method, result) = result;
    let status = span.in_scope(|| {
        let _in_context = context.attach();
        let status = super::observe(&state, &method, started, &result);
        tracing::debug!(status, "POST /mcp answered");
        status
    });
    mcp_spans::record_status(&span, status);
    result
}

/// Returns the metrics label of the body's first message with the outcome.
async fn handle_post(
    request: &HttpRequest,
    payload: Payload,
    state: &AppState,
) -> (String, Result<HttpResponse, HttpError>) {
    let (principal, incoming) = match read_incoming(request, payload, state).await {
        Ok(read) => read,
        Err(error) => return ("other".into(), Err(error)),
    };
    let method = metric_label(&incoming);
    trace_message(&incoming);
    let id = single_request_id(&incoming);
    let result = dispatch(request, &principal, incoming, state).await;
    (method, result.map_err(|error| error.answering(id.as_ref())))
}

/// The id a refusal answers: the request's, when the body is exactly one request.
fn single_request_id(incoming: &Incoming) -> Option<RequestId> {
    match incoming.messages.as_slice() {
        [Message::Request(request)] if !incoming.batch => Some(request.id.clone()),
        _ => None,
    }
}

/// The caller and its parsed body; nothing of the body is read before the caller is known.
async fn read_incoming(
    request: &HttpRequest,
    payload: Payload,
    state: &AppState,
) -> Result<(Principal, Incoming), HttpError> {
    guard::check_origin_and_host(request, &state.settings)?;
    let principal = authn::principal(request, state).await?;
    let admitted = throttle::admit(state, &principal).await;
    guard::check_content_type(request)?;
    guard::check_post_accept(request)?;
    guard::check_no_websocket_upgrade(request)?;
    let bytes = body::read(request, payload, &state.settings).await?;
    let incoming = body::parse(&bytes, state.settings.max_batch_len)?;
    admitted.map_err(|refusal| refusal.answering(single_request_id(&incoming).as_ref()))?;
    Ok((principal, incoming))
}

/// Names the request's span after the body's first message.
fn trace_message(incoming: &Incoming) {
    let span = Span::current();
    match incoming.messages.first() {
        Some(Message::Request(request)) => mcp_spans::record_request(&span, request),
        Some(Message::Notification(note)) => mcp_spans::record_notification(&span, &note.method),
        Some(Message::Response(_)) | None => {}
    }
}

fn metric_label(incoming: &Incoming) -> String {
    match incoming.messages.first() {
        Some(Message::Request(r)) => r.method.clone(),
        Some(Message::Notification(_)) => "notification".into(),
        Some(Message::Response(_)) => "response".into(),
        None => "other".into(),
    }
}

async fn dispatch(
    request: &HttpRequest,
    principal: &Principal,
    incoming: Incoming,
    state: &AppState,
) -> Result<HttpResponse, HttpError> {
    match super::stateless::modern_post(request, &incoming) {
        Some(ModernPost::Request(modern)) => {
            let modern = modern.clone();
            return super::stateless::serve(request, principal, modern, state).await;
        }
        Some(ModernPost::Notification) => return Ok(HttpResponse::Accepted().finish()),
        None => {}
    }
    guard::protocol_version(request)?;
    if let Some(first) = first_session_less(&incoming)? {
        return initialize(first, principal, state).await;
    }
    let id = guard::session_id(request)?;
    let caller = Caller::Client(principal);
    let has_requests = incoming
        .messages
        .iter()
        .any(|message| matches!(message, Message::Request(_)));
    let session = match has_requests {
        true => state.gateway.lookup(&id, caller).await,
        false => state.gateway.lookup_in_passing(&id, caller).await,
    }
    .map_err(session_error)?;
    let tag = || state.gateway.session_tag(&id);
    mcp_spans::record_session(&Span::current(), tag, &session.record.protocol_version);
    if incoming.batch && !session.record.version().allows_batches() {
        let message = format!(
            "Bad Request: JSON-RPC batches are not supported in protocol version {}",
            session.record.version()
        );
        return Err(HttpError::BadRequest(message));
    }
    let mut requests = Vec::new();
    for message in incoming.messages {
        match message {
            Message::Request(r) => requests.push(r),
            Message::Notification(n) => state.gateway.handle_notification(&session, n).await,
            Message::Response(r) => state
                .gateway
                .handle_response(&session, r)
                .await
                .map_err(rejected)?,
        }
    }
    if requests.is_empty() {
        return Ok(HttpResponse::Accepted().finish());
    }
    answer(&state.gateway, session, requests, incoming.batch, state).await
}

/// The `initialize` that may come without a session.
fn first_session_less(incoming: &Incoming) -> Result<Option<&Request>, HttpError> {
    let initialize = incoming.messages.iter().find_map(|m| match m {
        Message::Request(r) if Method::parse(&r.method) == Method::Initialize => Some(r),
        _ => None,
    });
    let Some(request) = initialize else {
        return Ok(None);
    };
    if incoming.batch {
        return Err(HttpError::BadRequest(
            "Bad Request: initialize must not be part of a batch".into(),
        ));
    }
    Ok(Some(request))
}

async fn initialize(
    request: &Request,
    principal: &Principal,
    state: &AppState,
) -> Result<HttpResponse, HttpError> {
    let (id, result) = state
        .gateway
        .initialize(request, principal, state.settings.max_client_metadata_bytes)
        .await
        .map_err(|error| match error {
            InitializeError::Invalid(data) => HttpError::Rejected {
                id: Some(request.id.clone()),
                code: data.code,
                message: data.message.into_owned(),
            },
            InitializeError::Store(error) => super::store_unavailable(&error),
            InitializeError::Limited(limit) => throttle::limited(&request.id, limit),
        })?;
    let version = result.get("protocolVersion").and_then(Value::as_str);
    let tag = || state.gateway.session_tag(&id);
    mcp_spans::record_session(&Span::current(), tag, version.unwrap_or_default());
    let body = crate::protocol::jsonrpc::result_value(&request.id, result);
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, JSON))
        .insert_header((SESSION_HEADER, id.as_str()))
        .body(json_bytes(&body)))
}

pub(super) fn rejected(error: MessageRejected) -> HttpError {
    match error {
        MessageRejected::Limited { id, limit } => throttle::limited(&id, limit),
        error => HttpError::Rejected {
            id: Some(error.id().clone()),
            code: error.code(),
            message: error.to_string(),
        },
    }
}

/// Dispatches the requests and answers with JSON or SSE.
async fn answer(
    gateway: &Arc<Gateway>,
    session: Session,
    requests: Vec<Request>,
    batch: bool,
    state: &AppState,
) -> Result<HttpResponse, HttpError> {
    let Checked {
        accepted,
        mut responses,
    } = check_requests(gateway, requests, batch)?;
    let expected = responses.len() + accepted.len();
    if accepted.is_empty() {
        return Ok(json_response(Value::Array(responses)));
    }
    let only_request = (accepted.len() == 1).then(|| accepted[0].0.id.clone());
    let (outgoing, limited) = merge(gateway, &session, accepted, batch)?;
    responses.extend(limited);
    let Some(mut outgoing) = outgoing else {
        return Ok(json_response(Value::Array(responses)));
    };
    let mut position = None;
    while let Some(next) = outgoing.recv().await {
        match next {
            Outgoing::Message(message) if is_response(&message) => responses.push(message),
            Outgoing::Position(origin) => position = Some(Outgoing::Position(origin)),
            other => {
                let first = responses
                    .drain(..)
                    .map(Outgoing::Message)
                    .chain(position)
                    .chain(std::iter::once(other))
                    .collect();
                let opened = Opened {
                    request: only_request,
                    first,
                    rest: outgoing,
                };
                return stream(gateway, &session, opened, state).await;
            }
        }
        if responses.len() == expected {
            break;
        }
    }
    Ok(answered(responses, batch))
}

/// A body's requests, checked.
struct Checked {
    /// The requests that may start, each with its parsed call.
    accepted: Vec<(Request, Call)>,
    /// In a batch, the error responses of the others.
    responses: Vec<Value>,
}

/// Checks a body's requests; a request refused outside a batch is the whole body's refusal.
fn check_requests(
    gateway: &Gateway,
    requests: Vec<Request>,
    batch: bool,
) -> Result<Checked, HttpError> {
    let mut accepted = Vec::new();
    let mut responses = Vec::new();
    for request in requests {
        match gateway.check_request(&request) {
            Ok(call) => accepted.push((request, call)),
            Err(rejection) if batch => responses.push(rejection.response()),
            Err(rejection) => return Err(rejected(rejection)),
        }
    }
    Ok(Checked {
        accepted,
        responses,
    })
}

/// The JSON answer of responses that all came before anything else: a batch's array, a lone
/// request's response, or 202 when there is none.
fn answered(mut responses: Vec<Value>, batch: bool) -> HttpResponse {
    if responses.is_empty() {
        return HttpResponse::Accepted().finish();
    }
    let body = if batch {
        Value::Array(responses)
    } else {
        responses.remove(0)
    };
    json_response(body)
}

pub(super) fn json_response(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, JSON))
        .body(json_bytes(&body))
}

/// A JSON body, serialized straight into bytes (a `Value`'s `Display` writes through
/// `fmt::Write` one token at a time, which cost about 1% of a call).
pub(super) fn json_bytes(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).expect("a JSON value always serializes")
}

/// One channel for every request of the body that started (none when none did) and, in a
/// batch, the error entries of the requests a limit refused.
fn merge(
    gateway: &Arc<Gateway>,
    session: &Session,
    requests: Vec<(Request, Call)>,
    batch: bool,
) -> Result<(Option<mpsc::Receiver<Outgoing>>, Vec<Value>), HttpError> {
    let mut receivers = Vec::new();
    let mut limited = Vec::new();
    for (request, call) in requests {
        match gateway.handle_request(session.clone(), request, call) {
            Ok(receiver) => receivers.push(receiver),
            Err(refusal @ MessageRejected::Limited { .. }) if batch => {
                limited.push(refusal.response());
            }
            Err(refusal) => return Err(rejected(refusal)),
        }
    }
    let merged = match receivers.len() {
        0 | 1 => receivers.pop(),
        _ => Some(funnel(receivers)),
    };
    Ok((merged, limited))
}

/// One channel carrying what every receiver carries.
fn funnel(receivers: Vec<mpsc::Receiver<Outgoing>>) -> mpsc::Receiver<Outgoing> {
    let (tx, rx) = mpsc::channel(64);
    for mut receiver in receivers {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(message) = receiver.recv().await {
                if tx.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// What a request's response stream starts with.
struct Opened {
    /// The request's id, when the body held exactly one request.
    request: Option<RequestId>,
    /// What came before the switch to SSE, in order.
    first: Vec<Outgoing>,
    rest: mpsc::Receiver<Outgoing>,
}

/// Switches to SSE: everything from now on goes through the event log of a new stream.
async fn stream(
    gateway: &Arc<Gateway>,
    session: &Session,
    opened: Opened,
    state: &AppState,
) -> Result<HttpResponse, HttpError> {
    let key = StreamKey {
        session: session.id.clone(),
        stream: StreamId::random(),
    };
    gateway.event_log().open(&key).await.map_err(|error| {
        tracing::error!(%error, "cannot open an SSE stream in the event log");
        HttpError::Unavailable(
            "Service Unavailable: the event log cannot be reached; retry shortly".into(),
        )
    })?;
    let writer = gateway.clone().write_response_stream(
        key.clone(),
        opened.request,
        opened.first,
        opened.rest,
    );
    tokio::spawn(writer);
    let closed = gateway.attach_stream(&session.id, &session.record);
    let tail = Tail {
        key,
        after: 0,
        backlog: Batch::default(),
        closed,
        track_delivery: false,
        honour_pauses: true,
        _upstream_listeners: Vec::new(),
        _get_stream: None,
        holds_for: None,
        awaiting: None,
        retry: state.settings.sse_retry,
        framing: Framing::Streamable,
    };
    Ok(sse::response(tail::events(gateway.clone(), tail)))
}

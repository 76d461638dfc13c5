//! POST /mcp for modern (2026-07-28) requests: no session, no event log.
//!
//! A POST without `Mcp-Session-Id` whose one request is modern (its `_meta` or its
//! `MCP-Protocol-Version` header names a modern revision, or it is `server/discover`) is
//! checked by [`ModernRequest::parse`] and served statelessly. The answer is JSON when the
//! response comes first; otherwise an SSE stream scoped to the request, without event ids (the
//! modern era has no resumption), which ends with the response. Closing it cancels the request.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use tokio::sync::mpsc;

use super::body::Incoming;
use super::error::HttpError;
use super::guard::{SESSION_HEADER, VERSION_HEADER};
use super::post::{is_response, json_response};
use super::{AppState, mirrored};
use crate::auth::Principal;
use crate::dispatch::{Gateway, Outgoing};
use crate::protocol::era::{self, MODERN_VERSIONS};
use crate::protocol::jsonrpc::{Message, Request, result_value};
use crate::protocol::{Method, ModernError, ModernRequest};

/// Keep-alive comment interval of a response stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// What a sessionless POST of the modern era holds.
pub enum ModernPost<'a> {
    Request(&'a Request),
    /// A notification: the era defines none from clients over HTTP (closing a stream is the
    /// cancellation), so it is accepted and has no effect.
    Notification,
}

/// The body's one message, when the POST is a modern one.
pub fn modern_post<'a>(request: &HttpRequest, incoming: &'a Incoming) -> Option<ModernPost<'a>> {
    if incoming.batch || request.headers().contains_key(SESSION_HEADER) {
        return None;
    }
    let header_is_modern = request
        .headers()
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| MODERN_VERSIONS.contains(&v));
    match incoming.messages.as_slice() {
        [Message::Request(body)] => {
            let method = Method::parse(&body.method);
            let modern = header_is_modern || era::is_modern(&method, body.params.as_ref());
            modern.then_some(ModernPost::Request(body))
        }
        [Message::Notification(note)] => {
            let method = Method::parse(&note.method);
            let modern = header_is_modern || era::is_modern(&method, note.params.as_ref());
            modern.then_some(ModernPost::Notification)
        }
        _ => None,
    }
}

/// Checks and serves one modern request.
pub async fn serve(
    request: &HttpRequest,
    principal: &Principal,
    body: Request,
    state: &AppState,
) -> Result<HttpResponse, HttpError> {
    let method = Method::parse(&body.method);
    let mirrored = mirrored::read(request);
    let modern =
        ModernRequest::parse(&method, body.params.as_ref(), &mirrored).map_err(|error| {
            HttpError::Modern {
                id: Some(body.id.clone()),
                error,
            }
        })?;
    let gateway = &state.gateway;
    if method == Method::Discover {
        let discovered = gateway.discover(principal).await;
        return Ok(json_response(result_value(&body.id, discovered)));
    }
    let call = gateway
        .check_request(&body)
        .map_err(super::post::rejected)?;
    let outgoing = gateway
        .handle_stateless(principal, modern, body, call)
        .map_err(super::post::rejected)?;
    Ok(answer(gateway, outgoing).await)
}

/// JSON when the response is the first message, an SSE stream otherwise.
async fn answer(gateway: &Arc<Gateway>, mut outgoing: mpsc::Receiver<Outgoing>) -> HttpResponse {
    let Some(first) = next_message(&mut outgoing).await else {
        return HttpResponse::InternalServerError().finish();
    };
    if is_response(&first) {
        let status = status_of(&first);
        return HttpResponse::build(status)
            .insert_header((CONTENT_TYPE, "application/json"))
            .body(first.to_string());
    }
    gateway.metrics.sse_streams_open.inc();
    let stream = ResponseStream {
        gateway: gateway.clone(),
        outgoing,
        first: Some(first),
        done: false,
    };
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures::stream::unfold(stream, next_chunk))
}

/// A modern request's response stream, until its response.
struct ResponseStream {
    gateway: Arc<Gateway>,
    outgoing: mpsc::Receiver<Outgoing>,
    first: Option<serde_json::Value>,
    done: bool,
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        self.gateway.metrics.sse_streams_open.dec();
    }
}

async fn next_chunk(
    mut stream: ResponseStream,
) -> Option<(Result<Bytes, std::convert::Infallible>, ResponseStream)> {
    if stream.done {
        return None;
    }
    let message = match stream.first.take() {
        Some(first) => first,
        None => match tokio::time::timeout(KEEPALIVE, next_message(&mut stream.outgoing)).await {
            Err(_) => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), stream)),
            Ok(None) => return None,
            Ok(Some(message)) => message,
        },
    };
    stream.done = is_response(&message);
    let chunk = sse_stream::Sse::default()
        .event("message")
        .data(message.to_string())
        .into();
    Some((Ok(chunk), stream))
}

/// The next JSON-RPC message; stream positions and pauses concern resumable streams only.
async fn next_message(outgoing: &mut mpsc::Receiver<Outgoing>) -> Option<serde_json::Value> {
    loop {
        if let Outgoing::Message(message) = outgoing.recv().await? {
            return Some(message);
        }
    }
}

/// A JSON answer's status: 400 for the errors the modern era defines as the request's fault
/// (the text requires it for a missing client capability), 200 otherwise.
fn status_of(response: &serde_json::Value) -> StatusCode {
    let code = response
        .pointer("/error/code")
        .and_then(serde_json::Value::as_i64);
    let modern_refusals = [
        ModernError::HEADER_MISMATCH,
        ModernError::MISSING_CLIENT_CAPABILITY,
        ModernError::UNSUPPORTED_VERSION,
    ];
    if modern_refusals.iter().any(|c| Some(i64::from(c.0)) == code) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

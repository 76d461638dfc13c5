//! POST /mcp for modern (2026-07-28) requests: no session, no event log.
//!
//! A POST without `Mcp-Session-Id` whose one request is modern (its `_meta` or its
//! `MCP-Protocol-Version` header names a modern revision, or it is `server/discover`) is
//! checked by [`ModernRequest::parse`] and served statelessly. The answer is JSON when the
//! response comes first; otherwise an SSE stream scoped to the request, without event ids (the
//! modern era has no resumption), which ends with the response. Closing it cancels the request.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse};
use tokio::sync::mpsc;

use super::body::Incoming;
use super::error::HttpError;
use super::guard::{SESSION_HEADER, VERSION_HEADER};
use super::post::{json_bytes, json_response};
use super::{AppState, mirrored};
use crate::auth::Principal;
use crate::delivery::request_scoped::{self, next_message};
use crate::dispatch::{Gateway, Outgoing};
use crate::protocol::era::{self, MODERN_VERSIONS};
use crate::protocol::jsonrpc::{Message, Request, is_response, result_value};
use crate::protocol::{Method, ModernError, ModernRequest};

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
            .body(json_bytes(&first));
    }
    super::sse::response(request_scoped::events(gateway.clone(), outgoing, first))
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

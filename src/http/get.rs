//! GET /mcp: the standalone SSE stream for messages not tied to a request, and resumption of
//! any stream of the session with `Last-Event-ID`.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

use super::error::HttpError;
use super::guard;
use super::sse::{self, Tail};
use super::{AppState, session_error};
use crate::events::{EventId, StreamId, StreamKey};

pub async fn handle(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let started = std::time::Instant::now();
    let result = open_stream(&request, &state).await;
    super::observe(&state, "get", started, &result);
    result
}

async fn open_stream(request: &HttpRequest, state: &AppState) -> Result<HttpResponse, HttpError> {
    guard::check_origin_and_host(request, &state.settings)?;
    guard::check_get_accept(request)?;
    guard::protocol_version(request)?;
    let id = guard::session_id(request)?;
    let session = state.gateway.lookup(&id).await.map_err(session_error)?;
    let gateway = &state.gateway;
    let resume = match guard::last_event_id(request) {
        None => None,
        Some(text) => Some(EventId::parse(text).ok_or_else(|| {
            HttpError::BadRequest(format!(
                "Bad Request: Last-Event-ID {text:?} is not an event id issued by this server"
            ))
        })?),
    };
    let stream = resume
        .as_ref()
        .map_or_else(StreamId::standalone, |e| e.stream.clone());
    let key = StreamKey {
        session: id.clone(),
        stream,
    };
    let standalone = key.stream == StreamId::standalone();
    let after = match (&resume, standalone) {
        (Some(event), _) => event.seq,
        (None, _) => gateway
            .events
            .delivered(&key)
            .await
            .map_err(|e| HttpError::Unavailable(e.to_string()))?,
    };
    if resume.is_some() {
        let replayable = gateway
            .events
            .read(&key, after, std::time::Duration::ZERO)
            .await;
        let count = replayable.map(|b| b.events.len()).unwrap_or_default();
        gateway.metrics.sse_events_replayed.inc_by(count as u64);
    }
    let standalone_claim = standalone.then(|| gateway.hub.claim_standalone(&id));
    let (closed, _) = gateway.hub.attach(&id, &session.record);
    let tail = Tail {
        key,
        after,
        closed,
        standalone_claim,
        honour_pauses: false,
        retry: state.settings.sse_retry,
    };
    Ok(sse::response(gateway.clone(), tail))
}

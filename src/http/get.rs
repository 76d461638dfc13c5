//! GET /mcp: the standalone SSE stream for messages not tied to a request, and resumption of
//! any stream of the session with `Last-Event-ID`.
//!
//! The replica holding a client's standalone stream also holds the GET streams of the
//! session's HTTP upstreams, so their unsolicited messages flow wherever the client listens;
//! while the client has no GET stream open, the upstreams keep those messages.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

use super::error::HttpError;
use super::sse;
use super::{AppState, session_error};
use super::{authn, guard, throttle};
use crate::delivery::tail::{self, Tail};
use crate::dispatch::Caller;
use std::time::Duration;

use crate::events::{EventId, EventLogError, StreamId, StreamKey};

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
    let principal = authn::principal(request, state).await?;
    throttle::admit(state, &principal).await?;
    guard::check_no_body(request)?;
    guard::check_get_accept(request)?;
    let id = guard::legacy_session_id(request, "GET")?;
    guard::protocol_version(request)?;
    let session = state
        .gateway
        .lookup(&id, Caller::Client(&principal))
        .await
        .map_err(session_error)?;
    let resume = resume_point(request)?;
    let gateway = &state.gateway;
    let stream = resume
        .as_ref()
        .map_or_else(StreamId::standalone, |e| e.stream.clone());
    let key = StreamKey {
        session: id.clone(),
        stream,
    };
    let standalone = key.stream == StreamId::standalone();
    let slot = gateway.open_get_stream(&id, standalone)?;
    if standalone {
        gateway
            .event_log()
            .open(&key)
            .await
            .map_err(event_log_error)?;
    }
    let after = match &resume {
        Some(event) => event.seq,
        None => gateway
            .event_log()
            .delivered(&key)
            .await
            .map_err(event_log_error)?,
    };
    let backlog = gateway
        .event_log()
        .read(&key, after, Duration::ZERO)
        .await
        .map_err(event_log_error)?;
    if resume.is_some() {
        gateway
            .metrics()
            .sse_events_replayed
            .inc_by(backlog.events.len() as u64);
    }
    if !standalone && !backlog.closed {
        let takeover = gateway
            .clone()
            .take_over_response_stream(session.clone(), key.clone());
        tokio::spawn(takeover);
    }
    let (closed, upstream_listeners) = if standalone {
        (
            gateway.claim_standalone(&id),
            gateway.listen_upstreams(&session).await,
        )
    } else {
        (gateway.attach_stream(&id, &session.record), Vec::new())
    };
    let tail = Tail {
        key,
        after,
        backlog,
        closed,
        track_delivery: standalone,
        honour_pauses: false,
        _upstream_listeners: upstream_listeners,
        _get_stream: Some(slot),
        holds_for: standalone.then_some(session),
        retry: state.settings.sse_retry,
    };
    Ok(sse::response(tail::events(gateway.clone(), tail)))
}

/// The `Last-Event-ID` to resume after, if any; one we could not have issued is 400.
fn resume_point(request: &HttpRequest) -> Result<Option<EventId>, HttpError> {
    let Some(text) = guard::last_event_id(request) else {
        return Ok(None);
    };
    EventId::parse(text).map(Some).ok_or_else(|| {
        HttpError::BadRequest(format!(
            "Bad Request: Last-Event-ID {text:?} is not an event id issued by this server"
        ))
    })
}

/// A stream that cannot be replayed is the client's problem (400), never a missing session.
fn event_log_error(error: EventLogError) -> HttpError {
    match error {
        EventLogError::UnknownStream(_) => HttpError::BadRequest(
            "Bad Request: Last-Event-ID names a stream that is unknown or past its replay window"
                .into(),
        ),
        EventLogError::Unavailable(reason) => {
            tracing::error!(%reason, "event log failure");
            HttpError::Unavailable(
                "Service Unavailable: the event log cannot be reached; retry shortly".into(),
            )
        }
    }
}

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
use std::time::Duration;

use crate::auth::Principal;
use crate::delivery::standalone;
use crate::delivery::tail::{self, Framing, Tail};
use crate::dispatch::{Caller, Session};
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

/// The caller of a GET that opens an SSE stream, once its headers passed every check.
pub(super) async fn admit_stream(
    request: &HttpRequest,
    state: &AppState,
) -> Result<Principal, HttpError> {
    guard::check_origin_and_host(request, &state.settings)?;
    let principal = authn::principal(request, state).await?;
    throttle::admit(state, &principal).await?;
    guard::check_no_body(request)?;
    guard::check_get_accept(request)?;
    Ok(principal)
}

async fn open_stream(request: &HttpRequest, state: &AppState) -> Result<HttpResponse, HttpError> {
    let principal = admit_stream(request, state).await?;
    let id = guard::legacy_session_id(request, "GET")?;
    guard::protocol_version(request)?;
    let session = state
        .gateway
        .lookup(&id, Caller::Client(&principal))
        .await
        .map_err(session_error)?;
    let tail = match resume_point(request)? {
        Some(event) if event.stream != StreamId::standalone() => {
            response_tail(state, session, event).await?
        }
        resume => {
            let retry = state.settings.sse_retry;
            let resume = resume.map(|event| event.seq);
            standalone::open(&state.gateway, session, resume, retry, Framing::Streamable)
                .await
                .map_err(open_error)?
        }
    };
    Ok(sse::response(tail::events(state.gateway.clone(), tail)))
}

/// The tail of a POST's response stream, resumed after `event`. While the stream is not
/// closed, another replica may have been writing it: a takeover makes sure it gets finished.
async fn response_tail(
    state: &AppState,
    session: Session,
    event: EventId,
) -> Result<Tail, HttpError> {
    let gateway = &state.gateway;
    let key = StreamKey {
        session: session.id.clone(),
        stream: event.stream,
    };
    let slot = gateway.open_get_stream(&key.session, false)?;
    let backlog = gateway
        .event_log()
        .read(&key, event.seq, Duration::ZERO)
        .await
        .map_err(event_log_error)?;
    gateway
        .metrics()
        .sse_events_replayed
        .inc_by(backlog.events.len() as u64);
    if !backlog.closed {
        let takeover = gateway
            .clone()
            .take_over_response_stream(session.clone(), key.clone());
        tokio::spawn(takeover);
    }
    let closed = gateway.attach_stream(&key.session, &session.record);
    Ok(Tail {
        key,
        after: event.seq,
        backlog,
        closed,
        track_delivery: false,
        honour_pauses: false,
        _upstream_listeners: Vec::new(),
        _get_stream: Some(slot),
        holds_for: None,
        awaiting: None,
        retry: state.settings.sse_retry,
        framing: Framing::Streamable,
    })
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

/// Why a standalone stream did not open, as the client's answer.
pub(super) fn open_error(error: standalone::OpenError) -> HttpError {
    match error {
        standalone::OpenError::Limited(limit) => HttpError::Limited(limit),
        standalone::OpenError::EventLog(error) => event_log_error(error),
    }
}

/// A stream that cannot be replayed is the client's problem (400), never a missing session.
pub(super) fn event_log_error(error: EventLogError) -> HttpError {
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

//! Reading a session's event-log stream out as SSE: a priming event (id, empty data, `retry`), then
//! each event with its `<stream>-<seq>` id (for the HTTP+SSE transport: the `endpoint` event
//! first, and signed ids, see [`Framing`]), until the stream closes, the session ends, or a
//! newer GET takes the standalone stream over. Comments keep idle connections alive.
//!
//! An event without data is a pause marker (an upstream asked to be polled, SEP-1699): the
//! POST response that meets it live ends there with a `retry` hint; a resumed stream skips it.
//! A draining replica ends every stream the same way, so clients resume on another replica.
//!
//! At every keep-alive the stream checks that its session still exists (without sliding its
//! TTL), so a stream of a session that expired or was deleted elsewhere ends within
//! [`KEEPALIVE`] even where Redis keyspace notifications are off. An event log that cannot be
//! read (a Redis outage) does not end the stream: it keeps the connection with keep-alives and
//! reads again after [`OUTAGE_RETRY`]. A standalone stream also makes sure, at every
//! keep-alive, that some replica holds its session's upstream streams.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio_util::sync::CancellationToken;

use super::KEEPALIVE;
use super::standalone;
use crate::auth::Principal;
use crate::dispatch::{Caller, Gateway, Resume, Session, SseEventIds, StreamSlot};
use crate::events::{Batch, Event, EventId, EventLogError, StreamKey};
use crate::upstream::UpstreamListener;

/// Pause before reading again after the event log failed.
const OUTAGE_RETRY: Duration = Duration::from_secs(1);

/// What an SSE response tails.
pub struct Tail {
    pub key: StreamKey,
    /// Deliver events after this sequence number.
    pub after: u64,
    /// Events already read after `after` (a resumption's replay), sent before reading more.
    pub backlog: Batch,
    /// Ends the response: the session ended, or (standalone stream) a newer GET took over.
    pub closed: CancellationToken,
    /// Record what reached the client, so the next GET starts after it (standalone stream).
    pub track_delivery: bool,
    /// End the response at a pause marker (the original POST response does; resumptions don't).
    pub honour_pauses: bool,
    /// Upstream GET streams feeding this (standalone) stream, held only to close with it.
    pub _upstream_listeners: Vec<UpstreamListener>,
    /// A GET stream's place among its session's streams open here, held only to free it with
    /// the stream (see `limits.streams_per_session`).
    pub _get_stream: Option<StreamSlot>,
    /// The session whose held upstream streams this (standalone) stream makes sure some
    /// replica holds, at every keep-alive: a holder that died without releasing its lease is
    /// replaced once the lease ran out.
    pub holds_for: Option<Session>,
    /// Set while the stream waits for its session to be created.
    pub awaiting: Option<Awaiting>,
    pub retry: Duration,
    pub framing: Framing,
}

/// A stream opened before its session exists (the HTTP+SSE transport's `GET /sse`): it waits
/// for the client's `initialize` until `until` and ends then; once the session exists, it goes
/// on as the session's standalone stream.
pub struct Awaiting {
    principal: Principal,
    until: tokio::time::Instant,
    /// The position up to which the session was looked for.
    looked_after: u64,
}

impl Awaiting {
    /// Waits for `principal`'s session until `until`.
    pub fn until(principal: Principal, until: tokio::time::Instant) -> Self {
        Awaiting {
            principal,
            until,
            looked_after: 0,
        }
    }
}

/// How a stream's events look to its transport.
pub enum Framing {
    /// Streamable HTTP (`/mcp`): a priming event first; ids `<stream>-<seq>`.
    Streamable,
    /// The HTTP+SSE transport (`/sse`): first an `endpoint` event naming where to POST; ids
    /// signed, since on a reconnect the id alone names the session.
    Sse { endpoint: String, ids: SseEventIds },
}

struct State {
    gateway: Arc<Gateway>,
    draining: CancellationToken,
    tail: Tail,
    pending: std::vec::IntoIter<Event>,
    primed: bool,
    finished: bool,
}

impl Drop for State {
    fn drop(&mut self) {
        self.gateway.metrics().sse_streams_open.dec();
        self.gateway.stream_closed(&self.tail.key.session);
    }
}

/// The SSE chunks of `tail`, until it ends.
pub fn events(gateway: Arc<Gateway>, mut tail: Tail) -> impl Stream<Item = Bytes> {
    gateway.metrics().sse_streams_open.inc();
    gateway.stream_opened(&tail.key.session);
    let state = State {
        draining: gateway.draining(),
        gateway,
        finished: tail.backlog.closed,
        pending: std::mem::take(&mut tail.backlog.events).into_iter(),
        tail,
        primed: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let chunk = next_chunk(&mut state).await?;
        Some((chunk, state))
    })
}

async fn next_chunk(state: &mut State) -> Option<Bytes> {
    if !state.primed {
        state.primed = true;
        return Some(priming(&state.tail));
    }
    loop {
        if let Some(event) = state.pending.next() {
            match deliver(state, event).await {
                Some(chunk) => return Some(chunk),
                None => continue,
            }
        }
        if state.finished || state.tail.closed.is_cancelled() {
            return None;
        }
        if state.draining.is_cancelled() {
            return Some(resume_hint(state));
        }
        if !find_session(state).await {
            return None;
        }
        let wait = match &state.tail.awaiting {
            Some(awaiting) => KEEPALIVE.min(
                awaiting
                    .until
                    .saturating_duration_since(tokio::time::Instant::now()),
            ),
            None => KEEPALIVE,
        };
        let read = state
            .gateway
            .event_log()
            .read(&state.tail.key, state.tail.after, wait);
        let batch = tokio::select! {
            batch = read => batch,
            () = state.tail.closed.cancelled() => return None,
            () = state.draining.cancelled() => return Some(resume_hint(state)),
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(EventLogError::UnknownStream(_)) => return None,
            Err(EventLogError::Unavailable(_)) => return Some(outage_pause(state).await),
        };
        if state.tail.closed.is_cancelled() {
            return None;
        }
        state.finished = batch.closed;
        if batch.events.is_empty() && !batch.closed {
            return keep_alive(state).await;
        }
        state.pending = batch.events.into_iter();
    }
}

/// After an awaiting stream delivered something (the answer to `initialize`, say), looks for
/// its session and, once it exists, goes on as the session's standalone stream; `false` when
/// the stream must end because that failed.
async fn find_session(state: &mut State) -> bool {
    let Some(awaiting) = &mut state.tail.awaiting else {
        return true;
    };
    if state.tail.after <= awaiting.looked_after {
        return true;
    }
    awaiting.looked_after = state.tail.after;
    let caller = Caller::Client(&awaiting.principal);
    let Ok(session) = state.gateway.lookup(&state.tail.key.session, caller).await else {
        return true;
    };
    let framing = std::mem::replace(&mut state.tail.framing, Framing::Streamable);
    let (after, retry) = (state.tail.after, state.tail.retry);
    match standalone::open(&state.gateway, session, Some(after), retry, framing).await {
        Ok(mut tail) => {
            state.pending = std::mem::take(&mut tail.backlog.events).into_iter();
            state.finished = tail.backlog.closed;
            state.tail = tail;
            true
        }
        Err(error) => {
            tracing::warn!(%error, "an SSE stream could not become its new session's stream");
            false
        }
    }
}

/// A keep-alive comment, unless the session turned out to be gone (or, awaited, never came).
async fn keep_alive(state: &State) -> Option<Bytes> {
    if let Some(awaiting) = &state.tail.awaiting {
        let waiting = tokio::time::Instant::now() < awaiting.until;
        return waiting.then(super::keep_alive);
    }
    if !state.gateway.still_live(&state.tail.key.session).await {
        return None;
    }
    if let Some(session) = &state.tail.holds_for {
        let resume = Resume::AfterLastLogged;
        state.gateway.hold_streams(session, resume).await;
    }
    Some(super::keep_alive())
}

/// Waits out an event log failure, then keeps the connection alive; the next read retries.
async fn outage_pause(state: &State) -> Bytes {
    tokio::select! {
        () = tokio::time::sleep(OUTAGE_RETRY) => {}
        () = state.tail.closed.cancelled() => {}
    }
    Bytes::from_static(b": event log unavailable, retrying\n\n")
}

/// The first event: the priming event, or the HTTP+SSE transport's `endpoint` event.
fn priming(tail: &Tail) -> Bytes {
    let event = sse_stream::Sse::default()
        .id(event_id(tail, tail.after))
        .retry_duration(tail.retry);
    match &tail.framing {
        Framing::Streamable => event.data(""),
        Framing::Sse { endpoint, .. } => event.event("endpoint").data(endpoint.as_str()),
    }
    .into()
}

/// The id of event `seq` of the tailed stream.
fn event_id(tail: &Tail, seq: u64) -> String {
    match &tail.framing {
        Framing::Streamable => EventId {
            stream: tail.key.stream.clone(),
            seq,
        }
        .to_string(),
        Framing::Sse { ids, .. } => ids.name(&tail.key.session, seq),
    }
}

/// The chunk for one event; `None` for a pause marker this response skips.
async fn deliver(state: &mut State, event: Event) -> Option<Bytes> {
    state.tail.after = event.seq;
    if event.data.is_empty() {
        return pause(state);
    }
    if state.tail.track_delivery {
        let _ = state
            .gateway
            .event_log()
            .mark_delivered(&state.tail.key, event.seq)
            .await;
    }
    Some(
        sse_stream::Sse::default()
            .event("message")
            .id(event_id(&state.tail, event.seq))
            .data(event.data.to_string())
            .into(),
    )
}

/// Ends this response at a pause marker, telling the client where to resume and when.
fn pause(state: &mut State) -> Option<Bytes> {
    if !state.tail.honour_pauses {
        return None;
    }
    Some(resume_hint(state))
}

/// The last chunk of a response the client should resume (a pause, or this replica draining):
/// the position to resume after, and the `retry` hint. An HTTP+SSE client's EventSource has
/// both already (the last event's id, the endpoint event's `retry`), and an event without data
/// would reach it as a message it cannot parse: it gets a comment.
fn resume_hint(state: &mut State) -> Bytes {
    state.finished = true;
    state.pending = Vec::new().into_iter();
    if let Framing::Sse { .. } = state.tail.framing {
        return Bytes::from_static(b": reconnect to resume\n\n");
    }
    sse_stream::Sse::default()
        .id(event_id(&state.tail, state.tail.after))
        .data("")
        .retry_duration(state.tail.retry)
        .into()
}

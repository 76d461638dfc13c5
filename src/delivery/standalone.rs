//! A session's standalone stream, as `GET /mcp` and the HTTP+SSE transport's `GET /sse` open
//! it: a place among the session's streams (`limits.streams_per_session`), the backlog from the
//! resume point (or, without one, after what a client last received), the claim that makes
//! this the session's one standalone stream here, and the session's upstream streams.

use std::sync::Arc;
use std::time::Duration;

use super::tail::{Framing, Tail};
use crate::dispatch::{Gateway, Session};
use crate::events::{EventLogError, StreamKey};
use crate::limits::LimitExceeded;

/// Why a standalone stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Limited(#[from] LimitExceeded),
    #[error(transparent)]
    EventLog(#[from] EventLogError),
}

/// The tail of `session`'s standalone stream after `resume` (a `Last-Event-ID`'s position), or
/// after what was last delivered.
pub async fn open(
    gateway: &Arc<Gateway>,
    session: Session,
    resume: Option<u64>,
    retry: Duration,
    framing: Framing,
) -> Result<Tail, OpenError> {
    let key = StreamKey::standalone(session.id.clone());
    let slot = gateway.open_get_stream(&key.session, true)?;
    let log = gateway.event_log();
    log.open(&key).await?;
    let after = match resume {
        Some(seq) => seq,
        None => log.delivered(&key).await?,
    };
    let backlog = log.read(&key, after, Duration::ZERO).await?;
    if resume.is_some() {
        let replayed = backlog.events.len() as u64;
        gateway.metrics().sse_events_replayed.inc_by(replayed);
    }
    let closed = gateway.claim_standalone(&key.session);
    let upstream_listeners = gateway.listen_upstreams(&session).await;
    Ok(Tail {
        key,
        after,
        backlog,
        closed,
        // The HTTP+SSE transport always reconnects with `Last-Event-ID` (a new session without).
        track_delivery: matches!(framing, Framing::Streamable),
        honour_pauses: false,
        _upstream_listeners: upstream_listeners,
        _get_stream: Some(slot),
        holds_for: Some(session),
        awaiting: None,
        retry,
        framing,
    })
}

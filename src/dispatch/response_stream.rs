//! A request's SSE response stream in the event log, once it is more than one JSON answer: the
//! writer on the replica running the request, and the takeover by another replica when that
//! one died before the response.
//!
//! The writer holds a lease on the stream ([`SessionStore::hold`], key `response:<stream>`),
//! renewed every [`WRITER_RENEW`] and lost [`WRITER_LEASE`] after its replica stopped. It logs
//! each message with the upstream event id it came from (HTTP upstreams), and notes the
//! request's id. A client resuming such a stream on another replica, while it is not closed,
//! starts a takeover there: once the lease is free, that replica resumes the upstream's
//! response stream after the last event logged and relays the rest, response included. Where
//! the upstream cannot be resumed (a stdio child died with its replica, or the upstream gave no
//! event ids) the takeover answers the request with an error, so the client never waits
//! forever.
//!
//! [`SessionStore::hold`]: crate::session::SessionStore::hold

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::ErrorCode;
use tokio::sync::mpsc;

use super::{Gateway, Outgoing, Session, error_response};
use crate::events::{EventLogError, Origin, StreamKey};
use crate::protocol::jsonrpc::{Message, RequestId};
use crate::session::Hold;
use crate::upstream::UpstreamEvent;

/// How long a writer's lease lasts without renewal.
const WRITER_LEASE: Duration = Duration::from_secs(6);
/// How often the writer renews its lease; also how often a takeover tries.
const WRITER_RENEW: Duration = Duration::from_secs(2);
/// How many times a takeover tries before it leaves the stream to the next resumption.
const TAKEOVER_ATTEMPTS: usize = 30;

/// The lease name of a response stream.
fn lease(key: &StreamKey) -> String {
    format!("response:{}", key.stream.as_str())
}

impl Gateway {
    /// Writes a request's messages to its response stream until the request's task is done,
    /// holding the stream's lease meanwhile; then closes the stream.
    pub async fn write_response_stream(
        self: Arc<Self>,
        key: StreamKey,
        request: Option<RequestId>,
        first: Vec<Outgoing>,
        mut rest: mpsc::Receiver<Outgoing>,
    ) {
        let lease = lease(&key);
        let holder = format!("writer:{}", self.signer.replica());
        let _ = self
            .store
            .hold(&key.session, &lease, &holder, WRITER_LEASE)
            .await;
        if let Some(id) = &request
            && let Err(error) = self
                .events
                .note_request(&key, &id.to_value().to_string())
                .await
        {
            tracing::warn!(%error, "could not note the request of a response stream");
        }
        let mut writer = Writer::default();
        for next in first {
            writer.write(&self, &key, next).await;
        }
        let mut renew = tokio::time::interval(WRITER_RENEW);
        renew.reset();
        loop {
            tokio::select! {
                next = rest.recv() => match next {
                    Some(next) => writer.write(&self, &key, next).await,
                    None => break,
                },
                _ = renew.tick() => {
                    let held = self.store.hold(&key.session, &lease, &holder, WRITER_LEASE).await;
                    if matches!(held, Ok(Hold::HeldElsewhere | Hold::SessionGone)) {
                        tracing::warn!("another replica took over a response stream; stopping here");
                        return;
                    }
                }
            }
        }
        self.finish_response_stream(&key, &lease, &holder).await;
    }

    /// Closes a response stream and frees its lease.
    async fn finish_response_stream(&self, key: &StreamKey, lease: &str, holder: &str) {
        if let Err(error) = self.events.close(key).await {
            tracing::warn!(%error, "could not close an SSE stream in the event log");
        }
        let _ = self.store.release(&key.session, lease, holder).await;
    }

    /// Finishes a response stream whose writer may have died: once its lease is free, resumes
    /// the upstream after the last event logged, or answers the request with an error.
    pub async fn take_over_response_stream(self: Arc<Self>, session: Session, key: StreamKey) {
        let lease = lease(&key);
        let holder = format!("takeover:{}", self.signer.replica());
        for _ in 0..TAKEOVER_ATTEMPTS {
            if !matches!(self.stream_open(&key).await, Ok(true)) {
                return;
            }
            let held = self.store.hold(&session.id, &lease, &holder, WRITER_LEASE);
            match held.await {
                Ok(Hold::Held) => {
                    self.finish_orphan(&session, &key).await;
                    return self.finish_response_stream(&key, &lease, &holder).await;
                }
                Ok(Hold::SessionGone) => return,
                Ok(Hold::HeldElsewhere) | Err(_) => tokio::time::sleep(WRITER_RENEW).await,
            }
        }
    }

    /// Whether a stream exists and is not closed.
    async fn stream_open(&self, key: &StreamKey) -> Result<bool, EventLogError> {
        let batch = self.events.read(key, u64::MAX, Duration::ZERO).await?;
        Ok(!batch.closed)
    }

    /// Relays the rest of an orphaned stream from its upstream, or answers with an error.
    async fn finish_orphan(&self, session: &Session, key: &StreamKey) {
        let answered = match self.events.positions(key).await {
            Ok(positions) => match positions.into_iter().next() {
                Some((upstream, event_id)) => {
                    self.resume_orphan(session, key, Origin { upstream, event_id })
                        .await
                }
                None => false,
            },
            Err(_) => false,
        };
        if answered {
            return;
        }
        let Ok(Some(id)) = self.events.noted_request(key).await else {
            return;
        };
        let id = serde_json::from_str(&id)
            .ok()
            .and_then(|v| RequestId::from_value(&v));
        let error = error_response(
            id.as_ref(),
            ErrorCode::INTERNAL_ERROR,
            "the replica working on this request stopped before it finished; retry the request",
        );
        if let Err(error) = self.events.append(key, error.to_string()).await {
            tracing::warn!(%error, "could not answer an orphaned request");
        }
    }

    /// Resumes the upstream's response stream after `from` and logs the rest; returns whether
    /// the response went through.
    async fn resume_orphan(&self, session: &Session, key: &StreamKey, from: Origin) -> bool {
        let Some(upstream) = self.upstreams().by_name(&from.upstream) else {
            return false;
        };
        let ctx = self.context_for(session, &upstream.name);
        let Some(mut events) = upstream.resume_response(&ctx, from.event_id) else {
            return false;
        };
        let mut origin = None;
        loop {
            let next = tokio::time::timeout(upstream.timeout, events.recv()).await;
            let message = match next {
                Ok(Some(UpstreamEvent::Message(message))) => message,
                Ok(Some(UpstreamEvent::Position(event_id))) => {
                    let upstream = upstream.name.clone();
                    origin = Some(Origin { upstream, event_id });
                    continue;
                }
                Ok(Some(UpstreamEvent::Paused)) => continue,
                Ok(None) | Err(_) => return false,
            };
            let is_response = matches!(message, Message::Response(_));
            let value = self.relayed(&session.id, &upstream.name, message);
            let appended = self
                .events
                .append_from(key, value.to_string(), origin.take().as_ref())
                .await;
            if appended.is_err() {
                return false;
            }
            if is_response {
                return true;
            }
        }
    }
}

/// What the writer remembers between messages.
#[derive(Default)]
struct Writer {
    /// The upstream position of the next message.
    origin: Option<Origin>,
}

impl Writer {
    /// Appends a message or a pause marker (an event without data); a position is kept for
    /// the message that follows it.
    async fn write(&mut self, gateway: &Gateway, key: &StreamKey, next: Outgoing) {
        let data = match next {
            Outgoing::Message(message) => message.to_string(),
            Outgoing::Pause => String::new(),
            Outgoing::Position(origin) => {
                self.origin = Some(origin);
                return;
            }
        };
        let appended = gateway
            .events
            .append_from(key, data, self.origin.take().as_ref())
            .await;
        if let Err(error) = appended {
            tracing::warn!(%error, "could not append to an SSE stream");
        }
    }
}

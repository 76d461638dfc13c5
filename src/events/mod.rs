//! SSE event logs: every resumable stream's events, kept for replay with `Last-Event-ID`.
//!
//! A stream is named by a [`StreamKey`] (session + stream id). Event ids on the wire are
//! `<stream>-<seq>` ([`EventId`]); sequence 0 is the priming event, which carries no data.
//! Writers append; readers tail with [`EventLog::read`], which waits for new events.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use crate::session::SessionId;

pub use memory::MemoryEventLog;
pub use redis::RedisEventLog;

/// Names one SSE stream within a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

impl StreamId {
    /// The stream a client opens with GET, for messages not tied to a request.
    pub fn standalone() -> Self {
        StreamId("get".to_owned())
    }

    /// A fresh id for a POST response stream: 64 random bits in hex.
    pub fn random() -> Self {
        StreamId(format!("{:016x}", rand::rng().next_u64()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stream of one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub session: SessionId,
    pub stream: StreamId,
}

impl StreamKey {
    /// `session`'s standalone stream: unsolicited messages, and everything for an HTTP+SSE
    /// client.
    pub fn standalone(session: SessionId) -> Self {
        StreamKey {
            session,
            stream: StreamId::standalone(),
        }
    }
}

/// An SSE event id: stream and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId {
    pub stream: StreamId,
    pub seq: u64,
}

impl EventId {
    /// Parses `<stream>-<seq>`; anything else is not one of ours.
    pub fn parse(text: &str) -> Option<Self> {
        let (stream, seq) = text.rsplit_once('-')?;
        let stream_ok = !stream.is_empty()
            && stream.len() <= 32
            && stream.bytes().all(|b| b.is_ascii_alphanumeric());
        let seq = seq.parse().ok()?;
        stream_ok.then(|| EventId {
            stream: StreamId(stream.to_owned()),
            seq,
        })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.stream.as_str(), self.seq)
    }
}

/// One stored event: a serialized JSON-RPC message.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub data: Arc<str>,
}

/// Where a relayed event came from: an upstream and that upstream's own SSE event id, kept
/// so that whichever replica reopens the upstream's stream resumes it after this event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub upstream: String,
    pub event_id: String,
}

/// The last upstream event id logged on a stream, by upstream name.
pub type Positions = std::collections::BTreeMap<String, String>;

/// What a read returns.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    /// The writer finished: no event will follow the last one returned.
    pub closed: bool,
}

/// Event log failures.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("event stream {0} is unknown or past its replay window")]
    UnknownStream(String),
    #[error("event log unavailable: {0}")]
    Unavailable(String),
}

/// Stores and replays SSE events.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Creates a stream if it does not exist; reads of streams never opened or appended to fail
    /// with [`EventLogError::UnknownStream`].
    async fn open(&self, key: &StreamKey) -> Result<(), EventLogError>;
    /// Appends one message; returns its sequence number (the first is 1). An empty message is a
    /// pause marker: the client should resume with `Last-Event-ID` (SEP-1699 polling).
    async fn append(&self, key: &StreamKey, data: String) -> Result<u64, EventLogError> {
        self.append_from(key, data, None).await
    }
    /// Appends one message relayed from an upstream, recording in the same write the upstream
    /// event it came from (see [`EventLog::positions`]).
    async fn append_from(
        &self,
        key: &StreamKey,
        data: String,
        origin: Option<&Origin>,
    ) -> Result<u64, EventLogError>;
    /// The last upstream event id appended to a stream, per upstream; empty for an unknown
    /// stream.
    async fn positions(&self, key: &StreamKey) -> Result<Positions, EventLogError>;
    /// Notes the JSON-RPC id (as JSON) of the one request whose response stream this is.
    async fn note_request(&self, key: &StreamKey, id: &str) -> Result<(), EventLogError>;
    /// The request id noted for a stream, if any.
    async fn noted_request(&self, key: &StreamKey) -> Result<Option<String>, EventLogError>;
    /// Marks a stream finished: readers stop after its last event.
    async fn close(&self, key: &StreamKey) -> Result<(), EventLogError>;
    /// Events after `after`, waiting up to `wait` for one to arrive if there are none yet.
    async fn read(
        &self,
        key: &StreamKey,
        after: u64,
        wait: Duration,
    ) -> Result<Batch, EventLogError>;
    /// The highest sequence a reader has been handed on a live connection (standalone stream).
    async fn delivered(&self, key: &StreamKey) -> Result<u64, EventLogError>;
    /// Records that `seq` reached a client.
    async fn mark_delivered(&self, key: &StreamKey, seq: u64) -> Result<(), EventLogError>;
    /// Forgets every stream of a session.
    async fn remove_session(&self, session: &SessionId) -> Result<(), EventLogError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_reject_garbage() {
        let id = EventId {
            stream: StreamId::random(),
            seq: 42,
        };
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        assert_eq!(EventId::parse("get-7").map(|e| e.seq), Some(7));
        for bad in ["", "-1", "abc", "abc-", "a b-1", "abc-x", "abc--1"] {
            assert!(EventId::parse(bad).is_none(), "{bad}");
        }
    }
}

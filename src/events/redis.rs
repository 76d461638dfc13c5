//! The Redis event log: SSE events of every resumable stream, replayable from any replica, with
//! the same semantics as [`MemoryEventLog`](super::MemoryEventLog).
//!
//! It owns these keys per session (named in [`keys`]); the `{<sid>}` hash tag keeps them (and
//! the session store's) in one Redis Cluster slot, so every script below stays within one slot:
//! - per stream, a Redis Stream of the events ([`keys::event_stream`]): entry id `<seq>-0`,
//!   field `d` = data (empty for a pause marker); `XADD … MAXLEN ~ replay_max_events`;
//! - per stream, a metadata hash ([`keys::event_stream_meta`]): `seq` (last sequence issued;
//!   its presence means the stream is open), `closed` (`1` once closed), `delivered`, `rq`
//!   (the request a response stream answers), `up:<upstream>` (the upstream event id of the
//!   last event relayed from it);
//! - the set of the session's stream names ([`keys::event_stream_names`]), for
//!   [`EventLog::remove_session`] without SCAN.
//!
//! Every key's TTL is `replay_window`, refreshed by each write to the stream (open, append,
//! close), so a stream is forgotten one window after its last write, like the memory log.
//! `MAXLEN ~` trims whole nodes cheaply and may keep a few more entries than asked; reads cut to
//! exactly the last `replay_max_events`.
//!
//! Appends and closes `PUBLISH` `e:<stream>` on the session's channel
//! ([`keys::session_channel`]) in the same script; a reader that finds nothing new waits on that
//! channel through the replica's [`Subscriber`] (never holding a pooled connection), then reads
//! again. Every Redis call goes through [`RedisPool::run`]; a failure is
//! [`EventLogError::Unavailable`].

use std::sync::Arc;
use std::time::Duration;

use ::redis::Script;
use ::redis::streams::StreamRangeReply;
use async_trait::async_trait;
use tokio::time::Instant;

use super::{Batch, Event, EventLog, EventLogError, Origin, Positions, StreamKey};
use crate::redis::{Connection, Notification, RedisPool, Subscriber, Subscription, keys};
use crate::session::SessionId;

/// Creates the stream if needed (`seq` 0), marks it closed if asked (and wakes readers),
/// refreshes every TTL. KEYS: events, meta, names. ARGV: ttl ms, stream name, closing (0/1),
/// channel, wake-up payload.
const TOUCH_SCRIPT: &str = r"
redis.call('HSETNX', KEYS[2], 'seq', 0)
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[2], 'closed', 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
if ARGV[3] == '1' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return 1
";

/// Issues the next sequence number, stores the event, refreshes every TTL, wakes readers; with
/// ARGV[7] and ARGV[8], also records the upstream position the event came from.
/// KEYS: events, meta, names. ARGV: data, max events, ttl ms, stream name, channel, payload,
/// [position field, upstream event id].
const APPEND_SCRIPT: &str = r"
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
if ARGV[7] then
  redis.call('HSET', KEYS[2], ARGV[7], ARGV[8])
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return seq
";

/// Raises `delivered` to ARGV[1] if higher, on a stream that exists. KEYS: meta.
const MARK_DELIVERED_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local current = tonumber(redis.call('HGET', KEYS[1], 'delivered') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'delivered', ARGV[1])
end
return 1
";

/// Deletes every stream of a session, atomically, and wakes their readers on every replica so
/// they find the stream gone and end (a DELETE closes the session's streams fleet-wide).
/// KEYS: names. ARGV: the session's events key prefix, its channel, its metadata key prefix.
/// The per-stream keys are derived from the names; they share the names key's hash tag.
const REMOVE_SESSION_SCRIPT: &str = r"
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', ARGV[1] .. name, ARGV[3] .. name)
  redis.call('PUBLISH', ARGV[2], 'e:' .. name)
end
redis.call('DEL', KEYS[1])
return 1
";

/// A reply that does not have the shape this module writes.
#[derive(Debug, thiserror::Error)]
enum ReplyError {
    #[error("stream entry id {0:?} is not <seq>-0")]
    EntryId(String),
    #[error("stream entry {0} has no data field")]
    NoData(String),
    #[error("stream metadata field {field} holds {value:?}, not a number")]
    Meta { field: &'static str, value: String },
}

impl From<ReplyError> for EventLogError {
    fn from(error: ReplyError) -> Self {
        EventLogError::Unavailable(error.to_string())
    }
}

/// The keys of one stream.
struct Keys {
    events: String,
    meta: String,
    names: String,
}

impl Keys {
    fn new(key: &StreamKey) -> Self {
        Self {
            events: keys::event_stream(key),
            meta: keys::event_stream_meta(key),
            names: keys::event_stream_names(&key.session),
        }
    }
}

/// Meta hash field holding the id of the request a response stream answers.
const REQUEST_FIELD: &str = "rq";

/// Meta hash fields holding upstream positions.
const POSITION_PREFIX: &str = "up:";

fn position_field(upstream: &str) -> String {
    format!("{POSITION_PREFIX}{upstream}")
}

/// The wake-up payload for a stream, published on its session's channel.
fn wake_up(key: &StreamKey) -> String {
    format!("e:{}", key.stream.as_str())
}

/// Event logs in Redis, shared by every replica.
pub struct RedisEventLog {
    pool: RedisPool,
    subscriber: Arc<Subscriber>,
    window_ms: u64,
    max_events: u64,
    touch: Script,
    append: Script,
    mark_delivered: Script,
    remove_session: Script,
}

impl RedisEventLog {
    /// A log whose streams are forgotten `replay_window` after their last write and keep the
    /// last `replay_max_events` events. Readers wait on `subscriber` (one per replica, see
    /// [`Subscriber::start`]).
    pub fn new(
        pool: RedisPool,
        subscriber: Arc<Subscriber>,
        replay_window: Duration,
        replay_max_events: usize,
    ) -> Self {
        Self {
            pool,
            subscriber,
            window_ms: u64::try_from(replay_window.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            max_events: u64::try_from(replay_max_events).unwrap_or(u64::MAX).max(1),
            touch: Script::new(TOUCH_SCRIPT),
            append: Script::new(APPEND_SCRIPT),
            mark_delivered: Script::new(MARK_DELIVERED_SCRIPT),
            remove_session: Script::new(REMOVE_SESSION_SCRIPT),
        }
    }

    /// Runs one Redis operation; any failure means the log is unavailable.
    async fn run<T, F, Fut>(&self, op: &'static str, operation: F) -> Result<T, EventLogError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        self.pool
            .run(op, operation)
            .await
            .map_err(|e| EventLogError::Unavailable(e.to_string()))
    }

    /// Creates (or only refreshes) a stream, optionally closing it.
    async fn touch(&self, key: &StreamKey, closing: bool) -> Result<(), EventLogError> {
        let keys = Keys::new(key);
        let mut invocation = self.touch.prepare_invoke();
        invocation
            .key(&keys.events)
            .key(&keys.meta)
            .key(&keys.names)
            .arg(self.window_ms)
            .arg(key.stream.as_str())
            .arg(u8::from(closing))
            .arg(keys::session_channel(&key.session))
            .arg(wake_up(key));
        let op = if closing {
            "events_close"
        } else {
            "events_open"
        };
        self.run(op, |mut conn| async move {
            invocation.invoke_async::<()>(&mut conn).await
        })
        .await
    }

    /// The stream's events after `after` (at most the last `max_events`) and whether it is
    /// closed, read atomically; a stream that does not exist is unknown.
    async fn batch(&self, key: &StreamKey, after: u64) -> Result<Batch, EventLogError> {
        let keys = Keys::new(key);
        let start = format!("{}-0", after.saturating_add(1));
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("HMGET")
            .arg(&keys.meta)
            .arg("seq")
            .arg("closed")
            .xrange(&keys.events, start, "+");
        let ((seq, closed), range): ((Option<String>, Option<String>), StreamRangeReply) = self
            .run("events_read", |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        let last_seq = parse_number("seq", &seq.ok_or_else(|| unknown(key))?)?;
        let oldest_kept = last_seq.saturating_sub(self.max_events);
        let events = decode(range)?
            .into_iter()
            .filter(|event| event.seq > oldest_kept)
            .collect();
        Ok(Batch {
            events,
            closed: closed.is_some(),
        })
    }

    /// Subscribes to the stream's wake-ups and reads once more, so that an append between the
    /// first read and the subscription is not missed.
    async fn subscribe(
        &self,
        key: &StreamKey,
        after: u64,
    ) -> Result<(Subscription, Batch), EventLogError> {
        let subscription = self
            .subscriber
            .subscribe(&keys::session_channel(&key.session))
            .await;
        Ok((subscription, self.batch(key, after).await?))
    }
}

#[async_trait]
impl EventLog for RedisEventLog {
    async fn open(&self, key: &StreamKey) -> Result<(), EventLogError> {
        self.touch(key, false).await
    }

    async fn append_from(
        &self,
        key: &StreamKey,
        data: String,
        origin: Option<&Origin>,
    ) -> Result<u64, EventLogError> {
        let keys = Keys::new(key);
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(&keys.events)
            .key(&keys.meta)
            .key(&keys.names)
            .arg(data)
            .arg(self.max_events)
            .arg(self.window_ms)
            .arg(key.stream.as_str())
            .arg(keys::session_channel(&key.session))
            .arg(wake_up(key));
        if let Some(origin) = origin {
            invocation
                .arg(position_field(&origin.upstream))
                .arg(&origin.event_id);
        }
        self.run("events_append", |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    async fn close(&self, key: &StreamKey) -> Result<(), EventLogError> {
        self.touch(key, true).await
    }

    async fn read(
        &self,
        key: &StreamKey,
        after: u64,
        wait: Duration,
    ) -> Result<Batch, EventLogError> {
        let deadline = Instant::now() + wait;
        let batch = self.batch(key, after).await?;
        if !batch.events.is_empty() || batch.closed || wait.is_zero() {
            return Ok(batch);
        }
        let (mut subscription, batch) = self.subscribe(key, after).await?;
        if !batch.events.is_empty() || batch.closed {
            return Ok(batch);
        }
        wait_for_wake_up(&mut subscription, &wake_up(key), deadline).await;
        drop(subscription);
        self.batch(key, after).await
    }

    async fn positions(&self, key: &StreamKey) -> Result<Positions, EventLogError> {
        let meta = Keys::new(key).meta;
        let fields: std::collections::HashMap<String, String> = self
            .run("events_positions", |mut conn| async move {
                ::redis::cmd("HGETALL")
                    .arg(&meta)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(fields
            .into_iter()
            .filter_map(|(field, id)| Some((field.strip_prefix(POSITION_PREFIX)?.to_owned(), id)))
            .collect())
    }

    async fn note_request(&self, key: &StreamKey, id: &str) -> Result<(), EventLogError> {
        let meta = Keys::new(key).meta;
        self.run("events_note_request", |mut conn| async move {
            ::redis::cmd("HSET")
                .arg(&meta)
                .arg(REQUEST_FIELD)
                .arg(id)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    async fn noted_request(&self, key: &StreamKey) -> Result<Option<String>, EventLogError> {
        let meta = Keys::new(key).meta;
        self.run("events_noted_request", |mut conn| async move {
            ::redis::cmd("HGET")
                .arg(&meta)
                .arg(REQUEST_FIELD)
                .query_async(&mut conn)
                .await
        })
        .await
    }

    async fn delivered(&self, key: &StreamKey) -> Result<u64, EventLogError> {
        let meta = Keys::new(key).meta;
        let delivered: Option<String> = self
            .run("events_delivered", |mut conn| async move {
                ::redis::cmd("HGET")
                    .arg(&meta)
                    .arg("delivered")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        match delivered {
            Some(value) => Ok(parse_number("delivered", &value)?),
            None => Ok(0),
        }
    }

    async fn mark_delivered(&self, key: &StreamKey, seq: u64) -> Result<(), EventLogError> {
        let mut invocation = self.mark_delivered.prepare_invoke();
        invocation.key(Keys::new(key).meta).arg(seq);
        self.run("events_mark_delivered", |mut conn| async move {
            invocation.invoke_async::<()>(&mut conn).await
        })
        .await
    }

    async fn remove_session(&self, session: &SessionId) -> Result<(), EventLogError> {
        let mut invocation = self.remove_session.prepare_invoke();
        invocation
            .key(keys::event_stream_names(session))
            .arg(keys::event_stream_prefix(session))
            .arg(keys::session_channel(session))
            .arg(keys::event_stream_meta_prefix(session));
        self.run("events_remove_session", |mut conn| async move {
            invocation.invoke_async::<()>(&mut conn).await
        })
        .await
    }
}

/// Waits until the stream's wake-up (or a gap in the notifications) arrives, or the deadline.
/// Wake-ups for the session's other streams are skipped.
async fn wait_for_wake_up(subscription: &mut Subscription, payload: &str, deadline: Instant) {
    loop {
        match tokio::time::timeout_at(deadline, subscription.recv()).await {
            Ok(Notification::Message(message)) if message != payload => continue,
            Ok(_) | Err(_) => return,
        }
    }
}

/// Turns `XRANGE` entries into events.
fn decode(range: StreamRangeReply) -> Result<Vec<Event>, ReplyError> {
    range
        .ids
        .into_iter()
        .map(|entry| {
            let seq = entry
                .id
                .strip_suffix("-0")
                .and_then(|seq| seq.parse().ok())
                .ok_or_else(|| ReplyError::EntryId(entry.id.clone()))?;
            let data: String = entry
                .get("d")
                .ok_or_else(|| ReplyError::NoData(entry.id.clone()))?;
            Ok(Event {
                seq,
                data: data.into(),
            })
        })
        .collect()
}

fn parse_number(field: &'static str, value: &str) -> Result<u64, ReplyError> {
    value.parse().map_err(|_| ReplyError::Meta {
        field,
        value: value.to_owned(),
    })
}

fn unknown(key: &StreamKey) -> EventLogError {
    EventLogError::UnknownStream(key.stream.as_str().to_owned())
}

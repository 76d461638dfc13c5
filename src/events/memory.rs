//! The in-process event log, for the memory store. Bounded per stream by count and by the
//! replay window; old streams are pruned lazily on writes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Batch, Event, EventLog, EventLogError, Origin, Positions, StreamKey};
use crate::session::SessionId;

struct StreamLog {
    events: VecDeque<Event>,
    next_seq: u64,
    closed: bool,
    delivered: u64,
    touched: Instant,
    last_seq: watch::Sender<u64>,
    positions: Positions,
    request: Option<String>,
}

impl StreamLog {
    fn new() -> Self {
        Self {
            events: VecDeque::new(),
            next_seq: 1,
            closed: false,
            delivered: 0,
            touched: Instant::now(),
            last_seq: watch::Sender::new(0),
            positions: Positions::new(),
            request: None,
        }
    }

    fn after(&self, seq: u64) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect()
    }
}

/// Event logs held in this process.
pub struct MemoryEventLog {
    window: Duration,
    max_events: usize,
    streams: Mutex<HashMap<StreamKey, StreamLog>>,
}

impl MemoryEventLog {
    pub fn new(window: Duration, max_events: usize) -> Self {
        Self {
            window,
            max_events: max_events.max(1),
            streams: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, StreamLog>> {
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn prune(&self, streams: &mut HashMap<StreamKey, StreamLog>, now: Instant) {
        streams.retain(|_, log| now.duration_since(log.touched) < self.window);
    }
}

#[async_trait]
impl EventLog for MemoryEventLog {
    async fn open(&self, key: &StreamKey) -> Result<(), EventLogError> {
        let now = Instant::now();
        let mut streams = self.lock();
        self.prune(&mut streams, now);
        streams
            .entry(key.clone())
            .or_insert_with(StreamLog::new)
            .touched = now;
        Ok(())
    }

    async fn append_from(
        &self,
        key: &StreamKey,
        data: String,
        origin: Option<&Origin>,
    ) -> Result<u64, EventLogError> {
        let now = Instant::now();
        let mut streams = self.lock();
        self.prune(&mut streams, now);
        let log = streams.entry(key.clone()).or_insert_with(StreamLog::new);
        if let Some(origin) = origin {
            let position = origin.event_id.clone();
            log.positions.insert(origin.upstream.clone(), position);
        }
        let seq = log.next_seq;
        log.next_seq += 1;
        log.touched = now;
        log.events.push_back(Event {
            seq,
            data: data.into(),
        });
        while log.events.len() > self.max_events {
            log.events.pop_front();
        }
        log.last_seq.send_replace(seq);
        Ok(seq)
    }

    async fn close(&self, key: &StreamKey) -> Result<(), EventLogError> {
        let mut streams = self.lock();
        let log = streams.entry(key.clone()).or_insert_with(StreamLog::new);
        log.closed = true;
        log.touched = Instant::now();
        log.last_seq.send_modify(|_| {});
        Ok(())
    }

    async fn read(
        &self,
        key: &StreamKey,
        after: u64,
        wait: Duration,
    ) -> Result<Batch, EventLogError> {
        let mut changed = {
            let streams = self.lock();
            let log = streams.get(key).ok_or_else(|| unknown(key))?;
            let events = log.after(after);
            if !events.is_empty() || log.closed {
                return Ok(Batch {
                    events,
                    closed: log.closed,
                });
            }
            log.last_seq.subscribe()
        };
        let _ = tokio::time::timeout(wait, changed.changed()).await;
        let streams = self.lock();
        let log = streams.get(key).ok_or_else(|| unknown(key))?;
        Ok(Batch {
            events: log.after(after),
            closed: log.closed,
        })
    }

    async fn positions(&self, key: &StreamKey) -> Result<Positions, EventLogError> {
        Ok(self
            .lock()
            .get(key)
            .map(|log| log.positions.clone())
            .unwrap_or_default())
    }

    async fn note_request(&self, key: &StreamKey, id: &str) -> Result<(), EventLogError> {
        if let Some(log) = self.lock().get_mut(key) {
            log.request = Some(id.to_owned());
        }
        Ok(())
    }

    async fn noted_request(&self, key: &StreamKey) -> Result<Option<String>, EventLogError> {
        Ok(self.lock().get(key).and_then(|log| log.request.clone()))
    }

    async fn delivered(&self, key: &StreamKey) -> Result<u64, EventLogError> {
        Ok(self.lock().get(key).map_or(0, |log| log.delivered))
    }

    async fn mark_delivered(&self, key: &StreamKey, seq: u64) -> Result<(), EventLogError> {
        if let Some(log) = self.lock().get_mut(key) {
            log.delivered = log.delivered.max(seq);
        }
        Ok(())
    }

    async fn remove_session(&self, session: &SessionId) -> Result<(), EventLogError> {
        self.lock().retain(|key, _| &key.session != session);
        Ok(())
    }
}

fn unknown(key: &StreamKey) -> EventLogError {
    EventLogError::UnknownStream(key.stream.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::StreamId;
    use std::sync::Arc;

    fn key() -> StreamKey {
        StreamKey {
            session: SessionId::generate(),
            stream: StreamId::random(),
        }
    }

    #[tokio::test]
    async fn replays_after_a_position_and_reports_closure() {
        let log = MemoryEventLog::new(Duration::from_secs(60), 100);
        let key = key();
        for n in 0..3 {
            log.append(&key, format!("m{n}")).await.unwrap();
        }
        let batch = log.read(&key, 1, Duration::ZERO).await.unwrap();
        assert_eq!(
            batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(!batch.closed);
        log.close(&key).await.unwrap();
        assert!(
            log.read(&key, 3, Duration::from_secs(5))
                .await
                .unwrap()
                .closed
        );
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_append() {
        let log = Arc::new(MemoryEventLog::new(Duration::from_secs(60), 100));
        let key = key();
        log.open(&key).await.unwrap();
        let reader = {
            let (log, key) = (log.clone(), key.clone());
            tokio::spawn(async move { log.read(&key, 0, Duration::from_secs(5)).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        log.append(&key, "hello".into()).await.unwrap();
        let batch = reader.await.unwrap();
        assert_eq!(&*batch.events[0].data, "hello");
    }

    #[tokio::test]
    async fn unknown_streams_are_refused_until_opened() {
        let log = MemoryEventLog::new(Duration::from_secs(60), 10);
        let key = key();
        let refused = log.read(&key, 0, Duration::ZERO).await;
        assert!(matches!(refused, Err(EventLogError::UnknownStream(_))));
        log.open(&key).await.unwrap();
        let batch = log.read(&key, 0, Duration::ZERO).await.unwrap();
        assert!(batch.events.is_empty() && !batch.closed);
    }

    #[tokio::test]
    async fn keeps_at_most_the_configured_number_of_events() {
        let log = MemoryEventLog::new(Duration::from_secs(60), 2);
        let key = key();
        for n in 0..5 {
            log.append(&key, format!("m{n}")).await.unwrap();
        }
        let batch = log.read(&key, 0, Duration::ZERO).await.unwrap();
        assert_eq!(
            batch.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }
}

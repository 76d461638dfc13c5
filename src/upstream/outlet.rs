//! Where upstreams' messages outside any request go: one bounded queue per replica, relayed to
//! sessions by `dispatch/unsolicited.rs`, and one [`Outlet`] into it per upstream.
//!
//! The bounds and what happens at them:
//! - the queue holds at most [`QUEUE_MESSAGES`] messages and [`QUEUE_BYTES`] bytes of them (as
//!   the upstream sent them);
//! - an upstream may queue at most `unsolicited_per_second` messages a second, in bursts of as
//!   many;
//! - a list change (`notifications/{tools,prompts,resources}/list_changed`, which carries no
//!   data: it is queued bare, without whatever params the upstream added) is never queued twice
//!   for the same audience: while one waits, later ones are merged into it. One over the rate
//!   or facing a full queue is put off, merged the same way, and queued as soon as the rate
//!   allows, so the last change is never lost;
//! - anything else over the rate is dropped. Facing a full queue, a stdio child's message is
//!   dropped too, while an HTTP upstream's standalone stream waits for room (it reads its next
//!   event only once this one was logged, so the upstream is slowed down instead).
//!
//! Drops are counted in `mcpgate_upstream_messages_dropped_total{upstream,reason}`, merges in
//! `mcpgate_upstream_messages_coalesced_total{upstream}`.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::Unsolicited;
use crate::protocol::jsonrpc::{Message, Notification};
use crate::session::SessionId;
use crate::sync::lock;
use crate::telemetry::Metrics;

/// Most messages the queue holds.
const QUEUE_MESSAGES: usize = 1024;
/// Most bytes the queued messages add up to, as their upstreams sent them.
const QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// The list changes that are merged rather than dropped.
const LIST_CHANGES: [&str; 3] = [
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
];

/// Why a message from an upstream was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Over the upstream's `max_message_bytes`.
    TooLarge,
    /// Over the upstream's `unsolicited_per_second`.
    RateLimited,
    /// The queue of unsolicited messages was full.
    QueueFull,
}

impl DropReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::TooLarge => "too_large",
            DropReason::RateLimited => "rate_limited",
            DropReason::QueueFull => "queue_full",
        }
    }
}

/// A list change for one audience (a session, or every session when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ListChange {
    upstream: String,
    session: Option<SessionId>,
    method: &'static str,
}

impl ListChange {
    fn of(upstream: &str, session: &Option<SessionId>, message: &Message) -> Option<Self> {
        let Message::Notification(notification) = message else {
            return None;
        };
        let method = LIST_CHANGES
            .into_iter()
            .find(|m| *m == notification.method)?;
        Some(Self {
            upstream: upstream.to_owned(),
            session: session.clone(),
            method,
        })
    }

    /// The bare notification.
    fn message(&self) -> Message {
        Message::Notification(Notification {
            method: self.method.to_owned(),
            params: None,
        })
    }
}

/// List changes queued or put off, shared by both halves of the queue.
type Waiting = Arc<Mutex<HashSet<ListChange>>>;

/// One queued message, holding its share of [`QUEUE_BYTES`] until it is taken out.
struct Queued {
    unsolicited: Unsolicited,
    list_change: Option<ListChange>,
    _bytes: OwnedSemaphorePermit,
}

/// The sending half of the queue, shared by every upstream.
#[derive(Clone)]
pub struct UnsolicitedSink {
    sender: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    waiting: Waiting,
    metrics: Arc<Metrics>,
}

/// The receiving half of the queue.
pub struct UnsolicitedQueue {
    receiver: mpsc::Receiver<Queued>,
    waiting: Waiting,
}

/// A new queue; drops and merges are counted in `metrics`.
pub fn unsolicited_queue(metrics: Arc<Metrics>) -> (UnsolicitedSink, UnsolicitedQueue) {
    let (sender, receiver) = mpsc::channel(QUEUE_MESSAGES);
    let waiting = Waiting::default();
    let sink = UnsolicitedSink {
        sender,
        bytes: Arc::new(Semaphore::new(QUEUE_BYTES)),
        waiting: waiting.clone(),
        metrics,
    };
    (sink, UnsolicitedQueue { receiver, waiting })
}

impl UnsolicitedQueue {
    /// The next message; `None` once every upstream is gone.
    pub async fn recv(&mut self) -> Option<Unsolicited> {
        let queued = self.receiver.recv().await?;
        if let Some(change) = &queued.list_change {
            lock(&self.waiting).remove(change);
        }
        Some(queued.unsolicited)
    }
}

impl UnsolicitedSink {
    /// The outlet of one upstream, allowed `per_second` messages a second.
    pub fn outlet(&self, upstream: &str, per_second: NonZeroU32) -> Outlet {
        Outlet {
            inner: Arc::new(OutletInner {
                upstream: upstream.to_owned(),
                sink: self.clone(),
                rate: RateLimiter::direct(Quota::per_second(per_second)),
                deferred: Mutex::default(),
            }),
        }
    }

    /// Where drops, merges and the pool of isolated children are counted.
    pub(super) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether this list change is queued or put off already; marks it so when not.
    fn merge_or_mark(&self, change: &ListChange) -> bool {
        !lock(&self.waiting).insert(change.clone())
    }

    /// Queues without waiting; `false` when the queue is full.
    fn try_enqueue(
        &self,
        unsolicited: Unsolicited,
        list_change: Option<ListChange>,
        bytes: usize,
    ) -> bool {
        let Ok(slot) = self.sender.try_reserve() else {
            return false;
        };
        let Ok(permit) = self.bytes.clone().try_acquire_many_owned(cost(bytes)) else {
            return false;
        };
        slot.send(Queued {
            unsolicited,
            list_change,
            _bytes: permit,
        });
        true
    }

    /// Queues, waiting for room; `false` when the queue is gone.
    async fn enqueue(
        &self,
        unsolicited: Unsolicited,
        list_change: Option<ListChange>,
        bytes: usize,
    ) -> bool {
        let Ok(permit) = self.bytes.clone().acquire_many_owned(cost(bytes)).await else {
            return false;
        };
        let queued = Queued {
            unsolicited,
            list_change,
            _bytes: permit,
        };
        self.sender.send(queued).await.is_ok()
    }
}

/// A message's share of [`QUEUE_BYTES`].
fn cost(bytes: usize) -> u32 {
    bytes.clamp(1, QUEUE_BYTES) as u32
}

/// What the bounds make of a message before it is queued.
enum Admission {
    /// Queue this message; a list change (bare, marked as waiting already) comes with it.
    Queue(Message, Option<ListChange>),
    /// Merged into a waiting list change, put off, or dropped: nothing more to do.
    Done,
}

/// One upstream's way into the queue, with its rate limit.
#[derive(Clone)]
pub struct Outlet {
    inner: Arc<OutletInner>,
}

struct OutletInner {
    upstream: String,
    sink: UnsolicitedSink,
    rate: DefaultDirectRateLimiter,
    deferred: Mutex<Deferred>,
}

/// List changes put off by the rate or a full queue.
#[derive(Default)]
struct Deferred {
    changes: Vec<ListChange>,
    /// A task is queueing them.
    flushing: bool,
}

impl Outlet {
    /// Queues a message for every session of this replica that may see it, without waiting.
    pub fn broadcast(&self, message: Message, bytes: usize) {
        self.queue(None, message, bytes);
    }

    /// Queues a message for one session (of an isolated stdio child), without waiting.
    pub fn send_to(&self, session: SessionId, message: Message, bytes: usize) {
        self.queue(Some(session), message, bytes);
    }

    /// Queues a message for `session`, or every session when `None`, without waiting.
    fn queue(&self, session: Option<SessionId>, message: Message, bytes: usize) {
        let Admission::Queue(message, change) = self.admit(&session, message) else {
            return;
        };
        let unsolicited = self.unsolicited(session, message, None, None);
        if !self
            .inner
            .sink
            .try_enqueue(unsolicited, change.clone(), bytes)
        {
            self.full(change);
        }
    }

    /// Queues a message from a session's standalone stream and waits until it was logged.
    /// `false` when it could not be logged; a message merged, put off or dropped by a bound
    /// counts as done, so that the stream moves on.
    pub async fn deliver(
        &self,
        session: SessionId,
        message: Message,
        event_id: Option<String>,
        bytes: usize,
    ) -> bool {
        let session = Some(session);
        let Admission::Queue(message, change) = self.admit(&session, message) else {
            return true;
        };
        let (ack, acked) = oneshot::channel();
        let unsolicited = self.unsolicited(session, message, event_id, Some(ack));
        if !self.inner.sink.enqueue(unsolicited, change, bytes).await {
            return false;
        }
        acked.await.unwrap_or(false)
    }

    /// Counts a message of this upstream dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) {
        let inner = &self.inner;
        inner
            .sink
            .metrics
            .upstream_message_dropped(&inner.upstream, reason.label());
    }

    fn unsolicited(
        &self,
        session: Option<SessionId>,
        message: Message,
        event_id: Option<String>,
        logged: Option<oneshot::Sender<bool>>,
    ) -> Unsolicited {
        Unsolicited {
            upstream: self.inner.upstream.clone(),
            session,
            message,
            event_id,
            logged,
        }
    }

    /// Applies the merging of list changes and the rate limit.
    fn admit(&self, session: &Option<SessionId>, message: Message) -> Admission {
        let inner = &self.inner;
        let Some(change) = ListChange::of(&inner.upstream, session, &message) else {
            if inner.rate.check().is_ok() {
                return Admission::Queue(message, None);
            }
            self.dropped(DropReason::RateLimited);
            return Admission::Done;
        };
        if inner.sink.merge_or_mark(&change) {
            let metrics = &inner.sink.metrics;
            metrics.upstream_message_coalesced(&inner.upstream);
        } else if inner.rate.check().is_ok() {
            return Admission::Queue(change.message(), Some(change));
        } else {
            self.defer(change);
        }
        Admission::Done
    }

    /// The queue was full for a message that could not wait.
    fn full(&self, change: Option<ListChange>) {
        match change {
            Some(change) => self.defer(change),
            None => self.dropped(DropReason::QueueFull),
        }
    }

    /// Puts a list change (marked as waiting) off until the rate allows and there is room.
    fn defer(&self, change: ListChange) {
        let mut deferred = lock(&self.inner.deferred);
        deferred.changes.push(change);
        if !std::mem::replace(&mut deferred.flushing, true) {
            tokio::spawn(self.clone().flush());
        }
    }

    /// Queues the list changes put off, one at a time as the rate allows.
    async fn flush(self) {
        loop {
            let next = {
                let mut deferred = lock(&self.inner.deferred);
                let next = deferred.changes.pop();
                deferred.flushing = next.is_some();
                next
            };
            let Some(change) = next else { return };
            self.inner.rate.until_ready().await;
            let session = change.session.clone();
            let unsolicited = self.unsolicited(session, change.message(), None, None);
            if !self.inner.sink.enqueue(unsolicited, Some(change), 0).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlet(per_second: u32) -> (Outlet, UnsolicitedQueue, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new().unwrap());
        let (sink, queue) = unsolicited_queue(metrics.clone());
        let per_second = NonZeroU32::new(per_second).unwrap();
        (sink.outlet("up", per_second), queue, metrics)
    }

    fn notification(method: &str) -> Message {
        Message::Notification(Notification {
            method: method.to_owned(),
            params: None,
        })
    }

    fn drain(queue: &mut UnsolicitedQueue) -> Vec<String> {
        let mut methods = Vec::new();
        while let Ok(queued) = queue.receiver.try_recv() {
            if let Some(change) = &queued.list_change {
                lock(&queue.waiting).remove(change);
            }
            if let Message::Notification(n) = queued.unsolicited.message {
                methods.push(n.method);
            }
        }
        methods
    }

    #[tokio::test]
    async fn list_changes_are_merged_and_others_dropped_over_the_rate() {
        let (outlet, mut queue, metrics) = outlet(5);
        for _ in 0..100 {
            outlet.broadcast(notification(LIST_CHANGES[0]), 10);
            outlet.broadcast(notification("notifications/resources/updated"), 10);
        }
        let first = drain(&mut queue);
        assert_eq!(first.iter().filter(|m| *m == LIST_CHANGES[0]).count(), 1);
        assert_eq!(first.len(), 5, "{first:?}");
        let text = metrics.render();
        assert!(
            text.contains("upstream_messages_coalesced_total{upstream=\"up\"} 99"),
            "{text}"
        );
        assert!(
            text.contains("reason=\"rate_limited\",upstream=\"up\"} 96"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_list_change_over_the_rate_is_delivered_later() {
        let (outlet, mut queue, _) = outlet(1);
        outlet.broadcast(notification("notifications/resources/updated"), 10);
        outlet.broadcast(notification(LIST_CHANGES[1]), 10);
        assert_eq!(drain(&mut queue), vec!["notifications/resources/updated"]);
        let later = tokio::time::timeout(std::time::Duration::from_secs(3), queue.recv()).await;
        let Ok(Some(Unsolicited {
            message: Message::Notification(n),
            ..
        })) = later
        else {
            panic!("the list change was lost");
        };
        assert_eq!(n.method, LIST_CHANGES[1]);
    }

    #[tokio::test]
    async fn a_full_queue_drops_what_cannot_wait() {
        let (outlet, mut queue, metrics) = outlet(u32::MAX);
        outlet.broadcast(notification("notifications/resources/updated"), QUEUE_BYTES);
        outlet.broadcast(notification("notifications/resources/updated"), 1);
        assert_eq!(drain(&mut queue).len(), 1);
        assert!(
            metrics
                .render()
                .contains("reason=\"queue_full\",upstream=\"up\"} 1")
        );
    }
}

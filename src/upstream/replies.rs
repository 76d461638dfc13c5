//! [`Replies`]: what an upstream sends about one forwarded request, read by the task that
//! waits for it.
//!
//! stdio and SSE upstreams route their messages into the channel from a reader they already
//! run. An HTTP upstream's answer is read by a future of its own (the `reader`), which would
//! otherwise need a task of its own per request: one more spawn, and a wake-up across tasks
//! for every message, on every forwarded call. Here the waiting task polls the reader itself
//! whenever it waits for the next message. A holder that keeps replies without waiting on
//! them (a suspended exchange) [`Replies::detach`]es them first.
//!
//! Replies are mostly dropped before their reader is done: after the response, an SSE
//! answer's stream is read to its end (so that its connection goes back to the pool), and
//! that end comes through the connection's own task a moment later. Such a reader gets a
//! task of its own then. (Finishing it in the request's task, after the answer is out,
//! measured worse: 200,900 instructions per call against 194,800.)

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::UpstreamEvent;

type Reader = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The messages about one forwarded request: notifications and server-to-client requests
/// that belong to it, then its response.
pub struct Replies {
    messages: mpsc::Receiver<UpstreamEvent>,
    reader: Option<Reader>,
}

impl Replies {
    /// Replies that another task sends into `messages`.
    pub fn channel(messages: mpsc::Receiver<UpstreamEvent>) -> Self {
        Self {
            messages,
            reader: None,
        }
    }

    /// Replies that `reader` sends into `messages`, run by whoever waits for them.
    pub fn read_by(
        messages: mpsc::Receiver<UpstreamEvent>,
        reader: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Self {
            messages,
            reader: Some(Box::pin(reader)),
        }
    }

    /// The next message; `None` once no more can come.
    pub async fn recv(&mut self) -> Option<UpstreamEvent> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Runs the reader until it waits (on the upstream, or on room in the channel), then
    /// takes the next message. Taking one makes room, and wakes this task again when the
    /// reader was waiting for it.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<UpstreamEvent>> {
        if let Some(reader) = self.reader.as_mut()
            && reader.as_mut().poll(cx).is_ready()
        {
            self.reader = None;
        }
        self.messages.poll_recv(cx)
    }

    /// Moves the reader to a task of its own, for a holder that will not wait on these
    /// replies for a while; its messages wait in the channel (which bounds them).
    pub fn detach(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reader);
        }
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.detach();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    fn event(n: usize) -> UpstreamEvent {
        UpstreamEvent::Position(n.to_string())
    }

    fn number(event: UpstreamEvent) -> usize {
        match event {
            UpstreamEvent::Position(n) => n.parse().unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_waiting_task_runs_the_reader_past_a_full_channel() {
        let (tx, rx) = mpsc::channel(4);
        let reader = async move {
            for n in 0..100 {
                tx.send(event(n)).await.unwrap();
            }
        };
        let mut replies = Replies::read_by(rx, reader);
        for expected in 0..100 {
            let next = tokio::time::timeout(Duration::from_secs(5), replies.recv()).await;
            assert_eq!(number(next.unwrap().unwrap()), expected);
        }
        assert!(replies.recv().await.is_none(), "the reader finished");
    }

    #[tokio::test]
    async fn replies_dropped_early_leave_their_reader_to_finish() {
        let (tx, rx) = mpsc::channel(4);
        let (go_on, gate) = oneshot::channel::<()>();
        let (finished, done) = oneshot::channel();
        let reader = async move {
            tx.send(event(1)).await.unwrap();
            gate.await.unwrap();
            finished.send(()).unwrap();
        };
        let mut replies = Replies::read_by(rx, reader);
        assert_eq!(number(replies.recv().await.unwrap()), 1);
        drop(replies);
        go_on.send(()).unwrap();
        let finished = tokio::time::timeout(Duration::from_secs(5), done).await;
        assert!(
            finished.unwrap().is_ok(),
            "the reader ran on in a task of its own"
        );
    }
}

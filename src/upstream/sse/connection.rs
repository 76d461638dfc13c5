//! One connection to an HTTP+SSE upstream, which is one upstream session: where it posts, the
//! requests waiting for an answer on it, and where each message read from its stream goes.
//!
//! Requests get ids of the connection's own (1, 2, …), so that ids stay unique on the
//! connection whoever sent them (a client, or mcpgate restoring state); the answer gets the
//! request's id back. At most [`MAX_PENDING`] requests wait on one connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::super::{UpstreamError, UpstreamEvent};
use crate::protocol::Method;
use crate::protocol::jsonrpc::{Message, RequestId, Response};
use crate::session::SessionId;
use crate::sync::lock;

/// Most requests waiting for an answer on one connection; the hub already caps a session's
/// requests in flight below this.
pub(super) const MAX_PENDING: usize = 256;

/// One upstream session of one mcpgate session, bound to its GET stream.
pub(super) struct Connection {
    /// mcpgate's name for it, kept in the session record.
    pub id: String,
    /// The session it was opened for: what the upstream sends outside a request goes there.
    pub owner: SessionId,
    /// Where messages are posted (the `endpoint` event, resolved against the upstream's URL).
    pub endpoint: http::Uri,
    state: Mutex<State>,
    /// The task reading the stream; aborted when the connection is closed.
    reader: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    pending: HashMap<i64, Waiting>,
    next_id: i64,
    last_used: Instant,
    closed: bool,
}

/// A request waiting for its answer.
struct Waiting {
    /// The id the request came with, which its answer gets back.
    answers: RequestId,
    /// Its `_meta.progressToken`: progress notifications with it belong to it.
    progress_token: Option<Value>,
    messages: mpsc::Sender<UpstreamEvent>,
}

/// Where a message read from the stream goes.
pub(super) enum Route {
    /// To the channel of the request it belongs to.
    Request(mpsc::Sender<UpstreamEvent>, Message),
    /// To the owner's unsolicited messages.
    Outlet(Message),
    /// Nowhere: the answer of a request nobody waits for any more.
    Nowhere,
}

/// Why a request cannot be sent on a connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The connection is closed.
    Closed,
    /// [`MAX_PENDING`] requests wait already.
    Busy,
}

impl Connection {
    pub fn new(id: String, owner: SessionId, endpoint: http::Uri) -> Self {
        Self {
            id,
            owner,
            endpoint,
            state: Mutex::new(State {
                pending: HashMap::new(),
                next_id: 1,
                last_used: Instant::now(),
                closed: false,
            }),
            reader: Mutex::new(None),
        }
    }

    /// Keeps the task reading the stream, to stop it on [`Connection::close`].
    pub fn set_reader(&self, reader: JoinHandle<()>) {
        *lock(&self.reader) = Some(reader);
    }

    /// Registers a request; its id on this connection.
    pub fn register(
        &self,
        answers: RequestId,
        progress_token: Option<Value>,
        messages: mpsc::Sender<UpstreamEvent>,
    ) -> Result<i64, Refused> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Refused::Closed);
        }
        state.pending.retain(|_, w| !w.messages.is_closed());
        if state.pending.len() >= MAX_PENDING {
            return Err(Refused::Busy);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.last_used = Instant::now();
        let waiting = Waiting {
            answers,
            progress_token,
            messages,
        };
        state.pending.insert(id, waiting);
        Ok(id)
    }

    /// Forgets a request (its POST failed, or it was cancelled).
    pub fn forget(&self, id: i64) {
        lock(&self.state).pending.remove(&id);
    }

    /// The connection's id of the waiting request that came with `answers`.
    pub fn id_of(&self, answers: &RequestId) -> Option<i64> {
        let state = lock(&self.state);
        let mut waiting = state.pending.iter();
        waiting
            .find(|(_, w)| w.answers == *answers)
            .map(|(id, _)| *id)
    }

    /// Marks the connection used now.
    pub fn touch(&self) {
        lock(&self.state).last_used = Instant::now();
    }

    /// How long it has been unused; `None` while requests wait on it.
    pub fn idle_for(&self) -> Option<Duration> {
        let mut state = lock(&self.state);
        state.pending.retain(|_, w| !w.messages.is_closed());
        state.pending.is_empty().then(|| state.last_used.elapsed())
    }

    /// Where a message read from the stream goes: an answer to its request (with the request's
    /// own id), a progress notification to the request with its token. The transport cannot
    /// say which request a server-to-client request or a log message serves: with one request
    /// waiting it goes there, with several to the session. Anything else goes to the session.
    pub fn route(&self, message: Message) -> Route {
        let mut state = lock(&self.state);
        let notification = match message {
            Message::Response(response) => return state.answer(response),
            Message::Request(request) => {
                return match state.sole_waiting() {
                    Some(messages) => Route::Request(messages, Message::Request(request)),
                    None => Route::Outlet(Message::Request(request)),
                };
            }
            Message::Notification(notification) => notification,
        };
        let method = Method::parse(&notification.method);
        let waiting = match method {
            Method::Progress => state.with_token(&notification.params),
            Method::LogMessage => state.sole_waiting(),
            _ => None,
        };
        let message = Message::Notification(notification);
        match waiting {
            Some(messages) => Route::Request(messages, message),
            None => Route::Outlet(message),
        }
    }

    /// Closes the connection: every waiting request is answered with `error`, the reader
    /// stops (which closes the stream, ending the upstream session).
    pub fn close(&self, error: &UpstreamError) {
        let waiting = {
            let mut state = lock(&self.state);
            state.closed = true;
            std::mem::take(&mut state.pending)
        };
        for waiting in waiting.into_values() {
            let answer = error.response(waiting.answers);
            let _ = waiting.messages.try_send(answer.into());
        }
        if let Some(reader) = lock(&self.reader).take() {
            reader.abort();
        }
    }
}

impl State {
    /// The answer to a waiting request, with the request's own id.
    fn answer(&mut self, mut response: Response) -> Route {
        let RequestId::Number(id) = response.id else {
            return Route::Nowhere;
        };
        let Some(waiting) = self.pending.remove(&id) else {
            return Route::Nowhere;
        };
        response.id = waiting.answers;
        Route::Request(waiting.messages, Message::Response(response))
    }

    /// The channel of the only request waiting, if exactly one does.
    fn sole_waiting(&mut self) -> Option<mpsc::Sender<UpstreamEvent>> {
        self.pending.retain(|_, w| !w.messages.is_closed());
        let mut waiting = self.pending.values();
        match (waiting.next(), waiting.next()) {
            (Some(only), None) => Some(only.messages.clone()),
            _ => None,
        }
    }

    /// The channel of the request whose progress token a progress notification carries.
    fn with_token(&self, params: &Option<Value>) -> Option<mpsc::Sender<UpstreamEvent>> {
        let token = params.as_ref()?.get("progressToken")?;
        let mut waiting = self.pending.values();
        let owner = waiting.find(|w| w.progress_token.as_ref() == Some(token))?;
        Some(owner.messages.clone())
    }
}

/// The `progressToken` of a request's params (in `_meta`).
pub(super) fn progress_token_of(params: &Option<Value>) -> Option<Value> {
    params.as_ref()?.pointer("/_meta/progressToken").cloned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::jsonrpc::{Notification, Request};

    fn connection() -> Connection {
        let endpoint = http::Uri::from_static("http://127.0.0.1:1/messages");
        Connection::new("c".into(), SessionId::generate(), endpoint)
    }

    fn register(
        connection: &Connection,
        id: &str,
        token: Option<Value>,
    ) -> (i64, mpsc::Receiver<UpstreamEvent>) {
        let (tx, rx) = mpsc::channel(8);
        let answers = RequestId::String(id.into());
        (connection.register(answers, token, tx).unwrap(), rx)
    }

    fn notification(method: &str, params: Value) -> Message {
        Message::Notification(Notification {
            method: method.into(),
            params: Some(params),
        })
    }

    #[test]
    fn answers_progress_server_requests_and_logs_reach_their_request() {
        let connection = connection();
        let (first, _a) = register(&connection, "a", Some(json!("tok")));
        let answer = Message::Response(Response {
            id: RequestId::Number(first),
            outcome: Ok(json!({})),
        });
        let Route::Request(_, Message::Response(response)) = connection.route(answer) else {
            panic!("the answer went astray");
        };
        assert_eq!(response.id, RequestId::String("a".into()));
        let (_, _b) = register(&connection, "b", Some(json!("tok2")));
        let progress = notification("notifications/progress", json!({"progressToken": "tok2"}));
        assert!(matches!(connection.route(progress), Route::Request(..)));
        let sampling = Message::Request(Request {
            id: RequestId::Number(9),
            method: "sampling/createMessage".into(),
            params: None,
        });
        assert!(matches!(connection.route(sampling), Route::Request(..)));
        let log = notification(
            "notifications/message",
            json!({"level": "info", "data": "x"}),
        );
        assert!(matches!(connection.route(log), Route::Request(..)));
        let (_, _c) = register(&connection, "c", None);
        let log = notification(
            "notifications/message",
            json!({"level": "info", "data": "x"}),
        );
        assert!(
            matches!(connection.route(log), Route::Outlet(_)),
            "with two requests waiting, a log message is the session's"
        );
        let changed = notification("notifications/tools/list_changed", json!({}));
        assert!(matches!(connection.route(changed), Route::Outlet(_)));
    }

    #[test]
    fn ids_are_unique_on_the_connection_and_waiting_is_bounded() {
        let connection = connection();
        let mut receivers = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..MAX_PENDING {
            let (id, rx) = register(&connection, "same", None);
            assert!(ids.insert(id), "id {id} given twice");
            receivers.push(rx);
        }
        let (tx, _rx) = mpsc::channel(1);
        let refused = connection.register(RequestId::Number(1), None, tx.clone());
        assert_eq!(refused, Err(Refused::Busy));
        receivers.pop();
        assert!(connection.register(RequestId::Number(1), None, tx).is_ok());
    }

    #[tokio::test]
    async fn closing_fails_every_waiting_request() {
        let connection = connection();
        let (_, mut rx) = register(&connection, "a", None);
        let error = UpstreamError::Transport {
            upstream: "up".into(),
            reason: "gone".into(),
        };
        connection.close(&error);
        let Some(UpstreamEvent::Message(Message::Response(response))) = rx.recv().await else {
            panic!("no answer");
        };
        assert_eq!(response.id, RequestId::String("a".into()));
        assert!(response.outcome.is_err());
        let (tx, _rx) = mpsc::channel(1);
        let refused = connection.register(RequestId::Number(1), None, tx);
        assert_eq!(refused, Err(Refused::Closed));
    }
}

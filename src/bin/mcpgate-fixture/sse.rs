//! HTTP+SSE mode (the 2024-11-05 transport), which rmcp 3.11 no longer serves: a plain hyper
//! HTTP/1.1 server. `GET` [`SSE_PATH`] opens a session bound to that connection: the first
//! event is `endpoint` (`/messages?session_id=<id>`), then every message of the session's
//! [`Fixture`] comes as a `message` event. `POST` [`MESSAGES_PATH`]`?session_id=<id>` feeds
//! one JSON-RPC message to that session (202). The `Fixture` runs over an in-memory duplex
//! pipe, newline-delimited, as in stdio mode.
//!
//! As in real servers, a session ends with its connection and is forgotten. For tests:
//! [`SESSIONS_PATH`] (`{"open": N}`) and `POST` [`DROP_PATH`], which ends every connection at
//! once (`{"dropped": N}`), as a network failure would.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::ServiceExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{server::Fixture, subscriptions::Changes};

/// The GET stream.
const SSE_PATH: &str = "/sse";
/// Where messages are posted.
const MESSAGES_PATH: &str = "/messages";
/// How many sessions are open (GET).
const SESSIONS_PATH: &str = "/sessions";
/// Ends every SSE connection (POST).
const DROP_PATH: &str = "/drop-connections";
/// Largest message posted.
const MAX_POST_BYTES: usize = 4 * 1024 * 1024;
/// Buffer of the duplex pipe between a connection and its `Fixture`.
const PIPE_BYTES: usize = 64 * 1024;
/// Messages waiting for one session's `Fixture`, or for its SSE body.
const QUEUED_MESSAGES: usize = 64;

type Body = BoxBody<Bytes, Infallible>;

/// One open session: the way into its `Fixture` and the end of its connection.
struct Session {
    input: mpsc::Sender<String>,
    end: CancellationToken,
}

/// Every open session of the process, by id.
#[derive(Clone)]
struct Sessions {
    open: Arc<Mutex<HashMap<String, Session>>>,
    next_id: Arc<AtomicU64>,
    name: Arc<str>,
    changes: Changes,
}

/// Binds `listen`, prints the stream's URL, and serves until Ctrl-C.
pub async fn serve(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let listener = crate::http::bind_and_announce(listen, SSE_PATH).await?;
    let sessions = Sessions {
        open: Arc::default(),
        next_id: Arc::default(),
        name: name.into(),
        changes: Changes::default(),
    };
    tokio::select! {
        () = accept_loop(listener, sessions) => Ok(()),
        signal = tokio::signal::ctrl_c() => signal.context("cannot wait for Ctrl-C"),
    }
}

async fn accept_loop(listener: TcpListener, sessions: Sessions) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let sessions = sessions.clone();
                let handler = service_fn(move |request| {
                    let sessions = sessions.clone();
                    async move { Ok::<_, Infallible>(sessions.route(request).await) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), handler);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection closed with an error");
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "accept failed"),
        }
    }
}

impl Sessions {
    async fn route(&self, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        match (method.as_str(), request.uri().path()) {
            ("GET", SSE_PATH) => self.open_session(),
            ("POST", MESSAGES_PATH) => self.post_message(request).await,
            ("GET", SESSIONS_PATH) => {
                json(StatusCode::OK, &serde_json::json!({"open": self.count()}))
            }
            ("POST", DROP_PATH) => {
                let dropped = self.drop_all();
                json(StatusCode::OK, &serde_json::json!({ "dropped": dropped }))
            }
            _ => empty(StatusCode::NOT_FOUND),
        }
    }

    fn count(&self) -> usize {
        lock(&self.open).len()
    }

    /// Ends every connection; their sessions are forgotten as they close.
    fn drop_all(&self) -> usize {
        let open = lock(&self.open);
        for session in open.values() {
            session.end.cancel();
        }
        open.len()
    }

    /// A new session on this connection: its `Fixture` over a pipe, its messages as events.
    fn open_session(&self) -> Response<Body> {
        let id = format!("s{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        let fixture = Fixture::new(Arc::clone(&self.name), None, self.changes.clone());
        tokio::spawn(async move {
            match fixture.serve(theirs).await {
                Ok(running) => drop(running.waiting().await),
                Err(error) => tracing::info!(%error, "an SSE session ended before initialize"),
            }
        });
        let (input, inbox) = mpsc::channel(QUEUED_MESSAGES);
        let (events, body) = mpsc::channel(QUEUED_MESSAGES);
        let end = CancellationToken::new();
        lock(&self.open).insert(
            id.clone(),
            Session {
                input,
                end: end.clone(),
            },
        );
        let endpoint = format!("event: endpoint\ndata: {MESSAGES_PATH}?session_id={id}\n\n");
        let _ = events.try_send(Bytes::from(endpoint));
        let forget = Forget {
            sessions: self.clone(),
            id,
        };
        tokio::spawn(pump(ours, inbox, events, end, forget));
        let mut response = Response::new(ChannelBody(body).boxed());
        let headers = response.headers_mut();
        headers.insert("content-type", "text/event-stream".parse().expect("header"));
        headers.insert("cache-control", "no-cache".parse().expect("header"));
        response
    }

    /// Feeds one posted message to its session: 202, or 404 for a session that is gone.
    async fn post_message(&self, request: Request<Incoming>) -> Response<Body> {
        let Some(id) = session_id(request.uri().query().unwrap_or_default()) else {
            return empty(StatusCode::BAD_REQUEST);
        };
        let Some(input) = lock(&self.open).get(&id).map(|s| s.input.clone()) else {
            return empty(StatusCode::NOT_FOUND);
        };
        let Ok(body) = Limited::new(request.into_body(), MAX_POST_BYTES)
            .collect()
            .await
        else {
            return empty(StatusCode::PAYLOAD_TOO_LARGE);
        };
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
            return empty(StatusCode::BAD_REQUEST);
        };
        match input.send(message.to_string()).await {
            Ok(()) => empty(StatusCode::ACCEPTED),
            Err(_) => empty(StatusCode::NOT_FOUND),
        }
    }
}

/// Removes a session from the table when its connection's pump ends.
struct Forget {
    sessions: Sessions,
    id: String,
}

impl Drop for Forget {
    fn drop(&mut self) {
        lock(&self.sessions.open).remove(&self.id);
    }
}

/// Moves one session's messages: posted ones into its `Fixture`, the `Fixture`'s out as
/// `message` events, until the connection closes, the `Fixture` stops or `end` is cancelled.
async fn pump(
    pipe: DuplexStream,
    mut inbox: mpsc::Receiver<String>,
    events: mpsc::Sender<Bytes>,
    end: CancellationToken,
    _forget: Forget,
) {
    let (read, mut write) = tokio::io::split(pipe);
    let mut lines = BufReader::new(read).lines();
    loop {
        tokio::select! {
            () = end.cancelled() => return,
            () = events.closed() => return,
            posted = inbox.recv() => {
                let Some(posted) = posted else { return };
                if write.write_all(format!("{posted}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return };
                let event = Bytes::from(format!("event: message\ndata: {line}\n\n"));
                if events.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// An SSE body fed by a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// The `session_id` of a query string.
fn session_id(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("session_id="))
        .map(str::to_owned)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = status;
    response
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

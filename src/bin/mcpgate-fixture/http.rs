//! Streamable HTTP mode: rmcp's `StreamableHttpService` (sessions, SSE priming
//! and resumption, Host/Origin checks) behind a plain hyper HTTP/1.1 server,
//! answering at [`MCP_PATH`], plus, for tests, [`SESSIONS_PATH`]: `{"open": N}`,
//! the number of MCP sessions open right now, and [`TRACEPARENTS_PATH`]:
//! `{"seen": [...]}`, the `traceparent` headers of the last [`TRACEPARENTS_KEPT`]
//! requests to [`MCP_PATH`] that had one, oldest first, and [`CONNECTIONS_PATH`]:
//! `{"accepted": N}`, the TCP connections accepted so far (whether a client keeps them alive).
//!
//! With `--modern-only`, requests to [`MCP_PATH`] that do not declare 2026-07-28 in
//! `MCP-Protocol-Version` are refused before rmcp sees them, as by a server that dropped the
//! legacy revisions.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::{io::Write as _, net::SocketAddr, sync::Arc};

use std::convert::Infallible;

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::Bytes;
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{reconnect::ReconnectingSessions, server::Fixture, subscriptions::Changes};

/// The MCP endpoint.
const MCP_PATH: &str = "/mcp";
/// How many sessions are open (GET).
const SESSIONS_PATH: &str = "/sessions";
/// The `traceparent` headers received (GET).
const TRACEPARENTS_PATH: &str = "/traceparents";
/// How many connections were accepted (GET).
const CONNECTIONS_PATH: &str = "/connections";
/// How many `traceparent` headers are kept.
const TRACEPARENTS_KEPT: usize = 256;

/// The `traceparent` headers of the latest requests to [`MCP_PATH`].
type TraceParents = Arc<Mutex<VecDeque<String>>>;

/// Browser origins accepted besides requests without `Origin`.
const LOCAL_ORIGINS: [&str; 3] = ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

/// The MCP endpoint with our session manager.
type McpService = StreamableHttpService<Fixture, ReconnectingSessions>;

/// Binds `listen`, prints the endpoint URL, and serves until Ctrl-C.
pub async fn serve(listen: SocketAddr, name: String, modern_only: bool) -> anyhow::Result<()> {
    let listener = bind_and_announce(listen, MCP_PATH).await?;
    let shutdown = CancellationToken::new();
    let sessions = Arc::new(ReconnectingSessions::default());
    let service = mcp_service(name.into(), sessions.clone(), shutdown.child_token());
    tokio::select! {
        () = accept_loop(listener, service, sessions, modern_only) => Ok(()),
        signal = tokio::signal::ctrl_c() => {
            shutdown.cancel();
            signal.context("cannot wait for Ctrl-C")
        }
    }
}

/// Binds `listen` and prints `listening on http://ADDR<path>` as the first stdout line, flushed
/// (what the tests wait for).
pub async fn bind_and_announce(listen: SocketAddr, path: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind {listen}"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}{path}")
        .and_then(|()| stdout.flush())
        .context("cannot write the listening line to stdout")?;
    Ok(listener)
}

/// Builds the rmcp service; each session (or stateless request) gets its own [`Fixture`], all of
/// them sharing one [`Changes`].
fn mcp_service(
    name: Arc<str>,
    sessions: Arc<ReconnectingSessions>,
    shutdown: CancellationToken,
) -> McpService {
    let streams = Arc::clone(&sessions);
    let changes = Changes::default();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_origins(LOCAL_ORIGINS)
        .with_cancellation_token(shutdown);
    StreamableHttpService::new(
        move || {
            Ok(Fixture::new(
                Arc::clone(&name),
                Some(Arc::clone(&streams)),
                changes.clone(),
            ))
        },
        sessions,
        config,
    )
}

/// Accepts connections forever, one task each.
async fn accept_loop(
    listener: TcpListener,
    service: McpService,
    sessions: Arc<ReconnectingSessions>,
    modern_only: bool,
) {
    let traceparents = TraceParents::default();
    let accepted = Arc::new(AtomicU64::new(0));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                // Small responses go out at once instead of waiting on delayed ACKs.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
                let (service, sessions) = (service.clone(), sessions.clone());
                let seen = Seen {
                    traceparents: traceparents.clone(),
                    accepted: accepted.clone(),
                };
                tokio::spawn(serve_connection(
                    stream,
                    service,
                    sessions,
                    seen,
                    modern_only,
                ));
            }
            Err(error) => tracing::warn!(%error, "accept failed"),
        }
    }
}

/// What the fixture saw of its clients, for tests.
#[derive(Clone)]
struct Seen {
    traceparents: TraceParents,
    accepted: Arc<AtomicU64>,
}

/// Serves one HTTP/1.1 connection, routing [`MCP_PATH`] to rmcp.
async fn serve_connection(
    stream: TcpStream,
    service: McpService,
    sessions: Arc<ReconnectingSessions>,
    seen: Seen,
    modern_only: bool,
) {
    let handler = service_fn(move |request: Request<Incoming>| {
        let (service, sessions, seen) = (service.clone(), sessions.clone(), seen.clone());
        async move {
            let response = match request.uri().path() {
                MCP_PATH if modern_only && !declares_modern(&request) => legacy_refused(&request),
                MCP_PATH => {
                    remember_traceparent(&seen.traceparents, &request);
                    service.handle(request).await
                }
                SESSIONS_PATH => session_count(&sessions).await,
                TRACEPARENTS_PATH => seen_traceparents(&seen.traceparents),
                CONNECTIONS_PATH => accepted_count(&seen.accepted),
                _ => not_found(),
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), handler);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection closed with an error");
    }
}

/// `{"open": N}`.
async fn session_count(sessions: &ReconnectingSessions) -> Response<BoxBody<Bytes, Infallible>> {
    let body = serde_json::json!({"open": sessions.open_sessions().await}).to_string();
    Response::new(Full::new(Bytes::from(body)).boxed())
}

/// `{"accepted": N}`.
fn accepted_count(accepted: &AtomicU64) -> Response<BoxBody<Bytes, Infallible>> {
    let body = serde_json::json!({"accepted": accepted.load(Ordering::Relaxed)}).to_string();
    Response::new(Full::new(Bytes::from(body)).boxed())
}

/// Keeps the request's `traceparent`, if any, dropping the oldest beyond the bound.
fn remember_traceparent(traceparents: &TraceParents, request: &Request<Incoming>) {
    let Some(value) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let mut seen = traceparents.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() == TRACEPARENTS_KEPT {
        seen.pop_front();
    }
    seen.push_back(value.to_owned());
}

/// `{"seen": [...]}`.
fn seen_traceparents(traceparents: &TraceParents) -> Response<BoxBody<Bytes, Infallible>> {
    let seen: Vec<String> = traceparents
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    let body = serde_json::json!({ "seen": seen }).to_string();
    Response::new(Full::new(Bytes::from(body)).boxed())
}

/// The revision a `--modern-only` fixture speaks.
const MODERN: &str = "2026-07-28";

/// Whether a request declares the 2026-07-28 revision in its `MCP-Protocol-Version` header.
fn declares_modern(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get("mcp-protocol-version")
        .is_some_and(|version| version == MODERN)
}

/// 400 with UnsupportedProtocolVersion (-32022), naming the one revision served.
fn legacy_refused(request: &Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
    let requested = request
        .headers()
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok());
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32022,
            "message": "this server speaks only protocol 2026-07-28",
            "data": {"supported": [MODERN], "requested": requested},
        },
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An empty 404 response.
fn not_found<B: Default>() -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

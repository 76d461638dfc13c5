//! The downstream endpoint: Streamable HTTP on actix-web, per the 2025-11-25 transport text,
//! and the 2024-11-05 HTTP+SSE transport beside it (`sse_transport.rs`: `GET /sse`,
//! `POST /message`).
//!
//! Handlers check headers, parse bodies, look the session up and hand parsed messages to
//! [`crate::dispatch`]. Every request is served from the session record alone, so any
//! replica can serve any session. The admin listener lives in [`admin`].

pub mod admin;
mod authn;
mod body;
mod cors;
mod delete;
mod error;
mod get;
mod guard;
mod mirrored;
mod oauth_metadata;
mod post;
mod sse;
mod sse_transport;
mod stateless;
mod throttle;
mod trace_context;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::dispatch::{Gateway, SessionError};
use crate::session::StoreError;

pub use error::HttpError;

/// When the listener stops after a drain (`server.drain_grace` already spent waiting for
/// requests in flight), how long connections still open get to flush what they have.
const SHUTDOWN_FLUSH_SECONDS: u64 = 1;

/// Endpoint settings, from [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    /// Only localhost Host names are accepted (listening on loopback, no `allowed_hosts`).
    pub loopback_only: bool,
    pub max_body_bytes: usize,
    /// Largest serialized `clientInfo` + `capabilities` an `initialize` may bring.
    pub max_client_metadata_bytes: usize,
    /// Most entries in one JSON-RPC batch.
    pub max_batch_len: usize,
    /// Longest wait for a whole POST body.
    pub body_read_timeout: Duration,
    pub sse_retry: Duration,
    pub sse_initialize_timeout: Duration,
    pub connections: ConnectionSettings,
}

/// How the listener treats connections, from [`ServerConfig`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    /// Longest wait for a request's headers (actix's client request timeout).
    pub header_read_timeout: Duration,
    /// Idle time allowed between two requests of a connection.
    pub keep_alive: Duration,
    /// Most connections one worker holds open.
    pub max_connections: usize,
}

impl HttpSettings {
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            allowed_origins: config.allowed_origins.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            loopback_only: config.listen.ip().is_loopback(),
            max_body_bytes: config.max_body_bytes,
            max_client_metadata_bytes: config.max_client_metadata_bytes,
            max_batch_len: config.max_batch_len,
            body_read_timeout: config.body_read_timeout,
            sse_retry: config.sse_retry,
            sse_initialize_timeout: config.sse_initialize_timeout,
            connections: ConnectionSettings {
                header_read_timeout: config.header_read_timeout,
                keep_alive: config.keep_alive,
                max_connections: config.max_connections,
            },
        }
    }
}

/// What every handler gets.
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub auth: Authenticator,
    pub settings: HttpSettings,
}

/// Starts the `/mcp` listener on an already bound socket.
pub fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    auth: Authenticator,
    settings: HttpSettings,
    workers: usize,
) -> std::io::Result<Server> {
    let connections = settings.connections;
    let state = web::Data::new(AppState {
        gateway,
        auth,
        settings,
    });
    let server = HttpServer::new(move || {
        let cors = cors::layer(state.settings.allowed_origins.clone());
        App::new()
            .app_data(state.clone())
            .wrap(cors)
            .configure(oauth_metadata::routes)
            .service(
                web::resource("/mcp")
                    .route(web::post().to(post::handle))
                    .route(web::get().to(get::handle))
                    .route(web::delete().to(delete::handle))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/sse")
                    .route(web::get().to(sse_transport::open))
                    .default_service(web::to(sse_method_not_allowed)),
            )
            .service(
                web::resource("/message")
                    .route(web::post().to(sse_transport::message))
                    .default_service(web::to(message_method_not_allowed)),
            )
    })
    .workers(workers)
    .client_request_timeout(connections.header_read_timeout)
    .keep_alive(connections.keep_alive)
    .max_connections(connections.max_connections)
    .shutdown_timeout(SHUTDOWN_FLUSH_SECONDS)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

async fn method_not_allowed() -> Result<HttpResponse, HttpError> {
    Err(HttpError::MethodNotAllowed {
        message: "Method Not Allowed: use GET, POST or DELETE",
        allow: "GET, POST, DELETE",
    })
}

async fn sse_method_not_allowed() -> Result<HttpResponse, HttpError> {
    Err(HttpError::MethodNotAllowed {
        message: "Method Not Allowed: GET /sse opens an HTTP+SSE stream; POST to the endpoint it announces",
        allow: "GET",
    })
}

async fn message_method_not_allowed() -> Result<HttpResponse, HttpError> {
    Err(HttpError::MethodNotAllowed {
        message: "Method Not Allowed: POST one JSON-RPC message to /message?sessionId=<id>",
        allow: "POST",
    })
}

/// 404 for sessions that are gone; 503 when the store cannot tell.
fn session_error(error: SessionError) -> HttpError {
    match error {
        SessionError::Store(error) => store_unavailable(&error),
        SessionError::Expired | SessionError::Deleted | SessionError::Unknown => {
            HttpError::SessionNotFound
        }
    }
}

fn store_unavailable(error: &StoreError) -> HttpError {
    tracing::error!(%error, "session store failure");
    HttpError::Unavailable(
        "Service Unavailable: the session store cannot be reached; retry shortly".into(),
    )
}

/// Counts a finished request and returns its status. A refusal is the client's mistake (the
/// 5xx ones were logged where they happened), so it is logged at DEBUG only, its reason escaped.
fn observe(
    state: &AppState,
    method: &str,
    started: Instant,
    result: &Result<HttpResponse, HttpError>,
) -> u16 {
    let status = match result {
        Ok(response) => response.status().as_u16(),
        Err(error) => actix_web::ResponseError::status_code(error).as_u16(),
    };
    if let Err(error) = result {
        tracing::debug!(method = ?method, status, reason = ?error.to_string(), "request refused");
    }
    state
        .gateway
        .metrics()
        .request(method, status, started.elapsed().as_secs_f64());
    status
}

//! The downstream endpoint: Streamable HTTP on actix-web, per the 2025-11-25 transport text.
//!
//! Handlers check headers, parse bodies, look the session up and hand parsed messages to
//! [`crate::dispatch`]. Every request is served from the session record alone, so any
//! replica can serve any session. The admin listener lives in [`admin`].

pub mod admin;
mod body;
mod cors;
mod delete;
mod error;
mod get;
mod guard;
mod post;
mod sse;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::config::ServerConfig;
use crate::dispatch::{Gateway, SessionError};
use crate::session::StoreError;

pub use error::HttpError;

/// Endpoint settings, from [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    /// Only localhost Host names are accepted (listening on loopback, no `allowed_hosts`).
    pub loopback_only: bool,
    pub max_body_bytes: usize,
    pub sse_retry: Duration,
}

impl HttpSettings {
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            allowed_origins: config.allowed_origins.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            loopback_only: config.listen.ip().is_loopback(),
            max_body_bytes: config.max_body_bytes,
            sse_retry: config.sse_retry,
        }
    }
}

/// What every handler gets.
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub settings: HttpSettings,
}

/// Starts the `/mcp` listener on an already bound socket.
pub fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    settings: HttpSettings,
    workers: usize,
) -> std::io::Result<Server> {
    let state = web::Data::new(AppState { gateway, settings });
    let server = HttpServer::new(move || {
        let cors = cors::layer(state.settings.allowed_origins.clone());
        App::new().app_data(state.clone()).wrap(cors).service(
            web::resource("/mcp")
                .route(web::post().to(post::handle))
                .route(web::get().to(get::handle))
                .route(web::delete().to(delete::handle))
                .default_service(web::to(method_not_allowed)),
        )
    })
    .workers(workers)
    .shutdown_timeout(30)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

async fn method_not_allowed() -> Result<HttpResponse, HttpError> {
    Err(HttpError::MethodNotAllowed(
        "Method Not Allowed: use GET, POST or DELETE",
    ))
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

/// Counts a finished request.
fn observe(
    state: &AppState,
    method: &str,
    started: Instant,
    result: &Result<HttpResponse, HttpError>,
) {
    let status = match result {
        Ok(response) => response.status().as_u16(),
        Err(error) => actix_web::ResponseError::status_code(error).as_u16(),
    };
    state
        .gateway
        .metrics
        .request(method, status, started.elapsed().as_secs_f64());
}

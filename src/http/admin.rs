//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process runs) and
//! `/readyz` (it should get traffic: not draining, session store reachable).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};

use crate::dispatch::Gateway;

/// Shared with the signal handler, which flips `draining` on SIGTERM.
pub struct AdminState {
    pub gateway: Arc<Gateway>,
    pub draining: AtomicBool,
}

pub fn serve(listener: TcpListener, state: Arc<AdminState>) -> std::io::Result<Server> {
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics))
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
            .route("/readyz", web::get().to(ready))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.gateway.metrics.render())
}

async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    if state.draining.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().body("draining");
    }
    match state.gateway.store.ping().await {
        Ok(()) => HttpResponse::Ok().body("ready"),
        Err(error) => HttpResponse::ServiceUnavailable().body(format!("session store: {error}")),
    }
}

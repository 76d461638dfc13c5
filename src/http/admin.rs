//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process runs), `/readyz`
//! (it should get traffic: it is not draining) and `/readyz/store` (that, and the session store
//! takes writes).
//!
//! Readiness deliberately ignores Redis. Redis is shared by the whole fleet, so when it fails it
//! fails for every pod at once: a probe that included it would take every endpoint out of the
//! Service, and clients would get the load balancer's bare 502/503 instead of the gateway's own
//! 503 + `Retry-After`, which says the session is intact and when to retry. A replica that
//! alone cannot reach Redis keeps answering 503 + `Retry-After`, and the client's retry lands on
//! another replica. `/readyz/store` is there for operators who prefer to drop such a replica
//! (the chart's `probes.readinessIncludesStore`) and for diagnosis.

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
            .route("/readyz/store", web::get().to(ready_with_store))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// Renders the metrics, after reading the gauges that are states rather than events: whether
/// this replica is ready, and whether each upstream is reachable.
async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    let gateway = &state.gateway;
    let metrics = gateway.metrics();
    metrics.set_ready(!state.draining.load(Ordering::Relaxed));
    for (upstream, healthy) in gateway.upstream_health() {
        metrics.upstream_health(&upstream, healthy);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics.render())
}

async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    if state.draining.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().body("draining");
    }
    HttpResponse::Ok().body("ready")
}

async fn ready_with_store(state: web::Data<AdminState>) -> HttpResponse {
    if state.draining.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().body("draining");
    }
    match state.gateway.ping_store().await {
        Ok(()) => HttpResponse::Ok().body("ready"),
        Err(error) => HttpResponse::ServiceUnavailable().body(format!("session store: {error}")),
    }
}

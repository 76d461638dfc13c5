//! Relay mode: a bare HTTP relay built from what mcpgate's request path is made of (an
//! actix-web server, and mcpgate's own upstream client: hyper-util's, one per worker thread),
//! with no MCP in it. It copies each POST and DELETE to `/mcp` to the upstream with the headers
//! MCP needs and answers with the upstream's status, content type, session id and whole body.
//! The benchmark puts it in front of the HTTP fixture (scenario x): what it costs per call is
//! the least a gateway on these crates can cost, against which the gateway's MCP work is
//! measured. With `--redis`, each request first makes one Redis round trip (a `PING`) on
//! mcpgate's own connections ([`RedisPool`]: one multiplexed connection per thread), and a
//! failed one is answered 503 (scenario x'): the least a request that checks a session in Redis
//! costs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use mcpgate::config::RedisConfig;
use mcpgate::redis::RedisPool;
use mcpgate::telemetry::Metrics;
use mcpgate::upstream::http_client::{Clients, absolute_http_uri};

use crate::http::bind_and_announce;

/// Request headers copied to the upstream.
const REQUEST_HEADERS: [&str; 4] = [
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
];
/// Answer headers copied back to the client.
const ANSWER_HEADERS: [&str; 2] = ["content-type", "mcp-session-id"];

/// Where requests go, the clients (one per worker) that take them there, and the Redis each
/// request makes a round trip to first, if any.
struct Relay {
    upstream: ::http::Uri,
    clients: Clients,
    redis: Option<RedisPool>,
}

impl Relay {
    async fn relay(&self, request: &HttpRequest, body: web::Bytes) -> HttpResponse {
        if !self.redis_answers().await {
            return HttpResponse::ServiceUnavailable().finish();
        }
        let method = ::http::Method::from_bytes(request.method().as_str().as_bytes())
            .expect("actix-web serves only valid methods");
        let mut upstream = ::http::Request::builder()
            .method(method)
            .uri(self.upstream.clone());
        for name in REQUEST_HEADERS {
            if let Some(value) = request.headers().get(name) {
                upstream = upstream.header(name, value.as_bytes());
            }
        }
        let Ok(answer) = self.clients.send(upstream.body(Full::new(body))).await else {
            return HttpResponse::BadGateway().finish();
        };
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut reply = HttpResponse::build(status);
        for name in ANSWER_HEADERS {
            if let Some(value) = answer.headers().get(name) {
                reply.insert_header((name, value.as_bytes()));
            }
        }
        match answer.into_body().collect().await {
            Ok(body) => reply.body(body.to_bytes()),
            Err(_) => HttpResponse::BadGateway().finish(),
        }
    }

    /// One Redis round trip, when there is a Redis; whether it succeeded.
    async fn redis_answers(&self) -> bool {
        let Some(redis) = &self.redis else {
            return true;
        };
        let ping = |mut connection| async move {
            ::redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await
        };
        redis.run("relay_ping", ping).await.is_ok()
    }
}

async fn relay(request: HttpRequest, body: web::Bytes, relay: web::Data<Relay>) -> HttpResponse {
    relay.relay(&request, body).await
}

/// Binds `listen`, prints the endpoint URL, and relays to `upstream` (after a round trip to
/// `redis`, when given) until killed.
pub async fn serve(
    listen: SocketAddr,
    upstream: String,
    redis: Option<String>,
) -> anyhow::Result<()> {
    let upstream =
        absolute_http_uri(&upstream).context("--upstream is not an absolute http(s) URL")?;
    let clients = Clients::new(Default::default(), Duration::from_secs(10))?;
    let redis = redis.map(redis_pool).transpose()?;
    let listener = bind_and_announce(listen, "/mcp").await?.into_std()?;
    let relay = web::Data::from(Arc::new(Relay {
        upstream,
        clients,
        redis,
    }));
    HttpServer::new(move || {
        App::new()
            .app_data(relay.clone())
            .route("/mcp", web::post().to(self::relay))
            .route("/mcp", web::delete().to(self::relay))
    })
    .listen(listener)?
    .run()
    .await
    .context("the relay server failed")
}

/// mcpgate's Redis connections to `url`, with its default deadline.
fn redis_pool(url: String) -> anyhow::Result<RedisPool> {
    let config = RedisConfig {
        url,
        ..RedisConfig::default()
    };
    let metrics = Arc::new(Metrics::new()?);
    RedisPool::new(&config, metrics).context("--redis")
}

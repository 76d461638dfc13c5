//! Relay mode: a bare HTTP relay built from the crates mcpgate's request path is made of (an
//! actix-web server, a reqwest client per worker thread, no redirects), with no MCP in it. It
//! copies each POST to `/mcp` to the upstream with the headers MCP needs and answers with the
//! upstream's status, content type, session id and whole body. The benchmark puts it in front
//! of the HTTP fixture (scenario x): what it costs per call is the least a gateway on these
//! crates can cost, against which the gateway's MCP work is measured.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use thread_local::ThreadLocal;

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

/// Where requests go, and the clients that take them there.
struct Relay {
    upstream: reqwest::Url,
    clients: ThreadLocal<reqwest::Client>,
}

impl Relay {
    /// The calling worker's client: each worker drives its own pooled connections, as mcpgate's
    /// `upstream/http_clients.rs` does.
    fn client(&self) -> &reqwest::Client {
        self.clients.get_or(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client without TLS settings always builds")
        })
    }

    async fn relay(&self, request: &HttpRequest, body: web::Bytes) -> HttpResponse {
        let mut upstream = self.client().post(self.upstream.clone()).body(body);
        for name in REQUEST_HEADERS {
            if let Some(value) = request.headers().get(name) {
                upstream = upstream.header(name, value.as_bytes());
            }
        }
        let Ok(answer) = upstream.send().await else {
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
        match answer.bytes().await {
            Ok(body) => reply.body(body),
            Err(_) => HttpResponse::BadGateway().finish(),
        }
    }
}

async fn relay(request: HttpRequest, body: web::Bytes, relay: web::Data<Relay>) -> HttpResponse {
    relay.relay(&request, body).await
}

/// Binds `listen`, prints the endpoint URL, and relays to `upstream` until killed.
pub async fn serve(listen: SocketAddr, upstream: String) -> anyhow::Result<()> {
    let upstream = reqwest::Url::parse(&upstream).context("--upstream is not an absolute URL")?;
    let listener = bind_and_announce(listen, "/mcp").await?.into_std()?;
    let relay = web::Data::from(Arc::new(Relay {
        upstream,
        clients: ThreadLocal::new(),
    }));
    HttpServer::new(move || {
        App::new()
            .app_data(relay.clone())
            .route("/mcp", web::post().to(self::relay))
    })
    .listen(listener)?
    .run()
    .await
    .context("the relay server failed")
}

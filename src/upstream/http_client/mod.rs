//! The HTTP client of one HTTP upstream: hyper-util's pooled HTTP/1.1 client, one per thread
//! that calls it, over [`connector::Connector`] (TLS, proxies).
//!
//! One per thread: a pooled connection is driven by a task on the runtime that opened it.
//! Each actix worker thread has its own runtime, so with one client shared by every worker a
//! request often went out over a connection another worker drives, and both threads were woken
//! for it: that cost a fifth of a call's CPU. With a client per thread, a worker's requests use
//! connections its own runtime drives. Threads are few and fixed (the workers, the main
//! runtime), so are the clients; each keeps its own idle connections to the upstream (for 90 s).
//!
//! Not reqwest: on every request it parses the URI into a `url::Url` twice (for its redirect
//! policy, even when redirects are off, and for the response), and runs its proxy matcher and
//! retry policy: a quarter of a bare relay's instructions. Here a URI is parsed once, when the
//! upstream is configured. Like that reqwest client: no redirects (a 3xx is the upstream's
//! answer, so a POST carrying a session id is not sent elsewhere), no request timeout (callers
//! bound their waits), a connect timeout, and the configured headers on every request.
//! Streamable HTTP (`http.rs`) and HTTP+SSE (`sse/`) upstreams both use it.

mod connector;
mod tls;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{Entry, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHORIZATION};
use http::{Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thread_local::ThreadLocal;

use self::connector::Connector;
use super::UpstreamError;
use crate::config::UpstreamConfig;
use crate::error_text::describe;

/// What an upstream answers: its status, headers and a body read as it arrives.
pub type Response = http::Response<hyper::body::Incoming>;

/// The media types upstream requests name, as header values made once.
pub const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request got no answer. Its text names no URL (a URL may carry credentials).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("invalid request: {0}")]
    Build(#[from] http::Error),
    #[error("{}", describe(.0))]
    Exchange(#[from] hyper_util::client::legacy::Error),
}

/// The clients of one upstream, and how more are made.
pub struct Clients {
    connector: Connector,
    /// The upstream's configured headers, sensitive (never printed).
    headers: HeaderMap,
    per_thread: ThreadLocal<Client<Connector, Full<Bytes>>>,
}

impl Clients {
    /// The clients of an http or sse upstream, sending its `headers`, and its parsed `url`.
    pub fn for_upstream(config: &UpstreamConfig) -> Result<(Self, Uri), UpstreamError> {
        let failed = |reason: String| UpstreamError::Transport {
            upstream: config.name.clone(),
            reason,
        };
        let mut headers = HeaderMap::new();
        for (key, value) in &config.headers {
            let bad = |what: &str| failed(format!("header {key:?}: invalid {what}"));
            let key = HeaderName::from_bytes(key.as_bytes()).map_err(|_| bad("name"))?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| bad("value"))?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        let connect_timeout = config.timeout.min(Duration::from_secs(10));
        let clients = Clients::new(headers, connect_timeout)
            .map_err(|e| failed(format!("TLS settings: {e}")))?;
        let url = config
            .url
            .as_ref()
            .and_then(|url| absolute_http_uri(url.expose()))
            .ok_or_else(|| failed("url: not an absolute http(s) URL".into()))?;
        Ok((clients, url))
    }

    /// Clients that send `headers` with every request and give up connecting after
    /// `connect_timeout`.
    pub fn new(headers: HeaderMap, connect_timeout: Duration) -> Result<Self, rustls::Error> {
        Ok(Self {
            connector: Connector::new(tls::client_config()?, connect_timeout),
            headers,
            per_thread: ThreadLocal::new(),
        })
    }

    /// Sends `request` with the calling thread's client, adding the configured headers it does
    /// not set itself, and the proxy's credentials when a proxy forwards it.
    pub fn send(
        &self,
        request: Result<Request<Full<Bytes>>, http::Error>,
    ) -> impl Future<Output = Result<Response, SendError>> + use<> {
        let sent = request.map(|mut request| {
            self.complete(&mut request);
            self.client().request(request)
        });
        async move { Ok(sent?.await?) }
    }

    fn complete(&self, request: &mut Request<Full<Bytes>>) {
        let proxy_auth = self.connector.proxy_auth(request.uri());
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            if let Entry::Vacant(slot) = headers.entry(name) {
                slot.insert(value.clone());
            }
        }
        if let (Some(auth), Entry::Vacant(slot)) = (proxy_auth, headers.entry(PROXY_AUTHORIZATION))
        {
            slot.insert(auth);
        }
    }

    /// The calling thread's client.
    fn client(&self) -> &Client<Connector, Full<Bytes>> {
        self.per_thread.get_or(|| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .build(self.connector.clone())
        })
    }
}

/// `text` as an absolute `http://` or `https://` URI with a host, normalized as a browser
/// would (an international host name in punycode, a default port left out).
pub fn absolute_http_uri(text: &str) -> Option<Uri> {
    uri_of(url::Url::parse(text).ok()?)
}

/// `url` as a URI for a request: only `http` and `https` with a host, without a fragment.
pub fn uri_of(mut url: url::Url) -> Option<Uri> {
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return None;
    }
    url.set_fragment(None);
    url.as_str().parse().ok()
}

/// A request body of JSON.
pub fn json_body(message: &impl serde::Serialize) -> Full<Bytes> {
    Full::new(Bytes::from(
        serde_json::to_vec(message).expect("a JSON-RPC message is always valid JSON"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_gets_its_own_client_and_keeps_it() {
        let clients = Clients::new(HeaderMap::new(), Duration::from_secs(1)).unwrap();
        let here = std::ptr::from_ref(clients.client());
        assert_eq!(
            here,
            std::ptr::from_ref(clients.client()),
            "same thread, same client"
        );
        let there = std::thread::scope(|scope| {
            scope
                .spawn(|| std::ptr::from_ref(clients.client()) as usize)
                .join()
                .unwrap()
        });
        assert_ne!(here as usize, there, "another thread builds its own");
    }

    #[test]
    fn configured_headers_fill_in_what_a_request_does_not_set() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer configured"),
        );
        headers.insert("x-team", HeaderValue::from_static("blue"));
        let clients = Clients::new(headers, Duration::from_secs(1)).unwrap();
        let mut request = Request::post("http://127.0.0.1:1/mcp")
            .header("x-team", "red")
            .body(Full::default())
            .unwrap();
        clients.complete(&mut request);
        assert_eq!(request.headers()["authorization"], "Bearer configured");
        assert_eq!(request.headers()["x-team"], "red", "the request's own wins");
        assert_eq!(request.headers().get_all("x-team").iter().count(), 1);
    }

    #[test]
    fn only_absolute_web_urls_are_upstream_urls() {
        let parsed = |text: &str| absolute_http_uri(text).map(|uri| uri.to_string());
        for (text, uri) in [
            ("http://up:8080/mcp", "http://up:8080/mcp"),
            (
                "https://up.example:443/mcp?x=1#top",
                "https://up.example/mcp?x=1",
            ),
            (
                "http://bücher.example/mcp",
                "http://xn--bcher-kva.example/mcp",
            ),
        ] {
            assert_eq!(parsed(text).as_deref(), Some(uri), "{text}");
        }
        for bad in [
            "/mcp",
            "up:8080/mcp",
            "ftp://up/mcp",
            "unix:/run/mcp",
            "not a url",
        ] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
    }
}

//! The HTTP clients of one HTTP upstream: one per thread that calls it.
//!
//! A client's pooled connection is driven by a task on the runtime that opened it. Each actix
//! worker thread has its own runtime, so with one client shared by every worker a request often
//! went out over a connection another worker drives, and both threads were woken for it: that
//! cost a fifth of a call's CPU. With a client per thread, a worker's requests use connections
//! its own runtime drives. Threads are few and fixed (the workers, the main runtime), so are
//! the clients; each keeps its own idle connections to the upstream. Streamable HTTP
//! (`http.rs`) and HTTP+SSE (`sse/`) upstreams both use them.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use thread_local::ThreadLocal;

use super::UpstreamError;
use crate::config::UpstreamConfig;

/// How every client of the upstream is built, and the clients built so far.
pub struct Clients {
    headers: HeaderMap,
    connect_timeout: Duration,
    /// Built at start (so that settings the client refuses fail the start); used by a thread
    /// whose own client could not be built.
    first: reqwest::Client,
    per_thread: ThreadLocal<reqwest::Client>,
}

impl Clients {
    /// The clients of an http or sse upstream, sending its `headers` (marked sensitive, so
    /// never printed), and its parsed `url`.
    pub fn for_upstream(config: &UpstreamConfig) -> Result<(Self, reqwest::Url), UpstreamError> {
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
            .map_err(|e| failed(e.without_url().to_string()))?;
        let url = config
            .url
            .as_ref()
            .and_then(|url| reqwest::Url::parse(url.expose()).ok())
            .ok_or_else(|| failed("url: not an absolute http(s) URL".into()))?;
        Ok((clients, url))
    }

    /// Clients that send `headers` with every request and give up connecting after
    /// `connect_timeout`.
    pub fn new(headers: HeaderMap, connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let first = build(&headers, connect_timeout)?;
        Ok(Self {
            headers,
            connect_timeout,
            first,
            per_thread: ThreadLocal::new(),
        })
    }

    /// The calling thread's client.
    pub fn get(&self) -> &reqwest::Client {
        self.per_thread.get_or(|| {
            build(&self.headers, self.connect_timeout).unwrap_or_else(|_| self.first.clone())
        })
    }
}

/// No redirects: a POST carrying a session id is not sent again elsewhere (a 3xx is an error).
fn build(
    headers: &HeaderMap,
    connect_timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .default_headers(headers.clone())
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_gets_its_own_client_and_keeps_it() {
        let clients = Clients::new(HeaderMap::new(), Duration::from_secs(1)).unwrap();
        let here = std::ptr::from_ref(clients.get());
        assert_eq!(
            here,
            std::ptr::from_ref(clients.get()),
            "same thread, same client"
        );
        let there = std::thread::scope(|scope| {
            scope
                .spawn(|| std::ptr::from_ref(clients.get()) as usize)
                .join()
                .unwrap()
        });
        assert_ne!(here as usize, there, "another thread builds its own");
    }
}

//! How a connection to an HTTP upstream is made: directly, or through the forward proxy that
//! `HTTP_PROXY`, `HTTPS_PROXY` or `ALL_PROXY` names (unless `NO_PROXY` lists the host), as
//! curl and reqwest read them.
//!
//! - `http://` through a proxy: a connection to the proxy, marked so that requests name their
//!   absolute URI; the client adds the proxy's `Proxy-Authorization` ([`Connector::proxy_auth`]).
//! - `https://` through a proxy: a `CONNECT` tunnel (with the proxy's credentials), then TLS
//!   to the upstream inside it.
//! - `https://` proxies are reached over TLS themselves.
//!
//! The whole of it, TLS and tunnel included, is bounded by the connect timeout. TCP_NODELAY is
//! set: a request goes out in one write and must not wait for the last one's ACK.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::Scheme;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Makes the connections of one upstream's clients. Cheap to clone: clients share it.
#[derive(Clone)]
pub struct Connector {
    /// TCP, and TLS for `https://` (to an upstream or to a proxy).
    direct: HttpsConnector<HttpConnector>,
    tls: Arc<rustls::ClientConfig>,
    proxies: Arc<Matcher>,
    timeout: Duration,
}

/// The connect timeout ran out.
#[derive(Debug, thiserror::Error)]
#[error("no connection within {0:?}")]
struct ConnectTimeout(Duration);

impl Connector {
    /// Connections trusting `tls`'s roots, through the proxies the environment names, each
    /// made within `timeout`.
    pub fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        Self {
            direct: HttpsConnector::from((tcp, tls.clone())),
            tls,
            proxies: Arc::new(Matcher::from_env()),
            timeout,
        }
    }

    /// The `Proxy-Authorization` a request to `uri` carries: only a plain `http://` request
    /// through a proxy with credentials (a tunnel sends them on its `CONNECT`).
    pub fn proxy_auth(&self, uri: &Uri) -> Option<http::HeaderValue> {
        if uri.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        self.proxies.intercept(uri)?.basic_auth().cloned()
    }

    async fn connect(mut self, dst: Uri) -> Result<Conn, BoxError> {
        let Some(proxy) = self.proxies.intercept(&dst) else {
            return Ok(Conn::new(self.direct.call(dst).await?, false));
        };
        if dst.scheme() != Some(&Scheme::HTTPS) {
            let to_proxy = self.direct.call(proxy.uri().clone()).await?;
            return Ok(Conn::new(to_proxy, true));
        }
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let mut inside = HttpsConnector::from((tunnel, self.tls.clone()));
        Ok(Conn::new(inside.call(dst).await?, false))
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let (connector, timeout) = (self.clone(), self.timeout);
        Box::pin(async move {
            tokio::time::timeout(timeout, connector.connect(dst))
                .await
                .map_err(|_| ConnectTimeout(timeout))?
        })
    }
}

/// Any of the streams a connection can be.
trait Io: Read + Write + Send + Unpin {}

impl<T: Read + Write + Send + Unpin> Io for T {}

/// One connection to an upstream (or to the proxy that forwards plain `http://` to it).
pub struct Conn {
    io: Box<dyn Io>,
    /// Requests over it name their absolute URI, as a forward proxy needs.
    to_http_proxy: bool,
}

impl Conn {
    fn new(io: impl Io + 'static, to_http_proxy: bool) -> Self {
        Self {
            io: Box::new(io),
            to_http_proxy,
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.to_http_proxy)
    }
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

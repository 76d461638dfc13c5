//! One HTTP/1.1 keep-alive connection to an MCP endpoint, on hyper's low-level client (no
//! pool), and one timed exchange on it: a POST or a DELETE, judged by [`super::reply`]. A
//! connection that broke, timed out or was left mid-body is opened again for the next request.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::reply;
use crate::config::UpstreamUrl;

/// The session header, in requests and answers.
pub const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// Why an endpoint URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("is not a URL")]
    Parse,
    #[error("is not an http:// URL with a host (https is not supported)")]
    NotHttp,
    #[error("names a host that does not resolve")]
    Resolve,
}

/// An endpoint and what every request to it carries.
pub struct Target {
    /// The URL as it may be printed (password and query values redacted).
    printable: String,
    addr: SocketAddr,
    path: Uri,
    host: HeaderValue,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    version: HeaderValue,
    timeout: Duration,
}

impl Target {
    /// Resolves the host once, here.
    pub fn new(
        url: &str,
        headers: Arc<Vec<(HeaderName, HeaderValue)>>,
        version: HeaderValue,
        timeout: Duration,
    ) -> Result<Target, TargetError> {
        let url = url::Url::parse(url).map_err(|_| TargetError::Parse)?;
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(TargetError::NotHttp);
        };
        if url.scheme() != "http" {
            return Err(TargetError::NotHttp);
        }
        let addr = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or(TargetError::Resolve)?;
        let path = url[url::Position::BeforePath..url::Position::AfterQuery]
            .parse()
            .map_err(|_| TargetError::Parse)?;
        let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
        Ok(Target {
            printable: printable(url.as_str()),
            addr,
            path,
            host: HeaderValue::from_str(authority).map_err(|_| TargetError::Parse)?,
            headers,
            version,
            timeout,
        })
    }

    pub fn printable(&self) -> &str {
        &self.printable
    }

    fn request(
        &self,
        kind: Kind,
        body: Bytes,
        session: Option<&HeaderValue>,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.uri_mut() = self.path.clone();
        *request.method_mut() = if kind == Kind::Delete {
            Method::DELETE
        } else {
            Method::POST
        };
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        if kind != Kind::Delete {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let accept = HeaderValue::from_static("application/json, text/event-stream");
            headers.insert(ACCEPT, accept);
        }
        if kind != Kind::Initialize {
            headers.insert(VERSION_HEADER, self.version.clone());
        }
        if let Some(session) = session {
            headers.insert(SESSION_HEADER, session.clone());
        }
        for (name, value) in self.headers.iter() {
            headers.append(name.clone(), value.clone());
        }
        request
    }
}

/// `url` as the configuration prints upstream URLs: no password, no query value.
fn printable(url: &str) -> String {
    let url = serde_json::Value::String(url.to_owned());
    serde_json::from_value::<UpstreamUrl>(url)
        .map_or_else(|_| "<redacted>".to_owned(), |url| url.redacted())
}

/// What is sent, which decides the method, the headers and what a good answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `initialize`: a JSON-RPC result, no `MCP-Protocol-Version` yet.
    Initialize,
    /// A notification: any 2xx.
    Notification,
    /// A request: a JSON-RPC result, as JSON or in an SSE stream.
    Request,
    /// `DELETE` of the session: any 2xx.
    Delete,
}

/// How an exchange failed; its `Display` is the kind counted in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Failure {
    #[error("connect")]
    Connect,
    #[error("connection")]
    Connection,
    #[error("timeout")]
    Timeout,
    #[error("http_{0}")]
    Http(u16),
    #[error("jsonrpc_error")]
    JsonRpc,
    #[error("bad_response")]
    BadResponse,
}

/// One request and its answer.
pub struct Exchange {
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// From sending the request to its JSON-RPC response (or the end of the answer).
    pub elapsed: Duration,
    /// The `Mcp-Session-Id` of the answer.
    pub session: Option<HeaderValue>,
    pub result: Result<(), Failure>,
}

impl Exchange {
    fn failed(failure: Failure) -> Exchange {
        Exchange {
            status: None,
            elapsed: Duration::ZERO,
            session: None,
            result: Err(failure),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// A worker's connection to one endpoint, opened on first use and again after a failure.
pub struct Connection {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new(target: Arc<Target>) -> Connection {
        Connection {
            target,
            sender: None,
        }
    }

    pub async fn send(
        &mut self,
        kind: Kind,
        body: Bytes,
        session: Option<&HeaderValue>,
    ) -> Exchange {
        let request = self.target.request(kind, body, session);
        let timeout = self.target.timeout;
        let sender = match self.ready().await {
            Ok(sender) => sender,
            Err(failure) => return Exchange::failed(failure),
        };
        let started = Instant::now();
        let Ok((exchange, reusable)) =
            tokio::time::timeout(timeout, exchange(sender, request, kind, started)).await
        else {
            self.sender = None;
            return Exchange::failed(Failure::Timeout);
        };
        if !reusable {
            self.sender = None;
        }
        exchange
    }

    /// The sender, once the connection takes a request; a closed one is opened again.
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Failure> {
        let usable = match self.sender.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = None;
            let mut sender = self.connect().await?;
            sender.ready().await.map_err(|_| Failure::Connect)?;
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or(Failure::Connect)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let connecting = async {
            let stream = TcpStream::connect(self.target.addr).await.ok()?;
            stream.set_nodelay(true).ok()?;
            http1::handshake(TokioIo::new(stream)).await.ok()
        };
        let (sender, connection) = tokio::time::timeout(self.target.timeout, connecting)
            .await
            .ok()
            .flatten()
            .ok_or(Failure::Connect)?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// Sends and reads the answer; also says whether the connection can take the next request.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
    kind: Kind,
    started: Instant,
) -> (Exchange, bool) {
    let Ok(response) = sender.send_request(request).await else {
        return (Exchange::failed(Failure::Connection), false);
    };
    let status = response.status().as_u16();
    let session = response.headers().get(SESSION_HEADER).cloned();
    let judged = reply::judge(response, kind).await;
    let exchange = Exchange {
        status: Some(status),
        elapsed: judged.answered.saturating_duration_since(started),
        session,
        result: judged.result,
    };
    (exchange, judged.finished)
}

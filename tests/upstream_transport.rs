//! How the gateway reaches HTTP upstreams: over TLS, with the upstream's certificate checked
//! against the system's roots (`SSL_CERT_FILE` names a private CA, as it does for Redis), and
//! through the forward proxies that `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` name, with
//! their credentials. haproxy terminates TLS in front of the fixture; tinyproxy is the proxy.

use serde_json::{Value, json};

use crate::support::web_intermediaries::{ForwardProxy, TlsFront};
use crate::support::{Fixture, Gateway, GatewayBuilder, toml_str};

const CREDENTIALS: (&str, &str) = ("gate", "proxy-s3cret");

/// A gateway whose HTTP upstream `remote` is at `url`.
fn gateway_for(url: &str) -> GatewayBuilder {
    Gateway::builder().toml(&format!(
        "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\ntimeout = \"10s\"",
        toml_str(url)
    ))
}

/// Calls `remote__echo` in a new session.
async fn echo_through(gw: &Gateway) -> Value {
    let session = gw.initialize().await;
    gw.call_tool(&session, "remote__echo", json!({"text": "across"}))
        .await
}

fn assert_echoed(response: &Value) {
    assert!(
        response.to_string().contains("across"),
        "the call did not reach the upstream: {response}"
    );
}

fn assert_failed(response: &Value) {
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(message, "upstream remote failed", "{response}");
}

#[tokio::test]
async fn an_https_upstream_signed_by_a_ca_in_ssl_cert_file_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let front = TlsFront::start(dir.path(), &fixture).await;
    let gw = gateway_for(&front.url)
        .env("SSL_CERT_FILE", &front.ca)
        .start()
        .await;
    assert_echoed(&echo_through(&gw).await);
    assert_eq!(fixture.open_sessions().await, 1, "one upstream session");
}

#[tokio::test]
async fn an_https_upstream_whose_certificate_no_root_vouches_for_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let front = TlsFront::start(dir.path(), &fixture).await;
    let gw = gateway_for(&front.url).start().await;
    assert_failed(&echo_through(&gw).await);
    let log = gw.log();
    assert!(
        log.contains("invalid peer certificate: UnknownIssuer"),
        "the log does not say why: {log}"
    );
    assert_eq!(
        fixture.open_sessions().await,
        0,
        "a request crossed the refused connection"
    );
}

#[tokio::test]
async fn an_http_upstream_is_reached_through_http_proxy_with_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let proxy = ForwardProxy::start(dir.path(), Some(CREDENTIALS)).await;
    let gw = gateway_for(&fixture.url)
        .env("HTTP_PROXY", &proxy.url(Some(CREDENTIALS)))
        .start()
        .await;
    assert_echoed(&echo_through(&gw).await);
    let forwarded = proxy.requests();
    let call = format!("POST {} HTTP/1.1", fixture.url);
    assert!(forwarded.contains(&call), "{call:?} not in {forwarded:?}");
    assert!(
        !gw.log().contains(CREDENTIALS.1),
        "the proxy password was logged"
    );
}

#[tokio::test]
async fn a_proxy_that_refuses_the_credentials_fails_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let proxy = ForwardProxy::start(dir.path(), Some(CREDENTIALS)).await;
    let gw = gateway_for(&fixture.url)
        .env("HTTP_PROXY", &proxy.url(Some((CREDENTIALS.0, "wrong"))))
        .start()
        .await;
    assert_failed(&echo_through(&gw).await);
    assert!(!proxy.requests().is_empty(), "the proxy was not asked");
    assert_eq!(fixture.open_sessions().await, 0, "the proxy let it through");
}

#[tokio::test]
async fn no_proxy_names_the_upstreams_reached_directly() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let proxy = ForwardProxy::start(dir.path(), None).await;
    let gw = gateway_for(&fixture.url)
        .env("HTTP_PROXY", &proxy.url(None))
        .env("NO_PROXY", "localhost,127.0.0.1")
        .start()
        .await;
    assert_echoed(&echo_through(&gw).await);
    assert_eq!(proxy.requests(), Vec::<String>::new(), "NO_PROXY ignored");
}

#[tokio::test]
async fn an_https_upstream_is_tunnelled_through_https_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let front = TlsFront::start(dir.path(), &fixture).await;
    let proxy = ForwardProxy::start(dir.path(), Some(CREDENTIALS)).await;
    let gw = gateway_for(&front.url)
        .env("SSL_CERT_FILE", &front.ca)
        .env("HTTPS_PROXY", &proxy.url(Some(CREDENTIALS)))
        .start()
        .await;
    assert_echoed(&echo_through(&gw).await);
    let tunnel = format!("CONNECT 127.0.0.1:{} HTTP/1.1", front.port);
    let forwarded = proxy.requests();
    assert!(
        forwarded.contains(&tunnel),
        "{tunnel:?} not in {forwarded:?}"
    );
}

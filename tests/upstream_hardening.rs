//! A third-party MCP server must not be able to hurt the gateway or read its secrets: stdio
//! children get a clean environment, what an upstream sends is bounded in size and rate, upstream
//! URLs are printed without credentials, an upstream's redirect is not followed, and the
//! gateway's own upstream errors reach clients without their details. Every probe is bounded in count and time, on loopback only.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::hostile::{RssPeak, rss_kib};
use crate::support::{Fixture, Gateway, INTERNAL_ERROR, check_config, toml_str};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The default `max_message_bytes`.
const MAX_MESSAGE_BYTES: u64 = 8 * 1024 * 1024;
/// How much the gateway's resident memory may grow while an upstream misbehaves.
const RSS_GROWTH_BOUND_KIB: u64 = 32 * 1024;
/// Longest a flood probe runs.
const FLOOD_LIMIT: Duration = Duration::from_secs(120);
/// Sessions that every flooded notification goes to.
const FLOOD_SESSIONS: usize = 20;

/// The JSON array of names the `environment` tool returned.
fn names_in(response: &Value) -> Vec<String> {
    let text = response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("environment gave no text: {response}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON array ({e}): {text}"))
}

#[tokio::test]
async fn a_stdio_child_sees_its_configured_environment_and_the_allow_list_only() {
    let gw = Gateway::builder()
        .local("env = { FIXTURE_TOKEN = \"configured\" }")
        .env("MCPGATE_REDIS__PASSWORD", "redis-password-for-the-gateway")
        .env(
            "MCPGATE_SERVER__HMAC_KEY",
            "an-hmac-key-of-at-least-32-characters",
        )
        .env("AWS_SECRET_ACCESS_KEY", "not-for-children")
        .env("LANG", "C.UTF-8")
        .start()
        .await;
    let session = gw.initialize().await;
    let names = names_in(
        &gw.call_tool(&session, "local__environment", json!({}))
            .await,
    );
    println!("stdio child environment: {names:?}");
    for secret in [
        "MCPGATE_REDIS__PASSWORD",
        "MCPGATE_SERVER__HMAC_KEY",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(
            !names.iter().any(|n| n == secret),
            "{secret} reached the child: {names:?}"
        );
    }
    for expected in ["FIXTURE_TOKEN", "PATH", "LANG"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    let allowed = [
        "FIXTURE_TOKEN",
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TMPDIR",
    ];
    let extra: Vec<_> = names
        .iter()
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(extra.is_empty(), "not on the allow-list: {extra:?}");
}

/// Runs `call` and reports the gateway's resident memory before it and at most during it.
async fn with_rss<T>(gw: &Gateway, call: impl Future<Output = T>) -> (T, u64, u64) {
    let before = rss_kib(gw.pid());
    let sampler = RssPeak::start(gw.pid());
    let outcome = call.await;
    let peak = sampler.kib().max(rss_kib(gw.pid()));
    (outcome, before, peak)
}

/// Asserts an oversized answer became a JSON-RPC error naming the upstream and the limit.
fn assert_too_large(response: &Value, upstream: &str) {
    assert_eq!(
        response["error"]["code"],
        json!(INTERNAL_ERROR),
        "{response:.300}"
    );
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(upstream) && message.contains(&MAX_MESSAGE_BYTES.to_string()),
        "the error must name the upstream and the limit: {message}"
    );
}

#[tokio::test]
async fn an_oversized_stdio_line_fails_its_call_without_being_buffered() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let bytes = 64 * 1024 * 1024;
    let call = gw.call_tool(&session, "local__huge_line", json!({"bytes": bytes}));
    let (response, before, peak) = with_rss(&gw, call).await;
    println!(
        "stdio line of {} MiB: gateway RSS {} MiB before, {} MiB at most during",
        bytes >> 20,
        before >> 10,
        peak >> 10
    );
    assert_too_large(&response, "local");
    assert!(
        peak - before < RSS_GROWTH_BOUND_KIB,
        "RSS grew by {} KiB",
        peak - before
    );
    gw.assert_echo(&session, "an oversized line").await;
    let dropped = gw
        .metric("mcpgate_upstream_messages_dropped_total{reason=\"too_large\",upstream=\"local\"}")
        .await;
    assert_eq!(dropped, 1.0, "{}", gw.admin("/metrics").await.text());
}

#[tokio::test]
async fn an_oversized_http_response_fails_its_call_without_being_buffered() {
    let gw = Gateway::builder().without_local().remote().start().await;
    let session = gw.initialize().await;
    let bytes = 48 * 1024 * 1024;
    let call = gw.call_tool(&session, "remote__huge_line", json!({"bytes": bytes}));
    let (response, before, peak) = with_rss(&gw, call).await;
    println!(
        "HTTP answer of {} MiB: gateway RSS {} MiB before, {} MiB at most during",
        bytes >> 20,
        before >> 10,
        peak >> 10
    );
    assert_too_large(&response, "remote");
    assert!(
        peak - before < RSS_GROWTH_BOUND_KIB,
        "RSS grew by {} KiB",
        peak - before
    );
    let echo = gw
        .call_tool(&session, "remote__echo", json!({"text": "fine"}))
        .await;
    assert_eq!(
        echo["result"]["content"][0]["text"],
        json!("fine"),
        "{echo}"
    );
}

/// What one flood did to the gateway.
struct Flood {
    /// Whether the fixture finished sending within [`FLOOD_LIMIT`].
    ended: bool,
    took: Duration,
    /// The slowest `local__echo` while it ran.
    slowest_echo: Duration,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    /// Two seconds after the flood.
    rss_after_kib: u64,
}

impl Flood {
    /// Has the stdio fixture send `count` notifications `method` of `bytes` each outside any
    /// request (it is the `nth` flood of this gateway), calling `local__echo` until it is done.
    async fn run(
        gw: &Gateway,
        session: &support::Session,
        method: &str,
        count: u64,
        nth: usize,
    ) -> Flood {
        let rss_before_kib = rss_kib(gw.pid());
        let sampler = RssPeak::start(gw.pid());
        let started = Instant::now();
        let args = json!({"count": count, "bytes": 4096, "method": method});
        gw.call_tool(session, "local__flood_notifications", args)
            .await;
        let mut slowest_echo = Duration::ZERO;
        let mut ended = false;
        while !ended && started.elapsed() < FLOOD_LIMIT {
            let echo = Instant::now();
            gw.assert_echo(session, "a call during the flood").await;
            slowest_echo = slowest_echo.max(echo.elapsed());
            tokio::time::sleep(Duration::from_millis(200)).await;
            ended = gw.log().matches("flood done").count() >= nth;
        }
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let flood = Flood {
            ended,
            took,
            slowest_echo,
            rss_before_kib,
            rss_peak_kib: sampler.kib(),
            rss_after_kib: rss_kib(gw.pid()),
        };
        println!(
            "{count} x {method} of 4 KiB to {FLOOD_SESSIONS} sessions: ended {} after {:?}; \
             gateway RSS {} MiB before, {} MiB at most, {} MiB 2 s after; slowest echo {:?}",
            flood.ended,
            flood.took,
            flood.rss_before_kib >> 10,
            flood.rss_peak_kib >> 10,
            flood.rss_after_kib >> 10,
            flood.slowest_echo
        );
        flood
    }

    fn assert_harmless(&self) {
        let growth = self.rss_peak_kib.saturating_sub(self.rss_before_kib);
        assert!(
            growth < RSS_GROWTH_BOUND_KIB,
            "RSS grew by {growth} KiB during the flood"
        );
        assert!(self.ended, "the flood did not end in {FLOOD_LIMIT:?}");
        assert!(
            self.slowest_echo < Duration::from_secs(2),
            "an echo took {:?} during the flood",
            self.slowest_echo
        );
    }
}

#[tokio::test]
async fn a_notification_flood_is_bounded_and_the_gateway_stays_responsive() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    for _ in 1..FLOOD_SESSIONS {
        gw.initialize().await;
    }
    let list_changes = 100_000;
    let flood = Flood::run(
        &gw,
        &session,
        "notifications/tools/list_changed",
        list_changes,
        1,
    )
    .await;
    flood.assert_harmless();
    let coalesced = gw
        .metric("mcpgate_upstream_messages_coalesced_total{upstream=\"local\"}")
        .await;
    println!("{coalesced} list changes merged into one already waiting");
    assert!(
        coalesced >= (list_changes / 2) as f64,
        "list changes must be merged"
    );

    let updates = 20_000;
    let flood = Flood::run(&gw, &session, "notifications/resources/updated", updates, 2).await;
    flood.assert_harmless();
    let dropped = gw
        .metric(
            "mcpgate_upstream_messages_dropped_total{reason=\"rate_limited\",upstream=\"local\"}",
        )
        .await;
    let allowed = 100.0 * (flood.took.as_secs_f64() + 1.0);
    println!("{dropped} resource updates dropped over the rate of 100/s");
    assert!(
        dropped >= updates as f64 - allowed,
        "only {dropped} dropped"
    );
}

#[tokio::test]
async fn check_config_prints_upstream_urls_without_credentials() {
    let config = format!(
        "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\n",
        toml_str(
            "https://alice:s3cret-password@mcp.example.com:8443/mcp?token=t0ken-value&team=blue"
        )
    );
    let (ok, stdout, stderr) = check_config(&config).await;
    assert!(ok, "check-config failed: {stderr}");
    println!("{stdout}");
    for secret in ["s3cret-password", "t0ken-value", "blue"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    assert!(
        stdout.contains(
            "https://alice:<redacted>@mcp.example.com:8443/mcp?token=<redacted>&team=<redacted>"
        ),
        "the URL must stay recognisable:\n{stdout}"
    );
}

#[tokio::test]
async fn a_failing_upstream_is_reported_to_the_client_without_its_details() {
    let dir = tempfile::tempdir().unwrap();
    let command = dir.path().join("internal-tools").join("mcp-server");
    let gw = Gateway::builder()
        .toml(&format!(
            "[[upstreams]]\nname = \"broken\"\ntransport = \"stdio\"\ncommand = {}",
            toml_str(&command.to_string_lossy())
        ))
        .start()
        .await;
    let session = gw.initialize().await;
    let response = gw.call_tool(&session, "broken__anything", json!({})).await;
    let message = response["error"]["message"].as_str().unwrap_or_default();
    println!("client sees: {message:?}");
    assert_eq!(
        message, "upstream broken is unavailable",
        "details leaked: {response}"
    );
    assert!(
        gw.log().contains("internal-tools"),
        "the details must stay in the log:\n{}",
        gw.log()
    );
}

/// Answers each of the first 64 connections on `listener` with one 307 redirect to `location`.
async fn redirect_every_request(listener: TcpListener, location: String) {
    for _ in 0..64 {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut request = [0u8; 8192];
        let _ = socket.read(&mut request).await;
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = socket.write_all(answer.as_bytes()).await;
    }
}

#[tokio::test]
async fn an_upstream_redirect_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let redirects = tokio::spawn(redirect_every_request(listener, fixture.url.clone()));
    let gw = Gateway::builder()
        .toml(&format!(
            "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\ntimeout = \"10s\"",
            toml_str(&url)
        ))
        .start()
        .await;
    let session = gw.initialize().await;
    let response = gw
        .call_tool(&session, "remote__echo", json!({"text": "x"}))
        .await;
    let message = response["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(message, "upstream remote failed", "{response}");
    assert_eq!(
        fixture.open_sessions().await,
        0,
        "the redirect was followed to the fixture"
    );
    redirects.abort();
    fixture.stop().await;
}

//! Upstreams that die or forget: a stdio child is restarted with backoff, an HTTP upstream
//! that lost its session is re-initialized behind the client's back, and an upstream that never
//! starts only degrades its own tools.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::{Fixture, Gateway, toml_str};
use serde_json::{Value, json};

/// Longest wait for an upstream to come back.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Calls `echo` through `tool` until it answers, or panics at the deadline.
async fn echo_until_ok(gw: &Gateway, session: &support::Session, tool: &str) -> Value {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let reply = gw
            .request(
                session,
                "tools/call",
                json!({"name": tool, "arguments": {"text": "back"}}),
            )
            .await;
        let json = reply.json();
        if json["result"]["content"][0]["text"] == json!("back") {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "{tool} never recovered; last reply {reply:?}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_killed_stdio_child_is_restarted_and_the_session_keeps_working() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    gw.assert_echo(&session, "before the kill").await;
    let before = gw.child_pids();
    assert_eq!(
        before.len(),
        1,
        "expected one stdio child, found {before:?}"
    );
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &before[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    echo_until_ok(&gw, &session, "local__echo").await;
    let after = gw.child_pids();
    assert_eq!(
        after.len(),
        1,
        "expected one stdio child after the restart, found {after:?}"
    );
    assert_ne!(after, before, "the child was not replaced");
    assert!(
        gw.log().contains("stdio upstream is down"),
        "the restart was not logged:\n{}",
        gw.log()
    );
}

#[tokio::test]
async fn a_crashing_stdio_child_is_retried_with_backoff_and_degrades_only_its_tools() {
    let gw = Gateway::builder()
        .toml("[[upstreams]]\nname = \"broken\"\ntransport = \"stdio\"\ncommand = \"/bin/false\"")
        .start()
        .await;
    let session = gw.initialize().await;
    gw.assert_echo(&session, "the healthy upstream").await;
    let reply = gw
        .request(
            &session,
            "tools/call",
            json!({"name": "broken__anything", "arguments": {}}),
        )
        .await;
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("broken"),
        "the error must name the upstream: {reply:?}"
    );
    let metrics = gw.admin("/metrics").await.text();
    for line in [
        "mcpgate_upstream_up{upstream=\"broken\"} 0",
        "mcpgate_upstream_up{upstream=\"local\"} 1",
    ] {
        assert!(
            metrics.contains(line),
            "/metrics lacks {line:?}:\n{metrics}"
        );
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = gw
        .log()
        .lines()
        .filter(|l| l.contains("stdio upstream is down") && l.contains("broken"))
        .count();
    // 200 ms doubling: about four attempts in two seconds, far from a tight loop.
    assert!(
        (2..=8).contains(&attempts),
        "{attempts} start attempts in 2 s:\n{}",
        gw.log()
    );
}

#[tokio::test]
async fn an_http_upstream_that_forgot_the_session_is_reinitialized_transparently() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let (url, address) = (fixture.url.clone(), fixture.address());
    let gw = Gateway::builder()
        .without_local()
        .toml(&format!(
            "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}",
            toml_str(&url)
        ))
        .start()
        .await;
    let session = gw.initialize().await;
    echo_until_ok(&gw, &session, "remote__echo").await;

    fixture.stop().await;
    let _restarted = Fixture::start_http_at("remote", dir.path(), &address).await;
    let reply = gw
        .request(
            &session,
            "tools/call",
            json!({"name": "remote__echo", "arguments": {"text": "still here"}}),
        )
        .await;
    assert_eq!(
        reply.json()["result"]["content"][0]["text"],
        json!("still here"),
        "{reply:?}\n{}",
        gw.log()
    );
    assert!(
        gw.log().contains("re-initializing"),
        "the re-initialization was not logged:\n{}",
        gw.log()
    );
}

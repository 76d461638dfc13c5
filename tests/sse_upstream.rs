//! Legacy HTTP+SSE upstreams (`transport = "sse"`) behind the gateway: the fixture in its
//! `sse` mode, whose sessions end with their connection. Calls go through; progress and
//! sampling are relayed (a sampling answer from any replica); a dropped connection, or a
//! session revived on another replica, is re-initialized behind the client's back, with the
//! session's log level and subscriptions, and counted; the connections per replica are bounded
//! and expire; an upstream that cannot be reached fails a call clearly and at once;
//! `check-config` prints one without its secrets. (`tests/e2e/python/test_sse_upstream.py`
//! does the same against the Python SDK's own SSE server.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::answering::{call, call_across};
use crate::support::redis::RedisServer;
use crate::support::{
    Fixture, Gateway, GatewayBuilder, LATEST, Session, SseReader, check_config, toml_str,
};

/// The reinitialization counter of the upstream `legacy`.
const REINITIALIZED: &str = "mcpgate_upstream_reinitializations_total{upstream=\"legacy\"}";

/// The `[[upstreams]]` entry of an sse upstream named `legacy` at `url`, with more `lines`.
fn sse_upstream(url: &str, lines: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"legacy\"\ntransport = \"sse\"\nurl = {}\ntimeout = \"5s\"\n{lines}",
        toml_str(url)
    )
}

fn gateway_for(fixture: &Fixture, lines: &str) -> GatewayBuilder {
    Gateway::builder()
        .without_local()
        .toml(&sse_upstream(&fixture.url, lines))
}

/// Calls `legacy__echo` with `text` and returns the JSON-RPC response.
async fn echo(gw: &Gateway, session: &Session, text: &str) -> Value {
    let params = json!({"name": "legacy__echo", "arguments": {"text": text}});
    gw.request(session, "tools/call", params).await.json()
}

async fn assert_echo(gw: &Gateway, session: &Session, text: &str) {
    let response = echo(gw, session, text).await;
    assert_eq!(
        response["result"]["content"][0]["text"],
        json!(text),
        "{response}\n{}",
        gw.log()
    );
}

/// Answers `sampling/createMessage` with the text "sampled".
fn sample(message: &Value) -> Option<Value> {
    (message["method"] == json!("sampling/createMessage")).then(|| {
        json!({"jsonrpc": "2.0", "id": message["id"], "result": {
            "role": "assistant", "content": {"type": "text", "text": "sampled"},
            "model": "test", "stopReason": "endTurn"}})
    })
}

/// Waits until the fixture has `want` sessions open.
async fn wait_for_open_sessions(fixture: &Fixture, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fixture.open_sessions().await != want {
        assert!(
            Instant::now() < deadline,
            "the fixture never had {want} sessions open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tools_are_listed_and_called_through_an_sse_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "").start().await;
    let session = gw.initialize().await;
    let names = gw.tool_names(&session).await;
    assert!(names.contains(&"legacy__echo".to_owned()), "{names:?}");
    assert_echo(&gw, &session, "over SSE").await;
    assert_eq!(
        fixture.open_sessions().await,
        1,
        "one connection per session"
    );

    let deleted = gw.delete(Some(&session), &[]).await;
    assert!(deleted.status.is_success(), "{deleted:?}");
    wait_for_open_sessions(&fixture, 0).await;
}

#[tokio::test]
async fn progress_and_sampling_are_relayed_from_an_sse_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "").start().await;
    let session = gw.initialize_with(LATEST, json!({"sampling": {}})).await;

    let body = json!({"jsonrpc": "2.0", "id": "p", "method": "tools/call", "params": {
        "name": "legacy__test_tool_with_progress", "arguments": {},
        "_meta": {"progressToken": "tok"}}});
    let stream = gw.post_stream(Some(&session), &body).await;
    let events = SseReader::new(stream)
        .until_end(Duration::from_secs(10))
        .await;
    let messages: Vec<Value> = events
        .iter()
        .filter(|e| e.data.as_deref().is_some_and(|d| !d.is_empty()))
        .map(|e| e.json())
        .collect();
    let progress: Vec<_> = messages
        .iter()
        .filter(|m| m["method"] == json!("notifications/progress"))
        .collect();
    assert_eq!(progress.len(), 3, "{messages:#?}");
    assert!(
        progress
            .iter()
            .all(|m| m["params"]["progressToken"] == json!("tok"))
    );
    assert_eq!(messages.last().map(|m| m["id"].clone()), Some(json!("p")));

    let exchange = call(
        &gw,
        &session,
        "legacy__test_sampling",
        json!({"prompt": "hi"}),
        sample,
    )
    .await;
    assert_eq!(
        exchange.result_text(),
        "LLM response: sampled",
        "{exchange:#?}"
    );
}

#[tokio::test]
async fn a_connection_killed_mid_session_is_reinitialized_at_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "").start().await;
    let session = gw.initialize().await;
    let level = gw
        .request(&session, "logging/setLevel", json!({"level": "error"}))
        .await;
    assert!(level.json()["result"].is_object(), "{level:?}");
    assert_echo(&gw, &session, "before the drop").await;
    let before = gw.metric(REINITIALIZED).await;

    assert_eq!(fixture.drop_connections().await, 1);
    wait_for_open_sessions(&fixture, 0).await;
    assert_echo(&gw, &session, "after the drop").await;

    assert_eq!(gw.metric(REINITIALIZED).await, before + 1.0, "{}", gw.log());
    assert_eq!(fixture.open_sessions().await, 1);
    let logged = gw
        .call_tool(&session, "legacy__test_logging_tool", json!({}))
        .await;
    assert!(logged["result"].is_object(), "{logged}");
}

#[tokio::test]
async fn a_call_in_flight_when_its_connection_drops_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "").start().await;
    let session = gw.initialize().await;
    let slow = json!({"name": "legacy__slow", "arguments": {"ms": 20_000}});
    let started = Instant::now();
    let in_flight = gw.request(&session, "tools/call", slow);
    let drop = async {
        wait_for_open_sessions(&fixture, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        fixture.drop_connections().await
    };
    let (reply, dropped) = tokio::join!(in_flight, drop);
    assert_eq!(dropped, 1);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("legacy"), "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_echo(&gw, &session, "after the drop").await;
}

#[tokio::test]
async fn a_modern_request_reaches_an_sse_upstream_through_a_connection_of_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "").start().await;
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "1"},
    });
    for text in ["first", "second"] {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "legacy__echo", "arguments": {"text": text}, "_meta": meta}});
        let headers = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "legacy__echo"),
        ];
        let reply = gw.post(None, body.to_string(), &headers).await;
        assert_eq!(
            reply.json()["result"]["content"][0]["text"],
            json!(text),
            "{reply:?}"
        );
    }
    assert_eq!(fixture.open_sessions().await, 1, "one shared connection");
}

#[tokio::test]
async fn a_reinitialized_connection_gets_the_sessions_subscriptions_back() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "").start().await;
    let session = gw.initialize().await;
    let mut stream = SseReader::new(gw.get(Some(&session), &[]).await);
    stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("priming event");
    let listed = gw.request(&session, "resources/list", json!({})).await;
    assert!(listed.json()["result"].is_object(), "{listed:?}");
    let watched = json!({"uri": "test://watched-resource"});
    let subscribed = gw.request(&session, "resources/subscribe", watched).await;
    assert!(subscribed.json()["result"].is_object(), "{subscribed:?}");

    fixture.drop_connections().await;
    wait_for_open_sessions(&fixture, 0).await;
    assert_echo(&gw, &session, "after the drop").await;
    while stream
        .next_event(Duration::from_millis(300))
        .await
        .is_some()
    {}
    // The watched resource changes every 2 s: only the restored subscription reports it now.
    let deadline = Instant::now() + Duration::from_secs(5);
    let updated = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = stream.next_event(left).await else {
            break false;
        };
        if event
            .data
            .as_deref()
            .is_some_and(|d| d.contains("notifications/resources/updated"))
        {
            break true;
        }
    };
    assert!(
        updated,
        "no update after the re-initialization\n{}",
        gw.log()
    );
}

/// A replica on the shared Redis with only the SSE upstream `upstream`.
async fn replica(redis: &RedisServer, upstream: &str) -> Gateway {
    redis
        .replica("1h")
        .without_local()
        .toml(upstream)
        .start()
        .await
}

#[tokio::test]
async fn a_session_revived_on_another_replica_reopens_its_sse_upstream_there() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let redis = RedisServer::start().await;
    let upstream = sse_upstream(&fixture.url, "");
    let (a, b) = (
        replica(&redis, &upstream).await,
        replica(&redis, &upstream).await,
    );
    let session = a.initialize().await;
    assert_echo(&a, &session, "on replica A").await;
    assert_eq!(b.metric(REINITIALIZED).await, 0.0);

    assert_echo(&b, &session, "on replica B").await;
    assert_eq!(b.metric(REINITIALIZED).await, 1.0, "{}", b.log());
    assert_eq!(
        fixture.open_sessions().await,
        2,
        "A's connection, B's connection"
    );
    assert_echo(&b, &session, "on replica B again").await;
    assert_eq!(b.metric(REINITIALIZED).await, 1.0, "B keeps its connection");

    assert_echo(&a, &session, "back on replica A").await;
    assert_eq!(
        a.metric(REINITIALIZED).await,
        1.0,
        "A's connection is not the record's"
    );
    wait_for_open_sessions(&fixture, 2).await;
}

#[tokio::test]
async fn a_sampling_answer_posted_to_another_replica_reaches_the_connection_holding_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let redis = RedisServer::start().await;
    let upstream = sse_upstream(&fixture.url, "");
    let (a, b) = (
        replica(&redis, &upstream).await,
        replica(&redis, &upstream).await,
    );
    let session = a.initialize_with(LATEST, json!({"sampling": {}})).await;
    let arguments = json!({"prompt": "hi"});
    let exchange = call_across(
        &[&a, &b],
        &session,
        "legacy__test_sampling",
        arguments,
        sample,
    )
    .await;
    assert_eq!(
        exchange.result_text(),
        "LLM response: sampled",
        "{exchange:#?}\n{}",
        b.log()
    );
    assert_eq!(
        b.metric(REINITIALIZED).await,
        0.0,
        "B must not open a connection of its own"
    );
}

#[tokio::test]
async fn at_max_connections_the_least_recently_used_idle_connection_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "max_connections = 2").start().await;
    let sessions = [
        gw.initialize().await,
        gw.initialize().await,
        gw.initialize().await,
    ];
    for (n, session) in sessions.iter().enumerate() {
        assert_echo(&gw, session, &format!("session {n}")).await;
    }
    wait_for_open_sessions(&fixture, 2).await;
    assert_eq!(gw.metric(REINITIALIZED).await, 0.0);

    assert_echo(&gw, &sessions[0], "session 0, evicted").await;
    assert_eq!(gw.metric(REINITIALIZED).await, 1.0, "{}", gw.log());
    wait_for_open_sessions(&fixture, 2).await;
}

#[tokio::test]
async fn at_max_connections_with_every_connection_busy_a_new_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "max_connections = 1").start().await;
    let (busy, refused) = (gw.initialize().await, gw.initialize().await);
    assert_echo(&gw, &busy, "the first session").await;
    let slow = json!({"name": "legacy__slow", "arguments": {"ms": 3000}});
    let in_flight = gw.request(&busy, "tools/call", slow);
    let refusal = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        echo(&gw, &refused, "no room").await
    };
    let (slow, refusal) = tokio::join!(in_flight, refusal);
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("legacy") && message.contains("max_connections"),
        "{refusal}"
    );
    assert_eq!(
        slow.json()["result"]["content"][0]["text"],
        json!("done"),
        "{slow:?}"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_reopened_when_needed() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "idle_timeout = \"300ms\"")
        .start()
        .await;
    let session = gw.initialize().await;
    assert_echo(&gw, &session, "before idling").await;
    wait_for_open_sessions(&fixture, 0).await;
    assert_echo(&gw, &session, "after idling").await;
    assert_eq!(gw.metric(REINITIALIZED).await, 1.0);
}

#[tokio::test]
async fn a_message_over_max_message_bytes_fails_its_call_and_the_next_call_reinitializes() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_sse("legacy", dir.path()).await;
    let gw = gateway_for(&fixture, "max_message_bytes = 4096")
        .start()
        .await;
    let session = gw.initialize().await;
    assert_echo(&gw, &session, "before the huge message").await;
    let huge = json!({"name": "legacy__huge_line", "arguments": {"bytes": 100_000}});
    let reply = gw.request(&session, "tools/call", huge).await.json();
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("4096-byte limit"), "{reply}");
    assert_echo(&gw, &session, "after the huge message").await;
    assert_eq!(gw.metric(REINITIALIZED).await, 1.0, "{}", gw.log());
}

#[tokio::test]
async fn an_unreachable_sse_upstream_fails_a_call_clearly_and_at_once() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = free.local_addr().unwrap().port();
    drop(free);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let upstreams = format!(
        "[[upstreams]]\nname = \"unreachable\"\ntransport = \"sse\"\nurl = \"http://127.0.0.1:{closed_port}/sse\"\n\
         [[upstreams]]\nname = \"silent\"\ntransport = \"sse\"\nurl = \"http://127.0.0.1:{silent_port}/sse\"\ntimeout = \"1s\""
    );
    let gw = Gateway::builder().toml(&upstreams).start().await;
    let session = gw.initialize().await;
    gw.assert_echo(&session, "the stdio upstream").await;
    for name in ["unreachable", "silent"] {
        let started = Instant::now();
        let params = json!({"name": format!("{name}__echo"), "arguments": {"text": "x"}});
        let reply = gw.request(&session, "tools/call", params).await;
        let error = &reply.json()["error"];
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(name), "{name}: {reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    drop(silent);
}

#[tokio::test]
async fn check_config_prints_an_sse_upstream_without_its_secrets_and_refuses_http_only_keys() {
    let url = "https://user:pw@legacy.example/sse?token=abc";
    let upstream = sse_upstream(
        url,
        "headers = { Authorization = \"Bearer s3cret\" }\nmax_connections = 7",
    );
    let (ok, stdout, stderr) = check_config(&upstream).await;
    assert!(ok, "{stderr}");
    for wanted in [
        "transport = \"sse\"",
        "max_connections = 7",
        "legacy.example/sse?token=<redacted>",
    ] {
        assert!(stdout.contains(wanted), "{wanted:?} missing:\n{stdout}");
    }
    for secret in ["pw@", "abc", "s3cret"] {
        assert!(!stdout.contains(secret), "{secret:?} printed:\n{stdout}");
    }
    let (ok, _, stderr) = check_config(&sse_upstream(url, "standalone = \"follow\"")).await;
    assert!(
        !ok && stderr.contains("upstreams[0].standalone"),
        "{stderr}"
    );
}

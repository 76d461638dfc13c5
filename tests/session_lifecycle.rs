//! How sessions end and what they keep, against real replicas, a real redis-server and real
//! fixtures (issue 6): expiry ends open streams on every replica and closes upstream sessions,
//! concurrent record changes survive, a full Redis keeps serving existing sessions, a revival
//! restores the log level, and replicas free what they held for sessions that ended elsewhere.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::redis::RedisServer;
use crate::support::{Fixture, Gateway, Session, SseReader};
use reqwest::StatusCode;
use serde_json::json;

/// Waits until the fixture's open session count is `want`; returns how long it took.
async fn until_upstream_sessions(fixture: &Fixture, want: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let open = fixture.open_sessions().await;
        if open == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the upstream still has {open} sessions open after {limit:?} (want {want})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a stream until it ends; returns how long that took.
async fn until_stream_ends(stream: reqwest::Response, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut reader = SseReader::new(stream);
    reader.until_end(limit).await;
    let took = started.elapsed();
    assert!(took < limit, "the stream was still open after {limit:?}");
    took
}

/// With keyspace notifications, an expiry ends the session's open GET stream on a replica that
/// did not create the session, and its upstream session is closed, within seconds.
#[tokio::test]
async fn an_expiry_ends_streams_everywhere_and_closes_upstream_sessions() {
    let redis = RedisServer::start_args(false, &["--notify-keyspace-events", "Ex"]).await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let a = redis.replica("2s").remote_at(&fixture).start().await;
    let b = redis.replica("2s").remote_at(&fixture).start().await;
    let session = a.initialize().await;
    b.call_tool(&session, "remote__whoami", json!({})).await;
    assert_eq!(fixture.open_sessions().await, 1);

    let stream = b.get(Some(&session), &[]).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let took = until_stream_ends(stream, Duration::from_secs(8)).await;
    println!("the GET stream on the other replica ended {took:?} after it opened (idle TTL 2 s)");
    let closed = until_upstream_sessions(&fixture, 0, Duration::from_secs(5)).await;
    println!("the upstream session was closed {closed:?} later");
    let expired = a.metric("mcpgate_sessions_expired_total").await
        + b.metric("mcpgate_sessions_expired_total").await;
    assert_eq!(expired, 1.0, "the expiry is counted once across the fleet");
    let reply = a.request(&session, "ping", json!({})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

/// Without keyspace notifications (here: the memory store), an open stream notices at its next
/// keep-alive (15 s) that its session expired, ends, and the upstream session is closed.
#[tokio::test]
async fn without_notifications_a_stream_notices_its_expiry_at_the_next_keep_alive() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = &Fixture::start_http("remote", dir.path()).await;
    let gw = Gateway::builder()
        .remote_at(fixture)
        .toml("[session]\nidle_ttl = \"2s\"")
        .start()
        .await;
    let session = gw.initialize().await;
    assert_eq!(fixture.open_sessions().await, 1);
    let stream = gw.get(Some(&session), &[]).await;
    let took = until_stream_ends(stream, Duration::from_secs(20)).await;
    println!("the GET stream ended {took:?} after it opened (idle TTL 2 s, keep-alive 15 s)");
    until_upstream_sessions(fixture, 0, Duration::from_secs(5)).await;
    assert_eq!(gw.metric("mcpgate_sessions_expired_total").await, 1.0);
}

/// Two `resources/subscribe` in one 2025-03-26 batch both stay in the record.
#[tokio::test]
async fn two_subscriptions_in_one_batch_both_survive() {
    let redis = RedisServer::start().await;
    let gw = redis.replica("1h").start().await;
    let session = gw.initialize_with("2025-03-26", json!({})).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": "test://static-text"}},
        {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": "test://static-binary"}},
    ]);
    let reply = gw.post(Some(&session), batch.to_string(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let mut client = redis.client().await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("mcpgate:{{{}}}:s", session.id))
        .query_async(&mut client)
        .await
        .unwrap();
    let mut subscriptions: Vec<&String> = fields.iter().filter(|f| f.starts_with("sub:")).collect();
    subscriptions.sort();
    assert_eq!(
        subscriptions,
        ["sub:test://static-binary", "sub:test://static-text"]
    );
}

/// `maxmemory` reached with `noeviction`: existing sessions keep calling tools, new sessions
/// get 503 with Retry-After, and the replica stays ready.
#[tokio::test]
async fn a_full_redis_keeps_existing_sessions_working() {
    let redis = RedisServer::start_args(false, &["--maxmemory-policy", "noeviction"]).await;
    let gw = redis.replica("1h").start().await;
    let session = gw.initialize().await;
    redis.fill_past_maxmemory().await;

    for round in 0..3 {
        gw.assert_echo(&session, &format!("with Redis full, round {round}"))
            .await;
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": support::LATEST, "capabilities": {},
        "clientInfo": {"name": "late", "version": "0"}}});
    let reply = gw.post(None, body.to_string(), &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    assert_eq!(gw.admin("/readyz/store").await.status, StatusCode::OK);
}

/// A Redis that refuses writes altogether (`CLIENT PAUSE WRITE`) fails the strict probe
/// `/readyz/store`; `/readyz` stays ready, since Redis is the whole fleet's (see `http::admin`).
#[tokio::test]
async fn the_store_probe_follows_a_redis_that_refuses_writes() {
    let redis = RedisServer::start().await;
    let gw = redis.replica("1h").start().await;
    assert_eq!(gw.admin("/readyz/store").await.status, StatusCode::OK);
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "4000", "WRITE"])
        .query_async(&mut redis.client().await)
        .await
        .unwrap();
    assert_eq!(
        gw.admin("/readyz/store").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(gw.admin("/readyz").await.status, StatusCode::OK);
}

/// A revival puts the client's log level back on the new replica's stdio child: the info
/// messages of `test_tool_with_logging` stay filtered out, so the answer is plain JSON.
#[tokio::test]
async fn a_revival_restores_the_log_level() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        redis.replica("1h").start().await,
        redis.replica("1h").start().await,
    );
    let session = a.initialize().await;
    let reply = a
        .request(&session, "logging/setLevel", json!({"level": "warning"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "local__test_tool_with_logging", "arguments": {}}});
    let reply = b.post(Some(&session), call.to_string(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        reply.content_type(),
        "application/json",
        "info messages reached the client despite its level: {}",
        reply.text()
    );
}

/// The resident set of a process, in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A replica that served many sessions which then were deleted elsewhere or expired frees its
/// state for them within the documented bound (`min(idle_ttl, 5 min)` + 5 s housekeeping).
#[tokio::test]
async fn a_replica_frees_sessions_that_ended_elsewhere() {
    const SESSIONS: usize = 120;
    let redis = RedisServer::start().await;
    let (a, b) = (
        redis.replica("8s").start().await,
        redis.replica("8s").start().await,
    );
    let baseline = rss_kb(b.pid());
    let mut sessions: Vec<Session> = Vec::new();
    for _ in 0..SESSIONS {
        let session = a.initialize().await;
        let reply = b.request(&session, "ping", json!({})).await;
        assert_eq!(reply.status, StatusCode::OK);
        sessions.push(session);
    }
    let served = Instant::now();
    assert_eq!(
        b.metric("mcpgate_sessions_revived_total").await,
        SESSIONS as f64
    );
    let gauge = "mcpgate_sessions_held ";
    while b.metric(gauge).await < SESSIONS as f64 {
        assert!(
            served.elapsed() < Duration::from_secs(6),
            "the gauge never showed them"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let peak = rss_kb(b.pid());
    for session in sessions.iter().step_by(2) {
        assert_eq!(
            a.delete(Some(session), &[]).await.status,
            StatusCode::NO_CONTENT
        );
    }
    while b.metric(gauge).await > 0.0 {
        assert!(
            served.elapsed() < Duration::from_secs(20),
            "replica b still holds {} sessions",
            b.metric(gauge).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "replica b: RSS {baseline} kB at start, {peak} kB holding {SESSIONS} sessions, {} kB \
         once they ended; it held none {:?} after serving them (idle TTL 8 s)",
        rss_kb(b.pid()),
        served.elapsed()
    );
}

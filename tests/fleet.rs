//! Several replicas sharing one real redis-server: any replica serves any session, deletion and
//! expiry are seen everywhere, a Redis outage is 503 (never 404), and streams resume anywhere.

use crate::support;

use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::{Fixture, Gateway, GatewayBuilder, Session, SseReader, toml_str};
use reqwest::StatusCode;
use serde_json::json;

const HMAC_KEY: &str = "fleet-test-key-0123456789abcdefghijklmnopqrstuvwxyz";

/// A replica configured for the shared Redis.
fn replica(redis: &RedisServer) -> GatewayBuilder {
    redis.replica("1h")
}

/// Whether an SSE event's data contains `text`.
fn has_data(event: &support::SseEvent, text: &str) -> bool {
    event.data.as_deref().is_some_and(|d| d.contains(text))
}

/// The `remote` upstream's session id as stored in the session record.
async fn stored_upstream_session(redis: &RedisServer, session: &Session) -> Option<String> {
    let mut client = redis.client().await;
    let key = format!("mcpgate:{{{}}}:u", session.id);
    let stored: String = redis::cmd("HGET")
        .arg(&key)
        .arg("remote")
        .query_async(&mut client)
        .await
        .expect("no upstream session");
    let stored: serde_json::Value = serde_json::from_str(&stored).expect("not JSON");
    stored["session_id"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_session_created_on_one_replica_is_served_by_another() {
    let redis = RedisServer::start().await;
    let (a, b) = (replica(&redis).start().await, replica(&redis).start().await);
    let session = a.initialize().await;
    b.assert_echo(&session, "on the replica that did not create it")
        .await;
    a.assert_echo(&session, "back on the first replica").await;
    assert_eq!(b.metric("mcpgate_sessions_revived_total").await, 1.0);
    assert_eq!(
        b.metric("mcpgate_session_lookups_total{outcome=\"revived\"}")
            .await,
        1.0
    );
    assert_eq!(a.metric("mcpgate_sessions_revived_total").await, 0.0);
}

#[tokio::test]
async fn every_replica_restarting_loses_nothing() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let remote = Fixture::start_http("remote", dir.path()).await;
    let with_remote = |b: GatewayBuilder| {
        b.toml(&format!(
            "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}",
            toml_str(&remote.url)
        ))
    };
    let first = with_remote(replica(&redis)).start().await;
    let session = first.initialize().await;
    first.call_tool(&session, "remote__whoami", json!({})).await;
    let stored_before = stored_upstream_session(&redis, &session).await;
    assert!(
        stored_before.is_some(),
        "the record keeps the upstream's session id"
    );
    drop(first);

    let second = with_remote(replica(&redis)).start().await;
    second
        .assert_echo(&session, "after every replica restarted")
        .await;
    second
        .call_tool(&session, "remote__whoami", json!({}))
        .await;
    assert_eq!(
        stored_upstream_session(&redis, &session).await,
        stored_before,
        "the stored upstream session id should have been reused, not replaced"
    );
}

#[tokio::test]
async fn delete_on_one_replica_is_404_on_the_others() {
    let redis = RedisServer::start().await;
    let (a, b) = (replica(&redis).start().await, replica(&redis).start().await);
    let session = a.initialize().await;
    b.assert_echo(&session, "before the delete").await;
    assert_eq!(
        a.delete(Some(&session), &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let reply = b.request(&session, "ping", json!({})).await;
    reply.assert_error(404, support::SESSION_NOT_FOUND, &["Session not found"]);
}

#[tokio::test]
async fn delete_on_one_replica_closes_open_streams_on_the_others() {
    let redis = RedisServer::start().await;
    let (a, b) = (replica(&redis).start().await, replica(&redis).start().await);
    let session = a.initialize().await;
    let open = b.get(Some(&session), &[]).await;
    assert_eq!(open.status(), StatusCode::OK);
    let mut stream = SseReader::new(open);
    stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("no priming event");
    assert_eq!(
        a.delete(Some(&session), &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let rest = stream.until_end(Duration::from_secs(5)).await;
    assert!(
        stream.ended,
        "the GET stream on the other replica stayed open: {rest:?}"
    );
}

#[tokio::test]
async fn an_expired_session_is_404_everywhere_and_counted_once() {
    let redis = RedisServer::start().await;
    let short_lived = || redis.replica("1s");
    let (a, b) = (short_lived().start().await, short_lived().start().await);
    let session = a.initialize().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for gw in [&a, &b, &a, &b] {
        let reply = gw.request(&session, "ping", json!({})).await;
        reply.assert_error(404, support::SESSION_NOT_FOUND, &["Session not found"]);
    }
    let expired = a.metric("mcpgate_sessions_expired_total").await
        + b.metric("mcpgate_sessions_expired_total").await;
    assert_eq!(
        expired, 1.0,
        "an expiry must be counted once across the fleet"
    );
}

#[tokio::test]
async fn expiries_reported_by_redis_are_counted_once_without_a_client_returning() {
    let redis = RedisServer::start_args(false, &["--notify-keyspace-events", "Ex"]).await;
    let short_lived = || redis.replica("1s");
    let (a, b) = (short_lived().start().await, short_lived().start().await);
    let session = a.initialize().await;
    let counted = || async {
        a.metric("mcpgate_sessions_expired_total").await
            + b.metric("mcpgate_sessions_expired_total").await
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counted().await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no replica counted the expiry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        counted().await,
        1.0,
        "an expiry must be counted once across the fleet"
    );
    let reply = b.request(&session, "ping", json!({})).await;
    reply.assert_error(404, support::SESSION_NOT_FOUND, &["Session not found"]);
    assert_eq!(
        counted().await,
        1.0,
        "the client's return must not count it again"
    );
}

#[tokio::test]
async fn a_redis_outage_is_503_and_the_sessions_come_back() {
    let mut redis = RedisServer::start_persistent().await;
    let gw = replica(&redis).start().await;
    let session = gw.initialize().await;
    redis.stop().await;
    let reply = gw.request(&session, "ping", json!({})).await;
    reply.assert_error(503, support::INTERNAL_ERROR, &["session store"]);
    assert_eq!(reply.header("retry-after").as_deref(), Some("2"));
    assert_eq!(
        gw.admin("/readyz").await.status,
        StatusCode::OK,
        "Redis is down for every replica: staying ready keeps the precise 503 reaching clients"
    );
    let strict = gw.admin("/readyz/store").await;
    assert_eq!(strict.status, StatusCode::SERVICE_UNAVAILABLE, "{strict:?}");
    assert!(strict.text().starts_with("session store:"), "{strict:?}");

    redis.restart().await;
    gw.assert_echo(&session, "after Redis came back").await;
    assert_eq!(gw.admin("/readyz/store").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_post_stream_resumes_on_another_replica() {
    let redis = RedisServer::start().await;
    let (a, b) = (replica(&redis).start().await, replica(&redis).start().await);
    let session = a.initialize().await;
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "local__test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "p"}}});
    let mut stream = SseReader::new(a.post_stream(Some(&session), &call).await);
    let priming = stream
        .next_event(Duration::from_secs(10))
        .await
        .expect("no priming event");
    drop(stream);

    let last_event_id = priming.id.clone().expect("the priming event has no id");
    let resumed = b
        .get(Some(&session), &[("last-event-id", &last_event_id)])
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let events = SseReader::new(resumed)
        .until_end(Duration::from_secs(10))
        .await;
    let messages: Vec<_> = events
        .iter()
        .filter(|e| e.data.as_deref().is_some_and(|d| !d.is_empty()))
        .map(|e| e.json())
        .collect();
    let progress = messages
        .iter()
        .filter(|m| m["method"] == json!("notifications/progress"))
        .count();
    assert_eq!(progress, 3, "{messages:?}");
    assert_eq!(
        messages.last().map(|m| m["id"].clone()),
        Some(json!(7)),
        "{messages:?}"
    );
}

#[tokio::test]
async fn sessions_answer_the_same_on_every_replica() {
    let redis = RedisServer::start().await;
    let replicas = [
        replica(&redis).start().await,
        replica(&redis).start().await,
        replica(&redis).start().await,
    ];
    let sessions: Vec<Session> = {
        let mut sessions = Vec::new();
        for gw in &replicas {
            sessions.push(gw.initialize().await);
        }
        sessions
    };
    for (n, session) in sessions.iter().enumerate() {
        for gw in &replicas {
            gw.assert_echo(session, &format!("session {n}")).await;
        }
    }
}

#[tokio::test]
async fn a_sampling_answer_sent_to_another_replica_reaches_the_stdio_upstream() {
    let redis = RedisServer::start().await;
    let (a, b) = (replica(&redis).start().await, replica(&redis).start().await);
    let session = a
        .initialize_with(support::LATEST, json!({"sampling": {}}))
        .await;
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "local__test_sampling", "arguments": {"prompt": "hello"}}});
    let mut stream = SseReader::new(a.post_stream(Some(&session), &call).await);
    let events = stream
        .until(Duration::from_secs(10), |e| {
            has_data(e, "sampling/createMessage")
        })
        .await;
    let request = events.last().expect("no sampling request").json();
    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {
        "role": "assistant", "content": {"type": "text", "text": "answered on B"},
        "model": "test", "stopReason": "endTurn"}});
    assert_eq!(
        b.post_json(Some(&session), &answer).await.status,
        StatusCode::ACCEPTED
    );

    let events = stream
        .until(Duration::from_secs(10), |e| has_data(e, "\"id\":5"))
        .await;
    let response = events.last().expect("no tool result").json();
    let text = response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("answered on B"), "{response}");
}

#[tokio::test]
async fn a_cancellation_sent_to_another_replica_ends_the_request() {
    let redis = RedisServer::start().await;
    let (a, b) = (replica(&redis).start().await, replica(&redis).start().await);
    let session = a.initialize().await;
    let slow = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "local__slow", "arguments": {"ms": 8000}}});
    let started = std::time::Instant::now();
    let call = a.post_json(Some(&session), &slow);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}});
        b.post_json(Some(&session), &note).await
    };
    let (reply, cancelled) = tokio::join!(call, cancel);
    assert_eq!(cancelled.status, StatusCode::ACCEPTED);
    assert_eq!(reply.json()["error"]["code"], json!(-32800), "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the request ran to its end: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn replicas_share_sessions_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = support::tls::private_ca_and_server_certificate(dir.path());
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = RedisServer::start_args(
        false,
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-auth-clients",
            "no",
        ],
    )
    .await;
    let url = format!("rediss://127.0.0.1:{tls_port}");
    // The server's certificate is trusted the way an operator trusts a private CA.
    let tls_replica = || {
        Gateway::builder()
            .server(&format!("hmac_key = {}", toml_str(HMAC_KEY)))
            .toml(&format!(
                "[session]\nstore = \"redis\"\n[redis]\nurl = {}",
                toml_str(&url)
            ))
            .env("SSL_CERT_FILE", &ca)
    };
    let (a, b) = (tls_replica().start().await, tls_replica().start().await);
    let session = a.initialize().await;
    b.assert_echo(&session, "over rediss://").await;
    let mut client = redis.client().await;
    let stored: bool = redis::cmd("EXISTS")
        .arg(format!("mcpgate:{{{}}}:s", session.id))
        .query_async(&mut client)
        .await
        .unwrap();
    assert!(stored, "the session was not stored in the TLS-served Redis");
}

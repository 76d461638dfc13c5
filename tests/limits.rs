//! `[limits]` (issue 7, part 5) with real redis-servers and real replicas: the request rate of a
//! principal holds across three replicas; its session cap holds across replicas and frees a
//! slot on DELETE and on expiry; requests in flight and GET streams per session answer 429
//! with the documented body; a Redis that refuses writes does not turn the rate check into
//! 503. With `server.auth.mode = "none"` every caller is the same anonymous principal, so that
//! another principal is unaffected is shown on the limiters themselves, against a real
//! redis-server, with principal keys derived as the gateway derives them (end-to-end, once
//! API keys land).

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::redis::RedisServer;
use crate::support::{BATCH_VERSION, Gateway, GatewayBuilder, LATEST, Reply, Session, SseReader};
use mcpgate::auth::Principal;
use mcpgate::config::RedisConfig;
use mcpgate::dispatch::IdSigner;
use mcpgate::limits::{
    Admission, PrincipalKey, Rate, RateLimiter, RedisRateLimiter, RedisSessionQuota, SessionQuota,
};
use mcpgate::redis::RedisPool;
use mcpgate::session::SessionId;
use mcpgate::telemetry::Metrics;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The fleet key every replica of `RedisServer::replica` shares.
const HMAC_KEY: &str = "fleet-test-key-0123456789abcdefghijklmnopqrstuvwxyz";
/// JSON-RPC code of every limit refusal.
const LIMITED: i64 = -32000;
const WAIT: Duration = Duration::from_secs(10);

/// A replica sharing `redis`, its sessions expiring after `idle_ttl`, with `limits` (TOML
/// lines) under `[limits]`.
fn replica(redis: &RedisServer, idle_ttl: &str, limits: &str) -> GatewayBuilder {
    redis
        .replica(idle_ttl)
        .without_local()
        .toml(&format!("[limits]\n{limits}"))
}

/// The anonymous principal's key, as every test replica derives it.
fn anonymous_key() -> PrincipalKey {
    key_of(&Principal::anonymous())
}

fn key_of(principal: &Principal) -> PrincipalKey {
    PrincipalKey::from_tag(IdSigner::new(HMAC_KEY.as_bytes()).owner_tag(principal))
}

fn sessions_key(principal: &PrincipalKey) -> String {
    format!("mcpgate:p:{{{}}}:s", principal.as_str())
}

/// The session ids counted for `principal`, in Redis.
async fn counted(redis: &RedisServer, principal: &PrincipalKey) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(sessions_key(principal))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis.client().await)
        .await
        .expect("ZRANGE")
}

fn initialize_body(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": "limits-test", "version": "0"}}})
}

/// `initialize` that is expected to be refused for the session cap.
async fn assert_initialize_refused(gw: &Gateway, cap: u32) {
    let reply = gw.post_json(None, &initialize_body(LATEST)).await;
    let body = reply.assert_error(
        429,
        LIMITED,
        &[&format!("at most {cap} sessions"), "delete"],
    );
    assert_eq!(body["id"], json!(1), "{reply:?}");
    assert_eq!(reply.header("retry-after"), None, "{reply:?}");
    assert_eq!(reply.header("mcp-session-id"), None, "{reply:?}");
}

/// GET /mcp on `session`, resuming after `last_event_id` when given.
async fn open_get(
    gw: &Gateway,
    session: &Session,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    match last_event_id {
        Some(id) => gw.get(Some(session), &[("last-event-id", id)]).await,
        None => gw.get(Some(session), &[]).await,
    }
}

fn slow_call(id: i64, ms: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "local__slow", "arguments": {"ms": ms}}})
}

fn echo_call(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "local__echo", "arguments": {"text": "hi"}}})
}

/// Sends pings on `session` to `gw` until `until`; returns (admitted, refused).
async fn hammer(gw: &Gateway, session: &Session, until: Instant) -> (u32, u32) {
    let (mut admitted, mut refused) = (0, 0);
    while Instant::now() < until {
        let reply = gw.request(session, "ping", json!({})).await;
        match reply.status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_rate_refusal(&reply);
                refused += 1;
            }
            _ => panic!("neither admitted nor limited: {reply:?}"),
        }
    }
    (admitted, refused)
}

fn assert_rate_refusal(reply: &Reply) {
    let body = reply.assert_error(429, LIMITED, &["20 requests per second", "bursts of 10"]);
    assert!(
        body["id"].is_i64(),
        "the refusal answers the request: {reply:?}"
    );
    let retry: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in whole seconds: {reply:?}"));
    assert_eq!(retry, 1, "20/s refills within a second: {reply:?}");
}

#[tokio::test]
async fn the_request_rate_of_a_principal_holds_across_three_replicas() {
    const PER_SECOND: f64 = 20.0;
    const BURST: f64 = 10.0;
    const WINDOW: Duration = Duration::from_secs(3);
    let redis = RedisServer::start().await;
    let limits = "requests_per_second = 20\nburst = 10";
    let fleet = [
        replica(&redis, "1h", limits).start().await,
        replica(&redis, "1h", limits).start().await,
        replica(&redis, "1h", limits).start().await,
    ];
    let session = fleet[0].initialize().await;
    // Let the two requests of the handshake refill: the window starts with a full burst.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let until = started + WINDOW;
    let clients = fleet
        .iter()
        .flat_map(|gw| [gw, gw])
        .map(|gw| hammer(gw, &session, until));
    let results = futures::future::join_all(clients).await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted: u32 = results.iter().map(|(a, _)| a).sum();
    let refused: u32 = results.iter().map(|(_, r)| r).sum();
    let expected = BURST + PER_SECOND * elapsed;
    let sustained = (f64::from(admitted) - BURST) / elapsed;
    println!(
        "rate across 3 replicas: {admitted} admitted, {refused} refused in {elapsed:.2} s; \
         expected {expected:.1} (burst {BURST} + {PER_SECOND}/s); sustained {sustained:.2}/s"
    );
    assert!(
        refused > admitted,
        "the clients did not push past the limit"
    );
    let tolerance = 0.1 * expected + 2.0;
    assert!(
        (f64::from(admitted) - expected).abs() <= tolerance,
        "admitted {admitted}, expected {expected:.1} ± {tolerance:.1}"
    );
    let mut limited = 0.0;
    for gw in &fleet {
        limited += gw.metric("mcpgate_limited_total{limit=\"requests\"}").await;
    }
    assert_eq!(limited, f64::from(refused));
}

#[tokio::test]
async fn the_session_cap_holds_across_replicas_and_delete_frees_a_slot() {
    let redis = RedisServer::start().await;
    let limits = "sessions_per_principal = 3";
    let fleet = [
        replica(&redis, "1h", limits).start().await,
        replica(&redis, "1h", limits).start().await,
        replica(&redis, "1h", limits).start().await,
    ];
    let mut sessions = Vec::new();
    for gw in &fleet {
        sessions.push(gw.initialize().await);
    }
    for gw in &fleet {
        assert_initialize_refused(gw, 3).await;
    }
    let deleted = sessions.remove(0);
    assert_eq!(
        fleet[1].delete(Some(&deleted), &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let replacement = fleet[2].initialize().await;
    assert_initialize_refused(&fleet[0], 3).await;
    sessions.push(replacement);
    let mut expected: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    let mut stored = counted(&redis, &anonymous_key()).await;
    expected.sort();
    stored.sort();
    assert_eq!(
        stored, expected,
        "the count holds exactly the live sessions"
    );
    let mut limited = 0.0;
    for gw in &fleet {
        limited += gw.metric("mcpgate_limited_total{limit=\"sessions\"}").await;
    }
    assert_eq!(limited, 4.0);
}

#[tokio::test]
async fn an_expired_session_frees_its_slot_when_noticed_or_at_its_deadline() {
    let redis = RedisServer::start().await;
    let limits = "sessions_per_principal = 2";
    let (a, b) = (
        replica(&redis, "1s", limits).start().await,
        replica(&redis, "1s", limits).start().await,
    );
    let (noticed, unnoticed) = (a.initialize().await, b.initialize().await);
    assert_initialize_refused(&a, 2).await;
    // Move the first slot's deadline far out, so that only noticing the expiry can free it.
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(sessions_key(&anonymous_key()))
        .arg("XX")
        .arg(u64::MAX / 4)
        .arg(&noticed.id)
        .cmd("PEXPIRE")
        .arg(sessions_key(&anonymous_key()))
        .arg(60_000)
        .query_async(&mut redis.client().await)
        .await
        .expect("ZADD");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut both = counted(&redis, &anonymous_key()).await;
    both.sort();
    let mut expected = vec![noticed.id.clone(), unnoticed.id.clone()];
    expected.sort();
    assert_eq!(both, expected, "nothing noticed the expiries yet");

    // A client coming back notices the expiry: its slot is freed at once.
    let reply = b.request(&noticed, "ping", json!({})).await;
    reply.assert_error(404, support::SESSION_NOT_FOUND, &["session not found"]);
    let deadline = Instant::now() + WAIT;
    while counted(&redis, &anonymous_key())
        .await
        .contains(&noticed.id)
    {
        assert!(
            Instant::now() < deadline,
            "the noticed expiry kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other slot is past its deadline: the next initialize drops it.
    let first = a.initialize().await;
    assert_eq!(counted(&redis, &anonymous_key()).await, vec![first.id]);
    b.initialize().await;
    assert_initialize_refused(&b, 2).await;
}

#[tokio::test]
async fn requests_in_flight_per_session_are_capped_with_an_entry_per_refused_batch_member() {
    let gw = Gateway::builder()
        .toml("[limits]\nconcurrent_requests_per_session = 2")
        .start()
        .await;
    let session = gw.initialize().await;
    let (one, two) = (slow_call(1, 1000), slow_call(2, 1000));
    let slow = async {
        tokio::join!(
            gw.post_json(Some(&session), &one),
            gw.post_json(Some(&session), &two)
        )
    };
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.post_json(Some(&session), &echo_call(3)).await
    };
    let ((first, second), refused) = tokio::join!(slow, meanwhile);
    let body = refused.assert_error(429, LIMITED, &["at most 2 requests in flight"]);
    assert_eq!(body["id"], json!(3), "{refused:?}");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    for reply in [first, second] {
        assert_eq!(reply.json()["result"]["content"][0]["text"], json!("done"));
    }
    gw.assert_echo(&session, "the requests in flight were answered")
        .await;

    let old = gw.initialize_with(BATCH_VERSION, json!({})).await;
    let batch = json!([
        slow_call(1, 300),
        slow_call(2, 300),
        echo_call(3),
        echo_call(4)
    ]);
    let reply = gw.post_json(Some(&old), &batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let entries = reply.json();
    let by_id = |id: i64| {
        entries
            .as_array()
            .and_then(|all| all.iter().find(|e| e["id"] == json!(id)))
            .unwrap_or_else(|| panic!("no entry for {id}: {reply:?}"))
            .clone()
    };
    for id in [1, 2] {
        assert_eq!(by_id(id)["result"]["content"][0]["text"], json!("done"));
    }
    for id in [3, 4] {
        let error = &by_id(id)["error"];
        assert_eq!(error["code"], json!(LIMITED), "{reply:?}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("at most 2 requests in flight")),
            "{reply:?}"
        );
    }
    let limited = "mcpgate_limited_total{limit=\"concurrent_requests\"}";
    assert_eq!(gw.metric(limited).await, 3.0);
}

#[tokio::test]
async fn get_streams_per_session_are_capped_but_a_standalone_takeover_is_not() {
    let gw = Gateway::builder()
        .toml("[limits]\nstreams_per_session = 2")
        .start()
        .await;
    let session = gw.initialize().await;
    let mut standalone = SseReader::new(open_get(&gw, &session, None).await);
    standalone.next_event(WAIT).await.expect("no priming event");
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "local__slow", "arguments": {"ms": 1000}, "_meta": {"progressToken": "p"}}});
    let mut posted = SseReader::new(gw.post_stream(Some(&session), &call).await);
    let first = posted.next_event(WAIT).await.expect("no priming event");
    let resume_at = first.id.expect("the priming event has an id");
    let mut resumed = SseReader::new(open_get(&gw, &session, Some(&resume_at)).await);

    let refused = Reply::read(open_get(&gw, &session, Some(&resume_at)).await).await;
    let body = refused.assert_error(429, LIMITED, &["at most 2 streams open with get"]);
    assert_eq!(body["id"], Value::Null, "{refused:?}");
    assert_eq!(refused.header("retry-after"), None, "{refused:?}");

    let _takeover = SseReader::new(open_get(&gw, &session, None).await);
    standalone.until_end(WAIT).await;
    for stream in [&mut posted, &mut resumed] {
        let events = stream.until_end(WAIT).await;
        assert!(
            events
                .iter()
                .any(|e| e.data.as_deref().is_some_and(|d| d.contains("done"))),
            "{events:#?}"
        );
    }
    // The streams that ended gave their places back: only the takeover is open.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let replay = open_get(&gw, &session, Some(&resume_at)).await;
        if replay.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "ended streams kept their places");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.metric("mcpgate_limited_total{limit=\"streams\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_redis_refusing_writes_admits_requests_unchecked_rather_than_503() {
    let redis = RedisServer::start().await;
    let gw = replica(&redis, "1h", "requests_per_second = 1000")
        .start()
        .await;
    let session = gw.initialize().await;
    redis.fill_past_maxmemory().await;
    for _ in 0..3 {
        let reply = gw.request(&session, "ping", json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
    let unchecked = "mcpgate_limits_unchecked_total{limit=\"requests\"}";
    assert_eq!(gw.metric(unchecked).await, 3.0);
    assert!(gw.log().contains("limit not checked"), "{}", gw.log());
}

// ------------------------------------------------ the limiters against a real redis-server

fn pool(redis: &RedisServer) -> RedisPool {
    let config = RedisConfig {
        url: redis.url(),
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    RedisPool::new(&config, Arc::new(Metrics::new().expect("metrics"))).expect("pool")
}

/// Every key in the server, with its TTL in ms.
async fn keys_with_ttl(redis: &RedisServer) -> Vec<(String, i64)> {
    let mut client = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut client)
        .await
        .expect("KEYS");
    let mut with_ttl = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut client)
            .await
            .expect("PTTL");
        with_ttl.push((key, ttl));
    }
    with_ttl
}

#[tokio::test]
async fn one_principals_rate_leaves_another_unaffected_and_its_keys_expire() {
    let redis = RedisServer::start().await;
    let limiter = RedisRateLimiter::new(pool(&redis), Rate::new(5, 5));
    let alice = key_of(&Principal::new("alice@example.com", Some("red".into())));
    let bob = key_of(&Principal::new("bob@example.com", Some("red".into())));
    for _ in 0..5 {
        assert_eq!(limiter.acquire(&alice).await.unwrap(), Admission::Admitted);
    }
    let Admission::RetryAfter(wait) = limiter.acquire(&alice).await.unwrap() else {
        panic!("alice's burst is 5");
    };
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(200),
        "{wait:?}"
    );
    for _ in 0..5 {
        assert_eq!(limiter.acquire(&bob).await.unwrap(), Admission::Admitted);
    }
    tokio::time::sleep(wait).await;
    assert_eq!(limiter.acquire(&alice).await.unwrap(), Admission::Admitted);
    let keys = keys_with_ttl(&redis).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (key, ttl) in keys {
        assert!(!key.contains("alice") && !key.contains("example"), "{key}");
        assert!(
            ttl > 0 && ttl <= 1000,
            "{key} expires within the burst: {ttl}"
        );
    }
}

#[tokio::test]
async fn one_principals_session_cap_leaves_another_unaffected_and_its_keys_expire() {
    let redis = RedisServer::start().await;
    let quota = RedisSessionQuota::new(pool(&redis), 2);
    let hold = Duration::from_secs(60);
    let alice = key_of(&Principal::new("alice@example.com", None));
    let bob = key_of(&Principal::new("bob@example.com", None));
    let [a1, a2, a3, b1] = std::array::from_fn(|_| SessionId::generate());
    assert!(quota.admit(&alice, &a1, hold).await.unwrap());
    assert!(quota.admit(&alice, &a2, hold).await.unwrap());
    assert!(!quota.admit(&alice, &a3, hold).await.unwrap());
    assert!(quota.admit(&bob, &b1, hold).await.unwrap());
    quota.release(&alice, &a1).await.unwrap();
    assert!(quota.admit(&alice, &a3, hold).await.unwrap());
    quota.refresh(&alice, &a1, hold).await.unwrap();
    assert!(
        !counted(&redis, &alice).await.contains(&a1.to_string()),
        "a refresh never brings a freed slot back"
    );
    let keys = keys_with_ttl(&redis).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (key, ttl) in keys {
        assert!(!key.contains("alice") && !key.contains("bob"), "{key}");
        assert!(
            ttl > 50_000 && ttl <= 60_000,
            "{key} expires with its slots: {ttl}"
        );
    }
}

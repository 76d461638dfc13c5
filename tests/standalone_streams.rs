//! HTTP upstreams' standalone streams (issue 6, parts 1 and 2), with real replicas, a real
//! redis-server and the real fixture: a server-to-client request an upstream sends on its
//! standalone stream right after the client opened its own GET is never lost, on one replica
//! or across two; and numbered notifications an upstream sends while every replica is
//! replaced all reach the client exactly once, in order.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::redis::RedisServer;
use crate::support::{Fixture, Gateway, GatewayBuilder, Session, SseEvent, SseReader, toml_str};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ROUNDS: usize = 50;
/// Longest a round may take; the upstream timeout (10 s) is what a lost request would cost.
const ROUND_LIMIT: Duration = Duration::from_secs(5);

/// A replica sharing `redis`, with the HTTP upstream `remote` at `fixture`.
fn replica(redis: &RedisServer, fixture: &Fixture) -> GatewayBuilder {
    redis.replica("1h").without_local().toml(&format!(
        "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\ntimeout = \"10s\"",
        toml_str(&fixture.url)
    ))
}

fn is_sampling_request(event: &SseEvent) -> bool {
    event
        .data
        .as_deref()
        .is_some_and(|d| d.contains("\"sampling/createMessage\""))
}

/// One round with a new session: the client opens its GET stream on `listen` and at the same
/// moment calls the tool on `call`, then answers the sampling request that arrives on its GET
/// stream. The call must succeed with that answer, well before the upstream timeout.
async fn race_round(listen: &Gateway, call: &Gateway, round: usize) {
    let session = call
        .initialize_with(support::LATEST, json!({"sampling": {}}))
        .await;
    let started = Instant::now();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "remote__sample_on_standalone", "arguments": {"prompt": "hi"}}});
    let answering = async {
        let mut reader = SseReader::new(listen.get(Some(&session), &[]).await);
        let events = reader.until(ROUND_LIMIT, is_sampling_request).await;
        let request = events.last().expect("the sampling request").json();
        let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {
            "role": "assistant", "content": {"type": "text", "text": format!("round {round}")},
            "model": "test-model"}});
        let posted = listen.post(Some(&session), answer.to_string(), &[]).await;
        assert_eq!(
            posted.status,
            StatusCode::ACCEPTED,
            "round {round}: {posted:?}"
        );
        reader
    };
    let (reply, _reader) =
        tokio::join!(call.post(Some(&session), body.to_string(), &[]), answering);
    assert_eq!(reply.status, StatusCode::OK, "round {round}: {reply:?}");
    let text = reply.json()["result"]["content"][0]["text"].clone();
    assert_eq!(
        text,
        json!(format!("LLM response: round {round}")),
        "round {round}: {reply:?}"
    );
    assert!(
        started.elapsed() < ROUND_LIMIT,
        "round {round} took {:?}",
        started.elapsed()
    );
}

/// Part 2 on one replica: the upstream's standalone request is never lost to the order in
/// which the gateway's own upstream connections open.
#[tokio::test]
async fn a_standalone_request_sent_at_once_is_never_lost_on_one_replica() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gw = replica(&redis, &fixture).start().await;
    let started = Instant::now();
    for round in 0..ROUNDS {
        race_round(&gw, &gw, round).await;
    }
    println!("{ROUNDS} rounds on one replica in {:?}", started.elapsed());
}

/// Part 2 across replicas: GET on one, the call on another (as a round-robin balancer does).
#[tokio::test]
async fn a_standalone_request_sent_at_once_is_never_lost_across_replicas() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let a = replica(&redis, &fixture).start().await;
    let b = replica(&redis, &fixture).start().await;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let (listen, call) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        race_round(listen, call, round).await;
    }
    println!(
        "{ROUNDS} rounds across two replicas in {:?}",
        started.elapsed()
    );
}

/// The numbers `n` of the fixture's numbered log messages among `events`, in arrival order.
fn numbered(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e.data.as_deref())
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|m| m["method"] == "notifications/message")
        .filter_map(|m| m["params"]["data"]["n"].as_u64())
        .collect()
}

/// Stops a replica the way Kubernetes does (SIGTERM: it drains), and waits until it exited.
async fn terminate(replica: Gateway) {
    let pid = replica.pid();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"));
        if zombie {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(replica);
}

/// Part 1: an upstream's notifications, sent while the replica holding its stream is replaced
/// and the client's GET stream is down, all reach the client once, in order, on the new
/// replica, which resumes the upstream's stream after the last event relayed.
#[tokio::test]
async fn upstream_notifications_survive_replacing_the_replica() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let first = replica(&redis, &fixture).start().await;
    let session = first.initialize().await;
    let mut reader = SseReader::new(first.get(Some(&session), &[]).await);
    let call = |count: u64, delay: u64| json!({"name": "remote__notify_later", "arguments": {"count": count, "delay_ms": delay}});
    first.request(&session, "tools/call", call(3, 0)).await;
    let before = reader
        .until(Duration::from_secs(5), |e| {
            numbered(std::slice::from_ref(e)) == [3]
        })
        .await;
    assert_eq!(numbered(&before), [1, 2, 3]);
    let last_seen = before.last().and_then(|e| e.id.clone()).expect("event id");

    first.request(&session, "tools/call", call(10, 1500)).await;
    drop(reader);
    terminate(first).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let second = replica(&redis, &fixture).start().await;
    let resumed = second
        .get(Some(&session), &[("last-event-id", &last_seen)])
        .await;
    let mut reader = SseReader::new(resumed);
    let after = reader
        .until(Duration::from_secs(10), |e| {
            numbered(std::slice::from_ref(e)) == [10]
        })
        .await;
    let numbers = numbered(&after);
    println!("after every replica was replaced the client got {numbers:?}");
    assert_eq!(numbers, (1..=10).collect::<Vec<_>>());
    let echo = second
        .call_tool(&session, "remote__echo", json!({"text": "still here"}))
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "still here");
}

/// Part 1, Redis outage: the client's GET stream stays open while Redis is down, and the
/// notifications the upstream sends meanwhile (which cannot be logged then) reach it once
/// Redis is back: the holder reopens the upstream stream after the last event it logged.
#[tokio::test]
async fn upstream_notifications_survive_a_redis_restart() {
    let mut redis = RedisServer::start_persistent().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gw = replica(&redis, &fixture).start().await;
    let session = gw.initialize().await;
    let mut reader = SseReader::new(gw.get(Some(&session), &[]).await);
    let call = |count: u64, delay: u64| json!({"name": "remote__notify_later", "arguments": {"count": count, "delay_ms": delay}});
    gw.request(&session, "tools/call", call(3, 0)).await;
    let before = reader
        .until(Duration::from_secs(5), |e| {
            numbered(std::slice::from_ref(e)) == [3]
        })
        .await;
    assert_eq!(numbered(&before), [1, 2, 3]);

    gw.request(&session, "tools/call", call(8, 500)).await;
    redis.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart().await;
    let after = reader
        .until(Duration::from_secs(15), |e| {
            numbered(std::slice::from_ref(e)) == [8]
        })
        .await;
    let numbers = numbered(&after);
    println!("across a Redis restart the client got {numbers:?} on the same GET stream");
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
}

/// Starts `tool` (a `slow` call asking for progress) as request `id` on `first`, reads the
/// stream up to the progress event, then kills `first` (SIGKILL) and resumes the stream on
/// `second`. Returns the resumed stream's events up to the response to `id`, and how long that
/// took from the kill.
async fn kill_mid_call_and_resume(
    first: Gateway,
    second: &Gateway,
    session: &Session,
    (id, tool, ms): (u64, &str, u64),
    wait: Duration,
) -> (Value, Duration) {
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": tool, "arguments": {"ms": ms}, "_meta": {"progressToken": "p"}}});
    let mut reader = SseReader::new(first.post_stream(Some(session), &call).await);
    let progress = reader
        .until(Duration::from_secs(5), |e| {
            e.data
                .as_deref()
                .is_some_and(|d| d.contains("notifications/progress"))
        })
        .await;
    let last_seen = progress
        .last()
        .and_then(|e| e.id.clone())
        .expect("event id");
    drop(reader);
    drop(first);
    let killed = Instant::now();

    let resumed = second
        .get(Some(session), &[("last-event-id", &last_seen)])
        .await;
    let mut reader = SseReader::new(resumed);
    let answer = format!("\"id\":{id}");
    let events = reader
        .until(wait, |e| {
            e.data.as_deref().is_some_and(|d| d.contains(&answer))
        })
        .await;
    let response = events.last().expect("the response").json();
    reader.until_end(Duration::from_secs(5)).await;
    assert!(reader.ended, "the stream ends after the response");
    (response, killed.elapsed())
}

/// Part 1, a call in flight: the replica relaying a call's response stream is killed; the
/// client resumes the stream on another replica, which (once the dead writer's lease ran out,
/// 6 s) resumes the upstream's response stream after the last event logged and relays the
/// answer. The call lasts 12 s: rmcp resumes a response stream only while its call runs.
#[tokio::test]
async fn a_call_in_flight_is_finished_by_another_replica() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let a = replica(&redis, &fixture).start().await;
    let b = replica(&redis, &fixture).start().await;
    let session = a.initialize().await;
    let call = (42, "remote__slow", 12_000);
    let (response, took) =
        kill_mid_call_and_resume(a, &b, &session, call, Duration::from_secs(20)).await;
    println!("the call's response reached the client {took:?} after its replica was killed");
    assert_eq!(
        response["result"]["content"][0]["text"], "done",
        "{response}"
    );
}

/// The other side of part 1: a call whose upstream cannot be resumed (a stdio child dies with
/// its replica) is answered with an error by the replica the client resumes on, instead of
/// leaving the client waiting forever.
#[tokio::test]
async fn a_call_that_cannot_be_resumed_fails_instead_of_hanging() {
    let redis = RedisServer::start().await;
    let a = redis.replica("1h").start().await;
    let b = redis.replica("1h").start().await;
    let session = a.initialize().await;
    let call = (43, "local__slow", 30_000);
    let (response, took) =
        kill_mid_call_and_resume(a, &b, &session, call, Duration::from_secs(15)).await;
    println!("the call failed {took:?} after its replica was killed");
    assert_eq!(response["error"]["code"], -32603, "{response}");
}

/// A replica holds at most `server.max_held_streams` upstream streams: the session beyond it
/// is served without one (and counted), and a place freed by a session's end is taken again.
#[tokio::test]
async fn a_replica_holds_at_most_max_held_streams() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gateway = Gateway::builder()
        .server("max_held_streams = 2")
        .remote_at(&fixture)
        .start()
        .await;
    let held = "mcpgate_upstream_streams_held ";
    let refused = "mcpgate_upstream_streams_hold_refused_total{upstream=\"remote\"}";
    let mut sessions = Vec::new();
    for n in 0..3 {
        let session = gateway.initialize().await;
        gateway
            .assert_remote_echo(&session, &format!("session {n}"))
            .await;
        sessions.push(session);
    }
    assert_eq!(gateway.metric(held).await, 2.0);
    assert_eq!(gateway.metric(refused).await, 1.0);

    let reply = gateway.delete(Some(&sessions[0]), &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let limit = Duration::from_secs(5);
    assert_eq!(gateway.metric_reaching(held, 1.0, limit).await, 1.0);
    let fourth = gateway.initialize().await;
    gateway.assert_remote_echo(&fourth, "fourth").await;
    assert_eq!(gateway.metric(held).await, 2.0);
    assert_eq!(
        gateway.metric(refused).await,
        1.0,
        "the freed place was taken"
    );
}

/// A stream the replica already holds is not refused again at the bound: a GET stream's
/// keep-alive (or a revival) asks for the session's streams again without counting.
#[tokio::test]
async fn a_held_stream_asked_for_again_at_the_bound_is_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gateway = Gateway::builder()
        .server("max_held_streams = 1")
        .remote_at(&fixture)
        .start()
        .await;
    let session = gateway.initialize().await;
    gateway.assert_remote_echo(&session, "held").await;
    let refused = "mcpgate_upstream_streams_hold_refused_total{upstream=\"remote\"}";

    let stream = gateway.get(Some(&session), &[]).await;

    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(gateway.metric("mcpgate_upstream_streams_held ").await, 1.0);
    assert_eq!(gateway.metric(refused).await, 0.0);
}

//! What a client sees when things go wrong or take time (DESIGN.md §4, §6): upstream timeouts,
//! cancellation, DELETE during work, idle expiry, resuming a POST stream after a disconnect,
//! and each server message travelling on exactly one stream.

use std::time::{Duration, Instant};

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn slow_call(id: i64, ms: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "local__slow", "arguments": {"ms": ms}}})
}

#[tokio::test]
async fn an_upstream_timeout_is_a_json_rpc_error_naming_it_and_the_session_survives() {
    let gw = Gateway::builder()
        .local("timeout = \"500ms\"")
        .start()
        .await;
    let session = gw.initialize().await;
    let started = Instant::now();
    let reply = gw.post_json(Some(&session), &slow_call(1, 5000)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the timeout did not cut the call: {:?}",
        started.elapsed()
    );
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let answer = reply.json();
    assert_eq!(answer["id"], json!(1), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("local"),
        "the error must name the upstream: {answer}"
    );
    gw.assert_echo(&session, "an upstream timeout").await;
    // The id is free again.
    let reply = gw.post_json(Some(&session), &slow_call(1, 10)).await;
    assert_eq!(
        reply.json()["result"]["content"][0]["text"],
        json!("done"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_cancelled_request_ends_its_post_promptly_and_frees_the_id() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let body = slow_call(2, 8000);
    let slow = gw.post_json(Some(&session), &body);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2, "reason": "user"}});
        gw.post_json(Some(&session), &note).await
    };
    let started = Instant::now();
    let (slow, cancel) = tokio::join!(slow, cancel);
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{cancel:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the cancelled POST lingered for {:?}",
        started.elapsed()
    );
    // The POST still needs an answer; it is an error, never the tool's result.
    assert_eq!(slow.status, StatusCode::OK, "{slow:?}");
    assert_eq!(slow.json()["error"]["code"], json!(-32800), "{slow:?}");
    assert!(
        !slow.text().contains("\"done\""),
        "a cancelled request still got its result: {slow:?}"
    );
    let reply = gw.post_json(Some(&session), &slow_call(2, 10)).await;
    assert_eq!(
        reply.json()["result"]["content"][0]["text"],
        json!("done"),
        "id 2 must be free again: {reply:?}"
    );
}

#[tokio::test]
async fn delete_ends_requests_in_flight_promptly() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let body = slow_call(3, 8000);
    let slow = gw.post_json(Some(&session), &body);
    let delete = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.delete(Some(&session), &[]).await
    };
    let started = Instant::now();
    let (slow, delete) = tokio::join!(slow, delete);
    assert_eq!(delete.status, StatusCode::NO_CONTENT, "{delete:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a request of a deleted session ran on for {:?}",
        started.elapsed()
    );
    assert!(
        !slow.text().contains("\"done\""),
        "a request of a deleted session completed: {slow:?}"
    );
}

#[tokio::test]
async fn idle_sessions_expire_to_404_while_used_ones_live_on() {
    let gw = Gateway::builder()
        .toml("[session]\nidle_ttl = \"1s\"\nmax_lifetime = \"1h\"")
        .start()
        .await;
    let idle = gw.initialize().await;
    let busy = gw.initialize().await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reply = gw
            .post_json(
                Some(&busy),
                &json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "a session in use expired: {reply:?}"
        );
    }
    // 1.8 s without a request: the idle session is gone.
    let reply = gw
        .post_json(
            Some(&idle),
            &json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        )
        .await;
    reply.assert_error(404, SESSION_NOT_FOUND, &["session"]);
    let metrics = gw.admin("/metrics").await.text();
    assert!(
        metrics.contains("mcpgate_sessions_expired_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpgate_session_lookups_total{outcome=\"expired\"} 1"),
        "{metrics}"
    );
    gw.assert_echo(&busy, "another session's expiry").await;
}

#[tokio::test]
async fn a_post_stream_resumed_after_a_disconnect_delivers_the_answer() {
    let gw = Gateway::start().await;
    let session = gw.initialize_with(LATEST, json!({"elicitation": {}})).await;
    let call = json!({"jsonrpc": "2.0", "id": 70, "method": "tools/call",
        "params": {"name": "local__test_elicitation", "arguments": {"message": "name?"}}});
    let mut stream = SseReader::new(gw.post_stream(Some(&session), &call).await);
    let events = stream
        .until(WAIT, |e| {
            e.data
                .as_deref()
                .is_some_and(|d| d.contains("elicitation/create"))
        })
        .await;
    let last_seen = events.last().unwrap().clone();
    let request = last_seen.json();
    drop(stream); // the client's connection drops

    let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"action": "decline"}});
    let reply = gw.post_json(Some(&session), &answer).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");

    let last_id = last_seen.id.clone().expect("event id");
    let mut resumed = SseReader::new(gw.get(Some(&session), &[("last-event-id", &last_id)]).await);
    let events = resumed.until_end(WAIT).await;
    let messages: Vec<Value> = events
        .iter()
        .filter(|e| e.data.as_deref().is_some_and(|d| !d.is_empty()))
        .map(SseEvent::json)
        .collect();
    assert!(
        messages
            .iter()
            .all(|m| m.get("method") != Some(&json!("elicitation/create"))),
        "events up to Last-Event-ID must not be replayed: {messages:#?}"
    );
    let response = messages
        .iter()
        .find(|m| m["id"] == json!(70))
        .unwrap_or_else(|| panic!("no answer after resuming: {events:#?}"));
    let text = response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("decline"), "{response}");
}

/// Subscribes `session` to the fixture's resource that changes every two seconds.
async fn subscribe_watched(gw: &Gateway, session: &Session) {
    let reply = gw.request(session, "resources/list", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let reply = gw
        .request(
            session,
            "resources/subscribe",
            json!({"uri": "test://watched-resource"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(reply.json().get("result").is_some(), "{reply:?}");
}

fn is_update(event: &SseEvent) -> bool {
    event
        .data
        .as_deref()
        .is_some_and(|d| d.contains("notifications/resources/updated"))
}

#[tokio::test]
async fn each_unsolicited_message_goes_to_exactly_one_get_stream() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let bystander = gw.initialize().await;
    let mut first = SseReader::new(gw.get(Some(&session), &[]).await);
    first.next_event(WAIT).await.expect("priming event");
    let mut second = SseReader::new(gw.get(Some(&session), &[]).await);
    second.next_event(WAIT).await.expect("priming event");
    let mut other = SseReader::new(gw.get(Some(&bystander), &[]).await);
    other.next_event(WAIT).await.expect("priming event");
    subscribe_watched(&gw, &session).await;

    // The fixture announces a change every 2 s; collect for one and a half periods.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3000);
    let (mut on_first, mut on_second, mut on_other) = (Vec::new(), Vec::new(), Vec::new());
    while tokio::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::select! {
            Some(e) = first.next_event(left) => if is_update(&e) { on_first.push(e) },
            Some(e) = second.next_event(left) => if is_update(&e) { on_second.push(e) },
            Some(e) = other.next_event(left) => if is_update(&e) { on_other.push(e) },
            () = tokio::time::sleep(left) => {}
        }
    }
    assert!(
        on_other.is_empty(),
        "an unsubscribed session got the update: {on_other:#?}"
    );
    let delivered: Vec<&Option<String>> =
        on_first.iter().chain(&on_second).map(|e| &e.id).collect();
    assert!(!delivered.is_empty(), "the update reached no stream");
    let mut unique = delivered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "the same message went out on two GET streams of one session: first {on_first:#?} second {on_second:#?}"
    );
}

#[tokio::test]
async fn unsolicited_messages_wait_for_the_next_get() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    subscribe_watched(&gw, &session).await;
    // No GET stream is open when the first change (2 s period) is announced.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut stream = SseReader::new(gw.get(Some(&session), &[]).await);
    let priming = stream.next_event(WAIT).await.expect("priming event");
    assert_eq!(priming.data.as_deref(), Some(""), "{priming:?}");
    let update = stream.next_event(Duration::from_millis(1000)).await;
    let update =
        update.unwrap_or_else(|| panic!("the queued update was not delivered on the next GET"));
    assert!(is_update(&update), "{update:?}");
    assert_eq!(update.id_parts().0, "get", "{update:?}");
}

#[tokio::test]
async fn sigterm_drains_open_streams_end_with_retry_and_requests_in_flight_finish() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let mut standalone = SseReader::new(gw.get(Some(&session), &[]).await);
    standalone
        .next_event(Duration::from_secs(5))
        .await
        .expect("no priming event");

    let call = slow_call(3, 1500);
    let slow = gw.post_json(Some(&session), &call);
    let terminate = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &gw.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::sleep(Duration::from_millis(300)).await;
        (
            gw.admin("/readyz").await.status,
            gw.admin("/metrics").await.text(),
        )
    };
    let (reply, (readiness, metrics)) = tokio::join!(slow, terminate);
    assert_eq!(
        readiness,
        StatusCode::SERVICE_UNAVAILABLE,
        "a draining replica must not be ready"
    );
    assert!(metrics.contains("mcpgate_ready 0"), "{metrics}");
    assert_eq!(
        reply.json()["result"]["content"][0]["text"],
        json!("done"),
        "{reply:?}"
    );

    let rest = standalone.until_end(Duration::from_secs(5)).await;
    assert!(
        standalone.ended,
        "the GET stream stayed open while draining"
    );
    let last = rest.last().expect("the stream ended without a resume hint");
    assert!(
        last.retry.is_some() && last.id.is_some(),
        "no id/retry before the end: {rest:?}"
    );
}

/// `server.drain_grace` bounds the drain: a call still running when it is spent does not keep
/// the process alive.
#[tokio::test]
async fn sigterm_stops_within_the_drain_grace() {
    let gw = Gateway::builder()
        .server("drain_grace = \"1s\"")
        .start()
        .await;
    let session = gw.initialize().await;
    let headers = gw.headers(
        Some(&session),
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ],
        &[],
    );
    // The call is cut off when the process stops: its outcome does not matter here.
    let slow = gw
        .http
        .post(&gw.mcp_url)
        .headers(headers)
        .body(slow_call(4, 20_000).to_string())
        .send();
    let terminate = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let signalled = std::time::Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &gw.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        while std::path::Path::new(&format!("/proc/{}/stat", gw.pid())).exists()
            && !is_zombie(gw.pid())
        {
            assert!(
                signalled.elapsed() < Duration::from_secs(10),
                "still running 10 s after SIGTERM with drain_grace = 1s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signalled.elapsed()
    };
    let (_, stopped_after) = tokio::join!(slow, terminate);
    println!("stopped {stopped_after:?} after SIGTERM (drain_grace = 1s)");
    assert!(
        stopped_after >= Duration::from_millis(900),
        "{stopped_after:?}"
    );
}

/// Whether `pid` exited and waits for its parent to reap it.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(") ")
                .next()
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

/// A SIGTERM sent the moment the gateway announces where it listens drains it to a clean exit:
/// the handler is installed before the announcement, not when a spawned task first runs (CI
/// once saw a SIGTERM end a replica with no drain at all, and its listen stream end without its
/// result).
#[tokio::test]
async fn a_sigterm_sent_as_soon_as_the_gateway_announces_itself_drains_it() {
    for round in 0..5 {
        let mut gw = Gateway::builder().start().await;
        gw.terminate();
        let status = gw.exit_status(Duration::from_secs(10)).await;
        let log = gw.log();
        assert!(status.success(), "round {round}: {status}\n{log}");
        assert!(log.contains("draining"), "round {round}: {log}");
    }
}

/// A SIGHUP sent the moment the gateway announces itself is a reload, not the default action
/// that would end the process.
#[tokio::test]
async fn a_sighup_sent_as_soon_as_the_gateway_announces_itself_does_not_end_it() {
    for round in 0..5 {
        let gw = Gateway::builder().start().await;
        gw.hang_up();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gw.log().contains("SIGHUP") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gw.initialize().await;
        let log = gw.log();
        assert!(log.contains("SIGHUP: reloading"), "round {round}: {log}");
        assert!(!is_zombie(gw.pid()), "round {round}: {log}");
    }
}

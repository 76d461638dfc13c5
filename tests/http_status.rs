//! Every status code of the `/mcp` endpoint (DESIGN.md §1, §6), each with its JSON-RPC error
//! body, plus the behaviour around them: SSE priming and resumption, batches, namespacing and
//! filters, a broken upstream, `check-config`, and the admin port.

use std::time::Duration;

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn ping(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
}

// ---------------------------------------------------------------- 406 / 415

#[tokio::test]
async fn post_without_both_accept_types_is_406() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    for accept in [
        "application/json",
        "text/event-stream",
        "text/html",
        "application/*",
    ] {
        let reply = gw
            .post(Some(&session), ping(1).to_string(), &[("accept", accept)])
            .await;
        reply.assert_error(
            406,
            INVALID_REQUEST,
            &["Accept", "application/json", "text/event-stream"],
        );
    }
    // No Accept at all (reqwest would add `*/*`, so by hand).
    let headers = [
        ("Content-Type", "application/json"),
        ("Mcp-Session-Id", session.id.as_str()),
    ];
    let reply = gw
        .raw("POST", &headers, ping(1).to_string().as_bytes())
        .await;
    reply.assert_error(406, INVALID_REQUEST, &["Accept"]);
    // The same request with a proper Accept works: the refusals were about Accept only.
    let reply = gw.post(Some(&session), ping(2).to_string(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    // Parameters and odd spacing are fine.
    let accept = "application/json;q=0.9 ,  text/event-stream;q=1";
    let reply = gw
        .post(Some(&session), ping(3).to_string(), &[("accept", accept)])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

#[tokio::test]
async fn initialize_without_both_accept_types_is_406_and_creates_no_session() {
    let gw = Gateway::start().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let reply = gw
        .post(None, body.to_string(), &[("accept", "application/json")])
        .await;
    reply.assert_error(406, INVALID_REQUEST, &["Accept"]);
    assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
}

#[tokio::test]
async fn get_without_event_stream_accept_is_406() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    for accept in ["application/json", "application/*", "text/html"] {
        let reply = gw.get_reply(Some(&session), &[("accept", accept)]).await;
        reply.assert_error(406, INVALID_REQUEST, &["Accept", "text/event-stream"]);
    }
    let headers = [("Mcp-Session-Id", session.id.as_str())];
    let reply = gw.raw("GET", &headers, b"").await;
    reply.assert_error(406, INVALID_REQUEST, &["Accept", "text/event-stream"]);
}

#[tokio::test]
async fn post_with_non_json_content_type_is_415() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json-seq",
        "",
    ] {
        let reply = gw
            .post(
                Some(&session),
                ping(1).to_string(),
                &[("content-type", content_type)],
            )
            .await;
        reply.assert_error(415, INVALID_REQUEST, &["Content-Type", "application/json"]);
    }
    let reply = gw
        .post(
            Some(&session),
            ping(2).to_string(),
            &[("content-type", "Application/JSON; charset=utf-8")],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a charset parameter must be accepted: {reply:?}"
    );
}

// ---------------------------------------------------------------- 413

/// A valid `ping` padded to at least `size` bytes.
fn padded_ping(size: usize) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "ping", "params": {"_meta": {"pad": "x".repeat(size)}}});
    body.to_string()
}

#[tokio::test]
async fn body_over_the_limit_is_413_with_content_length() {
    let gw = Gateway::builder()
        .server("max_body_bytes = 512")
        .start()
        .await;
    let session = gw.initialize().await;
    let reply = gw.post(Some(&session), padded_ping(2048), &[]).await;
    reply.assert_error(413, INVALID_REQUEST, &["512"]);
    // Just under the limit is fine.
    let small = padded_ping(200);
    assert!(small.len() < 512);
    let reply = gw.post(Some(&session), small, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    gw.assert_echo(&session, "a 413").await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_when_chunked() {
    let gw = Gateway::builder()
        .server("max_body_bytes = 512")
        .start()
        .await;
    let session = gw.initialize().await;
    let body = padded_ping(4096);
    let pieces: Vec<&[u8]> = body.as_bytes().chunks(300).collect();
    let headers = [
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
        ("Mcp-Session-Id", session.id.as_str()),
        ("MCP-Protocol-Version", LATEST),
        ("Transfer-Encoding", "chunked"),
    ];
    let reply = gw.raw("POST", &headers, &chunked(&pieces)).await;
    reply.assert_error(413, INVALID_REQUEST, &["512"]);
    // A small chunked body is read and answered normally.
    let small = ping(8).to_string();
    let pieces: Vec<&[u8]> = small.as_bytes().chunks(5).collect();
    let reply = gw.raw("POST", &headers, &chunked(&pieces)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["id"], json!(8), "{reply:?}");
    gw.assert_echo(&session, "a chunked 413").await;
}

#[tokio::test]
async fn content_length_lying_about_a_huge_body_is_413_before_reading() {
    let gw = Gateway::builder()
        .server("max_body_bytes = 512")
        .start()
        .await;
    let session = gw.initialize().await;
    let headers = [
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
        ("Mcp-Session-Id", session.id.as_str()),
        ("Content-Length", "1000000000"),
    ];
    // Only a few bytes follow: the gateway must answer from the declared length, not wait.
    let reply = gw.raw("POST", &headers, b"{").await;
    reply.assert_error(413, INVALID_REQUEST, &["512"]);
}

// ---------------------------------------------------------------- 403

#[tokio::test]
async fn foreign_origin_is_403_on_every_method() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    for origin in [
        "http://evil.example.com",
        "null",
        "http://localhost.evil.example.com",
        "https://127.0.0.1.evil.example.com",
    ] {
        let reply = gw
            .post(Some(&session), ping(1).to_string(), &[("origin", origin)])
            .await;
        reply.assert_error(403, INVALID_REQUEST, &["Origin"]);
        let reply = gw.get_reply(Some(&session), &[("origin", origin)]).await;
        reply.assert_error(403, INVALID_REQUEST, &["Origin"]);
        let reply = gw.delete(Some(&session), &[("origin", origin)]).await;
        reply.assert_error(403, INVALID_REQUEST, &["Origin"]);
    }
    // A refused DELETE did not end the session.
    gw.assert_echo(&session, "DELETEs from a foreign origin")
        .await;
}

#[tokio::test]
async fn initialize_from_a_foreign_origin_is_403() {
    let gw = Gateway::start().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let reply = gw
        .post(
            None,
            body.to_string(),
            &[("origin", "http://evil.example.com")],
        )
        .await;
    reply.assert_error(403, INVALID_REQUEST, &["Origin", "evil.example.com"]);
    assert!(reply.header("mcp-session-id").is_none());
}

#[tokio::test]
async fn foreign_host_on_a_loopback_listener_is_403() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    for host in [
        "evil.example.com",
        "evil.example.com:80",
        "localhost.evil.example.com",
    ] {
        let headers = [
            ("Host", host),
            ("Content-Type", "application/json"),
            ("Accept", ACCEPT_BOTH),
            ("Mcp-Session-Id", session.id.as_str()),
        ];
        let reply = gw
            .raw("POST", &headers, ping(1).to_string().as_bytes())
            .await;
        reply.assert_error(403, INVALID_REQUEST, &["Host"]);
    }
    // The same raw request with a loopback Host works (so it was the Host that was refused).
    for host in [
        gw.authority.clone(),
        "localhost".to_owned(),
        format!("localhost:{}", port(&gw)),
    ] {
        let headers = [
            ("Host", host.as_str()),
            ("Content-Type", "application/json"),
            ("Accept", ACCEPT_BOTH),
            ("Mcp-Session-Id", session.id.as_str()),
        ];
        let reply = gw
            .raw("POST", &headers, ping(2).to_string().as_bytes())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "Host {host}: {reply:?}");
    }
}

fn port(gw: &Gateway) -> &str {
    gw.authority
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or_default()
}

#[tokio::test]
async fn configured_hosts_are_allowed_and_others_are_not() {
    let gw = Gateway::builder()
        .server("allowed_hosts = [\"mcp.example.com\"]")
        .start()
        .await;
    let session = initialize_raw_host(&gw, "mcp.example.com").await;
    let headers = [
        ("Host", "mcp.example.com:443"),
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
        ("Mcp-Session-Id", session.as_str()),
    ];
    let reply = gw
        .raw("POST", &headers, ping(1).to_string().as_bytes())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let headers = [
        ("Host", "evil.example.com"),
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
    ];
    let reply = gw
        .raw("POST", &headers, ping(2).to_string().as_bytes())
        .await;
    reply.assert_error(403, INVALID_REQUEST, &["Host"]);
}

/// `initialize` sent with a given `Host`; returns the session id.
async fn initialize_raw_host(gw: &Gateway, host: &str) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let headers = [
        ("Host", host),
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
    ];
    let reply = gw.raw("POST", &headers, body.to_string().as_bytes()).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "initialize with Host {host}: {reply:?}"
    );
    reply.header("mcp-session-id").expect("no session id")
}

#[tokio::test]
async fn configured_and_localhost_origins_pass() {
    let gw = Gateway::builder()
        .server("allowed_origins = [\"https://app.example.com\"]")
        .start()
        .await;
    let session = gw.initialize().await;
    let origins = [
        "https://app.example.com",
        "http://localhost:3000",
        "http://localhost",
        "https://127.0.0.1:8443",
        "http://[::1]:5173",
    ];
    for origin in origins {
        let reply = gw
            .post(Some(&session), ping(1).to_string(), &[("origin", origin)])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "Origin {origin}: {reply:?}");
    }
    let reply = gw
        .post(
            Some(&session),
            ping(2).to_string(),
            &[("origin", "https://other.example.com")],
        )
        .await;
    reply.assert_error(403, INVALID_REQUEST, &["Origin", "other.example.com"]);
    let reply = gw
        .post(
            Some(&session),
            ping(3).to_string(),
            &[("origin", "http://app.example.com")],
        )
        .await;
    reply.assert_error(403, INVALID_REQUEST, &["Origin"]);
}

#[tokio::test]
async fn browsers_on_allowed_origins_get_cors_headers_and_preflights() {
    let gw = Gateway::builder()
        .server("allowed_origins = [\"https://app.example.com\"]")
        .start()
        .await;
    let preflight = gw
        .method(
            "OPTIONS",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type, mcp-session-id",
                ),
            ],
            "",
        )
        .await;
    assert_eq!(preflight.status, StatusCode::OK, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(allowed.contains("mcp-session-id"), "{preflight:?}");

    let session = gw.initialize().await;
    let reply = gw
        .post(
            Some(&session),
            ping(1).to_string(),
            &[("origin", "https://app.example.com")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        reply.header("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let exposed = reply
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(exposed.contains("mcp-session-id"), "{reply:?}");

    let refused = gw
        .post(
            Some(&session),
            ping(2).to_string(),
            &[("origin", "https://other.example.com")],
        )
        .await;
    refused.assert_error(403, INVALID_REQUEST, &["Origin"]);
    assert!(
        refused.header("access-control-allow-origin").is_none(),
        "{refused:?}"
    );
}

// ---------------------------------------------------------------- 400 / 404 session id

#[tokio::test]
async fn missing_session_id_is_400() {
    let gw = Gateway::start().await;
    let _session = gw.initialize().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let reply = gw
        .post(None, body.to_string(), &[("mcp-protocol-version", LATEST)])
        .await;
    reply.assert_error(400, INVALID_REQUEST, &["Mcp-Session-Id"]);
    let reply = gw.get_reply(None, &[]).await;
    reply.assert_error(400, INVALID_REQUEST, &["Mcp-Session-Id"]);
    let reply = gw.delete(None, &[]).await;
    reply.assert_error(400, INVALID_REQUEST, &["Mcp-Session-Id"]);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = gw.post(None, note.to_string(), &[]).await;
    reply.assert_error(400, INVALID_REQUEST, &["Mcp-Session-Id"]);
}

#[tokio::test]
async fn unknown_session_id_is_404_well_formed_or_not() {
    let gw = Gateway::start().await;
    let _session = gw.initialize().await;
    for session in [
        Session::unknown(),
        Session::malformed(),
        Session {
            id: "x".repeat(500),
            version: LATEST.into(),
        },
    ] {
        let reply = gw.post(Some(&session), ping(1).to_string(), &[]).await;
        reply.assert_error(404, SESSION_NOT_FOUND, &["session"]);
        let reply = gw.get_reply(Some(&session), &[]).await;
        reply.assert_error(404, SESSION_NOT_FOUND, &["session"]);
        let reply = gw.delete(Some(&session), &[]).await;
        reply.assert_error(404, SESSION_NOT_FOUND, &["session"]);
    }
}

// ---------------------------------------------------------------- MCP-Protocol-Version

#[tokio::test]
async fn unsupported_protocol_version_header_is_400() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    for version in ["1999-01-01", "2026-07-28", "garbage", "2025-11-25x"] {
        let overrides = [("mcp-protocol-version", version)];
        let reply = gw
            .post(Some(&session), ping(1).to_string(), &overrides)
            .await;
        reply.assert_error(
            400,
            INVALID_REQUEST,
            &["MCP-Protocol-Version", "2025-11-25"],
        );
        let reply = gw.get_reply(Some(&session), &overrides).await;
        reply.assert_error(400, INVALID_REQUEST, &["MCP-Protocol-Version"]);
        let reply = gw.delete(Some(&session), &overrides).await;
        reply.assert_error(400, INVALID_REQUEST, &["MCP-Protocol-Version"]);
    }
    gw.assert_echo(&session, "bad MCP-Protocol-Version headers")
        .await;
}

#[tokio::test]
async fn missing_protocol_version_header_is_accepted() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let reply = gw
        .post(
            Some(&session),
            ping(5).to_string(),
            &[("mcp-protocol-version", "")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"jsonrpc": "2.0", "id": 5, "result": {}})
    );
    let reply = gw
        .delete(Some(&session), &[("mcp-protocol-version", "")])
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
}

// ---------------------------------------------------------------- 202

#[tokio::test]
async fn notification_is_202_with_no_body() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    for note in [
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 424242}}),
        json!({"jsonrpc": "2.0", "method": "notifications/some_future_thing", "params": {}}),
    ] {
        let reply = gw.post_json(Some(&session), &note).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{note}: {reply:?}");
        assert!(reply.body.is_empty(), "202 with a body: {reply:?}");
    }
    gw.assert_echo(&session, "notifications").await;
}

#[tokio::test]
async fn response_to_a_server_request_is_202_and_reaches_the_upstream() {
    let gw = Gateway::start().await;
    let session = gw.initialize_with(LATEST, json!({"elicitation": {}})).await;
    let call = json!({"jsonrpc": "2.0", "id": 31, "method": "tools/call",
        "params": {"name": "local__test_elicitation", "arguments": {"message": "who are you?"}}});
    let mut stream = SseReader::new(gw.post_stream(Some(&session), &call).await);
    let events = stream
        .until(WAIT, |e| {
            e.data
                .as_deref()
                .is_some_and(|d| d.contains("elicitation/create"))
        })
        .await;
    let request = events.last().expect("an event").json();
    assert_eq!(request["method"], json!("elicitation/create"), "{request}");
    assert_eq!(
        request["params"]["message"],
        json!("who are you?"),
        "{request}"
    );
    let id = request["id"].clone();
    assert!(
        id.as_str().is_some_and(|s| s.starts_with("mcpgate.")),
        "server request id is not gateway-signed: {id}"
    );
    let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept",
        "content": {"username": "alice", "email": "alice@example.com"}}});
    let reply = gw.post_json(Some(&session), &answer).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert!(reply.body.is_empty(), "202 with a body: {reply:?}");
    let events = stream
        .until(WAIT, |e| {
            e.data.as_deref().is_some_and(|d| d.contains("\"id\":31"))
        })
        .await;
    let response = events.last().expect("an event").json();
    let text = response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("accept") && text.contains("alice@example.com"),
        "{response}"
    );
}

// ---------------------------------------------------------------- 405

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    for method in ["PUT", "PATCH"] {
        let headers = [
            ("content-type", "application/json"),
            ("accept", ACCEPT_BOTH),
            ("mcp-session-id", session.id.as_str()),
        ];
        let reply = gw.method(method, &headers, &ping(1).to_string()).await;
        reply.assert_error(405, INVALID_REQUEST, &["Method Not Allowed"]);
        let allow = reply.header("allow").unwrap_or_default();
        for verb in ["GET", "POST", "DELETE"] {
            assert!(
                allow.contains(verb),
                "Allow {allow:?} lacks {verb}: {reply:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- 200 JSON and SSE

#[tokio::test]
async fn initialize_issues_long_random_visible_ascii_session_ids() {
    let gw = Gateway::start().await;
    let a = gw.initialize().await;
    let b = gw.initialize().await;
    assert_ne!(a.id, b.id);
    for id in [&a.id, &b.id] {
        assert!(id.len() >= 22, "fewer than 128 bits: {id:?}");
        assert!(
            id.bytes().all(|c| (0x21..=0x7e).contains(&c)),
            "not visible ASCII: {id:?}"
        );
    }
    // An initialize that carries a session id still gets a fresh one: no session fixation.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let reply = gw.post(Some(&a), body.to_string(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let issued = reply.header("mcp-session-id").expect("session id");
    assert_ne!(issued, a.id);
}

#[tokio::test]
async fn fast_requests_are_answered_with_json() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let reply = gw.post_json(Some(&session), &ping(11)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.content_type().starts_with("application/json"),
        "{reply:?}"
    );
    assert_eq!(
        reply.json(),
        json!({"jsonrpc": "2.0", "id": 11, "result": {}})
    );

    let body = json!({"jsonrpc": "2.0", "id": "list-1", "method": "tools/list"});
    let reply = gw.post_json(Some(&session), &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.content_type().starts_with("application/json"),
        "{reply:?}"
    );
    let answer = reply.json();
    assert_eq!(answer["id"], json!("list-1"));
    let names = gw.tool_names(&session).await;
    assert!(names.contains(&"local__echo".to_owned()), "{names:?}");
}

async fn progress_call(gw: &Gateway, session: &Session, id: i64) -> Vec<SseEvent> {
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "local__test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "tok-1"}}});
    let response = gw.post_stream(Some(session), &call).await;
    SseReader::new(response).until_end(WAIT).await
}

#[tokio::test]
async fn request_with_progress_is_an_sse_stream_primed_with_ids_and_retry() {
    let gw = Gateway::builder()
        .server("sse_retry = \"1500ms\"")
        .start()
        .await;
    let session = gw.initialize().await;
    let events = progress_call(&gw, &session, 21).await;
    assert!(
        events.len() >= 5,
        "priming + 3 progress + response expected: {events:#?}"
    );

    let priming = &events[0];
    assert_eq!(
        priming.data.as_deref(),
        Some(""),
        "priming event must carry empty data: {priming:?}"
    );
    assert_eq!(
        priming.retry,
        Some(1500),
        "priming event must carry the configured retry: {priming:?}"
    );
    let (stream, seq) = priming.id_parts();
    assert_eq!(seq, 0, "{priming:?}");
    assert!(!stream.is_empty());

    for (index, event) in events.iter().enumerate().skip(1) {
        let (event_stream, seq) = event.id_parts();
        assert_eq!(
            event_stream, stream,
            "every event belongs to the same stream: {events:#?}"
        );
        assert_eq!(seq, index as u64, "event ids count up from 1: {events:#?}");
        assert!(
            event.data.as_deref().is_some_and(|d| !d.is_empty()),
            "{event:?}"
        );
    }
    let progress: Vec<Value> = events[1..events.len() - 1]
        .iter()
        .map(SseEvent::json)
        .collect();
    let values: Vec<f64> = progress
        .iter()
        .map(|p| {
            assert_eq!(p["method"], json!("notifications/progress"), "{p}");
            assert_eq!(
                p["params"]["progressToken"],
                json!("tok-1"),
                "the client's token must come back: {p}"
            );
            p["params"]["progress"].as_f64().unwrap_or(-1.0)
        })
        .collect();
    assert_eq!(values, vec![0.0, 50.0, 100.0]);
    let last = events.last().unwrap().json();
    assert_eq!(last["id"], json!(21), "the response comes last: {last}");
    assert_eq!(
        last["result"]["content"][0]["text"],
        json!("Progress reporting finished."),
        "{last}"
    );
}

#[tokio::test]
async fn get_with_last_event_id_replays_the_stream() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let original = progress_call(&gw, &session, 22).await;
    let priming_id = original[0].id.clone().expect("priming id");

    let replay = SseReader::new(
        gw.get(Some(&session), &[("last-event-id", &priming_id)])
            .await,
    )
    .until_end(WAIT)
    .await;
    let replayed: Vec<&SseEvent> = replay
        .iter()
        .filter(|e| e.data.as_deref().is_some_and(|d| !d.is_empty()))
        .collect();
    let expected: Vec<&SseEvent> = original[1..].iter().collect();
    assert_eq!(
        replayed
            .iter()
            .map(|e| (&e.id, &e.data))
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|e| (&e.id, &e.data))
            .collect::<Vec<_>>(),
        "replay after the priming event must repeat the whole stream"
    );

    // From the middle: only what follows.
    let middle = original[2].id.clone().unwrap();
    let replay = SseReader::new(gw.get(Some(&session), &[("last-event-id", &middle)]).await)
        .until_end(WAIT)
        .await;
    let replayed: Vec<&Option<String>> = replay
        .iter()
        .filter(|e| e.data.as_deref().is_some_and(|d| !d.is_empty()))
        .map(|e| &e.id)
        .collect();
    let expected: Vec<&Option<String>> = original[3..].iter().map(|e| &e.id).collect();
    assert_eq!(replayed, expected);

    // An id we never issued is refused.
    let reply = gw
        .get_reply(Some(&session), &[("last-event-id", "not an event id")])
        .await;
    reply.assert_error(400, INVALID_REQUEST, &["Last-Event-ID"]);
}

#[tokio::test]
async fn last_event_id_of_another_session_replays_nothing_of_it() {
    let gw = Gateway::start().await;
    let owner = gw.initialize().await;
    let thief = gw.initialize().await;
    let original = progress_call(&gw, &owner, 23).await;
    let priming_id = original[0].id.clone().expect("priming id");
    let response = gw
        .get(Some(&thief), &[("last-event-id", &priming_id)])
        .await;
    if response.status() == StatusCode::OK {
        let mut reader = SseReader::new(response);
        let mut leaked = Vec::new();
        while let Some(event) = reader.next_event(Duration::from_millis(500)).await {
            if event.data.as_deref().is_some_and(|d| !d.is_empty()) {
                leaked.push(event);
            }
        }
        assert!(
            leaked.is_empty(),
            "another session's events were replayed: {leaked:#?}"
        );
    } else {
        let reply = Reply::read(response).await;
        assert!(reply.status.is_client_error(), "{reply:?}");
    }
}

// ---------------------------------------------------------------- DELETE

#[tokio::test]
async fn delete_is_204_then_the_session_is_404_everywhere() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let other = gw.initialize().await;
    let mut standalone = SseReader::new(gw.get(Some(&session), &[]).await);
    let priming = standalone
        .next_event(WAIT)
        .await
        .expect("the GET stream starts with a priming event");
    assert_eq!(priming.data.as_deref(), Some(""), "{priming:?}");

    let reply = gw.delete(Some(&session), &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert!(reply.body.is_empty());

    // The open GET stream of the deleted session ends.
    let rest = standalone.until_end(WAIT).await;
    assert!(
        rest.iter()
            .all(|e| e.data.as_deref().unwrap_or_default().is_empty()),
        "{rest:#?}"
    );

    gw.post(Some(&session), ping(1).to_string(), &[])
        .await
        .assert_error(404, SESSION_NOT_FOUND, &["session"]);
    gw.get_reply(Some(&session), &[])
        .await
        .assert_error(404, SESSION_NOT_FOUND, &["session"]);
    gw.delete(Some(&session), &[])
        .await
        .assert_error(404, SESSION_NOT_FOUND, &["session"]);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    gw.post_json(Some(&session), &note)
        .await
        .assert_error(404, SESSION_NOT_FOUND, &["session"]);
    gw.assert_echo(&other, "deleting another session").await;
}

// ---------------------------------------------------------------- batches

#[tokio::test]
async fn batches_work_in_2025_03_26() {
    let gw = Gateway::start().await;
    let session = gw.initialize_with(BATCH_VERSION, json!({})).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
        {"jsonrpc": "2.0", "id": "two", "method": "tools/call", "params": {"name": "local__echo", "arguments": {"text": "b"}}},
    ]);
    let reply = gw.post_json(Some(&session), &batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let answers = reply.json();
    let answers = answers
        .as_array()
        .unwrap_or_else(|| panic!("a batch is answered with an array: {reply:?}"));
    assert_eq!(answers.len(), 2, "one response per request: {reply:?}");
    let by_id = |id: Value| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer for {id}: {reply:?}"))
    };
    assert_eq!(by_id(json!(1))["result"], json!({}));
    assert_eq!(
        by_id(json!("two"))["result"]["content"][0]["text"],
        json!("b")
    );

    let notes_only = json!([
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]);
    let reply = gw.post_json(Some(&session), &notes_only).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
}

#[tokio::test]
async fn batches_are_refused_after_2025_03_26() {
    let gw = Gateway::start().await;
    for version in [LATEST, "2025-06-18"] {
        let session = gw.initialize_with(version, json!({})).await;
        let batch = json!([ping(1), ping(2)]);
        let reply = gw.post_json(Some(&session), &batch).await;
        reply.assert_error(400, INVALID_REQUEST, &["batch", version]);
        let notes = json!([{"jsonrpc": "2.0", "method": "notifications/initialized"}]);
        let reply = gw.post_json(Some(&session), &notes).await;
        reply.assert_error(400, INVALID_REQUEST, &["batch", version]);
        gw.assert_echo(&session, "a refused batch").await;
    }
}

#[tokio::test]
async fn initialize_in_a_batch_is_400() {
    let gw = Gateway::start().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": BATCH_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    for batch in [json!([init.clone()]), json!([ping(2), init.clone()])] {
        let reply = gw.post_json(None, &batch).await;
        reply.assert_error(400, INVALID_REQUEST, &["initialize", "batch"]);
        assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    }
}

// ---------------------------------------------------------------- server/discover

#[tokio::test]
async fn server_discover_without_meta_is_a_prompt_400_that_makes_clients_fall_back() {
    // An auto-negotiating client that sends no `_meta` gets -32602 (not -32022, which would
    // name the versions and stop it from falling back), and `initialize` then works.
    let gw = Gateway::start().await;
    let body = json!({"jsonrpc": "2.0", "id": "d1", "method": "server/discover", "params": {}});
    let started = std::time::Instant::now();
    let reply = gw
        .post(None, body.to_string(), &[("mcp-protocol-version", "")])
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "server/discover took {:?}",
        started.elapsed()
    );
    let answer = reply.assert_error(400, INVALID_PARAMS, &["_meta"]);
    assert_eq!(
        answer["id"],
        json!("d1"),
        "the error answers the request: {reply:?}"
    );
    let session = gw.initialize().await;
    gw.assert_echo(&session, "server/discover").await;
}

// ---------------------------------------------------------------- catalog

#[tokio::test]
async fn tools_are_namespaced_per_upstream() {
    let gw = Gateway::builder().remote().start().await;
    let session = gw.initialize().await;
    let names = gw.tool_names(&session).await;
    for name in [
        "local__echo",
        "local__whoami",
        "remote__echo",
        "remote__whoami",
    ] {
        assert!(
            names.contains(&name.to_owned()),
            "{name} missing from {names:?}"
        );
    }
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("local__") || n.starts_with("remote__")),
        "{names:?}"
    );
    for upstream in ["local", "remote"] {
        let answer = gw
            .call_tool(&session, &format!("{upstream}__whoami"), json!({}))
            .await;
        assert_eq!(
            answer["result"]["content"][0]["text"],
            json!(upstream),
            "{answer}"
        );
    }
    let answer = gw.call_tool(&session, "echo", json!({"text": "x"})).await;
    assert_eq!(
        answer["error"]["code"],
        json!(INVALID_PARAMS),
        "an unprefixed name is unknown: {answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("echo"),
        "{answer}"
    );
}

#[tokio::test]
async fn allow_and_deny_globs_hide_and_refuse_tools() {
    let gw = Gateway::builder()
        .local("allow = [\"echo\", \"test_*\"]")
        .local("deny = [\"test_error*\", \"test_elicitation*\"]")
        .start()
        .await;
    let session = gw.initialize().await;
    let names = gw.tool_names(&session).await;
    assert!(names.contains(&"local__echo".to_owned()), "{names:?}");
    assert!(
        names.contains(&"local__test_simple_text".to_owned()),
        "{names:?}"
    );
    for hidden in [
        "local__slow",
        "local__whoami",
        "local__test_error_handling",
        "local__test_elicitation",
    ] {
        assert!(
            !names.contains(&hidden.to_owned()),
            "{hidden} should be hidden: {names:?}"
        );
        let answer = gw
            .call_tool(&session, hidden, json!({"ms": 1, "message": "m"}))
            .await;
        assert_eq!(
            answer["error"]["code"],
            json!(INVALID_PARAMS),
            "{hidden} must be refused: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(hidden),
            "{answer}"
        );
    }
    let answer = gw
        .call_tool(&session, "local__test_simple_text", json!({}))
        .await;
    assert!(answer.get("result").is_some(), "{answer}");
}

#[tokio::test]
async fn an_upstream_that_cannot_start_degrades_only_its_own_tools() {
    let gw = Gateway::builder()
        .toml(
            "[[upstreams]]\nname = \"broken\"\ntransport = \"stdio\"\ncommand = \"/nonexistent\"\n",
        )
        .start()
        .await;
    let session = gw.initialize().await;
    let names = gw.tool_names(&session).await;
    assert!(names.contains(&"local__echo".to_owned()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("broken__")),
        "{names:?}"
    );
    gw.assert_echo(&session, "a broken upstream").await;
    let answer = gw
        .call_tool(&session, "broken__echo", json!({"text": "x"}))
        .await;
    let error = &answer["error"];
    assert!(
        error.is_object(),
        "calling a tool of a broken upstream must be a JSON-RPC error: {answer}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("broken"),
        "the error must name the upstream: {answer}"
    );
    gw.assert_echo(&session, "calling the broken upstream")
        .await;
}

// ---------------------------------------------------------------- configuration

#[tokio::test]
async fn check_config_prints_the_config_with_secrets_redacted() {
    let config = r#"
[server]
listen = "127.0.0.1:0"
hmac_key = "hmac-secret-0123456789-0123456789-abcdef"

[[upstreams]]
name = "api"
transport = "http"
url = "https://mcp.example.com/mcp"
headers = { Authorization = "Bearer header-secret-token" }

[[upstreams]]
name = "tool"
transport = "stdio"
command = "/bin/true"
env = { API_KEY = "env-secret-value" }
"#;
    let (ok, stdout, stderr) = check_config(config).await;
    assert!(ok, "check-config refused a valid config: {stderr}");
    for secret in ["hmac-secret", "header-secret-token", "env-secret-value"] {
        assert!(
            !stdout.contains(secret),
            "check-config printed {secret}: {stdout}"
        );
        assert!(
            !stderr.contains(secret),
            "check-config logged {secret}: {stderr}"
        );
    }
    assert!(stdout.matches("<redacted>").count() >= 3, "{stdout}");
    assert!(
        stdout.contains("https://mcp.example.com/mcp"),
        "non-secret values are printed: {stdout}"
    );
    assert!(stdout.contains("Authorization"), "{stdout}");
}

#[tokio::test]
async fn bad_configs_fail_naming_the_key() {
    let cases = [
        ("[server]\nmax_body_bytes = 0\n", "server.max_body_bytes"),
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[server]\nno_such_key = 1\n", "no_such_key"),
        (
            "[[upstreams]]\nname = \"a\"\ntransport = \"stdio\"\n",
            "upstreams[0].command",
        ),
        (
            "[[upstreams]]\nname = \"a\"\ntransport = \"http\"\nurl = \"http://x\"\ndeny = [\"[\"]\n",
            "upstreams[0].deny",
        ),
        (
            "[[upstreams]]\nname = \"a\"\ntransport = \"stdio\"\ncommand = \"bin/missing-server\"\n",
            "upstreams[0].command",
        ),
    ];
    for (config, key) in cases {
        let (ok, stdout, stderr) = check_config(config).await;
        assert!(!ok, "check-config accepted {config:?}: {stdout}");
        assert!(
            stderr.contains(key),
            "check-config on {config:?} does not name {key}: {stderr}"
        );
    }
}

#[tokio::test]
async fn serve_with_a_bad_config_exits_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 0\n[admin]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run)
        .await
        .expect("serve with a bad config must exit")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.max_body_bytes"), "{stderr}");
}

// ---------------------------------------------------------------- admin

#[tokio::test]
async fn admin_port_serves_metrics_health_and_readiness() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    gw.post(Some(&Session::unknown()), ping(1).to_string(), &[])
        .await
        .assert_error(404, SESSION_NOT_FOUND, &[]);
    gw.assert_echo(&session, "nothing").await;

    let health = gw.admin("/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "{health:?}");
    let ready = gw.admin("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    let store = gw.admin("/readyz/store").await;
    assert_eq!(store.status, StatusCode::OK, "{store:?}");

    let metrics = gw.admin("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK, "{metrics:?}");
    assert!(
        metrics.content_type().starts_with("text/plain"),
        "{metrics:?}"
    );
    let text = metrics.text();
    for line in [
        "mcpgate_sessions_created_total 1",
        "mcpgate_requests_total{method=\"initialize\",status=\"200\"} 1",
        "mcpgate_requests_total{method=\"tools/call\",status=\"200\"} 1",
        "mcpgate_session_lookups_total{outcome=\"unknown\"} 1",
        "mcpgate_upstream_requests_total{outcome=\"ok\",upstream=\"local\"}",
        "mcpgate_upstream_up{upstream=\"local\"} 1",
        "mcpgate_ready 1",
    ] {
        assert!(text.contains(line), "/metrics lacks {line:?}:\n{text}");
    }
    assert!(
        !text.contains(&session.id),
        "a session id leaked into a label:\n{text}"
    );
    let missing = gw.admin("/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------- more SSE

#[tokio::test]
async fn http_upstream_progress_is_an_sse_stream_with_the_clients_token() {
    let gw = Gateway::builder().remote().start().await;
    let session = gw.initialize().await;
    let call = json!({"jsonrpc": "2.0", "id": 24, "method": "tools/call", "params": {
        "name": "remote__test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": 77}}});
    let events = SseReader::new(gw.post_stream(Some(&session), &call).await)
        .until_end(WAIT)
        .await;
    assert_eq!(events[0].data.as_deref(), Some(""), "{events:#?}");
    let (stream, _) = events[0].id_parts();
    let progress: Vec<Value> = events[1..events.len() - 1]
        .iter()
        .map(SseEvent::json)
        .collect();
    assert_eq!(progress.len(), 3, "{events:#?}");
    for (index, p) in progress.iter().enumerate() {
        assert_eq!(p["method"], json!("notifications/progress"), "{p}");
        assert_eq!(
            p["params"]["progressToken"],
            json!(77),
            "the client's token must come back: {p}"
        );
        assert_eq!(
            events[index + 1].id_parts(),
            (stream.clone(), index as u64 + 1)
        );
    }
    assert_eq!(
        events.last().unwrap().json()["id"],
        json!(24),
        "{events:#?}"
    );
}

#[tokio::test]
async fn resuming_an_unknown_or_foreign_stream_is_refused_not_left_hanging() {
    let gw = Gateway::start().await;
    let owner = gw.initialize().await;
    let other = gw.initialize().await;
    let original = progress_call(&gw, &owner, 25).await;
    let foreign = original[0].id.clone().expect("priming id");
    for last_event_id in ["0123456789abcdef-0", "0123456789abcdef-3", foreign.as_str()] {
        let response = gw
            .get(Some(&other), &[("last-event-id", last_event_id)])
            .await;
        if response.status() == StatusCode::OK {
            let mut reader = SseReader::new(response);
            let events = reader.until(WAIT, |_| true).await;
            let ended = reader.next_event(Duration::from_secs(2)).await.is_none() && reader.ended;
            panic!(
                "GET with Last-Event-ID {last_event_id:?} (a stream this session never had) was answered 200 \
                 with {events:?} and the stream {}; the client can neither get its answer nor learn it is gone",
                if ended {
                    "ended (a reconnect loop on the same id)"
                } else {
                    "stays open with nothing to send"
                }
            );
        }
        let reply = Reply::read(response).await;
        reply.assert_error(400, INVALID_REQUEST, &["Last-Event-ID"]);
    }
}

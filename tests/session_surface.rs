//! What a session shows its client beyond single calls: the ids of refused requests, the
//! upstreams' `instructions` in the `initialize` answer, and upstreams that come (back) after
//! the session started, announced with `list_changed` on the standalone stream.

use std::time::Duration;

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Longest wait for an SSE event that must come.
const WAIT: Duration = Duration::from_secs(10);
/// Longest wait for a recovered upstream to be announced: its probe backs off from 1 s, and
/// the upstream comes back within a few seconds of being found down.
const RECOVERY_WAIT: Duration = Duration::from_secs(20);

fn request(id: Value, method: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method})
}

/// `initialize` by hand, to see the whole result; returns the session and the result.
async fn initialize_result(gw: &Gateway) -> (Session, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LATEST, "capabilities": {},
        "clientInfo": {"name": "session-surface", "version": "0"}}});
    let reply = gw.post_json(None, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "initialize: {reply:?}");
    let session = Session {
        id: reply.header("mcp-session-id").expect("no Mcp-Session-Id"),
        version: LATEST.into(),
    };
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let accepted = gw.post_json(Some(&session), &note).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{accepted:?}");
    (session, reply.json()["result"].clone())
}

/// The JSON-RPC method of an SSE event, if it carries a message.
fn method_of(event: &SseEvent) -> Option<String> {
    let data = event.data.as_deref().filter(|d| !d.is_empty())?;
    let message: Value = serde_json::from_str(data).ok()?;
    message["method"].as_str().map(str::to_owned)
}

/// Reads the standalone stream until each of `methods` arrived; panics after `wait`.
async fn expect_notifications(stream: &mut SseReader, methods: &[&str], wait: Duration) {
    let mut missing: Vec<&str> = methods.to_vec();
    stream
        .until(wait, |event| {
            if let Some(method) = method_of(event) {
                missing.retain(|m| *m != method);
            }
            missing.is_empty()
        })
        .await;
}

const LIST_CHANGES: [&str; 3] = [
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
];

// ---------------------------------------------------------------- error ids

#[tokio::test]
async fn refusals_after_the_body_parsed_carry_the_request_id() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;

    let reply = gw
        .post_json(Some(&Session::unknown()), &request(json!(7), "ping"))
        .await;
    let body = reply.assert_error(404, SESSION_NOT_FOUND, &["session"]);
    assert_eq!(body["id"], json!(7), "unknown session: {reply:?}");

    let overrides = [("mcp-protocol-version", "1999-01-01")];
    let reply = gw
        .post(
            Some(&session),
            request(json!("v-1"), "ping").to_string(),
            &overrides,
        )
        .await;
    let body = reply.assert_error(400, INVALID_REQUEST, &["MCP-Protocol-Version"]);
    assert_eq!(body["id"], json!("v-1"), "bad version: {reply:?}");

    let overrides = [("mcp-protocol-version", LATEST)];
    let reply = gw
        .post(
            None,
            request(json!(9), "tools/list").to_string(),
            &overrides,
        )
        .await;
    let body = reply.assert_error(400, INVALID_REQUEST, &["Mcp-Session-Id"]);
    assert_eq!(body["id"], json!(9), "missing session id: {reply:?}");

    let deleted = gw.initialize().await;
    assert_eq!(
        gw.delete(Some(&deleted), &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let reply = gw
        .post_json(Some(&deleted), &request(json!("after-delete"), "ping"))
        .await;
    let body = reply.assert_error(404, SESSION_NOT_FOUND, &["session"]);
    assert_eq!(
        body["id"],
        json!("after-delete"),
        "deleted session: {reply:?}"
    );
}

#[tokio::test]
async fn refusals_without_a_single_request_keep_a_null_id() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;

    let batch = json!([request(json!(1), "ping"), request(json!(2), "ping")]);
    let reply = gw.post_json(Some(&session), &batch).await;
    let body = reply.assert_error(400, INVALID_REQUEST, &["batch"]);
    assert_eq!(body["id"], Value::Null, "batch: {reply:?}");

    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = gw.post_json(Some(&Session::unknown()), &note).await;
    let body = reply.assert_error(404, SESSION_NOT_FOUND, &["session"]);
    assert_eq!(body["id"], Value::Null, "notification: {reply:?}");

    let response = json!({"jsonrpc": "2.0", "id": 3, "result": {}});
    let reply = gw.post_json(Some(&Session::unknown()), &response).await;
    let body = reply.assert_error(404, SESSION_NOT_FOUND, &["session"]);
    assert_eq!(body["id"], Value::Null, "response: {reply:?}");
    gw.assert_echo(&session, "refused bodies").await;
}

// ---------------------------------------------------------------- instructions

#[tokio::test]
async fn initialize_carries_every_upstreams_instructions_attributed_in_order() {
    let gw = Gateway::builder().remote().start().await;
    let (_session, result) = initialize_result(&gw).await;
    let instructions = result["instructions"]
        .as_str()
        .unwrap_or_else(|| panic!("no instructions in {result}"));
    let local = instructions
        .find("## local")
        .unwrap_or_else(|| panic!("local is not named: {instructions:?}"));
    let remote = instructions
        .find("## remote")
        .unwrap_or_else(|| panic!("remote is not named: {instructions:?}"));
    assert!(local < remote, "configuration order: {instructions:?}");
    let (local_part, remote_part) = instructions.split_at(remote);
    assert!(
        local_part.contains("instance local"),
        "the local fixture's own text: {instructions:?}"
    );
    assert!(
        remote_part.contains("instance remote"),
        "the remote fixture's own text: {instructions:?}"
    );
}

// ---------------------------------------------------------------- late upstreams

/// A loopback address where nothing listens (yet).
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("cannot bind");
    listener.local_addr().expect("no local address").to_string()
}

#[tokio::test]
async fn an_http_upstream_that_comes_up_later_is_listed_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let gw = Gateway::builder()
        .toml(&format!(
            "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\ntimeout = \"5s\"",
            toml_str(&format!("http://{address}/mcp"))
        ))
        .start()
        .await;
    let (session, result) = initialize_result(&gw).await;
    let mut standalone = SseReader::new(gw.get(Some(&session), &[]).await);
    let names = gw.tool_names(&session).await;
    assert!(names.contains(&"local__echo".to_owned()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("remote__")),
        "{names:?}"
    );

    let _remote = Fixture::start_http_at("remote", dir.path(), &address).await;
    expect_notifications(&mut standalone, &LIST_CHANGES, RECOVERY_WAIT).await;

    let names = gw.tool_names(&session).await;
    assert!(names.contains(&"remote__echo".to_owned()), "{names:?}");
    assert!(names.contains(&"local__echo".to_owned()), "{names:?}");
    let answer = gw
        .call_tool(&session, "remote__echo", json!({"text": "late"}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], json!("late"));
    let prompts = gw.request(&session, "prompts/list", json!({})).await.json();
    let prompt_names: Vec<&str> = prompts["result"]["prompts"]
        .as_array()
        .unwrap_or_else(|| panic!("prompts/list: {prompts}"))
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        prompt_names.iter().any(|n| n.starts_with("remote__")),
        "{prompts}"
    );
    for kind in ["tools", "prompts", "resources"] {
        assert_eq!(
            result["capabilities"][kind]["listChanged"],
            json!(true),
            "the client must expect {kind} list changes: {result}"
        );
    }
}

#[tokio::test]
async fn an_http_upstream_that_went_down_is_announced_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let address = fixture.address();
    let gw = Gateway::builder()
        .without_local()
        .toml(&format!(
            "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\ntimeout = \"5s\"",
            toml_str(&fixture.url)
        ))
        .start()
        .await;
    let session = gw.initialize().await;
    let mut standalone = SseReader::new(gw.get(Some(&session), &[]).await);
    assert!(
        gw.tool_names(&session)
            .await
            .contains(&"remote__echo".to_owned())
    );

    fixture.stop().await;
    let reply = gw
        .request(
            &session,
            "tools/call",
            json!({"name": "remote__echo", "arguments": {"text": "down"}}),
        )
        .await;
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("remote"),
        "the failure names the upstream: {reply:?}"
    );
    let names = gw.tool_names(&session).await;
    assert!(
        !names.iter().any(|n| n.starts_with("remote__")),
        "{names:?}"
    );

    let _back = Fixture::start_http_at("remote", dir.path(), &address).await;
    expect_notifications(&mut standalone, &LIST_CHANGES, RECOVERY_WAIT).await;
    assert!(
        gw.tool_names(&session)
            .await
            .contains(&"remote__echo".to_owned())
    );
    let answer = gw
        .call_tool(&session, "remote__echo", json!({"text": "back"}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], json!("back"));
}

#[tokio::test]
async fn a_restarted_stdio_child_is_announced_with_list_changes() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let mut standalone = SseReader::new(gw.get(Some(&session), &[]).await);
    let children = gw.child_pids();
    assert_eq!(children.len(), 1, "expected one stdio child: {children:?}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &children[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    expect_notifications(&mut standalone, &LIST_CHANGES, WAIT).await;
    gw.assert_echo(&session, "the child's restart").await;
}

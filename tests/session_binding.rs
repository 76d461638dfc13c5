//! Sessions are bound to the principal (and team) that created them: another caller holding a
//! session id gets exactly the answer an unknown session id gets — through POST, GET, GET with
//! `Last-Event-ID` and DELETE — and the owner's session is untouched. Every request is
//! authenticated, not only `initialize`.

use std::time::Duration;

use crate::support::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// Keys: the owner `bob` of team `blue`, `alice` of team `red`, and another `bob` in team `red`.
const OWNER: &str = "key-of-bob-in-blue";
const OTHERS: [&str; 2] = ["key-of-alice-in-red", "key-of-bob-in-red"];

async fn gateway() -> Gateway {
    let toml = format!(
        "[server.auth]\nmode = \"api_key\"\n{}{}{}",
        api_key_entry(OWNER, "bob", "blue"),
        api_key_entry(OTHERS[0], "alice", "red"),
        api_key_entry(OTHERS[1], "bob", "red"),
    );
    Gateway::builder().toml(&toml).start().await
}

fn echo(id: i64, text: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "local__echo", "arguments": {"text": text}}})
    .to_string()
}

async fn assert_echo_as(gw: &Gateway, session: &Session, key: &str, text: &str) {
    let reply = gw
        .post(
            Some(session),
            echo(5, text),
            &[("authorization", &bearer(key))],
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{reply:?}");
    assert_eq!(
        reply.json()["result"]["content"][0]["text"],
        json!(text),
        "{reply:?}"
    );
}

/// The owner's call with progress, answered as an SSE stream; returns its events.
async fn progress_stream(gw: &Gateway, session: &Session) -> Vec<SseEvent> {
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "local__test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "p"}}});
    let headers = gw.headers(
        Some(session),
        &[
            ("content-type", "application/json"),
            ("accept", ACCEPT_BOTH),
        ],
        &[("authorization", &bearer(OWNER))],
    );
    let response = gw
        .http
        .post(&gw.mcp_url)
        .headers(headers)
        .body(call.to_string())
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .expect("POST /mcp failed");
    SseReader::new(response).until_end(WAIT).await
}

/// What a client can observe of an answer: status, headers (but `date`), body.
fn observable(reply: &Reply) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    headers.sort();
    (reply.status.as_u16(), headers, reply.body.clone())
}

/// The four ways to use a session: POST, GET, GET resuming `last_event_id`, DELETE.
async fn use_session(
    gw: &Gateway,
    session: &Session,
    key: &str,
    last_event_id: &str,
) -> Vec<Reply> {
    let authorization = bearer(key);
    let with_auth = [("authorization", authorization.as_str())];
    let resume = [
        ("authorization", authorization.as_str()),
        ("last-event-id", last_event_id),
    ];
    vec![
        gw.post(Some(session), echo(7, "stolen"), &with_auth).await,
        gw.get_reply(Some(session), &with_auth).await,
        gw.get_reply(Some(session), &resume).await,
        gw.delete(Some(session), &with_auth).await,
    ]
}

#[tokio::test]
async fn another_principal_gets_exactly_the_unknown_session_answer() {
    let gw = gateway().await;
    let owned = gw.initialize_as(OWNER).await;
    assert_echo_as(&gw, &owned, OWNER, "before").await;
    let events = progress_stream(&gw, &owned).await;
    let last_event_id = events[1].id.clone().expect("an event id");
    let unknown = Session::unknown();

    for other in OTHERS {
        let stolen = use_session(&gw, &owned, other, &last_event_id).await;
        let baseline = use_session(&gw, &unknown, other, &last_event_id).await;
        for (what, (stolen, baseline)) in ["POST", "GET", "GET Last-Event-ID", "DELETE"]
            .iter()
            .zip(stolen.iter().zip(&baseline))
        {
            assert_eq!(
                stolen.status.as_u16(),
                404,
                "{what} with {other}: {stolen:?}"
            );
            assert_eq!(
                observable(stolen),
                observable(baseline),
                "{what} with {other}: another's session must look unknown"
            );
        }
    }
    assert_eq!(
        gw.metric("mcpgate_session_lookups_total{outcome=\"foreign\"}")
            .await,
        8.0
    );

    // The owner's session is untouched: calls work and the stream still replays.
    assert_echo_as(&gw, &owned, OWNER, "after").await;
    let resumed = gw
        .get(
            Some(&owned),
            &[
                ("authorization", &bearer(OWNER)),
                ("last-event-id", &last_event_id),
            ],
        )
        .await;
    let replayed: Vec<Value> = SseReader::new(resumed)
        .until_end(WAIT)
        .await
        .iter()
        .filter(|e| e.data.as_deref().is_some_and(|d| !d.is_empty()))
        .map(SseEvent::json)
        .collect();
    assert_eq!(
        replayed.last().map(|m| m["id"].clone()),
        Some(json!(9)),
        "the owner's stream must replay up to its response: {replayed:#?}"
    );
}

#[tokio::test]
async fn every_request_on_a_session_is_authenticated() {
    let gw = gateway().await;
    let owned = gw.initialize_as(OWNER).await;
    for authorization in [None, Some("Bearer not-a-key"), Some("Basic Ym9iOmJsdWU=")] {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        let replies = [
            gw.post(Some(&owned), echo(8, "anonymous"), &headers).await,
            gw.get_reply(Some(&owned), &headers).await,
            gw.delete(Some(&owned), &headers).await,
        ];
        for reply in replies {
            reply.assert_error(401, INVALID_REQUEST, &["unauthorized"]);
            assert!(reply.header("www-authenticate").is_some(), "{reply:?}");
        }
    }
    assert_echo_as(&gw, &owned, OWNER, "still mine").await;
}

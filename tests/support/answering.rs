//! A legacy client's side of a tool call: everything the gateway sends on the call's stream,
//! with the server-to-client requests answered as the test says.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Gateway, Reply, Session, SseReader};

/// Longest wait for a tool call's response; well below [`UPSTREAM_TIMEOUT`].
pub const CALL_WAIT: Duration = Duration::from_secs(15);

/// Everything the gateway sent for one `tools/call`.
#[derive(Debug)]
pub struct Exchange {
    /// Messages before the response (requests and notifications).
    pub before: Vec<Value>,
    pub response: Value,
}

impl Exchange {
    /// The error message or the `isError` result's text; panics on a successful result.
    pub fn failure_text(&self) -> String {
        let response = &self.response;
        if let Some(message) = response["error"]["message"].as_str() {
            return message.to_owned();
        }
        assert_eq!(
            response["result"]["isError"],
            json!(true),
            "the call did not fail: {self:#?}"
        );
        response["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The successful result's first text.
    pub fn result_text(&self) -> &str {
        self.response["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text result: {self:#?}"))
    }
}

/// Calls `tool` and reads everything the gateway sends until the call's response, posting the
/// answer `answer` gives for each server-to-client message (`None`: no answer). Panics if the
/// response does not arrive within [`CALL_WAIT`].
pub async fn call(
    gw: &Gateway,
    session: &Session,
    tool: &str,
    arguments: Value,
    answer: impl Fn(&Value) -> Option<Value>,
) -> Exchange {
    call_across(&[gw], session, tool, arguments, answer).await
}

/// [`call`] on `fleet[0]`, with the n-th answer posted to `fleet[n % len]`: the replica that
/// gets an answer need not be the one whose call waits for it.
pub async fn call_across(
    fleet: &[&Gateway],
    session: &Session,
    tool: &str,
    arguments: Value,
    answer: impl Fn(&Value) -> Option<Value>,
) -> Exchange {
    let gw = fleet[0];
    let mut answered = 0;
    let id = gw.next_id();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}});
    let response = gw.post_stream(Some(session), &body).await;
    let is_json = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        let response = Reply::read(response).await.json();
        return Exchange {
            before: Vec::new(),
            response,
        };
    }
    let mut stream = SseReader::new(response);
    let deadline = Instant::now() + CALL_WAIT;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = stream.next_event(left).await else {
            panic!(
                "no response to {tool} within {CALL_WAIT:?} (stream ended: {}); got {before:#?}",
                stream.ended
            );
        };
        if event.data.as_deref().is_none_or(str::is_empty) {
            continue;
        }
        let message = event.json();
        if message["id"] == json!(id) && message.get("method").is_none() {
            return Exchange {
                before,
                response: message,
            };
        }
        if let Some(reply) = answer(&message) {
            answered += 1;
            let replica = fleet[answered % fleet.len()];
            let posted = replica.post_json(Some(session), &reply).await;
            assert_eq!(posted.status, StatusCode::ACCEPTED, "answer: {posted:?}");
        }
        before.push(message);
    }
}

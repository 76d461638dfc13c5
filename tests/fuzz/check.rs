//! Judging an answer: refusals carry JSON-RPC error bodies unless actix-http made them below
//! our handlers, and JSON successes answer exactly the requests the body held.

use serde_json::Value;

use super::answer::Answer;
use super::sent::Sent;

/// Statuses actix-http answers with an empty body itself, before any handler runs: 400 for a
/// request it cannot parse as HTTP/1.1 (request line, header syntax, a repeated `Host` or
/// `Content-Length`, a Content-Length that is no number, a transfer coding other than
/// `chunked`, a malformed chunk), 408 for a head that did not arrive within the header read
/// timeout, and 431 for a head over its 128 KiB buffer or with more than 96 headers.
pub const TRANSPORT_STATUSES: [u16; 3] = [400, 408, 431];

/// Whether `answer` is an acceptable answer to `sent`.
pub fn acceptable(answer: &Answer, sent: &Sent) -> Result<(), String> {
    if sent.is_head() {
        return Ok(());
    }
    match answer.status {
        200..=299 => check_success(answer).and_then(|()| check_answered_ids(answer, sent)),
        400..=599 if answer.body.is_empty() => check_transport_refusal(answer, sent),
        400..=599 => check_jsonrpc_error(answer),
        other => Err(format!("unexpected status {other}")),
    }
}

/// JSON bodies are JSON-RPC, streams are 200, anything else is empty (202, 204, preflights).
fn check_success(answer: &Answer) -> Result<(), String> {
    if answer.is_event_stream() {
        return match answer.status {
            200 => Ok(()),
            other => Err(format!("an event stream with status {other}")),
        };
    }
    if !answer.is_json() {
        return match answer.body.is_empty() {
            true => Ok(()),
            false => Err("a success with a body that is neither JSON nor SSE".into()),
        };
    }
    let body: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("a JSON success whose body is not JSON ({e})"))?;
    let messages = match &body {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    match messages.iter().all(|m| m["jsonrpc"] == "2.0") {
        true => Ok(()),
        false => Err("a JSON success that is not JSON-RPC".into()),
    }
}

/// A JSON answer holds exactly one response per request the body held, by id.
fn check_answered_ids(answer: &Answer, sent: &Sent) -> Result<(), String> {
    let Some(request) = &sent.json else {
        return Ok(());
    };
    if !answer.is_json() {
        return Ok(());
    }
    let answer: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    let mut asked = ids(request, |m| m.get("method").is_some());
    let mut answered = ids(&answer, |_| true);
    asked.sort();
    answered.sort();
    match asked == answered {
        true => Ok(()),
        false => Err(format!("requests {asked:?} were answered as {answered:?}")),
    }
}

/// The ids (as JSON text) of the messages in `body`, one or a batch, that `pick` picks.
fn ids(body: &Value, pick: impl Fn(&Value) -> bool) -> Vec<String> {
    let messages = match body {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    messages
        .into_iter()
        .filter(|m| pick(m))
        .filter_map(|m| m.get("id").map(Value::to_string))
        .collect()
}

/// An empty refusal must come from below our handlers (see [`TRANSPORT_STATUSES`]), or be
/// actix-web's 404 for a path other than `/mcp`.
fn check_transport_refusal(answer: &Answer, sent: &Sent) -> Result<(), String> {
    let unrouted = answer.status == 404 && !sent.targets_mcp();
    match TRANSPORT_STATUSES.contains(&answer.status) || unrouted {
        true => Ok(()),
        false => Err(format!("an empty {} refusal", answer.status)),
    }
}

/// `{"jsonrpc":"2.0","id":…,"error":{"code":int,"message":str}}` as application/json.
fn check_jsonrpc_error(answer: &Answer) -> Result<(), String> {
    if !answer.is_json() {
        return Err("a refusal whose body is not application/json".into());
    }
    let body: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("a refusal whose body is not JSON ({e})"))?;
    let id_ok = matches!(
        body.get("id"),
        Some(Value::Null | Value::Number(_) | Value::String(_))
    );
    let shaped = body["jsonrpc"] == "2.0"
        && id_ok
        && body.get("result").is_none()
        && body["error"]["code"].is_i64()
        && body["error"]["message"].is_string();
    match shaped {
        true => Ok(()),
        false => Err("a refusal whose body is not a JSON-RPC error".into()),
    }
}

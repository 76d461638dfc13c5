//! Reading and parsing a POST body: size limit (413), read timeout (408), UTF-8 and JSON syntax
//! (400 parse error), batch length and the JSON-RPC shape of every message (400 invalid request).

use std::collections::HashSet;
use std::fmt;

use actix_web::HttpRequest;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{BytesMut, Payload};
use futures::StreamExt;
use rmcp::model::ErrorCode;
use serde::de::{Deserializer as _, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;

use super::HttpSettings;
use super::error::HttpError;
use crate::protocol::jsonrpc::{Message, RequestId};

/// A parsed POST body.
pub struct Incoming {
    pub messages: Vec<Message>,
    /// The body was a JSON array (a 2025-03-26 batch).
    pub batch: bool,
}

/// Reads the body, refusing one over `max_body_bytes` (at once when `Content-Length` says so)
/// or not whole within `body_read_timeout`: a connection trickling its body is answered and
/// closed rather than held.
pub async fn read(
    request: &HttpRequest,
    payload: Payload,
    settings: &HttpSettings,
) -> Result<BytesMut, HttpError> {
    let limit = settings.max_body_bytes;
    let declared_length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared_length.is_some_and(|n| n > limit) {
        return Err(HttpError::PayloadTooLarge(limit));
    }
    let timeout = settings.body_read_timeout;
    tokio::time::timeout(timeout, read_limited(payload, limit))
        .await
        .map_err(|_| HttpError::RequestTimeout(timeout))?
}

async fn read_limited(mut payload: Payload, limit: usize) -> Result<BytesMut, HttpError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            HttpError::BadRequest(format!("Bad Request: cannot read the body: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(HttpError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a body into JSON-RPC messages; a batch longer than `max_batch_len` is refused whole.
pub fn parse(body: &[u8], max_batch_len: usize) -> Result<Incoming, HttpError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| HttpError::Parse(format!("body is not valid UTF-8 ({e})")))?;
    if longer_than(text, max_batch_len) {
        let message = format!("Invalid Request: a batch may hold at most {max_batch_len} messages");
        return Err(invalid(None, &message));
    }
    if let Some(message) = Message::from_object_text(body) {
        return Ok(Incoming {
            messages: vec![message],
            batch: false,
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|e| HttpError::Parse(e.to_string()))?;
    let (values, batch) = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(invalid(None, "an empty batch is not a valid request"));
        }
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    let messages = values
        .into_iter()
        .map(|v| {
            let id = v.get("id").and_then(RequestId::from_value);
            Message::from_value(v).map_err(|e| invalid(id, &format!("Invalid Request: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_unique_ids(&messages)?;
    Ok(Incoming { messages, batch })
}

/// Whether `text` is a JSON array of more than `max` entries. Only the first `max + 1` entries
/// are scanned, so refusing a long batch costs no more than reading an allowed one; a syntax
/// error is left for the full parse to report.
fn longer_than(text: &str, max: usize) -> bool {
    if !text.trim_start().starts_with('[') {
        return false;
    }
    let mut counter = EntryCounter { max, seen: 0 };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // Stopping after `max + 1` entries makes the scan fail; only the count matters here.
    let _ = deserializer.deserialize_seq(&mut counter);
    counter.seen > max
}

/// Counts the entries of a JSON array, up to one past `max`.
struct EntryCounter {
    max: usize,
    seen: usize,
}

impl<'de> Visitor<'de> for &mut EntryCounter {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        while self.seen <= self.max && entries.next_element::<IgnoredAny>()?.is_some() {
            self.seen += 1;
        }
        Ok(())
    }
}

fn invalid(id: Option<RequestId>, message: &str) -> HttpError {
    HttpError::Rejected {
        id,
        code: ErrorCode::INVALID_REQUEST,
        message: message.to_owned(),
    }
}

/// Requests in one batch must not share an id: their responses could not be told apart.
fn check_unique_ids(messages: &[Message]) -> Result<(), HttpError> {
    if messages.len() < 2 {
        return Ok(());
    }
    let mut seen = HashSet::new();
    for message in messages {
        if let Message::Request(request) = message
            && !seen.insert(&request.id)
        {
            return Err(invalid(
                Some(request.id.clone()),
                &format!("Invalid Request: duplicate request id {}", request.id),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_BATCH: usize = 64;

    fn refusal(body: &[u8]) -> String {
        match parse(body, MAX_BATCH) {
            Ok(_) => panic!("{} was accepted", String::from_utf8_lossy(body)),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn refuses_bad_bodies_with_precise_reasons() {
        assert!(refusal(b"{not json").starts_with("Parse error"));
        assert!(refusal(b"\xff\xfe").contains("UTF-8"));
        assert!(refusal(b"[]").contains("empty batch"));
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(refusal(deep.as_bytes()).contains("recursion limit"));
        let dup = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        assert!(refusal(dup).contains("duplicate request id 1"));
        assert!(
            refusal(br#"{"jsonrpc":"2.0","id":1,"method":5}"#)
                .contains("\"method\" must be a string")
        );
        let long = format!(
            "[{}]",
            vec![r#"{"jsonrpc":"2.0","method":"a"}"#; 65].join(",")
        );
        assert!(refusal(long.as_bytes()).contains("at most 64 messages"));
        let long_and_broken = format!("{} {{broken", &long[..long.len() - 1]);
        assert!(refusal(long_and_broken.as_bytes()).contains("at most 64 messages"));
    }

    #[test]
    fn accepts_single_messages_and_batches() {
        let one = parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, MAX_BATCH).unwrap();
        assert!(!one.batch && one.messages.len() == 1);
        let two = parse(
            br#"[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","id":2,"method":"b"}]"#,
            2,
        )
        .unwrap();
        assert!(two.batch && two.messages.len() == 2);
    }
}

//! Reading and parsing a POST body: size limit (413), UTF-8 and JSON syntax (400 parse error),
//! and the JSON-RPC shape of every message (400 invalid request).

use std::collections::HashSet;

use actix_web::web::{BytesMut, Payload};
use futures::StreamExt;
use rmcp::model::ErrorCode;
use serde_json::Value;

use super::error::HttpError;
use crate::jsonrpc::{Message, RequestId};

/// A parsed POST body.
pub struct Incoming {
    pub messages: Vec<Message>,
    /// The body was a JSON array (a 2025-03-26 batch).
    pub batch: bool,
}

/// Reads the body, refusing anything over `limit` bytes.
pub async fn read(
    mut payload: Payload,
    declared_length: Option<usize>,
    limit: usize,
) -> Result<BytesMut, HttpError> {
    if declared_length.is_some_and(|n| n > limit) {
        return Err(HttpError::PayloadTooLarge(limit));
    }
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

/// Parses a body into JSON-RPC messages.
pub fn parse(body: &[u8]) -> Result<Incoming, HttpError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| HttpError::Parse(format!("body is not valid UTF-8 ({e})")))?;
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

fn invalid(id: Option<RequestId>, message: &str) -> HttpError {
    HttpError::Rejected {
        id,
        code: ErrorCode::INVALID_REQUEST,
        message: message.to_owned(),
    }
}

/// Requests in one batch must not share an id: their responses could not be told apart.
fn check_unique_ids(messages: &[Message]) -> Result<(), HttpError> {
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

    fn refusal(body: &[u8]) -> String {
        match parse(body) {
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
    }

    #[test]
    fn accepts_single_messages_and_batches() {
        let one = parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).unwrap();
        assert!(!one.batch && one.messages.len() == 1);
        let two =
            parse(br#"[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","id":2,"method":"b"}]"#)
                .unwrap();
        assert!(two.batch && two.messages.len() == 2);
    }
}

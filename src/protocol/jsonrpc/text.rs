//! Reading one message from JSON text. A well-formed message object is read straight into its
//! parts; anything else goes the long way, through a `Value` and [`Message::from_value`], which
//! names what is wrong. Both ways agree on every text: the quick one only takes what the long
//! one would take, and builds the same message.
//!
//! The quick way skips the top-level map a `Value` builds (a key string and a tree entry per
//! member, then one lookup and removal per member), about 1,700 instructions per message; two
//! messages are read on every forwarded call.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{Message, MessageError, Notification, Request, RequestId, Response, RpcError};

/// Why a text is not a JSON-RPC message.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("invalid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error(transparent)]
    Shape(#[from] MessageError),
}

impl Message {
    /// Reads one message (not a batch) from JSON text.
    pub fn from_json(text: &[u8]) -> Result<Self, TextError> {
        if let Some(message) = Self::from_object_text(text) {
            return Ok(message);
        }
        let value: Value = serde_json::from_slice(text)?;
        Ok(Self::from_value(value)?)
    }

    /// The message a JSON object's text holds when it is well formed; `None` for anything
    /// else, which the caller reads through a `Value` for the precise error.
    pub fn from_object_text(text: &[u8]) -> Option<Self> {
        // A struct also deserializes from an array, by position; only an object is a message.
        if text.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        serde_json::from_slice::<Members>(text).ok()?.into_message()
    }
}

/// A message object's members. A member of the wrong type, a duplicate member or a `null`
/// where a value must be fails the read, which sends the text the long way.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(borrow)]
    jsonrpc: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    id: Option<RequestId>,
    #[serde(default, deserialize_with = "present")]
    method: Option<String>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    error: Option<RpcError>,
}

/// A member that is there, `null` included (which `Option`'s own reading takes for absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl Members<'_> {
    /// The message, classified as [`Message::from_value`] does; `None` where it would refuse.
    fn into_message(self) -> Option<Message> {
        if self.jsonrpc != "2.0" {
            return None;
        }
        let Some(method) = self.method else {
            let outcome = match (self.result, self.error) {
                (Some(result), None) => Ok(result),
                (None, Some(error)) => Err(error),
                _ => return None,
            };
            return Some(Message::Response(Response {
                id: self.id?,
                outcome,
            }));
        };
        let params = match self.params {
            None => None,
            Some(params @ (Value::Object(_) | Value::Array(_))) => Some(params),
            Some(_) => return None,
        };
        Some(match self.id {
            None => Message::Notification(Notification { method, params }),
            Some(id) => Message::Request(Request { id, method, params }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts each way must read alike, taken or refused.
    const TEXTS: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"e"},"x":1}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","method":"x","params":[1]}"#,
        r#"{"jsonrpc":"2.0","id":"a","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":7,"result":null}"#,
        r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no","data":{"a":1}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
        r#"  {"jsonrpc":"2.0","id":1,"method":"x","id":2}"#,
        r#"{"jsonrpc":"2\u002e0","id":1,"method":"x"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
        r#"{"id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":null}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":null}"#,
        r#"{"jsonrpc":"2.0","result":{}}"#,
        r#"{"jsonrpc":"2.0"}"#,
        r#"["2.0",1,"ping"]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x""#,
        "7",
    ];

    /// What the long way makes of a text, as comparable text.
    fn long_way(text: &str) -> Result<String, String> {
        let read = serde_json::from_str::<Value>(text)
            .map_err(TextError::from)
            .and_then(|value| Ok(Message::from_value(value)?));
        read.map(|m| format!("{m:?}")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_quick_way_takes_only_what_the_long_way_takes_and_reads_it_alike() {
        let mut taken = 0;
        for text in TEXTS {
            let expected = long_way(text);
            if let Some(quick) = Message::from_object_text(text.as_bytes()) {
                taken += 1;
                assert_eq!(Ok(format!("{quick:?}")), expected, "{text}");
            }
            let read = Message::from_json(text.as_bytes());
            let read = read.map(|m| format!("{m:?}")).map_err(|e| e.to_string());
            assert_eq!(read, expected, "{text}");
        }
        assert_eq!(
            taken, 9,
            "every well-formed object but the one with a duplicate member"
        );
    }
}

//! JSON-RPC 2.0 messages as mcpgate handles them: classification of raw JSON into requests,
//! notifications and responses, with precise errors for malformed input.
//!
//! Params and results stay as `serde_json::Value`, so fields this gateway does not know about
//! pass through unchanged.

use std::fmt;

use rmcp::model::{ErrorCode, ErrorData};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

mod text;

pub use text::TextError;

/// A JSON-RPC request id: a string or an integer (MCP forbids `null`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    String(String),
}

impl RequestId {
    /// Reads an id from JSON, refusing `null`, floats, and other types.
    pub fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Number(n) => n.as_i64().map(RequestId::Number),
            Value::String(s) => Some(RequestId::String(s.clone())),
            _ => None,
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            RequestId::Number(n) => json!(n),
            RequestId::String(s) => json!(s),
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Number(n) => write!(f, "{n}"),
            RequestId::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// A request: it expects exactly one response with the same id.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: RequestId,
    pub method: String,
    pub params: Option<Value>,
}

/// A request's wire form, `{"jsonrpc": "2.0", "id", "method", "params"}` (no `params` when it
/// has none), borrowed from its parts: the one place that form is written.
#[derive(Serialize)]
struct WireRequest<'a> {
    jsonrpc: &'static str,
    id: &'a RequestId,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a Value>,
}

impl<'a> WireRequest<'a> {
    fn new(id: &'a RequestId, method: &'a str, params: Option<&'a Value>) -> Self {
        Self {
            jsonrpc: "2.0",
            id,
            method,
            params,
        }
    }
}

/// Serialized in its wire form, straight from its parts rather than copied into a `Value`.
impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireRequest::new(&self.id, &self.method, self.params.as_ref()).serialize(serializer)
    }
}

/// A notification: no id, no response.
#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Option<Value>,
}

/// A JSON-RPC error object (`code`, `message`, optional `data`), whoever failed: an upstream,
/// a client answering, or the gateway itself. rmcp's type, so it serializes as the wire has it.
pub type RpcError = ErrorData;

/// What a request came to: its result, or the error it failed with.
pub type Outcome = Result<Value, RpcError>;

/// A response: either `result` or `error`, for the request with the same id.
#[derive(Debug, Clone)]
pub struct Response {
    pub id: RequestId,
    pub outcome: Outcome,
}

/// One JSON-RPC message.
#[derive(Debug, Clone)]
pub enum Message {
    Request(Request),
    Notification(Notification),
    Response(Response),
}

/// Why a JSON value is not a valid JSON-RPC message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("a JSON-RPC message must be a JSON object")]
    NotAnObject,
    #[error("\"jsonrpc\" must be the string \"2.0\"")]
    WrongVersion,
    #[error("\"method\" must be a string")]
    MethodNotString,
    #[error("\"id\" must be a string or an integer")]
    BadId,
    #[error("\"params\" must be an object or an array")]
    BadParams,
    #[error(
        "a response must carry exactly one of \"result\" and \"error\", an error being an object with an integer \"code\" and a string \"message\""
    )]
    BadResponse,
    #[error("the message is neither a request, a notification nor a response")]
    Unclassifiable,
}

impl Message {
    /// Classifies one JSON value.
    pub fn from_value(value: Value) -> Result<Self, MessageError> {
        let Value::Object(mut object) = value else {
            return Err(MessageError::NotAnObject);
        };
        if object.get("jsonrpc") != Some(&json!("2.0")) {
            return Err(MessageError::WrongVersion);
        }
        match object.remove("method") {
            Some(Value::String(method)) => Self::call_from(method, object),
            Some(_) => Err(MessageError::MethodNotString),
            None => Self::response_from(object),
        }
    }

    fn call_from(method: String, mut object: Map<String, Value>) -> Result<Self, MessageError> {
        let params = match object.remove("params") {
            None => None,
            Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
            Some(_) => return Err(MessageError::BadParams),
        };
        match object.get("id") {
            None => Ok(Message::Notification(Notification { method, params })),
            Some(id) => {
                let id = RequestId::from_value(id).ok_or(MessageError::BadId)?;
                Ok(Message::Request(Request { id, method, params }))
            }
        }
    }

    fn response_from(mut object: Map<String, Value>) -> Result<Self, MessageError> {
        let Some(id_value) = object.get("id") else {
            return Err(MessageError::Unclassifiable);
        };
        let id = RequestId::from_value(id_value).ok_or(MessageError::BadId)?;
        let outcome = match (object.remove("result"), object.remove("error")) {
            (Some(result), None) => Ok(result),
            (None, Some(error)) => {
                Err(serde_json::from_value(error).map_err(|_| MessageError::BadResponse)?)
            }
            _ => return Err(MessageError::BadResponse),
        };
        Ok(Message::Response(Response { id, outcome }))
    }

    /// Serializes the message back to JSON.
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request(r) => request_value(&r.id, &r.method, r.params.as_ref()),
            Message::Notification(n) => notification_value(&n.method, n.params.as_ref()),
            Message::Response(r) => match &r.outcome {
                Ok(result) => result_value(&r.id, result.clone()),
                Err(error) => json!({"jsonrpc": "2.0", "id": r.id.to_value(), "error": error}),
            },
        }
    }
}

/// Builds a request object.
pub fn request_value(id: &RequestId, method: &str, params: Option<&Value>) -> Value {
    serde_json::to_value(WireRequest::new(id, method, params)).expect("a request always serializes")
}

/// Builds a notification object.
pub fn notification_value(method: &str, params: Option<&Value>) -> Value {
    let mut v = json!({"jsonrpc": "2.0", "method": method});
    if let Some(p) = params {
        v["params"] = p.clone();
    }
    v
}

/// Builds a success response object.
pub fn result_value(id: &RequestId, result: Value) -> Value {
    let mut object = Map::new();
    object.insert("jsonrpc".into(), Value::from("2.0"));
    object.insert("id".into(), id.to_value());
    // Moved in: `json!` would serialize the result into a copy of itself.
    object.insert("result".into(), result);
    Value::Object(object)
}

/// Builds an error response object; `id` is `null` when the request id is unknown.
pub fn error_value(id: Option<&RequestId>, error: &ErrorData) -> Value {
    let id = id.map_or(Value::Null, RequestId::to_value);
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// Shorthand for an [`ErrorData`] with a code and message and no data.
pub fn error_data(code: ErrorCode, message: impl Into<String>) -> ErrorData {
    ErrorData::new(code, message.into(), None)
}

/// Whether an outgoing message, as sent, is a response (a result or an error).
pub fn is_response(message: &Value) -> bool {
    message.get("method").is_none()
        && (message.get("result").is_some() || message.get("error").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_serializes_to_its_wire_form() {
        let with_params = Request {
            id: RequestId::String("a-1".into()),
            method: "tools/call".into(),
            params: Some(json!({"name": "echo", "arguments": {"text": "hi"}})),
        };
        let without = Request {
            id: RequestId::Number(7),
            method: "ping".into(),
            params: None,
        };
        for request in [with_params, without] {
            let sent: Value =
                serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
            let expected = request_value(&request.id, &request.method, request.params.as_ref());
            assert_eq!(sent, expected);
        }
    }

    #[test]
    fn classifies_requests_notifications_and_responses() {
        let req = Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap();
        assert!(matches!(
            req,
            Message::Request(Request {
                id: RequestId::Number(1),
                ..
            })
        ));
        let note = Message::from_value(json!({"jsonrpc":"2.0","method":"x"})).unwrap();
        assert!(matches!(note, Message::Notification(_)));
        let resp = Message::from_value(json!({"jsonrpc":"2.0","id":"a","result":{}})).unwrap();
        assert!(matches!(
            resp,
            Message::Response(Response { outcome: Ok(_), .. })
        ));
    }

    #[test]
    fn rejects_malformed_messages_precisely() {
        let cases = [
            (json!([1]), MessageError::NotAnObject),
            (json!({"id":1,"method":"x"}), MessageError::WrongVersion),
            (
                json!({"jsonrpc":"2.0","id":1,"method":7}),
                MessageError::MethodNotString,
            ),
            (
                json!({"jsonrpc":"2.0","id":null,"method":"x"}),
                MessageError::BadId,
            ),
            (
                json!({"jsonrpc":"2.0","id":1.5,"method":"x"}),
                MessageError::BadId,
            ),
            (
                json!({"jsonrpc":"2.0","id":1,"method":"x","params":3}),
                MessageError::BadParams,
            ),
            (json!({"jsonrpc":"2.0","id":1}), MessageError::BadResponse),
            (
                json!({"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}),
                MessageError::BadResponse,
            ),
            (
                json!({"jsonrpc":"2.0","id":1,"error":{"code":-1}}),
                MessageError::BadResponse,
            ),
            (json!({"jsonrpc":"2.0"}), MessageError::Unclassifiable),
        ];
        for (value, expected) in cases {
            assert_eq!(
                Message::from_value(value.clone()).unwrap_err(),
                expected,
                "{value}"
            );
        }
    }
}

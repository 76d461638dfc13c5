//! The client requests the gateway serves in a session, each with the parameters it is routed
//! by: checked once, where the request arrives, and handed to dispatch typed. Everything else
//! in `params` goes upstream as the client sent it.

use serde_json::{Map, Value};

use super::listen::ListenFilter;
use super::method::{ListKind, Method};

/// A client request the gateway serves in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `initialize` in a session that has been initialized (refused).
    Initialize,
    Ping,
    /// A list merged across upstreams.
    List(ListKind),
    /// `tools/call` of a namespaced tool name.
    CallTool {
        name: String,
    },
    /// `prompts/get` of a namespaced prompt name.
    GetPrompt {
        name: String,
    },
    ReadResource {
        uri: String,
    },
    Subscribe {
        uri: String,
    },
    Unsubscribe {
        uri: String,
    },
    /// `completion/complete`, routed by its `ref`.
    Complete,
    /// `logging/setLevel`; the level is checked when it is set.
    SetLevel {
        level: String,
    },
    /// `subscriptions/listen` (2026-07-28) with its filter.
    Listen(ListenFilter),
    /// `tasks/get`, `tasks/update` or `tasks/cancel` of a task id the gateway issued.
    Task {
        task_id: String,
    },
}

/// Why a request is not a [`Call`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the gateway does not serve this method")]
    UnknownMethod,
    /// Why the params are wrong, naming the field.
    #[error("{0}")]
    InvalidParams(String),
}

impl Call {
    /// The call `method` makes with `params`: they must be an object (or absent) holding the
    /// string the method is routed by.
    pub fn parse(method: &Method, params: Option<&Value>) -> Result<Self, CallError> {
        let string = |field| required_string(params, field);
        let call = match method {
            Method::Initialize => Call::Initialize,
            Method::Ping => Call::Ping,
            Method::List(kind) => Call::List(*kind),
            Method::CallTool => Call::CallTool {
                name: string("name")?,
            },
            Method::GetPrompt => Call::GetPrompt {
                name: string("name")?,
            },
            Method::ReadResource => Call::ReadResource {
                uri: string("uri")?,
            },
            Method::Subscribe => Call::Subscribe {
                uri: string("uri")?,
            },
            Method::Unsubscribe => Call::Unsubscribe {
                uri: string("uri")?,
            },
            Method::Complete => Call::Complete,
            Method::SetLevel => Call::SetLevel {
                level: string("level")?,
            },
            Method::Listen => Call::Listen(ListenFilter::parse(params)?),
            Method::GetTask | Method::UpdateTask | Method::CancelTask => Call::Task {
                task_id: string("taskId")?,
            },
            _ => return Err(CallError::UnknownMethod),
        };
        object(params)?;
        Ok(call)
    }
}

/// The params as an object, `None` when there are none.
fn object(params: Option<&Value>) -> Result<Option<&Map<String, Value>>, CallError> {
    match params {
        None => Ok(None),
        Some(Value::Object(params)) => Ok(Some(params)),
        Some(_) => Err(CallError::InvalidParams("params must be an object".into())),
    }
}

fn required_string(params: Option<&Value>, field: &str) -> Result<String, CallError> {
    object(params)?
        .and_then(|params| params.get(field))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CallError::InvalidParams(format!("params.{field} must be a string")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(name: &str, params: Value) -> Result<Call, CallError> {
        Call::parse(&Method::parse(name), Some(&params))
    }

    #[test]
    fn carries_the_string_a_call_is_routed_by() {
        assert_eq!(
            parse("tools/call", json!({"name": "fs__read", "arguments": {}})),
            Ok(Call::CallTool {
                name: "fs__read".into()
            })
        );
        assert_eq!(
            parse("resources/templates/list", json!({})),
            Ok(Call::List(ListKind::ResourceTemplates))
        );
        assert_eq!(
            parse("tasks/cancel", json!({"taskId": "mcpgate-task.x.y"})),
            Ok(Call::Task {
                task_id: "mcpgate-task.x.y".into()
            })
        );
        assert_eq!(
            Call::parse(&Method::Ping, None),
            Ok(Call::Ping),
            "params may be absent"
        );
    }

    #[test]
    fn refuses_unknown_methods_before_looking_at_params() {
        let invalid = |reason: &str| Err(CallError::InvalidParams(reason.into()));
        assert_eq!(
            parse("server/discover", json!([])),
            Err(CallError::UnknownMethod)
        );
        assert_eq!(
            parse("notifications/cancelled", json!({})),
            Err(CallError::UnknownMethod)
        );
        assert_eq!(
            parse("ping", json!([])),
            invalid("params must be an object")
        );
        assert_eq!(
            parse("resources/read", json!([])),
            invalid("params must be an object")
        );
        assert_eq!(
            parse("tasks/get", json!({})),
            invalid("params.taskId must be a string")
        );
        assert_eq!(
            parse("tasks/result", json!({"taskId": "t"})),
            Err(CallError::UnknownMethod)
        );
        assert_eq!(
            parse("logging/setLevel", json!({"level": 3})),
            invalid("params.level must be a string")
        );
    }
}

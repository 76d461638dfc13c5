//! Tools that talk back to the client while they run: log and progress
//! notifications, sampling (`sampling/createMessage`) and elicitation
//! (`elicitation/create`, including the SEP-1034 defaults and SEP-1330 enums forms).
//!
//! Requests sent from inside a tool call carry rmcp's originating-request marker,
//! so over Streamable HTTP they travel on that call's POST SSE stream.
//!
//! rmcp 3.11 deprecates logging and sampling (SEP-2577, protocol 2026-07-28);
//! the fixture uses them on purpose because the 2025-11-25 surface is under test.
#![allow(deprecated)]

use std::time::Duration;

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{
        CallToolResult, ClientCapabilities, ContentBlock, CreateMessageRequestParams,
        CreateMessageResult, ElicitRequestParams, ElicitResult, LoggingLevel,
        ProgressNotificationParam, SamplingMessage,
    },
    service::{RequestContext, ServiceError},
};
use serde_json::{Value, json};

use crate::{server::Fixture, tools::text};

/// Pause between the steps of the logging and progress tools.
const STEP: Duration = Duration::from_millis(50);

/// Sends three info-level log notifications, [`STEP`] apart, as far as the client's log level
/// allows (on the 2026-07-28 wire, none unless the request names one).
pub async fn with_logging(
    fixture: &Fixture,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let messages = [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ];
    for (index, message) in messages.into_iter().enumerate() {
        if index > 0 {
            tokio::time::sleep(STEP).await;
        }
        fixture
            .log_level
            .send_for(context, LoggingLevel::Info, Value::from(message))
            .await
            .map_err(peer_error)?;
    }
    Ok(text("Sent three log notifications."))
}

/// Reports progress 0, 50 and 100 of 100 when the call carries a progress token.
pub async fn with_progress(
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let token = context.meta.get_progress_token();
    for (index, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
        if index > 0 {
            tokio::time::sleep(STEP).await;
        }
        if let Some(token) = &token {
            let params = ProgressNotificationParam::new(token.clone(), progress).with_total(100.0);
            context
                .peer
                .notify_progress(params)
                .await
                .map_err(peer_error)?;
        }
    }
    Ok(text("Progress reporting finished."))
}

/// Asks the client's LLM to answer `prompt` and returns its text.
pub async fn sampling(
    context: &RequestContext<RoleServer>,
    prompt: String,
) -> Result<CallToolResult, McpError> {
    if !client_supports(context, |caps| caps.sampling.is_some()) {
        return Ok(unsupported("sampling"));
    }
    let params = CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 100);
    let reply = context
        .peer
        .create_message(params)
        .await
        .map_err(peer_error)?;
    Ok(sampled(reply))
}

/// The tool result reporting what the client's LLM answered.
pub fn sampled(reply: CreateMessageResult) -> CallToolResult {
    let answer: Vec<String> = reply
        .message
        .content
        .into_vec()
        .iter()
        .filter_map(|block| block.as_text().map(|t| t.text.clone()))
        .collect();
    text(format!("LLM response: {}", answer.join("\n")))
}

/// Asks the user for a username and email.
pub async fn elicitation(
    context: &RequestContext<RoleServer>,
    message: String,
) -> Result<CallToolResult, McpError> {
    let schema = json!({
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"}
        },
        "required": ["username", "email"]
    });
    let result = elicit(context, &message, schema).await?;
    Ok(result.map_or_else(
        || unsupported("elicitation"),
        |r| text(format!("User response: {}", describe(&r))),
    ))
}

/// Elicits a form whose every primitive field has a default (SEP-1034).
pub async fn elicitation_defaults(
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Full name", "default": "John Doe"},
            "age": {"type": "integer", "description": "Age in years", "default": 30},
            "score": {"type": "number", "description": "Score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "Account status",
                "enum": ["active", "inactive", "pending"],
                "default": "active"
            },
            "verified": {"type": "boolean", "description": "Verified account", "default": true}
        }
    });
    elicit_form(context, "Review the prefilled profile", schema).await
}

/// Elicits a form using each enum style of SEP-1330.
pub async fn elicitation_enums(
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let schema = json!({
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {
                "type": "string",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"}
                ]
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"]
            },
            "untitledMulti": {
                "type": "array",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]}
            },
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"}
                    ]
                }
            }
        }
    });
    elicit_form(context, "Pick from each kind of list", schema).await
}

/// Runs a form elicitation and reports its outcome as text.
async fn elicit_form(
    context: &RequestContext<RoleServer>,
    message: &str,
    schema: Value,
) -> Result<CallToolResult, McpError> {
    let result = elicit(context, message, schema).await?;
    Ok(result.map_or_else(
        || unsupported("elicitation"),
        |r| text(format!("Elicitation completed: {}", describe(&r))),
    ))
}

/// Sends `elicitation/create`; `None` when the client lacks the capability.
async fn elicit(
    context: &RequestContext<RoleServer>,
    message: &str,
    schema: Value,
) -> Result<Option<ElicitResult>, McpError> {
    if !client_supports(context, |caps| caps.elicitation.is_some()) {
        return Ok(None);
    }
    let params: ElicitRequestParams = serde_json::from_value(json!({
        "mode": "form",
        "message": message,
        "requestedSchema": schema
    }))
    .map_err(|e| McpError::internal_error(format!("bad elicitation schema: {e}"), None))?;
    let result = context
        .peer
        .create_elicitation(params)
        .await
        .map_err(peer_error)?;
    Ok(Some(result))
}

/// `action=…, content=…` for an elicitation result.
fn describe(result: &ElicitResult) -> String {
    let action = serde_json::to_value(&result.action).unwrap_or(Value::Null);
    let content = result.content.clone().unwrap_or_else(|| json!({}));
    format!(
        "action={}, content={content}",
        action.as_str().unwrap_or("unknown")
    )
}

/// Whether the client declared a capability at `initialize`.
fn client_supports(
    context: &RequestContext<RoleServer>,
    check: impl FnOnce(&ClientCapabilities) -> bool,
) -> bool {
    context.client_capabilities().as_ref().is_some_and(check)
}

/// Tool-level error for a client that lacks a needed capability.
fn unsupported(capability: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "The client did not declare the {capability} capability"
    ))])
}

/// Maps a failed exchange with the client to a JSON-RPC internal error.
fn peer_error(error: ServiceError) -> McpError {
    McpError::internal_error(format!("exchange with client failed: {error}"), None)
}

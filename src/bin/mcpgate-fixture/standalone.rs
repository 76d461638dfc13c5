//! Traffic the fixture sends on a session's standalone (GET) stream, unrelated to any request,
//! as servers do that call the TypeScript SDK's `server.request()` or notify from background
//! work:
//! - `sample_on_standalone` sends its sampling request on the standalone stream, and, like the
//!   TypeScript SDK without an event store, drops it when no standalone stream is open (the
//!   tool then fails at once, saying so);
//! - `notify_later` sends `count` numbered log messages (`{"n": i}`) after `delay_ms`, from a
//!   task of its own, so they belong to no request.
//!
//! rmcp 3.11 deprecates sampling and logging (SEP-2577, protocol 2026-07-28); the fixture
//! implements them because 2025-11-25 is under test.
#![allow(deprecated)]

use std::time::Duration;

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{
        CallToolResult, ContentBlock, CreateMessageRequestParams, JsonObject, LoggingLevel,
        SamplingMessage,
    },
    service::RequestContext,
};
use serde_json::json;

use crate::{interactive, reconnect, server::Fixture, tools::text};

/// Pause between two of `notify_later`'s messages.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(20);
/// Most messages one `notify_later` call sends.
const MAX_NOTIFICATIONS: u64 = 100;

/// Body of `sample_on_standalone`.
pub async fn sample(
    fixture: &Fixture,
    context: &RequestContext<RoleServer>,
    prompt: String,
) -> Result<CallToolResult, McpError> {
    let open = match (&fixture.streams, reconnect::session_id(context)) {
        (Some(streams), Some(session)) => streams.standalone_open(&session),
        _ => false,
    };
    if !open {
        return Ok(CallToolResult::error(vec![ContentBlock::text(
            "dropped: no standalone stream was open for the sampling request",
        )]));
    }
    let peer = context.peer.clone();
    let params = CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 100);
    // A task of its own: the request carries no originating request, so it rides the
    // standalone stream.
    let reply = tokio::spawn(async move { peer.create_message(params).await })
        .await
        .map_err(|e| McpError::internal_error(e.to_string(), None))?
        .map_err(|e| McpError::internal_error(format!("sampling failed: {e}"), None))?;
    Ok(interactive::sampled(reply))
}

/// Body of `notify_later`.
pub fn notify_later(
    fixture: &Fixture,
    context: &RequestContext<RoleServer>,
    args: &JsonObject,
) -> CallToolResult {
    let number = |name: &str| {
        args.get(name)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let (count, delay) = (number("count").min(MAX_NOTIFICATIONS), number("delay_ms"));
    let (peer, level) = (context.peer.clone(), fixture.log_level.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        for n in 1..=count {
            if let Err(error) = level.send(&peer, LoggingLevel::Info, json!({"n": n})).await {
                tracing::warn!(%error, n, "could not send a numbered notification");
            }
            tokio::time::sleep(NOTIFY_INTERVAL).await;
        }
    });
    text(format!("{count} notifications in {delay} ms"))
}

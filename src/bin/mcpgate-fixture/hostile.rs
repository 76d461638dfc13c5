//! Tools that show what the process sees or misbehave on purpose, for the gateway's hardening
//! tests:
//! - `environment` returns the names of the environment variables this process sees;
//! - `huge_line` answers its own call with about `bytes` bytes of text. Over stdio it writes
//!   that answer as one JSON-RPC line straight to stdout, in pieces, so the fixture never holds
//!   it whole; rmcp then answers the call a second time, which the gateway must ignore. Over
//!   HTTP (Streamable or SSE) it returns the text as its result;
//! - `flood_notifications` sends `count` notifications (`method`, by default
//!   `notifications/tools/list_changed`) carrying about `bytes` of padding each, outside any
//!   request, and logs `flood done` to stderr after the last one. Over stdio a thread of its own
//!   writes them straight to stdout, a whole line at a time, as fast as the pipe takes them;
//!   over HTTP they go through rmcp, on the standalone stream (SSE: the one stream).

use std::io::Write as _;

use rmcp::{
    ErrorData as McpError, Peer, RoleServer,
    model::{CallToolResult, CustomNotification, JsonObject, ServerNotification},
    service::{RequestContext, ServiceError},
};
use serde_json::{Value, json};

use crate::{server::Fixture, tools::text};

/// Largest `huge_line` answer.
const MAX_HUGE_LINE: u64 = 4 << 30;
/// Most notifications one `flood_notifications` call sends.
const MAX_FLOOD: u64 = 1_000_000;
/// Largest padding of one flood notification.
const MAX_PADDING: u64 = 1 << 20;
/// Size of the pieces `huge_line` writes to stdout.
const PIECE: usize = 64 * 1024;
/// Method `flood_notifications` sends unless told otherwise.
const DEFAULT_FLOOD_METHOD: &str = "notifications/tools/list_changed";

/// Body of `environment`: the sorted variable names, as a JSON array in one text block.
pub fn environment() -> CallToolResult {
    let mut names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    names.sort();
    text(json!(names).to_string())
}

/// Body of `huge_line`.
pub async fn huge_line(
    fixture: &Fixture,
    context: &RequestContext<RoleServer>,
    args: &JsonObject,
) -> Result<CallToolResult, McpError> {
    let bytes = number(args, "bytes").min(MAX_HUGE_LINE) as usize;
    if !fixture.over_stdio {
        return Ok(text("x".repeat(bytes)));
    }
    let id = serde_json::to_string(&context.id)
        .map_err(|e| McpError::internal_error(e.to_string(), None))?;
    tokio::task::spawn_blocking(move || write_huge_answer(&id, bytes))
        .await
        .map_err(|e| McpError::internal_error(e.to_string(), None))?
        .map_err(|e| McpError::internal_error(format!("cannot write stdout: {e}"), None))?;
    Ok(text("huge line sent"))
}

/// Writes `{"jsonrpc":"2.0","id":ID,"result":{"content":[{"type":"text","text":"xxx…"}]}}` and
/// a newline to stdout, the text being `bytes` long, one [`PIECE`] at a time.
fn write_huge_answer(id: &str, bytes: usize) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    write!(
        stdout,
        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":""#
    )?;
    let piece = vec![b'x'; PIECE];
    let mut left = bytes;
    while left > 0 {
        let now = left.min(PIECE);
        stdout.write_all(&piece[..now])?;
        left -= now;
    }
    stdout.write_all(b"\"}]}}\n")?;
    stdout.flush()
}

/// What `flood_notifications` sends.
struct Flood {
    method: String,
    count: u64,
    padding: String,
}

impl Flood {
    /// The params of notification `n`.
    fn params(&self, n: u64) -> Value {
        json!({"n": n, "uri": format!("test://flood/{n}"), "padding": self.padding})
    }

    /// Writes the notifications to stdout, each line under the stdout lock so that rmcp's own
    /// messages stay whole between them.
    fn write(&self) -> std::io::Result<()> {
        for n in 0..self.count {
            let line = json!({"jsonrpc": "2.0", "method": self.method, "params": self.params(n)});
            writeln!(std::io::stdout().lock(), "{line}")?;
        }
        Ok(())
    }

    /// Sends the notifications through rmcp.
    async fn send(&self, peer: &Peer<RoleServer>) -> Result<(), ServiceError> {
        for n in 0..self.count {
            let notification = CustomNotification::new(self.method.clone(), Some(self.params(n)));
            peer.send_notification(ServerNotification::CustomNotification(notification))
                .await?;
        }
        Ok(())
    }
}

/// Body of `flood_notifications`.
pub fn flood_notifications(
    fixture: &Fixture,
    context: &RequestContext<RoleServer>,
    args: &JsonObject,
) -> CallToolResult {
    let flood = Flood {
        method: args
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_FLOOD_METHOD)
            .to_owned(),
        count: number(args, "count").min(MAX_FLOOD),
        padding: "x".repeat(number(args, "bytes").min(MAX_PADDING) as usize),
    };
    let count = flood.count;
    if !fixture.over_stdio {
        let peer = context.peer.clone();
        tokio::spawn(async move { report(flood.send(&peer).await) });
    } else {
        std::thread::spawn(move || report(flood.write()));
    }
    text(format!("flooding {count} notifications"))
}

/// Logs how a flood ended.
fn report(outcome: Result<(), impl std::fmt::Display>) {
    match outcome {
        Ok(()) => tracing::info!("flood done"),
        Err(error) => tracing::warn!(%error, "flood stopped early"),
    }
}

/// A non-negative integer argument, 0 when absent.
fn number(args: &JsonObject, name: &str) -> u64 {
    args.get(name).and_then(Value::as_u64).unwrap_or(0)
}

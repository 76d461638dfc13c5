//! The spans of MCP traffic, named and attributed per the OpenTelemetry semantic conventions for
//! MCP (development status): `{mcp.method.name} {target}`, the target being the tool or prompt
//! name. One server span per `/mcp` request, one client span per call to an upstream (recorded
//! only while traces are exported, see [`super::Tracing::layer`]).
//!
//! Attributes: `mcp.method.name`, `mcp.protocol.version`, `jsonrpc.request.id`,
//! `gen_ai.tool.name` with `gen_ai.operation.name = execute_tool`, `gen_ai.prompt.name`,
//! `network.transport` (`tcp`, or `pipe` for stdio upstreams), `rpc.response.status_code`
//! and `error.type` for JSON-RPC errors (`tool_error` for a tool result with `isError`), the
//! HTTP status, and `mcp.session.id` as a keyed hash of the session id only (see
//! [`crate::dispatch::IdSigner::session_tag`]). Never tool arguments, results, resource URIs or
//! credentials. Text a client chose is cut at [`MAX_TEXT`] bytes.

use crate::protocol::jsonrpc::RpcError;
use opentelemetry::trace::TraceContextExt;
use serde_json::Value;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::protocol::Method;
use crate::protocol::jsonrpc::Request;

/// Longest client-chosen text (a method, tool or prompt name, a request id) put in a span.
pub const MAX_TEXT: usize = 128;

/// JSON-RPC errors that say the caller asked for something the server cannot serve (or
/// cancelled it, -32800): not the server's failure, so not an error status on its span.
const CALLER_ERRORS: [i64; 6] = [-32700, -32600, -32601, -32602, -32002, -32800];

/// Which side of an MCP call a span describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// mcpgate serving its client.
    Server,
    /// mcpgate calling an upstream.
    Client,
}

/// The server span of one `/mcp` request, continuing `parent` (the client's trace context)
/// when it names one. Named `POST /mcp` until [`record_request`] names the method.
pub fn request_span(parent: opentelemetry::Context, http_version: &str) -> Span {
    let span = tracing::info_span!(
        "POST /mcp",
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = "POST",
        url.path = "/mcp",
        network.transport = "tcp",
        network.protocol.name = "http",
        network.protocol.version = http_version,
        mcp.method.name = Empty,
        mcp.protocol.version = Empty,
        mcp.session.id = Empty,
        jsonrpc.request.id = Empty,
        gen_ai.operation.name = Empty,
        gen_ai.tool.name = Empty,
        gen_ai.prompt.name = Empty,
        http.response.status_code = Empty,
        rpc.response.status_code = Empty,
        error.type = Empty,
    );
    // Fails only without the OpenTelemetry layer (unit tests), where there is nothing to link.
    let _ = span.set_parent(parent);
    span
}

/// Names the request span after the (first) request of the body and records what it asks.
pub fn record_request(span: &Span, request: &Request) {
    if span.is_disabled() {
        return;
    }
    let target = Target::of(request);
    let method = clamp(&request.method);
    span.record("mcp.method.name", method);
    span.record("jsonrpc.request.id", clamp(&request.id.to_string()));
    target.record(span);
    span.context().span().update_name(target.span_name(method));
}

/// Names the request span after a notification the body carries.
pub fn record_notification(span: &Span, method: &str) {
    if span.is_disabled() {
        return;
    }
    let method = clamp(method);
    span.record("mcp.method.name", method);
    span.context().span().update_name(method.to_owned());
}

/// Records the session a request uses: its keyed hash (never its id; `session_tag` computes
/// it, only when the span is recorded) and protocol revision.
pub fn record_session(span: &Span, session_tag: impl FnOnce() -> String, protocol_version: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("mcp.session.id", session_tag());
    span.record("mcp.protocol.version", protocol_version);
}

/// Records the HTTP status of the answer; a 5xx is the server's failure.
pub fn record_status(span: &Span, status: u16) {
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("error.type", status.to_string());
        span.record("otel.status_code", "error");
    }
}

/// The client span of one call to an upstream (the request as the upstream sees it, with the
/// tool's own name), over `tcp` (HTTP) or a `pipe` (stdio).
pub fn upstream_span(upstream: &str, network_transport: &'static str, request: &Request) -> Span {
    if !tracing::span_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
    let target = Target::of(request);
    let method = clamp(&request.method);
    let span = tracing::info_span!(
        "upstream call",
        otel.name = target.span_name(method),
        otel.kind = "client",
        otel.status_code = Empty,
        mcp.method.name = method,
        mcpgate.upstream.name = upstream,
        network.transport = network_transport,
        gen_ai.operation.name = Empty,
        gen_ai.tool.name = Empty,
        gen_ai.prompt.name = Empty,
        rpc.response.status_code = Empty,
        error.type = Empty,
    );
    target.record(&span);
    span
}

/// Records how a request ended: a JSON-RPC error's code (an error status, unless the server
/// side says the caller asked for something it cannot serve), or `tool_error` for a tool
/// result marked `isError`.
pub fn record_outcome(span: &Span, side: Side, outcome: &Result<Value, RpcError>) {
    match outcome {
        Ok(result) if result.get("isError") == Some(&Value::Bool(true)) => {
            span.record("error.type", "tool_error");
        }
        Ok(_) => {}
        Err(error) => {
            let code = i64::from(error.code.0);
            let code_text = code.to_string();
            span.record("rpc.response.status_code", code_text.as_str());
            span.record("error.type", code_text.as_str());
            let callers_fault = side == Side::Server && CALLER_ERRORS.contains(&code);
            if !callers_fault {
                span.record("otel.status_code", "error");
            }
        }
    }
}

/// What a request is about, in the conventions' terms.
struct Target<'a> {
    tool: Option<&'a str>,
    prompt: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn of(request: &'a Request) -> Self {
        let name = request
            .params
            .as_ref()
            .and_then(|params| params.get("name"))
            .and_then(Value::as_str)
            .map(clamp);
        match Method::parse(&request.method) {
            Method::CallTool => Target {
                tool: name,
                prompt: None,
            },
            Method::GetPrompt => Target {
                tool: None,
                prompt: name,
            },
            _ => Target {
                tool: None,
                prompt: None,
            },
        }
    }

    fn record(&self, span: &Span) {
        if let Some(tool) = self.tool {
            span.record("gen_ai.tool.name", tool);
            span.record("gen_ai.operation.name", "execute_tool");
        }
        if let Some(prompt) = self.prompt {
            span.record("gen_ai.prompt.name", prompt);
        }
    }

    fn span_name(&self, method: &str) -> String {
        match self.tool.or(self.prompt) {
            Some(target) => format!("{method} {target}"),
            None => method.to_owned(),
        }
    }
}

/// `text` cut to at most [`MAX_TEXT`] bytes, at a character boundary.
fn clamp(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let end = (0..=MAX_TEXT)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::jsonrpc::RequestId;

    fn request(method: &str, params: Value) -> Request {
        Request {
            id: RequestId::Number(1),
            method: method.into(),
            params: Some(params),
        }
    }

    #[test]
    fn span_names_follow_method_and_target() {
        let call = request("tools/call", json!({"name": "remote__echo"}));
        let prompt = request("prompts/get", json!({"name": "greeting"}));
        let read = request("resources/read", json!({"uri": "file:///secret"}));
        assert_eq!(
            Target::of(&call).span_name("tools/call"),
            "tools/call remote__echo"
        );
        assert_eq!(
            Target::of(&prompt).span_name("prompts/get"),
            "prompts/get greeting"
        );
        assert_eq!(
            Target::of(&read).span_name("resources/read"),
            "resources/read"
        );
    }

    #[test]
    fn client_chosen_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = clamp(&long);
        assert!(cut.len() <= MAX_TEXT && long.starts_with(cut));
        assert_eq!(clamp("echo"), "echo");
    }
}

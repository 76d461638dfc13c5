//! The tool catalog (`tools/list`) and `tools/call` dispatch, plus the tools
//! whose result is fixed content (text, image, audio, embedded resources, errors)
//! and the gateway helpers `echo`, `whoami` and `slow`. The tools that misbehave on purpose
//! live in `hostile.rs`; those that need input from the client (MRTR), in `input_required.rs`.

use std::time::Duration;

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{
        CallToolRequestParams, CallToolResult, ContentBlock, JsonObject, ProgressNotificationParam,
        ResourceContents, Tool,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

use crate::{
    hostile, input_required, interactive, media, reconnect,
    server::Fixture,
    standalone,
    subscriptions::{self, Change},
    tasks,
};

/// Name of the tool that closes its own SSE stream mid-call (SEP-1699).
pub const RECONNECTION_TOOL: &str = "test_reconnection";

/// Name of the tool whose `region` argument clients mirror in `Mcp-Param-Region` (SEP-2243).
const HEADER_TOOL: &str = "echo_region";

/// Every tool the fixture offers, in a stable order.
pub fn catalog() -> Vec<Tool> {
    let none = || object_schema(json!({}), &[]);
    let mut tools = vec![
        Tool::new("test_simple_text", "Returns one text block.", none()),
        Tool::new("test_image_content", "Returns a PNG image block.", none()),
        Tool::new("test_audio_content", "Returns a WAV audio block.", none()),
        Tool::new(
            "test_embedded_resource",
            "Returns an embedded text resource.",
            none(),
        ),
        Tool::new(
            "test_multiple_content_types",
            "Returns text, image and resource blocks.",
            none(),
        ),
        Tool::new(
            "test_tool_with_logging",
            "Sends three info log notifications while running.",
            none(),
        ),
        Tool::new(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100.",
            none(),
        ),
        Tool::new(
            "test_error_handling",
            "Always fails with isError: true.",
            none(),
        ),
        Tool::new(
            "test_sampling",
            "Asks the client to sample an LLM reply.",
            string_schema("prompt", "Prompt sent to the client's LLM"),
        ),
        Tool::new(
            "test_elicitation",
            "Asks the client for a username and email.",
            string_schema("message", "Message shown to the user"),
        ),
        Tool::new(
            "test_elicitation_sep1034_defaults",
            "Elicits a form whose fields carry defaults (SEP-1034).",
            none(),
        ),
        Tool::new(
            "test_elicitation_sep1330_enums",
            "Elicits a form with every enum style (SEP-1330).",
            none(),
        ),
        Tool::new(
            RECONNECTION_TOOL,
            "Closes its SSE stream mid-call and answers after the client resumes (SEP-1699).",
            none(),
        ),
        Tool::new(
            "json_schema_2020_12_tool",
            "Input schema uses JSON Schema 2020-12 keywords (SEP-1613).",
            json_schema_2020_12(),
        ),
        Tool::new(
            "echo",
            "Returns its `text` argument.",
            string_schema("text", "Text to return"),
        ),
        Tool::new("whoami", "Returns this server's --name.", none()),
        Tool::new(
            "client_info",
            "Returns the clientInfo, capabilities and protocolVersion this server was initialized with, as JSON.",
            none(),
        ),
        Tool::new(
            "sample_on_standalone",
            "Asks the client to sample on the standalone stream; dropped when none is open.",
            string_schema("prompt", "Prompt sent to the client's LLM"),
        ),
        Tool::new(
            "notify_later",
            "Sends `count` numbered log messages after `delay_ms`, outside any request.",
            notify_later_schema(),
        ),
        Tool::new(
            "environment",
            "Returns the names of the environment variables this server sees, as a JSON array.",
            none(),
        ),
        Tool::new(
            "huge_line",
            "Answers with about `bytes` bytes of text (over stdio: one raw line, then a second answer).",
            object_schema(
                json!({"bytes": {"type": "integer", "minimum": 0}}),
                &["bytes"],
            ),
        ),
        Tool::new(
            "flood_notifications",
            "Sends `count` notifications (`method`) of about `bytes` each, outside any request.",
            flood_schema(),
        ),
        Tool::new(
            "slow",
            "Sleeps `ms` milliseconds (cancellable; progress 0 first when asked), then returns \"done\".",
            slow_schema(),
        ),
        Tool::new(
            "test_logging_tool",
            "Sends three info log notifications, only as far as the client's log level allows.",
            none(),
        ),
        Tool::new(
            "test_trigger_tool_change",
            "Announces a tool list change (to subscriptions/listen streams; in a session, to its client).",
            none(),
        ),
        Tool::new(
            "test_trigger_prompt_change",
            "Announces a prompt list change (to subscriptions/listen streams; in a session, to its client).",
            none(),
        ),
        Tool::new(
            HEADER_TOOL,
            "Returns its `region` argument, which clients mirror in the Mcp-Param-Region header.",
            object_schema(
                json!({"region": {"type": "string", "x-mcp-header": "Region"}}),
                &["region"],
            ),
        ),
    ];
    tools.extend(input_required::catalog());
    tools.extend(tasks::catalog());
    tools
}

/// Runs the tool named in `request`.
pub async fn call(
    fixture: &Fixture,
    request: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let args = request.arguments.unwrap_or_default();
    match request.name.as_ref() {
        "test_simple_text" => Ok(text("This is a simple text response for testing.")),
        "test_image_content" => Ok(CallToolResult::success(vec![image()])),
        "test_audio_content" => Ok(CallToolResult::success(vec![ContentBlock::audio(
            media::wav_base64(),
            media::WAV_MIME,
        )])),
        "test_embedded_resource" => Ok(CallToolResult::success(vec![embedded_resource()])),
        "test_multiple_content_types" => Ok(multiple_content_types()),
        "test_error_handling" => Ok(CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )])),
        "test_tool_with_logging" | "test_logging_tool" => {
            interactive::with_logging(fixture, &context).await
        }
        "test_tool_with_progress" => interactive::with_progress(&context).await,
        "test_sampling" => interactive::sampling(&context, string_arg(&args, "prompt")?).await,
        "test_elicitation" => {
            interactive::elicitation(&context, string_arg(&args, "message")?).await
        }
        "test_elicitation_sep1034_defaults" => interactive::elicitation_defaults(&context).await,
        "test_elicitation_sep1330_enums" => interactive::elicitation_enums(&context).await,
        RECONNECTION_TOOL => reconnect::run_tool(fixture.streams.as_deref(), &context).await,
        "json_schema_2020_12_tool" => {
            Ok(text(format!("Received arguments: {}", Value::Object(args))))
        }
        "echo" => Ok(text(string_arg(&args, "text")?)),
        "whoami" => Ok(text(fixture.name.as_ref())),
        "client_info" => Ok(client_info(&context)),
        "sample_on_standalone" => {
            standalone::sample(fixture, &context, string_arg(&args, "prompt")?).await
        }
        "notify_later" => Ok(standalone::notify_later(fixture, &context, &args)),
        "slow" => slow(&args, &context).await,
        "environment" => Ok(hostile::environment()),
        "huge_line" => hostile::huge_line(fixture, &context, &args).await,
        "flood_notifications" => Ok(hostile::flood_notifications(fixture, &context, &args)),
        "test_trigger_tool_change" => {
            Ok(subscriptions::trigger(&fixture.changes, &context, Change::Tools).await)
        }
        "test_trigger_prompt_change" => {
            Ok(subscriptions::trigger(&fixture.changes, &context, Change::Prompts).await)
        }
        HEADER_TOOL => Ok(text(string_arg(&args, "region")?)),
        other => Err(McpError::invalid_params(
            format!("Unknown tool: {other}"),
            None,
        )),
    }
}

/// Body of `client_info`: what the client sent in `initialize`, and this process's id (which
/// tells two children apart).
fn client_info(context: &RequestContext<RoleServer>) -> CallToolResult {
    let initialized = context.peer.peer_info().map(|info| {
        json!({
            "clientInfo": info.client_info,
            "capabilities": info.capabilities,
            "protocolVersion": info.protocol_version,
        })
    });
    let mut report = initialized.unwrap_or_else(|| json!({}));
    report["pid"] = json!(std::process::id());
    text(report.to_string())
}

/// A successful result holding one text block.
pub fn text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

/// Reads a required string argument.
fn string_arg(args: &JsonObject, name: &str) -> Result<String, McpError> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            McpError::invalid_params(format!("argument `{name}` must be a string"), None)
        })
}

/// The fixture's PNG as an image block.
fn image() -> ContentBlock {
    ContentBlock::image(media::PNG_BASE64, media::PNG_MIME)
}

/// The resource embedded by `test_embedded_resource`.
fn embedded_resource() -> ContentBlock {
    ContentBlock::resource(ResourceContents::text(
        "This is an embedded resource content.",
        "test://embedded-resource",
    ))
}

/// Text, image and embedded JSON resource in one result.
fn multiple_content_types() -> CallToolResult {
    let resource = ResourceContents::text(
        json!({"test": "data", "value": 123}).to_string(),
        "test://mixed-content-resource",
    )
    .with_mime_type("application/json");
    CallToolResult::success(vec![
        ContentBlock::text("Multiple content types test:"),
        image(),
        ContentBlock::resource(resource),
    ])
}

/// Sleeps for the `ms` argument; a cancelled call gets no response (rmcp drops it).
async fn slow(
    args: &JsonObject,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let ms = args.get("ms").and_then(Value::as_u64).ok_or_else(|| {
        McpError::invalid_params("argument `ms` must be a non-negative integer", None)
    })?;
    if let Some(token) = context.meta.get_progress_token() {
        let started = ProgressNotificationParam::new(token, 0.0).with_total(ms as f64);
        if let Err(error) = context.peer.notify_progress(started).await {
            tracing::debug!(%error, "could not report the start of `slow`");
        }
    }
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(text("done")),
        () = context.ct.cancelled() => Err(McpError::internal_error("request cancelled", None)),
    }
}

/// `{"type": "object", "properties": …, "required": …}`.
pub fn object_schema(properties: Value, required: &[&str]) -> JsonObject {
    let mut schema = JsonObject::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), properties);
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    schema
}

/// A schema with one required string property.
fn string_schema(name: &str, description: &str) -> JsonObject {
    object_schema(
        json!({ name: {"type": "string", "description": description} }),
        &[name],
    )
}

/// Input schema of `notify_later`.
fn notify_later_schema() -> JsonObject {
    object_schema(
        json!({
            "count": {"type": "integer", "minimum": 0, "maximum": 100},
            "delay_ms": {"type": "integer", "minimum": 0}
        }),
        &["count"],
    )
}

/// Input schema of `flood_notifications`.
fn flood_schema() -> JsonObject {
    object_schema(
        json!({
            "count": {"type": "integer", "minimum": 0},
            "bytes": {"type": "integer", "minimum": 0},
            "method": {"type": "string"}
        }),
        &["count"],
    )
}

/// Input schema of `slow`.
fn slow_schema() -> JsonObject {
    object_schema(
        json!({"ms": {"type": "integer", "minimum": 0, "description": "Milliseconds to sleep"}}),
        &["ms"],
    )
}

/// Input schema of `json_schema_2020_12_tool`, as the conformance suite expects it: `$schema`,
/// `$defs` with an `$anchor`, `$ref`, `enum`, `allOf`/`anyOf`, `if`/`then`/`else` and
/// `additionalProperties`.
fn json_schema_2020_12() -> JsonObject {
    serde_json::from_value(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
            }
        },
        "properties": {
            "name": {"type": "string"},
            "address": {"$ref": "#/$defs/address"},
            "contactMethod": {"type": "string", "enum": ["phone", "email"]},
            "phone": {"type": "string"},
            "email": {"type": "string"}
        },
        "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
        "if": {
            "properties": {"contactMethod": {"const": "phone"}},
            "required": ["contactMethod"]
        },
        "then": {"required": ["phone"]},
        "else": {"required": ["email"]},
        "additionalProperties": false
    }))
    .expect("a JSON object")
}

//! The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) with the tools the
//! conformance suite (0.2.0) drives it with. The server decides which calls become tasks: a
//! client that declared the extension (at `initialize` or in the request's `_meta`) gets a
//! `CreateTaskResult` from every tool here but `greet`, and polls `tasks/get`, answers
//! in-task input with `tasks/update`, and stops a task with `tasks/cancel`.
//!
//! A client that did not declare it gets `slow_compute` synchronously and -32021 (naming the
//! extension) from the tools that only run as tasks. Tasks live in one store per process, so
//! every session and every stateless request of this process sees the same tasks.

use std::sync::LazyLock;
use std::time::Duration;

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ContentBlock,
        CreateTaskResult, GetTaskResult, JsonObject, Tool,
    },
    service::RequestContext,
    task_manager::{TaskContext, TaskExit, TaskFuture, TaskManager, TaskOptions},
};
use serde_json::{Value, json};

use crate::{
    mrtr::{self, Ask, Exchange, Gathered, Need, Retry},
    tools::{object_schema, text},
};

/// Every task of this process.
static TASKS: LazyLock<TaskManager> = LazyLock::new(TaskManager::new);

/// The tool that escalates to a task after a multi round-trip round.
const MRTR_TOOL: &str = "test_tool_with_task";

/// Every tool here, with its description.
const TOOLS: [(&str, &str); 7] = [
    ("greet", "Says hello to `name`; never a task."),
    (
        "slow_compute",
        "Sleeps `seconds` then answers with `label`; a task when the client declared tasks.",
    ),
    (
        "failing_job",
        "Task only: ends after a second with a tool error (isError).",
    ),
    (
        "protocol_error_job",
        "Task only: fails with a JSON-RPC error.",
    ),
    (
        "confirm_delete",
        "Task only: asks to confirm deleting `filename` (input_required), then answers.",
    ),
    (
        "multi_input",
        "Task only: asks for a name and a confirmation at once.",
    ),
    (
        MRTR_TOOL,
        "Asks the user's name in a multi round-trip round, then answers in a task.",
    ),
];

/// The tools of this module.
pub fn catalog() -> Vec<Tool> {
    let schema = |name: &str| match name {
        "greet" => object_schema(json!({"name": {"type": "string"}}), &["name"]),
        "slow_compute" => object_schema(
            json!({"seconds": {"type": "number"}, "label": {"type": "string"}}),
            &[],
        ),
        "confirm_delete" => object_schema(json!({"filename": {"type": "string"}}), &[]),
        _ => object_schema(json!({}), &[]),
    };
    TOOLS
        .iter()
        .map(|(name, description)| Tool::new(*name, *description, schema(name)))
        .collect()
}

/// Whether `name` is one of this module's tools.
pub fn is_tool(name: &str) -> bool {
    TOOLS.iter().any(|(tool, _)| *tool == name)
}

/// Runs one of this module's tools: synchronously, as a task, or not at all (-32021).
pub async fn call_tool(
    request: CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, McpError> {
    let declared = context
        .client_capabilities()
        .is_some_and(|capabilities| capabilities.supports_tasks());
    let args = request.arguments.clone().unwrap_or_default();
    match request.name.as_ref() {
        "greet" => Ok(greet(&args).into()),
        "slow_compute" if !declared => {
            tokio::time::sleep(seconds(&args)).await;
            Ok(text(computed(&args)).into())
        }
        _ if !declared => Err(McpError::missing_required_client_capability(
            ClientCapabilities::builder().enable_tasks().build(),
        )),
        MRTR_TOOL => after_input(request, context).await,
        name => Ok(create(operation(name, args)).into()),
    }
}

/// `tasks/get`.
pub fn get(task_id: &str) -> Result<GetTaskResult, McpError> {
    TASKS.get_task(task_id).map(GetTaskResult::new)
}

/// `tasks/update`: the answers to a task's pending input.
pub fn update(
    task_id: &str,
    input_responses: impl IntoIterator<Item = (String, Value)>,
) -> Result<(), McpError> {
    TASKS.update_task(task_id, input_responses)
}

/// `tasks/cancel`.
pub fn cancel(task_id: &str) -> Result<(), McpError> {
    TASKS.cancel_task(task_id)
}

/// A task running `work`, created before the result naming it is returned.
fn create(work: impl FnOnce(TaskContext) -> TaskFuture) -> CreateTaskResult {
    CreateTaskResult::new(TASKS.spawn(TaskOptions::new().with_poll_interval_ms(200), work))
}

/// The task of tool `name`.
fn operation(name: &str, args: JsonObject) -> impl FnOnce(TaskContext) -> TaskFuture {
    let name = name.to_owned();
    move |task: TaskContext| -> TaskFuture { Box::pin(run(name, args, task)) }
}

/// What the task of tool `name` does.
async fn run(
    name: String,
    args: JsonObject,
    task: TaskContext,
) -> Result<CallToolResult, TaskExit> {
    match name.as_str() {
        "slow_compute" => {
            pause(&task, seconds(&args)).await?;
            Ok(text(computed(&args)))
        }
        "failing_job" => {
            pause(&task, Duration::from_secs(1)).await?;
            Ok(CallToolResult::error(vec![ContentBlock::text(
                "the job failed",
            )]))
        }
        "protocol_error_job" => Err(TaskExit::Error(McpError::internal_error(
            "the job crashed",
            None,
        ))),
        "confirm_delete" => confirm_delete(&task, &args).await,
        _ => multi_input(&task).await,
    }
}

/// Waits `duration`, unless the task is cancelled first.
async fn pause(task: &TaskContext, duration: Duration) -> Result<(), TaskExit> {
    tokio::select! {
        () = tokio::time::sleep(duration) => Ok(()),
        () = task.cancelled() => Err(TaskExit::Cancelled),
    }
}

/// Asks for the confirmation to delete the file named in the arguments.
async fn confirm_delete(task: &TaskContext, args: &JsonObject) -> Result<CallToolResult, TaskExit> {
    let filename = args
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("the file");
    let answer = ask(task, "confirm", "Delete the file?", "confirm", "boolean").await?;
    let confirmed = answer["action"] == "accept" && answer["content"]["confirm"] == true;
    let verdict = if confirmed { "Deleted" } else { "Kept" };
    Ok(text(format!("{verdict} {filename}")))
}

/// Asks for a name and a confirmation at the same time.
async fn multi_input(task: &TaskContext) -> Result<CallToolResult, TaskExit> {
    let (name, confirm) = tokio::join!(
        ask(task, "name", "What is your name?", "name", "string"),
        ask(task, "confirm", "Please confirm", "confirm", "boolean"),
    );
    Ok(text(format!("name: {}, confirm: {}", name?, confirm?)))
}

/// One form elicitation of `field`, pending under `key` until `tasks/update` answers it.
async fn ask(
    task: &TaskContext,
    key: &'static str,
    message: &'static str,
    field: &'static str,
    kind: &'static str,
) -> Result<Value, TaskExit> {
    let ask = Ask::Elicit {
        message,
        field,
        kind,
    };
    task.request_input(key, ask.input_request()?).await
}

/// [`MRTR_TOOL`]: the name first (an `InputRequiredResult` on the 2026-07-28 wire), then a task
/// whose result greets that name.
async fn after_input(
    request: CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, McpError> {
    let exchange = Exchange {
        rounds: vec![vec![Need {
            key: "user_name",
            ask: Ask::Elicit {
                message: "What is your name?",
                field: "name",
                kind: "string",
            },
        }]],
        stateful: false,
    };
    let retry = Retry {
        input_responses: request.input_responses,
        request_state: request.request_state,
    };
    Ok(
        match mrtr::gather(MRTR_TOOL, exchange, retry, context).await? {
            Gathered::InputRequired(result) => result.into(),
            Gathered::Complete(answers) => {
                let name = mrtr::elicited(&answers, "user_name", "name")
                    .and_then(Value::as_str)
                    .unwrap_or("stranger")
                    .to_owned();
                let greeting = text(format!("Hello, {name}!"));
                create(move |_| Box::pin(std::future::ready(Ok(greeting)))).into()
            }
        },
    )
}

/// `greet`'s answer.
fn greet(args: &JsonObject) -> CallToolResult {
    let name = args.get("name").and_then(Value::as_str).unwrap_or("World");
    text(format!("Hello, {name}!"))
}

/// `slow_compute`'s answer.
fn computed(args: &JsonObject) -> String {
    let label = args.get("label").and_then(Value::as_str).unwrap_or("job");
    format!("computed {label} in {}s", seconds(args).as_secs_f64())
}

/// `slow_compute`'s `seconds`, at most an hour.
fn seconds(args: &JsonObject) -> Duration {
    let seconds = args.get("seconds").and_then(Value::as_f64).unwrap_or(1.0);
    Duration::from_secs_f64(seconds.clamp(0.0, 3600.0))
}

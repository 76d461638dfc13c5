//! The tools and the prompt that need input from the client, named as the conformance suite
//! (0.2.0) expects: the SEP-2322 `test_input_required_result_*` tools and prompt, and the
//! SEP-2575 diagnostics `test_missing_capability` (needs sampling) and
//! `test_streaming_elicitation` (needs elicitation). Each describes what it asks for as an
//! [`Exchange`]; `mrtr.rs` gathers the answers in either protocol era, and the same complete
//! result follows.

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, GetPromptRequestParams,
        GetPromptResponse, GetPromptResult, Prompt, PromptMessage, Role, Tool,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

use crate::{
    mrtr::{self, Answers, Ask, Exchange, Gathered, Need, Retry},
    tools::{object_schema, text},
};

/// The prompt that elicits its context before rendering.
pub const PROMPT: &str = "test_input_required_result_prompt";

/// Every tool here, with its description.
const TOOLS: [(&str, &str); 10] = [
    (
        "test_input_required_result_elicitation",
        "Asks the user's name (elicitation `user_name`) and greets them.",
    ),
    (
        "test_input_required_result_sampling",
        "Asks the client's LLM for the capital of France (sampling `capital_question`).",
    ),
    (
        "test_input_required_result_list_roots",
        "Asks for the client's roots (`client_roots`) and lists them.",
    ),
    (
        "test_input_required_result_request_state",
        "Asks for a confirmation and answers \"state-ok\" once its requestState comes back intact.",
    ),
    (
        "test_input_required_result_multiple_inputs",
        "Asks for a name, an LLM greeting and the roots in one round.",
    ),
    (
        "test_input_required_result_multi_round",
        "Asks for a name, then for a favorite color, one round each.",
    ),
    (
        "test_input_required_result_tampered_state",
        "Asks for a confirmation under an HMAC-sealed requestState; a tampered one is refused.",
    ),
    (
        "test_input_required_result_capabilities",
        "Asks only for inputs whose capability the client declared (sampling, elicitation, roots).",
    ),
    (
        "test_missing_capability",
        "Needs sampling: refused with -32021 when the client did not declare it.",
    ),
    (
        "test_streaming_elicitation",
        "Needs elicitation, asked for without a server-to-client request on the 2026-07-28 wire.",
    ),
];

/// The tools of this module.
pub fn catalog() -> Vec<Tool> {
    TOOLS
        .iter()
        .map(|(name, description)| Tool::new(*name, *description, object_schema(json!({}), &[])))
        .collect()
}

/// Whether `name` is one of this module's tools.
pub fn is_tool(name: &str) -> bool {
    TOOLS.iter().any(|(tool, _)| *tool == name)
}

/// The prompt of this module.
pub fn prompt() -> Prompt {
    Prompt::new(
        PROMPT,
        Some("Elicits the context to use (`user_context`), then renders it"),
        None,
    )
}

/// Runs one of this module's tools.
pub async fn call_tool(
    request: CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResponse, McpError> {
    let name = request.name.as_ref();
    let retry = Retry {
        input_responses: request.input_responses,
        request_state: request.request_state,
    };
    let exchange = tool_exchange(name, context);
    Ok(match mrtr::gather(name, exchange, retry, context).await? {
        Gathered::InputRequired(result) => result.into(),
        Gathered::Complete(answers) => finish(name, &answers).into(),
    })
}

/// Renders [`PROMPT`].
pub async fn get_prompt(
    request: GetPromptRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<GetPromptResponse, McpError> {
    let exchange = Exchange {
        rounds: vec![vec![elicit(
            "user_context",
            "What context should the prompt use?",
            "context",
            "string",
        )]],
        stateful: false,
    };
    let retry = Retry {
        input_responses: request.input_responses,
        request_state: request.request_state,
    };
    Ok(
        match mrtr::gather(PROMPT, exchange, retry, context).await? {
            Gathered::InputRequired(result) => result.into(),
            Gathered::Complete(answers) => {
                let context = describe(mrtr::elicited(&answers, "user_context", "context"));
                GetPromptResult::new(vec![PromptMessage::new_text(
                    Role::User,
                    format!("Answer with this context in mind: {context}"),
                )])
                .into()
            }
        },
    )
}

/// What tool `name` asks for.
fn tool_exchange(name: &str, context: &RequestContext<RoleServer>) -> Exchange {
    let name_please = || elicit("user_name", "What is your name?", "name", "string");
    let confirm = || elicit("confirm", "Please confirm", "ok", "boolean");
    let capital = || sample("capital_question", "What is the capital of France?", 100);
    let roots = || Need {
        key: "client_roots",
        ask: Ask::Roots,
    };
    let (rounds, stateful) = match name {
        "test_input_required_result_elicitation" => (vec![vec![name_please()]], false),
        "test_input_required_result_sampling" => (vec![vec![capital()]], false),
        "test_input_required_result_list_roots" => (vec![vec![roots()]], false),
        "test_input_required_result_request_state"
        | "test_input_required_result_tampered_state" => (vec![vec![confirm()]], true),
        "test_input_required_result_multiple_inputs" => (
            vec![vec![
                name_please(),
                sample("greeting", "Generate a greeting", 50),
                roots(),
            ]],
            true,
        ),
        "test_input_required_result_multi_round" => (
            vec![
                vec![elicit(
                    "step1",
                    "Step 1: What is your name?",
                    "name",
                    "string",
                )],
                vec![elicit(
                    "step2",
                    "Step 2: What is your favorite color?",
                    "color",
                    "string",
                )],
            ],
            true,
        ),
        "test_input_required_result_capabilities" => (
            vec![declared_only(
                context,
                vec![capital(), name_please(), roots()],
            )],
            false,
        ),
        "test_missing_capability" => (vec![vec![sample("reply", "Reply with OK.", 10)]], false),
        _ => (vec![vec![confirm()]], false), // test_streaming_elicitation
    };
    Exchange { rounds, stateful }
}

/// The needs whose capability the client declared; if none, the first, which is then refused.
fn declared_only(context: &RequestContext<RoleServer>, mut needs: Vec<Need>) -> Vec<Need> {
    let declared = context.client_capabilities().unwrap_or_default();
    if needs.iter().any(|need| need.ask.declared(&declared)) {
        needs.retain(|need| need.ask.declared(&declared));
    } else {
        needs.truncate(1);
    }
    needs
}

/// The complete result of tool `name` from its answers.
fn finish(name: &str, answers: &Answers) -> CallToolResult {
    let name_given = || describe(mrtr::elicited(answers, "user_name", "name"));
    let confirmed = || describe(mrtr::elicited(answers, "confirm", "ok"));
    match name {
        "test_input_required_result_elicitation" => text(format!("Hello, {}!", name_given())),
        "test_input_required_result_sampling" => text(format!(
            "LLM response: {}",
            mrtr::sampled(answers, "capital_question")
        )),
        "test_input_required_result_list_roots" => text(format!(
            "Client roots: {}",
            mrtr::roots(answers, "client_roots").join(", ")
        )),
        "test_input_required_result_request_state" => {
            text(format!("state-ok: confirmed={}", confirmed()))
        }
        "test_input_required_result_tampered_state" => {
            text(format!("requestState verified: confirmed={}", confirmed()))
        }
        "test_input_required_result_multiple_inputs" => text(format!(
            "{} ({}); roots: {}",
            mrtr::sampled(answers, "greeting"),
            name_given(),
            mrtr::roots(answers, "client_roots").join(", ")
        )),
        "test_input_required_result_multi_round" => text(format!(
            "{}'s favorite color is {}.",
            describe(mrtr::elicited(answers, "step1", "name")),
            describe(mrtr::elicited(answers, "step2", "color"))
        )),
        "test_missing_capability" => {
            text(format!("LLM response: {}", mrtr::sampled(answers, "reply")))
        }
        "test_streaming_elicitation" => {
            text(format!("Elicitation answered: confirmed={}", confirmed()))
        }
        _ => {
            // test_input_required_result_capabilities
            let keys: Vec<&str> = answers.keys().map(String::as_str).collect();
            text(format!("Received: {}", keys.join(", ")))
        }
    }
}

/// An elicitation need.
fn elicit(
    key: &'static str,
    message: &'static str,
    field: &'static str,
    kind: &'static str,
) -> Need {
    Need {
        key,
        ask: Ask::Elicit {
            message,
            field,
            kind,
        },
    }
}

/// A sampling need.
fn sample(key: &'static str, prompt: &'static str, max_tokens: u32) -> Need {
    Need {
        key,
        ask: Ask::Sample { prompt, max_tokens },
    }
}

/// An elicited value as text: strings bare, anything else as JSON, `(declined)` when absent.
fn describe(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "(declined)".into(),
    }
}

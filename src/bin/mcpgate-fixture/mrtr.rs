//! Multi round-trip requests (SEP-2322) in both protocol eras. A tool or prompt describes what it
//! needs from the client as rounds of [`Need`]s; [`gather`] gets the answers:
//! - on the 2026-07-28 wire, from the request's `inputResponses`, answering with an
//!   `InputRequiredResult` (the missing or malformed inputs, and a sealed `requestState` once
//!   there is progress to carry) until every round is answered;
//! - in a legacy session, whose client cannot take an `InputRequiredResult`, by sending the
//!   same requests (`elicitation/create`, `sampling/createMessage`, `roots/list`) to the client
//!   while the call runs.
//!
//! Either way a need the client did not declare the capability for is refused with
//! MissingRequiredClientCapability (-32021), whose `data.requiredCapabilities` names it.
//!
//! rmcp 3.11 deprecates sampling and roots (SEP-2577); the fixture uses them because they
//! remain MRTR inputs.
#![allow(deprecated)]

use std::collections::BTreeMap;

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{
        ClientCapabilities, CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult,
        ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationAction, ErrorCode,
        InputRequest, InputRequests, InputRequiredResult, InputResponses, ListRootsRequest,
        ListRootsResult, SamplingMessage,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

use crate::{
    era,
    request_state::{self, Progress},
};

/// Answers by input key, as the client sent them (a legacy client's results are kept in the
/// same wire form).
pub type Answers = BTreeMap<String, Value>;

/// One input a tool or prompt needs from the client, under `key`.
pub struct Need {
    pub key: &'static str,
    pub ask: Ask,
}

/// What is asked of the client.
pub enum Ask {
    /// A form elicitation of one required `field` of JSON type `kind` ("string", "boolean").
    Elicit {
        message: &'static str,
        field: &'static str,
        kind: &'static str,
    },
    /// An LLM reply to a one-message prompt.
    Sample {
        prompt: &'static str,
        max_tokens: u32,
    },
    /// The client's roots.
    Roots,
}

/// How an exchange goes: its rounds, in order, and whether answers count only alongside the
/// `requestState` of the round they answer (then every `InputRequiredResult` carries one).
pub struct Exchange {
    pub rounds: Vec<Vec<Need>>,
    pub stateful: bool,
}

/// What the client sent back, if anything, from an earlier `InputRequiredResult`.
pub struct Retry {
    pub input_responses: Option<InputResponses>,
    pub request_state: Option<String>,
}

/// The outcome of [`gather`].
pub enum Gathered {
    /// Every round is answered.
    Complete(Answers),
    /// The client must answer these and retry (2026-07-28 only).
    InputRequired(InputRequiredResult),
}

/// Gathers the answers of `exchange` for the tool or prompt `name`.
pub async fn gather(
    name: &str,
    exchange: Exchange,
    retry: Retry,
    context: &RequestContext<RoleServer>,
) -> Result<Gathered, McpError> {
    if era::is_modern(context) {
        from_responses(name, exchange, retry, context)
    } else {
        from_client(exchange, context).await.map(Gathered::Complete)
    }
}

/// The 2026-07-28 way: answers come in `inputResponses`, progress in `requestState`.
fn from_responses(
    name: &str,
    exchange: Exchange,
    retry: Retry,
    context: &RequestContext<RoleServer>,
) -> Result<Gathered, McpError> {
    let progress = match &retry.request_state {
        Some(state) => request_state::open(name, state)?,
        None => Progress::default(),
    };
    let responses = match (exchange.stateful, &retry.request_state) {
        (true, None) => InputResponses::new(),
        _ => retry.input_responses.unwrap_or_default(),
    };
    let Progress {
        mut round,
        mut answers,
    } = progress;
    while let Some(needs) = exchange.rounds.get(round) {
        require_capabilities(needs, context)?;
        let mut missing = InputRequests::new();
        for need in needs {
            if answers.contains_key(need.key) {
                continue;
            }
            match responses.get(need.key) {
                Some(answer) if need.ask.accepts(answer) => {
                    answers.insert(need.key.to_owned(), answer.clone());
                }
                _ => {
                    missing.insert(need.key.to_owned(), need.ask.input_request()?);
                }
            }
        }
        if !missing.is_empty() {
            let progress = Progress { round, answers };
            let carry = exchange.stateful || round > 0 || !progress.answers.is_empty();
            let state = carry.then(|| request_state::seal(name, &progress));
            return Ok(Gathered::InputRequired(InputRequiredResult::new(
                Some(missing),
                state,
            )));
        }
        round += 1;
    }
    Ok(Gathered::Complete(answers))
}

/// The legacy way: every need becomes a request to the client, round after round.
async fn from_client(
    exchange: Exchange,
    context: &RequestContext<RoleServer>,
) -> Result<Answers, McpError> {
    let mut answers = Answers::new();
    for needs in &exchange.rounds {
        require_capabilities(needs, context)?;
        for need in needs {
            let answer = need.ask.send(context).await?;
            answers.insert(need.key.to_owned(), answer);
        }
    }
    Ok(answers)
}

/// Refuses with MissingRequiredClientCapability (-32021) when the client did not declare what
/// `needs` ask for; `data.requiredCapabilities` names each, e.g. `{"sampling": {}}`.
fn require_capabilities(
    needs: &[Need],
    context: &RequestContext<RoleServer>,
) -> Result<(), McpError> {
    let declared = context.client_capabilities().unwrap_or_default();
    let mut required = serde_json::Map::new();
    for need in needs {
        if !need.ask.declared(&declared) {
            required.insert(need.ask.capability().into(), json!({}));
        }
    }
    if required.is_empty() {
        return Ok(());
    }
    Err(McpError::new(
        ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
        "Missing required client capability",
        Some(json!({ "requiredCapabilities": required })),
    ))
}

impl Ask {
    /// The client capability this needs.
    fn capability(&self) -> &'static str {
        match self {
            Ask::Elicit { .. } => "elicitation",
            Ask::Sample { .. } => "sampling",
            Ask::Roots => "roots",
        }
    }

    /// Whether `capabilities` include what this needs.
    pub fn declared(&self, capabilities: &ClientCapabilities) -> bool {
        match self {
            Ask::Elicit { .. } => capabilities.elicitation.is_some(),
            Ask::Sample { .. } => capabilities.sampling.is_some(),
            Ask::Roots => capabilities.roots.is_some(),
        }
    }

    /// The request as an entry of `inputRequests` (of a retry, or of a task's `tasks/get`).
    pub fn input_request(&self) -> Result<InputRequest, McpError> {
        Ok(match self {
            Ask::Elicit {
                message,
                field,
                kind,
            } => InputRequest::Elicitation(ElicitRequest::new(form(message, field, kind)?)),
            Ask::Sample { prompt, max_tokens } => InputRequest::CreateMessage(
                CreateMessageRequest::new(sampling(prompt, *max_tokens)),
            ),
            Ask::Roots => InputRequest::ListRoots(ListRootsRequest::default()),
        })
    }

    /// Sends the request to a legacy client and returns its result in wire form.
    async fn send(&self, context: &RequestContext<RoleServer>) -> Result<Value, McpError> {
        let peer = &context.peer;
        let result = match self {
            Ask::Elicit {
                message,
                field,
                kind,
            } => peer
                .create_elicitation(form(message, field, kind)?)
                .await
                .map(serde_json::to_value),
            Ask::Sample { prompt, max_tokens } => peer
                .create_message(sampling(prompt, *max_tokens))
                .await
                .map(serde_json::to_value),
            Ask::Roots => peer.list_roots().await.map(serde_json::to_value),
        };
        result
            .map_err(|e| {
                McpError::internal_error(format!("exchange with client failed: {e}"), None)
            })?
            .map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    /// Whether `answer` is a well-formed result for this request: for an accepted
    /// elicitation, one whose content has the field with the right type.
    fn accepts(&self, answer: &Value) -> bool {
        match self {
            Ask::Elicit { field, kind, .. } => {
                serde_json::from_value::<ElicitResult>(answer.clone()).is_ok_and(|result| {
                    result.action != ElicitationAction::Accept
                        || result
                            .content
                            .as_ref()
                            .and_then(|content| content.get(*field))
                            .is_some_and(|value| json_type(value) == *kind)
                })
            }
            Ask::Sample { .. } => {
                serde_json::from_value::<CreateMessageResult>(answer.clone()).is_ok()
            }
            Ask::Roots => serde_json::from_value::<ListRootsResult>(answer.clone()).is_ok(),
        }
    }
}

/// A form elicitation of one required `field` of JSON type `kind`.
fn form(message: &str, field: &str, kind: &str) -> Result<ElicitRequestParams, McpError> {
    serde_json::from_value(json!({
        "mode": "form",
        "message": message,
        "requestedSchema": {
            "type": "object",
            "properties": { field: {"type": kind} },
            "required": [field]
        }
    }))
    .map_err(|e| McpError::internal_error(format!("bad elicitation schema: {e}"), None))
}

/// A sampling request for a reply to `prompt`.
fn sampling(prompt: &str, max_tokens: u32) -> CreateMessageRequestParams {
    CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], max_tokens)
}

/// The JSON type name of `value`.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::Null => "null",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The `field` of the elicitation answered under `key`, if the user accepted it.
pub fn elicited<'a>(answers: &'a Answers, key: &str, field: &str) -> Option<&'a Value> {
    let answer = answers.get(key)?;
    if answer["action"] != "accept" {
        return None;
    }
    answer["content"].get(field)
}

/// The text of the LLM reply answered under `key`.
pub fn sampled(answers: &Answers, key: &str) -> String {
    answers
        .get(key)
        .and_then(|answer| serde_json::from_value::<CreateMessageResult>(answer.clone()).ok())
        .map(|reply| {
            reply
                .message
                .content
                .into_vec()
                .iter()
                .filter_map(|block| block.as_text().map(|t| t.text.clone()))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The root URIs answered under `key`.
pub fn roots(answers: &Answers, key: &str) -> Vec<String> {
    answers
        .get(key)
        .and_then(|answer| serde_json::from_value::<ListRootsResult>(answer.clone()).ok())
        .map(|list| list.roots.into_iter().map(|root| root.uri).collect())
        .unwrap_or_default()
}

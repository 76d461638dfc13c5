//! Prompts (`prompts/list`, `prompts/get`) and argument completion
//! (`completion/complete`) for prompt arguments and the resource template. The prompt that
//! needs input from the client lives in `input_required.rs`.

use rmcp::{
    ErrorData as McpError,
    model::{
        CompleteRequestParams, CompleteResult, CompletionInfo, ContentBlock, GetPromptResult,
        JsonObject, Prompt, PromptArgument, PromptMessage, ResourceContents, Role,
    },
};
use serde_json::Value;

use crate::{input_required, media};

/// Every prompt the fixture offers.
pub fn catalog() -> Vec<Prompt> {
    vec![
        Prompt::new(
            "test_simple_prompt",
            Some("A prompt without arguments"),
            None,
        ),
        Prompt::new(
            "test_prompt_with_arguments",
            Some("A prompt that quotes its two arguments"),
            Some(vec![
                argument("arg1", "First test argument"),
                argument("arg2", "Second test argument"),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_embedded_resource",
            Some("A prompt that embeds a resource"),
            Some(vec![argument(
                "resourceUri",
                "URI of the resource to embed",
            )]),
        ),
        Prompt::new(
            "test_prompt_with_image",
            Some("A prompt that carries an image"),
            None,
        ),
        input_required::prompt(),
    ]
}

/// Renders prompt `name` with `args`.
pub fn get(name: &str, args: JsonObject) -> Result<GetPromptResult, McpError> {
    let messages = match name {
        "test_simple_prompt" => vec![user_text("This is a simple prompt for testing.")],
        "test_prompt_with_arguments" => {
            let (arg1, arg2) = (required(&args, "arg1")?, required(&args, "arg2")?);
            vec![user_text(&format!(
                "Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
            ))]
        }
        "test_prompt_with_embedded_resource" => {
            let resource = ResourceContents::text(
                "Embedded resource content for testing.",
                required(&args, "resourceUri")?,
            );
            vec![
                PromptMessage::new(Role::User, ContentBlock::resource(resource)),
                user_text("Please process the embedded resource above."),
            ]
        }
        "test_prompt_with_image" => vec![
            PromptMessage::new(
                Role::User,
                ContentBlock::image(media::PNG_BASE64, media::PNG_MIME),
            ),
            user_text("Please analyze the image above."),
        ],
        other => {
            return Err(McpError::invalid_params(
                format!("Unknown prompt: {other}"),
                None,
            ));
        }
    };
    Ok(GetPromptResult::new(messages))
}

/// Completes a prompt argument or a template variable by prefix.
pub fn complete(request: &CompleteRequestParams) -> Result<CompleteResult, McpError> {
    let candidates = match (
        request.r#ref.as_prompt_name(),
        request.r#ref.as_resource_uri(),
        request.argument.name.as_str(),
    ) {
        (Some("test_prompt_with_arguments"), _, "arg1") => {
            &["alpha", "alpine", "amber", "beta"][..]
        }
        (Some("test_prompt_with_arguments"), _, "arg2") => &["red", "green", "blue"][..],
        (Some("test_prompt_with_embedded_resource"), _, "resourceUri") => &[
            "test://static-text",
            "test://static-binary",
            "test://watched-resource",
        ][..],
        (_, Some("test://template/{id}/data"), "id") => &["1", "2", "3", "123"][..],
        _ => &[][..],
    };
    let values = candidates
        .iter()
        .filter(|c| c.starts_with(request.argument.value.as_str()))
        .map(|c| (*c).to_owned())
        .collect();
    let completion =
        CompletionInfo::with_all_values(values).map_err(|e| McpError::internal_error(e, None))?;
    Ok(CompleteResult::new(completion))
}

/// A required prompt argument.
fn argument(name: &str, description: &str) -> PromptArgument {
    PromptArgument::new(name)
        .with_description(description)
        .with_required(true)
}

/// A user message with one text block.
fn user_text(text: &str) -> PromptMessage {
    PromptMessage::new_text(Role::User, text)
}

/// Reads a required string argument of `prompts/get`.
fn required(args: &JsonObject, name: &str) -> Result<String, McpError> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            McpError::invalid_params(format!("missing required argument `{name}`"), None)
        })
}

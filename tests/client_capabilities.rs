//! Server-to-client requests reach a client only when it declared the capability they need.
//!
//! The shared stdio child `local` is initialized by mcpgate with every capability mcpgate can
//! relay, so it asks whichever session calls it; the gateway must refuse, on the client's
//! behalf, what that session's client did not declare, and the tool call must end with the
//! upstream's reaction to that refusal instead of hanging. The HTTP upstream `remote` is
//! initialized with the client's own capabilities; it is checked as a regression.

use crate::support::answering::call;
use crate::support::{Gateway, LATEST};
use serde_json::{Value, json};

/// Upstream timeout of these tests: a call that hangs until it is easy to tell apart.
const UPSTREAM_TIMEOUT: &str = "timeout = \"30s\"";
/// Fails the test at once if a message with `method` reaches the client.
fn forbid(method: &'static str) -> impl Fn(&Value) -> Option<Value> {
    move |message| {
        assert_ne!(
            message["method"],
            json!(method),
            "the client received a request it declared no capability for: {message}"
        );
        None
    }
}

/// Answers `sampling/createMessage` with the text "sampled".
fn sample(message: &Value) -> Option<Value> {
    (message["method"] == json!("sampling/createMessage")).then(|| {
        json!({"jsonrpc": "2.0", "id": message["id"], "result": {
            "role": "assistant", "content": {"type": "text", "text": "sampled"},
            "model": "test", "stopReason": "endTurn"}})
    })
}

/// Declines `elicitation/create`.
fn decline(message: &Value) -> Option<Value> {
    (message["method"] == json!("elicitation/create"))
        .then(|| json!({"jsonrpc": "2.0", "id": message["id"], "result": {"action": "decline"}}))
}

/// Whether a message with `method` is among `messages`.
fn has_method(messages: &[Value], method: &str) -> bool {
    messages.iter().any(|m| m["method"] == json!(method))
}

async fn gateway_with_remote() -> Gateway {
    Gateway::builder()
        .local(UPSTREAM_TIMEOUT)
        .remote_line(UPSTREAM_TIMEOUT)
        .start()
        .await
}

#[tokio::test]
async fn a_client_without_sampling_is_not_asked_to_sample_by_the_shared_stdio_child() {
    let gw = gateway_with_remote().await;
    let session = gw.initialize_with(LATEST, json!({})).await;
    let exchange = call(
        &gw,
        &session,
        "local__test_sampling",
        json!({"prompt": "hello"}),
        forbid("sampling/createMessage"),
    )
    .await;
    let failure = exchange.failure_text();
    assert!(
        failure.contains("did not declare the `sampling` capability"),
        "the upstream's reaction does not carry the gateway's refusal: {exchange:#?}"
    );
    assert!(
        !failure.contains("did not answer within"),
        "the call hung until the upstream timeout: {exchange:#?}"
    );
}

#[tokio::test]
async fn a_client_without_sampling_is_not_asked_to_sample_by_an_http_upstream() {
    let gw = gateway_with_remote().await;
    let session = gw.initialize_with(LATEST, json!({})).await;
    let exchange = call(
        &gw,
        &session,
        "remote__test_sampling",
        json!({"prompt": "hello"}),
        forbid("sampling/createMessage"),
    )
    .await;
    let failure = exchange.failure_text();
    assert!(
        failure.contains("sampling") && !failure.contains("did not answer within"),
        "{exchange:#?}"
    );
}

#[tokio::test]
async fn a_client_that_declared_sampling_still_samples_through_both_upstreams() {
    let gw = gateway_with_remote().await;
    let session = gw.initialize_with(LATEST, json!({"sampling": {}})).await;
    for tool in ["local__test_sampling", "remote__test_sampling"] {
        let exchange = call(&gw, &session, tool, json!({"prompt": "hello"}), sample).await;
        assert!(
            has_method(&exchange.before, "sampling/createMessage"),
            "{tool}: {exchange:#?}"
        );
        assert_eq!(
            exchange.result_text(),
            "LLM response: sampled",
            "{tool}: {exchange:#?}"
        );
    }
}

#[tokio::test]
async fn a_form_elicitation_is_refused_to_a_client_that_declared_url_mode_only() {
    let gw = gateway_with_remote().await;
    let session = gw
        .initialize_with(LATEST, json!({"elicitation": {"url": {}}}))
        .await;
    let exchange = call(
        &gw,
        &session,
        "local__test_elicitation",
        json!({"message": "who are you?"}),
        forbid("elicitation/create"),
    )
    .await;
    assert!(
        exchange
            .failure_text()
            .contains("did not declare the `elicitation.form` capability"),
        "{exchange:#?}"
    );
}

#[tokio::test]
async fn an_empty_elicitation_capability_means_form_mode_in_2025_06_18() {
    let gw = gateway_with_remote().await;
    let session = gw
        .initialize_with("2025-06-18", json!({"elicitation": {}}))
        .await;
    let exchange = call(
        &gw,
        &session,
        "local__test_elicitation",
        json!({"message": "who are you?"}),
        decline,
    )
    .await;
    assert!(
        has_method(&exchange.before, "elicitation/create"),
        "{exchange:#?}"
    );
    assert!(
        exchange.result_text().contains("action=decline"),
        "{exchange:#?}"
    );
}

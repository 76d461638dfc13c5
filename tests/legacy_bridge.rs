//! A legacy session (2025-11-25, `initialize`) in front of an upstream that speaks only
//! 2026-07-28 (`era = "modern"`, the fixture with `--modern-only`, which refuses every legacy
//! request with 400 -32022): the session's requests reach it in the modern form, its
//! `input_required` inputs reach the client as ordinary server-to-client requests, the answers
//! go back as the retry, and the client never sees a modern field.

use crate::support;

use crate::support::answering::{Exchange, call, call_across};
use crate::support::redis::RedisServer;
use crate::support::{Fixture, Gateway, LATEST, Session};
use serde_json::{Value, json};

const MULTI_ROUND: &str = "modern__test_input_required_result_multi_round";

/// The `[[upstreams]]` entry of the modern-only fixture at `url`.
fn modern_upstream(url: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"modern\"\ntransport = \"http\"\nera = \"modern\"\nurl = {}",
        support::toml_str(url)
    )
}

/// Accepts a form elicitation, filling its one field: a name or a color.
fn fill_form(message: &Value) -> Option<Value> {
    if message["method"] != json!("elicitation/create") {
        return None;
    }
    let properties = &message["params"]["requestedSchema"]["properties"];
    let content = if properties.get("name").is_some() {
        json!({"name": "Alice"})
    } else {
        json!({"color": "blue"})
    };
    Some(json!({"jsonrpc": "2.0", "id": message["id"],
        "result": {"action": "accept", "content": content}}))
}

fn elicitations(exchange: &Exchange) -> usize {
    exchange
        .before
        .iter()
        .filter(|m| m["method"] == json!("elicitation/create"))
        .count()
}

fn assert_legacy_result(exchange: &Exchange) {
    let result = &exchange.response["result"];
    for field in ["resultType", "ttlMs", "cacheScope"] {
        assert!(
            result.get(field).is_none(),
            "{field} reached a legacy client: {exchange:?}"
        );
    }
    assert!(
        result
            .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
            .is_none(),
        "{exchange:?}"
    );
}

async fn legacy_session(gw: &Gateway) -> Session {
    gw.initialize_with(LATEST, json!({"elicitation": {}})).await
}

/// A gateway in front of the modern-only fixture (and the stdio fixture `local`).
struct Setup {
    _dir: tempfile::TempDir,
    upstream: Fixture,
    gw: Gateway,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Fixture::start_http_modern_only("modern", dir.path()).await;
    let gw = Gateway::builder()
        .toml(&modern_upstream(&upstream.url))
        .start()
        .await;
    Setup {
        _dir: dir,
        upstream,
        gw,
    }
}

#[tokio::test]
async fn a_legacy_client_uses_a_modern_only_upstream_and_answers_its_inputs() {
    let setup = setup().await;
    let (upstream, gw) = (&setup.upstream, &setup.gw);
    let session = legacy_session(gw).await;
    let tools = gw.tool_names(&session).await;
    assert!(tools.iter().any(|t| t == MULTI_ROUND), "{tools:?}");
    assert!(tools.iter().any(|t| t == "local__echo"), "{tools:?}");

    let echo = call(gw, &session, "modern__echo", json!({"text": "hi"}), |_| {
        None
    })
    .await;
    assert_eq!(echo.result_text(), "hi");
    assert_legacy_result(&echo);

    let exchange = call(gw, &session, MULTI_ROUND, json!({}), fill_form).await;
    assert_eq!(exchange.result_text(), "Alice's favorite color is blue.");
    assert_eq!(elicitations(&exchange), 2, "{exchange:?}");
    assert_legacy_result(&exchange);
    assert_eq!(
        upstream.open_sessions().await,
        0,
        "no upstream session was opened"
    );
    let setlevel = gw
        .request(&session, "logging/setLevel", json!({"level": "info"}))
        .await;
    assert_eq!(setlevel.json()["result"], json!({}), "{setlevel:?}");
}

#[tokio::test]
async fn a_client_without_elicitation_gets_32021_and_a_refusal_ends_the_call() {
    let setup = setup().await;
    let gw = &setup.gw;
    let bare = gw.initialize_with(LATEST, json!({})).await;
    let refused = call(gw, &bare, MULTI_ROUND, json!({}), |_| None).await;
    assert_eq!(
        refused.response["error"]["code"],
        json!(-32021),
        "{refused:?}"
    );

    let session = legacy_session(gw).await;
    let error = |message: &Value| {
        (message["method"] == json!("elicitation/create")).then(|| {
            json!({"jsonrpc": "2.0", "id": message["id"],
                "error": {"code": -1, "message": "the user closed the dialog"}})
        })
    };
    let failed = call(gw, &session, MULTI_ROUND, json!({}), error).await;
    assert_eq!(
        failed.response["error"]["message"],
        json!("the user closed the dialog"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn answers_posted_to_other_replicas_reach_the_waiting_call() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = Fixture::start_http_modern_only("modern", dir.path()).await;
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let replica = redis
            .replica("60s")
            .toml(&modern_upstream(&upstream.url))
            .start()
            .await;
        fleet.push(replica);
    }
    let replicas: Vec<&Gateway> = fleet.iter().collect();
    let session = legacy_session(&fleet[0]).await;
    let exchange = call_across(&replicas, &session, MULTI_ROUND, json!({}), fill_form).await;
    assert_eq!(exchange.result_text(), "Alice's favorite color is blue.");
    assert_eq!(elicitations(&exchange), 2, "{exchange:?}");
}

//! Per-team policy (`[policy]`): lists are filtered, and what a team may not use is refused
//! exactly as what does not exist.

use crate::support;

use crate::support::{Fixture, Gateway, api_key_entry, bearer, toml_str};
use serde_json::{Value, json};

/// A policy for everyone (no authentication: one anonymous principal without a team).
const DEFAULT_POLICY: &str = r#"
[policy.default]
upstreams.allow = ["local"]
tools.deny = ["local__test_error*"]
resources.deny = ["test://static-binary"]
prompts.deny = ["*"]
"#;

/// The gateway with stdio `local` and HTTP `remote` (the fixture returned), under `policy`.
async fn gateway(policy: &str, dir: &std::path::Path) -> (Gateway, Fixture) {
    let remote = Fixture::start_http("remote", dir).await;
    let gateway = Gateway::builder()
        .toml(&format!(
            "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\ntimeout = \"10s\"\n{policy}",
            toml_str(&remote.url)
        ))
        .start()
        .await;
    (gateway, remote)
}

fn error_of(reply: &support::Reply) -> Value {
    let body = reply.json();
    assert!(body.get("result").is_none(), "expected an error: {body}");
    body["error"].clone()
}

#[tokio::test]
async fn lists_show_only_what_the_team_may_use() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _remote) = gateway(DEFAULT_POLICY, dir.path()).await;
    let session = gw.initialize().await;
    let tools = gw.tool_names(&session).await;
    assert!(tools.contains(&"local__echo".to_owned()), "{tools:?}");
    assert!(
        tools.iter().all(|t| t.starts_with("local__")),
        "another upstream's tools are listed: {tools:?}"
    );
    assert!(
        !tools.iter().any(|t| t.starts_with("local__test_error")),
        "a denied tool is listed: {tools:?}"
    );
    let resources = gw
        .request(&session, "resources/list", json!({}))
        .await
        .json();
    let uris: Vec<&str> = resources["result"]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert!(uris.contains(&"test://static-text"), "{uris:?}");
    assert!(!uris.contains(&"test://static-binary"), "{uris:?}");
    let prompts = gw.request(&session, "prompts/list", json!({})).await.json();
    assert_eq!(prompts["result"]["prompts"], json!([]), "{prompts}");
}

#[tokio::test]
async fn forbidden_calls_look_like_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _remote) = gateway(DEFAULT_POLICY, dir.path()).await;
    let session = gw.initialize().await;
    let call = |name: &'static str| {
        let gw = &gw;
        let session = &session;
        async move {
            let reply = gw
                .request(
                    session,
                    "tools/call",
                    json!({"name": name, "arguments": {}}),
                )
                .await;
            (reply.status, error_of(&reply))
        }
    };
    // Whether a forbidden tool exists or not, the answer is the same.
    for (existing, missing) in [
        ("remote__echo", "remote__no_such_tool"),
        (
            "local__test_error_handling",
            "local__test_error_no_such_tool",
        ),
    ] {
        let (status, error) = call(existing).await;
        let (missing_status, missing_error) = call(missing).await;
        assert_eq!(status, missing_status, "{existing}");
        assert_eq!(
            serde_json::to_string(&error)
                .unwrap()
                .replace(existing, missing),
            serde_json::to_string(&missing_error).unwrap(),
            "{existing} and {missing} are told apart"
        );
        assert_eq!(error["message"], json!(format!("Unknown tool: {existing}")));
    }
    let prompt = gw
        .request(
            &session,
            "prompts/get",
            json!({"name": "local__simple_prompt"}),
        )
        .await;
    assert_eq!(
        error_of(&prompt)["message"],
        "Unknown prompt: local__simple_prompt"
    );
    let read = gw
        .request(
            &session,
            "resources/read",
            json!({"uri": "test://static-binary"}),
        )
        .await;
    assert_eq!(error_of(&read)["code"], -32002, "{read:?}");
    let allowed = gw
        .call_tool(&session, "local__echo", json!({"text": "hi"}))
        .await;
    assert!(allowed.get("result").is_some(), "{allowed}");
}

#[tokio::test]
async fn a_team_never_reaches_a_forbidden_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, remote) = gateway(DEFAULT_POLICY, dir.path()).await;
    let session = gw.initialize().await;
    gw.request(&session, "logging/setLevel", json!({"level": "debug"}))
        .await;
    let opened = remote.open_sessions().await;
    assert_eq!(opened, 0, "the forbidden upstream got a session");
}

/// Two teams on one gateway, each authenticated by its API key.
const TEAM_POLICY: &str = r#"
[policy.default]
upstreams.deny = ["*"]

[policy.teams.payments]
upstreams.allow = ["remote"]

[policy.teams.research]
upstreams.allow = ["local", "remote"]
tools.deny = ["remote__*"]
"#;

#[tokio::test]
async fn each_team_sees_and_calls_only_its_own_tools() {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!(
        "[server.auth]\nmode = \"api_key\"\n{}{}{}{TEAM_POLICY}",
        api_key_entry("payments-key", "pat", "payments"),
        api_key_entry("research-key", "rae", "research"),
        api_key_entry("guest-key", "gus", "visitors"),
    );
    let (gw, _remote) = gateway(&keys, dir.path()).await;
    let tools_of = |key: &'static str| {
        let gw = &gw;
        async move {
            let session = gw.initialize_as(key).await;
            let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
            let reply = gw
                .post(
                    Some(&session),
                    list.to_string(),
                    &[("authorization", &bearer(key))],
                )
                .await;
            let names: Vec<String> = reply.json()["result"]["tools"]
                .as_array()
                .unwrap_or_else(|| panic!("{key}: {reply:?}"))
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            (session, names)
        }
    };
    let (payments, names) = tools_of("payments-key").await;
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("remote__")),
        "{names:?}"
    );
    let (_, names) = tools_of("research-key").await;
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("local__")),
        "{names:?}"
    );
    let (_, names) = tools_of("guest-key").await;
    assert!(
        names.is_empty(),
        "a team without rules gets the default: {names:?}"
    );
    let call = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": name, "arguments": {"text": "x"}}})
        .to_string()
    };
    let header = bearer("payments-key");
    let auth = [("authorization", header.as_str())];
    let refused = gw.post(Some(&payments), call("local__echo"), &auth).await;
    assert_eq!(error_of(&refused)["message"], "Unknown tool: local__echo");
    let allowed = gw.post(Some(&payments), call("remote__echo"), &auth).await;
    assert_eq!(
        allowed.json()["result"]["content"][0]["text"],
        "x",
        "{allowed:?}"
    );
}

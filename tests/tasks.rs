//! The tasks extension (`io.modelcontextprotocol/tasks`) through the gateway, against the real
//! fixture over HTTP (and over stdio through a fleet): the gateway announces it because the upstream offers it, gives the client
//! task ids of its own (signed, naming the upstream), routes `tasks/get`, `tasks/update` and
//! `tasks/cancel` by them with the upstream's id restored, on any replica with the fleet's key,
//! in a modern request or a legacy session; and refuses foreign, forged and undeclared use
//! precisely.

use crate::support;

use std::time::Duration;

use crate::support::{Fixture, Gateway, INVALID_PARAMS, api_key_entry, bearer, toml_str};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";
const EXTENSION: &str = "io.modelcontextprotocol/tasks";
const MISSING_CLIENT_CAPABILITY: i64 = -32021;
const HMAC_KEY: &str = "tasks-test-key-0123456789-0123456789";
const ALICE: &str = "key-of-alice";
const BOB: &str = "key-of-bob";

/// Client capabilities declaring the extension.
fn with_tasks() -> Value {
    json!({"elicitation": {}, "extensions": {EXTENSION: {}}})
}

/// A modern request as a conforming client sends it (mirrored headers included), as `key`.
async fn modern(
    gw: &Gateway,
    key: Option<&str>,
    method: &str,
    mut params: Value,
    capabilities: Value,
) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "tasks-test", "version": "1"},
    });
    let name = ["name", "taskId"]
        .iter()
        .find_map(|f| params.get(*f).and_then(Value::as_str))
        .map(str::to_owned);
    let mut headers = vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];
    if let Some(name) = &name {
        headers.push(("mcp-name", name));
    }
    let authorization = key.map(bearer);
    if let Some(authorization) = &authorization {
        headers.push(("authorization", authorization));
    }
    let body = json!({"jsonrpc": "2.0", "id": gw.next_id(), "method": method, "params": params});
    let reply = gw.post(None, body.to_string(), &headers).await;
    if reply.content_type().starts_with("text/event-stream") {
        return reply.sse_events().last().expect("an event").json();
    }
    reply.json()
}

/// A modern `tools/call` of `remote__<tool>` declaring the extension; its result.
async fn call(gw: &Gateway, key: Option<&str>, tool: &str, arguments: Value) -> Value {
    let params = json!({"name": format!("remote__{tool}"), "arguments": arguments});
    let response = modern(gw, key, "tools/call", params, with_tasks()).await;
    response["result"].clone()
}

/// A modern task request declaring the extension; the whole response.
async fn task(gw: &Gateway, key: Option<&str>, method: &str, task_id: &str) -> Value {
    modern(gw, key, method, json!({"taskId": task_id}), with_tasks()).await
}

/// Polls `tasks/get` until the task's status is one of `statuses`.
async fn until(gw: &Gateway, task_id: &str, statuses: &[&str]) -> Value {
    for _ in 0..100 {
        let result = task(gw, None, "tasks/get", task_id).await["result"].clone();
        if statuses.iter().any(|s| result["status"] == json!(s)) {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {task_id} never reached {statuses:?}");
}

fn error_code(response: &Value) -> i64 {
    response["error"]["code"].as_i64().unwrap_or_default()
}

#[tokio::test]
async fn tasks_are_announced_created_polled_and_cancelled_with_gateway_ids() {
    let gw = Gateway::builder().remote().start().await;
    let discover = modern(&gw, None, "server/discover", json!({}), json!({})).await;
    let capabilities = &discover["result"]["capabilities"];
    assert!(
        capabilities["extensions"][EXTENSION].is_object(),
        "{discover}"
    );
    let created = call(&gw, None, "slow_compute", json!({"seconds": 0.3})).await;
    assert_eq!(created["resultType"], json!("task"), "{created}");
    let task_id = created["taskId"].as_str().expect("a task id").to_owned();
    assert!(task_id.starts_with("mcpgate-task."), "{task_id}");
    let done = until(&gw, &task_id, &["completed"]).await;
    assert_eq!(done["taskId"], json!(task_id), "the client's id comes back");
    assert!(done["result"]["content"][0]["text"].is_string(), "{done}");
    let long = call(&gw, None, "slow_compute", json!({"seconds": 60})).await;
    let long_id = long["taskId"].as_str().expect("a task id");
    let ack = task(&gw, None, "tasks/cancel", long_id).await;
    assert_eq!(ack["result"]["resultType"], json!("complete"), "{ack}");
    assert!(ack["result"].get("taskId").is_none(), "{ack}");
    until(&gw, long_id, &["cancelled"]).await;
}

#[tokio::test]
async fn tasks_update_answers_input_the_task_waits_for() {
    let gw = Gateway::builder().remote().start().await;
    let created = call(&gw, None, "confirm_delete", json!({"filename": "a.txt"})).await;
    let task_id = created["taskId"].as_str().expect("a task id").to_owned();
    let waiting = until(&gw, &task_id, &["input_required"]).await;
    assert!(waiting["inputRequests"]["confirm"].is_object(), "{waiting}");
    let answer = json!({"action": "accept", "content": {"confirm": true}});
    let params = json!({"taskId": task_id, "inputResponses": {"confirm": answer}});
    let ack = modern(&gw, None, "tasks/update", params, with_tasks()).await;
    assert_eq!(ack["result"]["resultType"], json!("complete"), "{ack}");
    let done = until(&gw, &task_id, &["completed"]).await;
    assert_eq!(done["result"]["content"][0]["text"], json!("Deleted a.txt"));
}

#[tokio::test]
async fn any_replica_with_the_key_serves_a_task_another_one_created() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fixture = Fixture::start_http("shared", dir.path()).await;
    let upstream = format!(
        "[[upstreams]]\nname = \"remote\"\ntransport = \"http\"\nurl = {}\ntimeout = \"10s\"\n",
        toml_str(&fixture.url)
    );
    let replica = || {
        Gateway::builder()
            .server(&format!("hmac_key = {}", toml_str(HMAC_KEY)))
            .toml(&upstream)
            .start()
    };
    let (a, b) = (replica().await, replica().await);
    let created = call(&a, None, "slow_compute", json!({"seconds": 0.2})).await;
    let task_id = created["taskId"].as_str().expect("a task id");
    let done = until(&b, task_id, &["completed"]).await;
    assert_eq!(done["taskId"], json!(task_id), "{done}");
}

#[tokio::test]
async fn foreign_forged_and_undeclared_task_requests_are_refused_precisely() {
    let auth = format!(
        "[server.auth]\nmode = \"api_key\"\n{}{}",
        api_key_entry(ALICE, "alice", "red"),
        api_key_entry(BOB, "bob", "red"),
    );
    let gw = Gateway::builder().remote().toml(&auth).start().await;
    let created = call(&gw, Some(ALICE), "slow_compute", json!({"seconds": 30})).await;
    let task_id = created["taskId"].as_str().expect("a task id").to_owned();
    let own = task(&gw, Some(ALICE), "tasks/get", &task_id).await;
    assert_eq!(own["result"]["taskId"], json!(task_id), "{own}");
    let foreign = task(&gw, Some(BOB), "tasks/get", &task_id).await;
    assert_eq!(error_code(&foreign), INVALID_PARAMS, "{foreign}");
    assert_eq!(
        foreign["error"]["message"],
        json!(format!("Unknown task: {task_id}"))
    );
    let (head, mac) = task_id.rsplit_once('.').expect("a signed id");
    let forged = format!("{head}.{}", mac.chars().rev().collect::<String>());
    for id in [forged.as_str(), "mcpgate-task.e30.AAAA", "not-a-gateway-id"] {
        let reply = task(&gw, Some(ALICE), "tasks/cancel", id).await;
        assert_eq!(error_code(&reply), INVALID_PARAMS, "{id}: {reply}");
    }
    let params = json!({"taskId": task_id});
    let undeclared = modern(&gw, Some(ALICE), "tasks/get", params, json!({})).await;
    assert_eq!(
        error_code(&undeclared),
        MISSING_CLIENT_CAPABILITY,
        "{undeclared}"
    );
    let required = &undeclared["error"]["data"]["requiredCapabilities"];
    assert!(
        required["extensions"][EXTENSION].is_object(),
        "{undeclared}"
    );
    task(&gw, Some(ALICE), "tasks/cancel", &task_id).await;
}

#[tokio::test]
async fn removed_task_methods_are_unknown_in_the_modern_era() {
    let gw = Gateway::builder().remote().start().await;
    for method in ["tasks/result", "tasks/list"] {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": with_tasks(),
        }}});
        let headers = [("mcp-protocol-version", MODERN), ("mcp-method", method)];
        let reply = gw.post(None, body.to_string(), &headers).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}: {reply:?}");
        assert_eq!(error_code(&reply.json()), support::METHOD_NOT_FOUND);
    }
}

#[tokio::test]
async fn a_legacy_session_that_declared_the_extension_gets_tasks_too() {
    let gw = Gateway::builder().remote().start().await;
    let session = gw.initialize_with(support::LATEST, with_tasks()).await;
    let params = json!({"name": "remote__slow_compute", "arguments": {"seconds": 0.2}});
    let created = gw.request(&session, "tools/call", params).await.json();
    let task_id = created["result"]["taskId"].as_str().expect("a task id");
    assert!(task_id.starts_with("mcpgate-task."), "{created}");
    for _ in 0..100 {
        let got = gw
            .request(&session, "tasks/get", json!({"taskId": task_id}))
            .await
            .json();
        assert_eq!(got["result"]["taskId"], json!(task_id), "{got}");
        if got["result"]["status"] == json!("completed") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the task never completed");
}

#[tokio::test]
async fn a_stdio_upstreams_task_is_served_from_every_replica_of_a_fleet() {
    // Each replica runs its own stdio child: the task lives in the child of the replica that
    // created it, and another replica sends its requests there.
    let redis = support::redis::RedisServer::start().await;
    let (a, b) = (
        redis.replica("60s").start().await,
        redis.replica("60s").start().await,
    );
    let params = json!({"name": "local__slow_compute", "arguments": {"seconds": 0.2}});
    let created = modern(&a, None, "tools/call", params, with_tasks()).await;
    let task_id = created["result"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("a task id: {created}"));
    let done = until(&b, task_id, &["completed"]).await;
    assert_eq!(done["taskId"], json!(task_id), "{done}");
    let params = json!({"name": "local__slow_compute", "arguments": {"seconds": 60}});
    let long = modern(&b, None, "tools/call", params, with_tasks()).await;
    let long_id = long["result"]["taskId"].as_str().expect("a task id");
    let ack = task(&a, None, "tasks/cancel", long_id).await;
    assert_eq!(ack["result"]["resultType"], json!("complete"), "{ack}");
    until(&a, long_id, &["cancelled"]).await;
}

//! Protocol 2026-07-28 on `/mcp`, beside the legacy sessions: requests carrying their version
//! and capabilities in `_meta` are served without a session, through the real fixture over
//! stdio and HTTP, spoken to in the modern era when it speaks it (`era = "auto"`) and through
//! a legacy upstream session otherwise (`era = "legacy"`).

use crate::support;

use crate::support::redis::RedisServer;
use crate::support::{Gateway, INVALID_PARAMS, METHOD_NOT_FOUND};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";
const HEADER_MISMATCH: i64 = -32020;
const MISSING_CLIENT_CAPABILITY: i64 = -32021;
const UNSUPPORTED_VERSION: i64 = -32022;

fn meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "modern-test", "version": "1"},
    })
}

/// The params of a modern request: `params` with the standard `_meta`.
fn with_meta(mut params: Value, capabilities: Value) -> Value {
    params["_meta"] = meta(capabilities);
    params
}

/// POSTs a modern request with the headers a conforming client mirrors, `overrides` applied
/// (an empty value removes a header).
async fn modern(
    gw: &Gateway,
    method: &str,
    params: Value,
    overrides: &[(&str, &str)],
) -> support::Reply {
    let body = json!({"jsonrpc": "2.0", "id": gw.next_id(), "method": method, "params": params});
    let name = ["name", "uri"]
        .iter()
        .find_map(|f| params.get(*f).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    let mut headers = vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];
    if !name.is_empty() {
        headers.push(("mcp-name", name.as_str()));
    }
    headers.extend_from_slice(overrides);
    gw.post(None, body.to_string(), &headers).await
}

async fn call(gw: &Gateway, tool: &str, arguments: Value) -> Value {
    let params = with_meta(json!({"name": tool, "arguments": arguments}), json!({}));
    let reply = modern(gw, "tools/call", params, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(
        reply.header("mcp-session-id").is_none(),
        "a session was issued: {reply:?}"
    );
    response_of(&reply)
}

/// The JSON-RPC response of a reply, JSON or SSE.
fn response_of(reply: &support::Reply) -> Value {
    if reply.content_type().starts_with("text/event-stream") {
        let events = reply.sse_events();
        let last = events
            .last()
            .unwrap_or_else(|| panic!("empty stream: {reply:?}"));
        return last.json();
    }
    reply.json()
}

fn text_of(response: &Value) -> &str {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn discover_lists_both_eras_and_the_merged_capabilities() {
    let gw = Gateway::builder().remote().start().await;
    let reply = modern(&gw, "server/discover", with_meta(json!({}), json!({})), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let result = &reply.json()["result"];
    assert_eq!(result["supportedVersions"][0], json!(MODERN), "{result}");
    assert!(
        result["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2025-11-25"))
    );
    for capability in ["tools", "prompts", "resources"] {
        assert!(result["capabilities"].get(capability).is_some(), "{result}");
    }
    assert_eq!(result["resultType"], json!("complete"));
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        json!("mcpgate")
    );
    assert_eq!(
        (result["ttlMs"].clone(), result["cacheScope"].clone()),
        (json!(0), json!("public"))
    );
    assert!(
        result["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("## remote")),
        "{result}"
    );
}

#[tokio::test]
async fn tools_resources_and_prompts_work_over_stdio_and_http_upstreams() {
    let gw = Gateway::builder().remote().start().await;
    for upstream in ["local", "remote"] {
        let response = call(&gw, &format!("{upstream}__echo"), json!({"text": upstream})).await;
        assert_eq!(text_of(&response), upstream, "{response}");
        assert_eq!(response["result"]["resultType"], json!("complete"));
        assert_eq!(
            response["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            json!("mcpgate"),
            "the gateway answers as itself: {response}"
        );
        let who = call(&gw, &format!("{upstream}__whoami"), json!({})).await;
        assert_eq!(text_of(&who), upstream, "{who}");
    }
    let list = modern(&gw, "tools/list", with_meta(json!({}), json!({})), &[]).await;
    let result = &response_of(&list)["result"];
    let names: Vec<&str> = result["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"local__echo") && names.contains(&"remote__echo"),
        "{names:?}"
    );
    assert_eq!(
        (result["ttlMs"].clone(), result["cacheScope"].clone()),
        (json!(0), json!("private"))
    );
    let read = modern(
        &gw,
        "resources/read",
        with_meta(json!({"uri": "test://static-text"}), json!({})),
        &[],
    )
    .await;
    let result = &response_of(&read)["result"];
    assert!(result["contents"][0]["text"].as_str().is_some(), "{result}");
    assert_eq!(result["cacheScope"], json!("private"), "{result}");
    let prompt = modern(
        &gw,
        "prompts/get",
        with_meta(json!({"name": "remote__test_simple_prompt"}), json!({})),
        &[],
    )
    .await;
    assert!(
        response_of(&prompt)["result"]["messages"].is_array(),
        "{prompt:?}"
    );
}

#[tokio::test]
async fn each_refusal_has_the_code_and_status_of_the_text() {
    let gw = Gateway::start().await;
    let echo = json!({"name": "local__echo", "arguments": {"text": "x"}});
    let no_meta = modern(&gw, "tools/call", echo.clone(), &[]).await;
    no_meta.assert_error(400, INVALID_PARAMS, &["_meta"]);
    let mut no_capabilities = with_meta(echo.clone(), json!({}));
    no_capabilities["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    modern(&gw, "tools/call", no_capabilities, &[])
        .await
        .assert_error(400, INVALID_PARAMS, &["clientCapabilities"]);
    let params = with_meta(echo.clone(), json!({}));
    modern(
        &gw,
        "tools/call",
        params.clone(),
        &[("mcp-name", "local__other")],
    )
    .await
    .assert_error(400, HEADER_MISMATCH, &["Mcp-Name", "local__other"]);
    modern(&gw, "tools/call", params.clone(), &[("mcp-name", "")])
        .await
        .assert_error(400, HEADER_MISMATCH, &["Mcp-Name"]);
    modern(
        &gw,
        "tools/call",
        params.clone(),
        &[("mcp-method", "tools/list")],
    )
    .await
    .assert_error(400, HEADER_MISMATCH, &["Mcp-Method"]);
    modern(
        &gw,
        "tools/call",
        params.clone(),
        &[("mcp-protocol-version", "")],
    )
    .await
    .assert_error(400, HEADER_MISMATCH, &["MCP-Protocol-Version"]);
    let mut old = params.clone();
    old["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("1900-01-01");
    let body = modern(
        &gw,
        "tools/call",
        old,
        &[("mcp-protocol-version", "1900-01-01")],
    )
    .await
    .assert_error(400, UNSUPPORTED_VERSION, &["1900-01-01"]);
    assert_eq!(body["error"]["data"]["requested"], json!("1900-01-01"));
    assert!(
        body["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN)),
        "{body}"
    );
    for removed in [
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "tasks/list",
        "no/such",
    ] {
        let params = with_meta(
            json!({"uri": "test://static-text", "level": "info"}),
            json!({}),
        );
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": removed, "params": params});
        let reply = gw
            .post(
                None,
                body.to_string(),
                &[("mcp-protocol-version", MODERN), ("mcp-method", removed)],
            )
            .await;
        reply.assert_error(404, METHOD_NOT_FOUND, &[removed]);
    }
    // A name outside plain ASCII arrives Base64-encoded and matches once decoded.
    let encoded = "=?base64?bG9jYWxfX2VjaG8=?="; // "local__echo"
    let reply = modern(&gw, "tools/call", params, &[("mcp-name", encoded)]).await;
    assert_eq!(text_of(&response_of(&reply)), "x", "{reply:?}");
    // Nothing of this disturbed the legacy era.
    let session = gw.initialize().await;
    gw.assert_echo(&session, "after modern refusals").await;
}

#[tokio::test]
async fn get_and_delete_without_a_session_are_405_and_notifications_are_accepted() {
    let gw = Gateway::start().await;
    // The era defines no client notifications over HTTP (closing a stream cancels), but an SDK
    // sends `notifications/cancelled` when it closes a listen stream: accepted, no effect.
    let cancelled = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "listen:1"}});
    let reply = gw
        .post(
            None,
            cancelled.to_string(),
            &[("mcp-protocol-version", MODERN)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert!(reply.body.is_empty(), "{reply:?}");
    for reply in [
        gw.get_reply(None, &[("mcp-protocol-version", MODERN)])
            .await,
        gw.delete(None, &[("mcp-protocol-version", MODERN)]).await,
    ] {
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{reply:?}");
        assert_eq!(reply.header("allow").as_deref(), Some("POST"), "{reply:?}");
        assert!(reply.text().contains("Mcp-Session-Id"), "{reply:?}");
    }
}

#[tokio::test]
async fn logs_reach_a_modern_client_only_when_it_asks() {
    for era in ["auto", "legacy"] {
        let gw = Gateway::builder()
            .local(&format!("era = \"{era}\""))
            .start()
            .await;
        let quiet = with_meta(
            json!({"name": "local__test_tool_with_logging", "arguments": {}}),
            json!({}),
        );
        let reply = modern(&gw, "tools/call", quiet.clone(), &[]).await;
        assert!(
            !reply.text().contains("notifications/message"),
            "{era}: {reply:?}"
        );
        assert!(
            response_of(&reply)["result"]["content"].is_array(),
            "{era}: {reply:?}"
        );
        let mut loud = quiet;
        loud["_meta"]["io.modelcontextprotocol/logLevel"] = json!("debug");
        let reply = modern(&gw, "tools/call", loud, &[]).await;
        assert!(
            reply.text().contains("notifications/message"),
            "{era}: {reply:?}"
        );
    }
}

#[tokio::test]
async fn an_undeclared_capability_is_32021_from_a_legacy_upstream() {
    let gw = Gateway::builder().local("era = \"legacy\"").start().await;
    let params = with_meta(
        json!({"name": "local__test_sampling", "arguments": {"prompt": "hi"}}),
        json!({}),
    );
    let reply = modern(&gw, "tools/call", params, &[]).await;
    let body = reply.assert_error(400, MISSING_CLIENT_CAPABILITY, &["sampling"]);
    assert_eq!(
        body["error"]["data"]["requiredCapabilities"],
        json!({"sampling": {}}),
        "{body}"
    );
    // The upstream's exchange was cancelled, not left hanging: the next call goes through.
    let echo = call(&gw, "local__echo", json!({"text": "still here"})).await;
    assert_eq!(text_of(&echo), "still here");
}

#[tokio::test]
async fn modern_requests_write_nothing_to_redis() {
    let redis = RedisServer::start().await;
    let gw = redis.replica("60s").remote().start().await;
    for upstream in ["local", "remote"] {
        let response = call(
            &gw,
            &format!("{upstream}__echo"),
            json!({"text": "stateless"}),
        )
        .await;
        assert_eq!(text_of(&response), "stateless", "{response}");
    }
    let list = modern(&gw, "tools/list", with_meta(json!({}), json!({})), &[]).await;
    assert_eq!(list.status, StatusCode::OK, "{list:?}");
    let mut client = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("mcpgate:*")
        .query_async(&mut client)
        .await
        .unwrap();
    assert!(keys.is_empty(), "modern requests wrote {keys:?}");
    assert_eq!(gw.metric("mcpgate_sessions_created_total").await, 0.0);
    // The same replica still serves legacy sessions from Redis.
    let session = gw.initialize().await;
    gw.assert_echo(&session, "legacy beside modern").await;
}

const FLEET_KEY: &str = "modern-era-fleet-key-0123456789abcdefghijkl";

/// A replica of a fleet sharing `FLEET_KEY` and the HTTP upstream `shared` at `url`: modern
/// requests need nothing else shared.
async fn replica(url: &str, key: &str) -> Gateway {
    Gateway::builder()
        .server(&format!("hmac_key = \"{key}\""))
        .toml(&format!(
            "[[upstreams]]\nname = \"shared\"\ntransport = \"http\"\nurl = {}",
            support::toml_str(url)
        ))
        .start()
        .await
}

/// One MRTR round of `tool`: the answers so far and the state the last round gave.
async fn round(
    gw: &Gateway,
    tool: &str,
    responses: Value,
    state: Option<&str>,
    key: Option<&str>,
) -> Value {
    let mut params = with_meta(
        json!({"name": tool, "arguments": {}}),
        json!({"elicitation": {}}),
    );
    if !responses.is_null() {
        params["inputResponses"] = responses;
    }
    if let Some(state) = state {
        params["requestState"] = json!(state);
    }
    let authorization = key.map(support::bearer);
    let overrides: Vec<(&str, &str)> = authorization
        .iter()
        .map(|a| ("authorization", a.as_str()))
        .collect();
    response_of(&modern(gw, "tools/call", params, &overrides).await)
}

fn input_required(response: &Value) -> (&Value, String) {
    let result = &response["result"];
    assert_eq!(result["resultType"], json!("input_required"), "{response}");
    assert!(
        result.get("ttlMs").is_none(),
        "an interim result is not cacheable: {response}"
    );
    let state = result["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("no requestState: {response}"));
    assert!(
        state.starts_with("mcpgate.s2."),
        "the gateway's sealed state: {response}"
    );
    (&result["inputRequests"], state.to_owned())
}

fn accept(key: &str, field: &str, value: &str) -> Value {
    json!({ key: {"action": "accept", "content": { field: value }} })
}

#[tokio::test]
async fn mrtr_rounds_continue_on_any_replica_and_altered_states_are_refused() {
    // The upstream keeps its own requestState under a key of its process: one upstream serves
    // the fleet, as an HTTP upstream behind its own load balancer would.
    let dir = tempfile::tempdir().unwrap();
    let upstream = support::Fixture::start_http("shared", dir.path()).await;
    let fleet = [
        replica(&upstream.url, FLEET_KEY).await,
        replica(&upstream.url, FLEET_KEY).await,
        replica(&upstream.url, FLEET_KEY).await,
    ];
    let tool = "shared__test_input_required_result_multi_round";
    let first = round(&fleet[0], tool, Value::Null, None, None).await;
    let (requests, state1) = input_required(&first);
    assert_eq!(
        requests["step1"]["method"],
        json!("elicitation/create"),
        "{first}"
    );
    let second = round(
        &fleet[1],
        tool,
        accept("step1", "name", "Alice"),
        Some(&state1),
        None,
    )
    .await;
    let (requests, state2) = input_required(&second);
    assert!(requests.get("step2").is_some(), "{second}");
    assert_ne!(state1, state2, "each round has its own state");
    let done = round(
        &fleet[2],
        tool,
        accept("step2", "color", "blue"),
        Some(&state2),
        None,
    )
    .await;
    assert_eq!(done["result"]["resultType"], json!("complete"), "{done}");
    assert!(!text_of(&done).is_empty(), "{done}");

    let tampered = round(
        &fleet[0],
        tool,
        accept("step2", "color", "blue"),
        Some(&format!("{state2}-TAMPERED")),
        None,
    )
    .await;
    assert_eq!(
        tampered["error"]["code"],
        json!(INVALID_PARAMS),
        "{tampered}"
    );
    assert!(
        tampered["error"]["message"]
            .as_str()
            .unwrap()
            .contains("altered"),
        "{tampered}"
    );
    let other_tool = "shared__test_input_required_result_request_state";
    let replayed = round(
        &fleet[1],
        other_tool,
        accept("step2", "color", "blue"),
        Some(&state2),
        None,
    )
    .await;
    assert!(
        replayed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another request"),
        "{replayed}"
    );
    let other_fleet = replica(&upstream.url, "another-fleet-key-0123456789abcdefghijklmn").await;
    let foreign_key = round(
        &other_fleet,
        tool,
        accept("step2", "color", "blue"),
        Some(&state2),
        None,
    )
    .await;
    assert!(
        foreign_key["error"]["message"]
            .as_str()
            .unwrap()
            .contains("altered"),
        "{foreign_key}"
    );
}

/// The one input a bridged legacy upstream asks for in a round, a form with `field`; the state
/// to send back.
fn bridged_input(response: &Value, field: &str) -> String {
    let (requests, state) = input_required(response);
    let asked = &requests["mcpgate-input"];
    assert_eq!(asked["method"], json!("elicitation/create"), "{response}");
    let properties = &asked["params"]["requestedSchema"]["properties"];
    assert!(
        properties.get(field).is_some(),
        "asks for {field}: {response}"
    );
    state
}

/// Retries a bridged call with `value` for `field` under `state`.
async fn answer(gw: &Gateway, tool: &str, field: &str, value: &str, state: &str) -> Value {
    let answer = accept("mcpgate-input", field, value);
    round(gw, tool, answer, Some(state), None).await
}

/// A legacy upstream's elicitation in the middle of a call reaches a modern client as
/// `input_required`; each retry resumes the same upstream call from whichever replica gets it.
async fn bridge_three_rounds(fleet: &[Gateway], tool: &str) {
    let replica = |n: usize| &fleet[n % fleet.len()];
    let first = round(replica(0), tool, Value::Null, None, None).await;
    let state1 = bridged_input(&first, "name");
    let second = answer(replica(1), tool, "name", "Alice", &state1).await;
    let state2 = bridged_input(&second, "color");
    let done = answer(replica(2), tool, "color", "blue", &state2).await;
    assert_eq!(done["result"]["resultType"], json!("complete"), "{done}");
    assert_eq!(text_of(&done), "Alice's favorite color is blue.", "{done}");
    let replayed = answer(replica(0), tool, "color", "blue", &state2).await;
    assert_eq!(
        replayed["error"]["code"],
        json!(INVALID_PARAMS),
        "{replayed}"
    );
    let message = replayed["error"]["message"].as_str().unwrap();
    assert!(message.contains("no longer held"), "{replayed}");
}

#[tokio::test]
async fn mrtr_bridges_legacy_upstreams_across_replicas() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = support::Fixture::start_http("shared", dir.path()).await;
    let shared = format!(
        "[[upstreams]]\nname = \"shared\"\ntransport = \"http\"\nera = \"legacy\"\nurl = {}",
        support::toml_str(&upstream.url)
    );
    let mut fleet = Vec::new();
    for _ in 0..3 {
        let replica = redis
            .replica("60s")
            .local("era = \"legacy\"")
            .toml(&shared)
            .start()
            .await;
        fleet.push(replica);
    }
    for tool in [
        "local__test_input_required_result_multi_round",
        "shared__test_input_required_result_multi_round",
    ] {
        bridge_three_rounds(&fleet, tool).await;
    }
}

#[tokio::test]
async fn mrtr_bridges_a_legacy_upstream_on_one_replica_and_tampering_is_refused() {
    let gw = Gateway::builder().local("era = \"legacy\"").start().await;
    let tool = "local__test_input_required_result_multi_round";
    bridge_three_rounds(std::slice::from_ref(&gw), tool).await;
    let first = round(&gw, tool, Value::Null, None, None).await;
    let state = bridged_input(&first, "name");
    let tampered = answer(&gw, tool, "name", "Alice", &format!("{state}x")).await;
    assert_eq!(
        tampered["error"]["code"],
        json!(INVALID_PARAMS),
        "{tampered}"
    );
    // Without the answer, the same question comes back, and the call still completes.
    let again = round(&gw, tool, json!({}), Some(&state), None).await;
    let state = bridged_input(&again, "name");
    let next = answer(&gw, tool, "name", "Bob", &state).await;
    let state = bridged_input(&next, "color");
    let done = answer(&gw, tool, "color", "red", &state).await;
    assert_eq!(text_of(&done), "Bob's favorite color is red.", "{done}");
}

#[tokio::test]
async fn a_caller_may_keep_16_calls_waiting_for_its_input() {
    // Over HTTP each call's questions arrive on its own stream; a stdio child's go to the
    // newest call of the caller (stdio carries no originating request id).
    let gw = Gateway::builder()
        .remote_line("era = \"legacy\"")
        .start()
        .await;
    let tool = "remote__test_input_required_result_multi_round";
    let mut states = Vec::new();
    for _ in 0..16 {
        let first = round(&gw, tool, Value::Null, None, None).await;
        states.push(bridged_input(&first, "name"));
    }
    let refused = round(&gw, tool, Value::Null, None, None).await;
    assert_eq!(refused["error"]["code"], json!(-32000), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("at most 16 calls waiting"), "{refused}");
    // A call that completes frees its place.
    let second = answer(&gw, tool, "name", "Alice", &states[0]).await;
    let state = bridged_input(&second, "color");
    let done = answer(&gw, tool, "color", "blue", &state).await;
    assert_eq!(text_of(&done), "Alice's favorite color is blue.", "{done}");
    let another = round(&gw, tool, Value::Null, None, None).await;
    bridged_input(&another, "name");
}

#[tokio::test]
async fn a_request_state_is_bound_to_its_principal_and_expires() {
    let keys = format!(
        "[server.auth]\nmode = \"api_key\"\n{}{}",
        support::api_key_entry("alice-key", "alice", "a"),
        support::api_key_entry("bob-key", "bob", "b"),
    );
    let gw = Gateway::builder()
        .server("request_state_ttl = \"1s\"")
        .toml(&keys)
        .start()
        .await;
    let tool = "local__test_input_required_result_multi_round";
    let first = round(&gw, tool, Value::Null, None, Some("alice-key")).await;
    let (_, state) = input_required(&first);
    let answer = accept("step1", "name", "Alice");
    let stolen = round(&gw, tool, answer.clone(), Some(&state), Some("bob-key")).await;
    assert!(
        stolen["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another request or caller"),
        "{stolen}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let late = round(&gw, tool, answer, Some(&state), Some("alice-key")).await;
    assert_eq!(late["error"]["code"], json!(INVALID_PARAMS), "{late}");
    assert!(
        late["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{late}"
    );
}

#[tokio::test]
async fn mcp_param_headers_are_checked_here_and_recomputed_for_the_upstream() {
    // `echo_region` marks `region` with `x-mcp-header: Region`; the HTTP fixture speaks
    // 2026-07-28, so the gateway must send it `Mcp-Param-Region` itself, and the upstream
    // refuses a call without it.
    let gw = Gateway::builder().remote().start().await;
    let tool = "remote__echo_region";
    let call = |region: &str| {
        with_meta(
            json!({"name": tool, "arguments": {"region": region}}),
            json!({}),
        )
    };
    let reply = modern(
        &gw,
        "tools/call",
        call("us-west1"),
        &[("mcp-param-region", "us-west1")],
    )
    .await;
    assert_eq!(text_of(&response_of(&reply)), "us-west1", "{reply:?}");
    let reply = modern(
        &gw,
        "tools/call",
        call("Hello, 世界"),
        &[("mcp-param-region", "=?base64?SGVsbG8sIOS4lueVjA==?=")],
    )
    .await;
    assert_eq!(text_of(&response_of(&reply)), "Hello, 世界", "{reply:?}");
    modern(&gw, "tools/call", call("us-west1"), &[])
        .await
        .assert_error(
            400,
            HEADER_MISMATCH,
            &["Mcp-Param-Region header is required"],
        );
    modern(
        &gw,
        "tools/call",
        call("us-west1"),
        &[("mcp-param-region", "eu-north1")],
    )
    .await
    .assert_error(400, HEADER_MISMATCH, &["eu-north1", "us-west1"]);
    modern(
        &gw,
        "tools/call",
        call("Hello"),
        &[("mcp-param-region", "=?base64?SGVsbG8?=")],
    )
    .await
    .assert_error(400, HEADER_MISMATCH, &["Base64"]);
}

/// Opens a `subscriptions/listen` stream with `notifications` as its filter.
async fn listen(gw: &Gateway, id: i64, notifications: Value) -> support::SseReader {
    let params = with_meta(json!({"notifications": notifications}), json!({}));
    let body =
        json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": params});
    let response = gw
        .http
        .post(&gw.mcp_url)
        .header("content-type", "application/json")
        .header("accept", support::ACCEPT_BOTH)
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "subscriptions/listen")
        .body(body.to_string())
        .send()
        .await
        .expect("POST subscriptions/listen");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("mcp-session-id").is_none());
    support::SseReader::new(response)
}

#[tokio::test]
async fn a_listen_stream_is_acknowledged_then_carries_only_the_changes_asked_for() {
    let gw = Gateway::builder().remote().start().await;
    let wait = std::time::Duration::from_secs(10);
    let mut stream = listen(
        &gw,
        41,
        json!({"toolsListChanged": true, "resourceSubscriptions": ["test://nowhere"]}),
    )
    .await;
    let ack = stream
        .next_event(wait)
        .await
        .expect("an acknowledgement")
        .json();
    assert_eq!(
        ack["method"],
        json!("notifications/subscriptions/acknowledged"),
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        json!(41),
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"]["toolsListChanged"],
        json!(true),
        "{ack}"
    );
    assert!(
        ack["params"]["notifications"]
            .get("promptsListChanged")
            .is_none(),
        "{ack}"
    );
    for upstream in ["local", "remote"] {
        for trigger in ["test_trigger_prompt_change", "test_trigger_tool_change"] {
            let done = call(&gw, &format!("{upstream}__{trigger}"), json!({})).await;
            assert!(done.get("result").is_some(), "{done}");
        }
        let change = stream
            .next_event(wait)
            .await
            .unwrap_or_else(|| panic!("no change from {upstream}"))
            .json();
        assert_eq!(
            change["method"],
            json!("notifications/tools/list_changed"),
            "{upstream}: {change}"
        );
        assert_eq!(
            change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            json!(41),
            "{change}"
        );
    }
    assert!(
        stream
            .next_event(std::time::Duration::from_millis(500))
            .await
            .is_none(),
        "prompt changes were not asked for"
    );
    // A legacy session has no listen method.
    let session = gw.initialize().await;
    let reply = gw
        .request(
            &session,
            "subscriptions/listen",
            json!({"notifications": {}}),
        )
        .await;
    reply.assert_error(200, METHOD_NOT_FOUND, &["2026-07-28"]);
}

/// Kills the gateway's one stdio child; the gateway restarts it and announces its lists.
fn kill_stdio_child(gw: &Gateway) {
    let children = gw.child_pids();
    assert_eq!(children.len(), 1, "one stdio child: {children:?}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &children[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// The next list change on a listen stream, which must be tagged with `id`.
async fn next_change(stream: &mut support::SseReader, id: i64) -> Value {
    let wait = std::time::Duration::from_secs(15);
    loop {
        let event = stream.next_event(wait).await.expect("a list change");
        if event.data.as_deref().is_none_or(str::is_empty) {
            continue;
        }
        let change = event.json();
        assert_eq!(
            change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            json!(id),
            "{change}"
        );
        return change;
    }
}

/// Acknowledges the listen stream and checks it honours tools but not prompts' changes.
async fn acknowledged_tools_only(stream: &mut support::SseReader) {
    let wait = std::time::Duration::from_secs(10);
    let ack = stream
        .next_event(wait)
        .await
        .expect("an acknowledgement")
        .json();
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true}),
        "{ack}"
    );
}

#[tokio::test]
async fn a_listen_stream_hears_a_legacy_upstream_come_back() {
    let gw = Gateway::builder().local("era = \"legacy\"").start().await;
    let discovered = modern(&gw, "server/discover", with_meta(json!({}), json!({})), &[]).await;
    let capabilities = &response_of(&discovered)["result"]["capabilities"];
    assert_eq!(
        capabilities["tools"]["listChanged"],
        json!(true),
        "{capabilities}"
    );
    let mut stream = listen(&gw, 51, json!({"toolsListChanged": true})).await;
    acknowledged_tools_only(&mut stream).await;
    kill_stdio_child(&gw);
    let change = next_change(&mut stream, 51).await;
    assert_eq!(
        change["method"],
        json!("notifications/tools/list_changed"),
        "{change}"
    );
}

#[tokio::test]
async fn every_replica_hears_a_legacy_upstream_change_seen_on_one() {
    let redis = RedisServer::start().await;
    let fleet = [
        redis.replica("60s").local("era = \"legacy\"").start().await,
        redis.replica("60s").local("era = \"legacy\"").start().await,
    ];
    let mut streams = Vec::new();
    for (n, replica) in fleet.iter().enumerate() {
        let mut stream = listen(replica, 60 + n as i64, json!({"toolsListChanged": true})).await;
        acknowledged_tools_only(&mut stream).await;
        streams.push(stream);
    }
    kill_stdio_child(&fleet[0]);
    for (n, stream) in streams.iter_mut().enumerate() {
        let change = next_change(stream, 60 + n as i64).await;
        assert_eq!(
            change["method"],
            json!("notifications/tools/list_changed"),
            "{change}"
        );
    }
}

#[tokio::test]
async fn a_draining_replica_ends_its_listen_streams_with_their_result() {
    let gw = Gateway::builder().local("era = \"legacy\"").start().await;
    let mut stream = listen(&gw, 71, json!({"toolsListChanged": true})).await;
    acknowledged_tools_only(&mut stream).await;
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let wait = std::time::Duration::from_secs(5);
    let events = stream.until_end(wait).await;
    let last = events
        .iter()
        .rev()
        .find(|e| e.data.as_deref().is_some_and(|d| !d.is_empty()))
        .expect("a last message")
        .json();
    assert_eq!(last["id"], json!(71), "{last}");
    assert_eq!(
        last["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        json!(71),
        "{last}"
    );
}

#[tokio::test]
async fn a_principal_has_a_bounded_number_of_modern_requests_in_flight() {
    let gw = Gateway::builder()
        .local("era = \"legacy\"")
        .toml("[limits]\nconcurrent_modern_requests_per_principal = 2")
        .start()
        .await;
    let mut stream = listen(&gw, 81, json!({"toolsListChanged": true})).await;
    acknowledged_tools_only(&mut stream).await;
    let slow = call(&gw, "local__slow", json!({"ms": 3000}));
    let refusal = async {
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        let params = with_meta(
            json!({"name": "local__echo", "arguments": {"text": "x"}}),
            json!({}),
        );
        modern(&gw, "tools/call", params, &[]).await
    };
    let (slow, refused) = tokio::join!(slow, refusal);
    refused.assert_error(429, -32000, &["at most 2 requests of protocol 2026-07-28"]);
    assert_eq!(text_of(&slow), "done", "{slow}");
    // The finished call's place is free again; the listen stream still holds the other.
    let echo = call(&gw, "local__echo", json!({"text": "after"})).await;
    assert_eq!(text_of(&echo), "after", "{echo}");
}

#[tokio::test]
async fn a_listen_stream_hears_a_legacy_http_upstream_without_any_legacy_session() {
    let gw = Gateway::builder()
        .without_local()
        .remote_line("era = \"legacy\"")
        .start()
        .await;
    let mut stream = listen(&gw, 91, json!({"toolsListChanged": true})).await;
    acknowledged_tools_only(&mut stream).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let done = call(&gw, "remote__test_trigger_tool_change", json!({})).await;
    assert!(done.get("result").is_some(), "{done}");
    let change = next_change(&mut stream, 91).await;
    assert_eq!(
        change["method"],
        json!("notifications/tools/list_changed"),
        "{change}"
    );
}

/// A listen stream held on a shared stdio child (still open there after the client went: the
/// gateway notices at its next keep-alive) does not stop the child's requests to a legacy
/// session's client (sampling) from being attributed to that session.
#[tokio::test]
async fn a_listen_stream_left_on_a_stdio_child_takes_no_sampling_from_legacy_sessions() {
    let gw = Gateway::start().await;
    let mut stream = listen(&gw, 51, json!({"toolsListChanged": true})).await;
    let ack = stream.next_event(std::time::Duration::from_secs(10)).await;
    let ack = ack.expect("an acknowledgement").json();
    assert_eq!(
        ack["params"]["notifications"]["toolsListChanged"],
        json!(true),
        "{ack}"
    );
    drop(stream);
    let session = gw
        .initialize_with(support::LATEST, json!({"sampling": {}}))
        .await;
    let sampled = |request: &Value| {
        let answer = json!({"role": "assistant", "model": "m",
            "content": {"type": "text", "text": "sampled"}});
        Some(json!({"jsonrpc": "2.0", "id": request["id"], "result": answer}))
    };
    let arguments = json!({"prompt": "hi"});
    let exchange =
        support::answering::call(&gw, &session, "local__test_sampling", arguments, sampled).await;
    assert!(
        exchange.result_text().contains("sampled"),
        "{:?}",
        exchange.response
    );
}

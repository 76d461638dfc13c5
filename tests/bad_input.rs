//! Malformed input (DESIGN.md §6): each bad body gets a precise 4xx with a JSON-RPC error, and
//! nothing else is affected — the session it was sent on and a bystander session created
//! before it both keep working (`local__echo`) after every case.

use std::time::Duration;

use crate::support::*;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// One bad body and what the gateway must answer.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    status: u16,
    code: i64,
    /// Words the error message must contain.
    needles: &'static [&'static str],
    /// The id the error must carry (`null` when the request's id cannot be read).
    id: Value,
}

fn case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: i64,
    needles: &'static [&'static str],
    id: Value,
) -> Case {
    Case {
        name,
        body: body.into(),
        status,
        code,
        needles,
        id,
    }
}

/// Posts every case on `victim`; after each, `victim` and `bystander` must still work.
async fn run_cases(gw: &Gateway, victim: &Session, bystander: &Session, cases: Vec<Case>) {
    for case in cases {
        let reply = gw.post(Some(victim), case.body.clone(), &[]).await;
        let context = format!("case {:?}", case.name);
        assert_eq!(reply.status.as_u16(), case.status, "{context}: {reply:?}");
        let body = reply.assert_error(case.status, case.code, case.needles);
        assert_eq!(
            body["id"], case.id,
            "{context}: wrong id in the error: {reply:?}"
        );
        gw.assert_echo(bystander, &context).await;
        gw.assert_echo(victim, &context).await;
    }
}

/// Two sessions: the one bad input is sent on, and a bystander created before it.
async fn two_sessions(gw: &Gateway, version: &str) -> (Session, Session) {
    let bystander = gw.initialize_with(version, json!({})).await;
    let victim = gw.initialize_with(version, json!({})).await;
    (victim, bystander)
}

fn nested(depth: usize, open: &str, close: &str) -> Vec<u8> {
    format!("{}{}", open.repeat(depth), close.repeat(depth)).into_bytes()
}

#[tokio::test]
async fn unparsable_bodies_are_400_parse_errors() {
    let gw = Gateway::start().await;
    let (victim, bystander) = two_sessions(&gw, LATEST).await;
    let mut deep_objects = "{\"a\":".repeat(10_000).into_bytes();
    deep_objects.extend(b"1");
    deep_objects.extend("}".repeat(10_000).into_bytes());
    let cases = vec![
        case(
            "truncated JSON",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping""#,
            400,
            PARSE_ERROR,
            &["Parse error"],
            Value::Null,
        ),
        case(
            "not JSON at all",
            "hello, gateway",
            400,
            PARSE_ERROR,
            &["Parse error"],
            Value::Null,
        ),
        case(
            "empty body",
            "",
            400,
            PARSE_ERROR,
            &["Parse error"],
            Value::Null,
        ),
        case(
            "trailing garbage",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"} trailing"#,
            400,
            PARSE_ERROR,
            &["Parse error"],
            Value::Null,
        ),
        case(
            "single quotes",
            "{'jsonrpc':'2.0','id':1,'method':'ping'}",
            400,
            PARSE_ERROR,
            &["Parse error"],
            Value::Null,
        ),
        case(
            "invalid UTF-8",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xff\xfeng\"}".to_vec(),
            400,
            PARSE_ERROR,
            &["UTF-8"],
            Value::Null,
        ),
        case(
            "lone UTF-16 surrogate escape",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\ud800"}}"#,
            400,
            PARSE_ERROR,
            &["Parse error"],
            Value::Null,
        ),
        case(
            "10k nested arrays",
            nested(10_000, "[", "]"),
            400,
            PARSE_ERROR,
            &["recursion"],
            Value::Null,
        ),
        case(
            "10k nested objects",
            deep_objects,
            400,
            PARSE_ERROR,
            &["recursion"],
            Value::Null,
        ),
    ];
    run_cases(&gw, &victim, &bystander, cases).await;
}

#[tokio::test]
async fn wrongly_typed_messages_are_400_invalid_requests() {
    let gw = Gateway::start().await;
    let (victim, bystander) = two_sessions(&gw, LATEST).await;
    let cases = vec![
        case(
            "method as number",
            r#"{"jsonrpc":"2.0","id":5,"method":42}"#,
            400,
            INVALID_REQUEST,
            &["method", "string"],
            json!(5),
        ),
        case(
            "id as object",
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            400,
            INVALID_REQUEST,
            &["id"],
            Value::Null,
        ),
        case(
            "id as array",
            r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
            400,
            INVALID_REQUEST,
            &["id"],
            Value::Null,
        ),
        case(
            "id null",
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            400,
            INVALID_REQUEST,
            &["id"],
            Value::Null,
        ),
        case(
            "id float",
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            400,
            INVALID_REQUEST,
            &["id"],
            Value::Null,
        ),
        case(
            "id boolean",
            r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
            400,
            INVALID_REQUEST,
            &["id"],
            Value::Null,
        ),
        case(
            "params as string",
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/list","params":"all"}"#,
            400,
            INVALID_REQUEST,
            &["params"],
            json!(6),
        ),
        case(
            "params as number on a notification",
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":3}"#,
            400,
            INVALID_REQUEST,
            &["params"],
            Value::Null,
        ),
        case(
            "jsonrpc 1.0",
            r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#,
            400,
            INVALID_REQUEST,
            &["jsonrpc", "2.0"],
            json!(7),
        ),
        case(
            "jsonrpc as number",
            r#"{"jsonrpc":2.0,"id":8,"method":"ping"}"#,
            400,
            INVALID_REQUEST,
            &["jsonrpc"],
            json!(8),
        ),
        case(
            "jsonrpc missing",
            r#"{"id":9,"method":"ping"}"#,
            400,
            INVALID_REQUEST,
            &["jsonrpc"],
            json!(9),
        ),
        case(
            "a number",
            "42",
            400,
            INVALID_REQUEST,
            &["object"],
            Value::Null,
        ),
        case(
            "a string",
            r#""ping""#,
            400,
            INVALID_REQUEST,
            &["object"],
            Value::Null,
        ),
        case(
            "null",
            "null",
            400,
            INVALID_REQUEST,
            &["object"],
            Value::Null,
        ),
        case(
            "an empty object",
            "{}",
            400,
            INVALID_REQUEST,
            &["jsonrpc"],
            Value::Null,
        ),
        case(
            "an empty batch",
            "[]",
            400,
            INVALID_REQUEST,
            &["empty batch"],
            Value::Null,
        ),
        case(
            "neither request nor response",
            r#"{"jsonrpc":"2.0"}"#,
            400,
            INVALID_REQUEST,
            &["neither"],
            Value::Null,
        ),
        case(
            "response with neither result nor error",
            r#"{"jsonrpc":"2.0","id":10}"#,
            400,
            INVALID_REQUEST,
            &["result", "error"],
            json!(10),
        ),
        case(
            "response with both result and error",
            r#"{"jsonrpc":"2.0","id":11,"result":{},"error":{"code":1,"message":"m"}}"#,
            400,
            INVALID_REQUEST,
            &["result", "error"],
            json!(11),
        ),
        case(
            "response with a string error",
            r#"{"jsonrpc":"2.0","id":12,"error":"boom"}"#,
            400,
            INVALID_REQUEST,
            &["error"],
            json!(12),
        ),
    ];
    run_cases(&gw, &victim, &bystander, cases).await;
}

#[tokio::test]
async fn unknown_methods_are_400_method_not_found() {
    let gw = Gateway::start().await;
    let (victim, bystander) = two_sessions(&gw, LATEST).await;
    let cases = vec![
        case(
            "unknown method",
            r#"{"jsonrpc":"2.0","id":20,"method":"tools/explode"}"#,
            400,
            METHOD_NOT_FOUND,
            &["tools/explode"],
            json!(20),
        ),
        case(
            "empty method",
            r#"{"jsonrpc":"2.0","id":21,"method":""}"#,
            400,
            METHOD_NOT_FOUND,
            &["Method not found"],
            json!(21),
        ),
        case(
            "server-side method sent by a client",
            r#"{"jsonrpc":"2.0","id":"s","method":"sampling/createMessage","params":{}}"#,
            400,
            METHOD_NOT_FOUND,
            &["sampling/createMessage"],
            json!("s"),
        ),
        case(
            "a notification method sent as a request",
            r#"{"jsonrpc":"2.0","id":22,"method":"notifications/initialized"}"#,
            400,
            METHOD_NOT_FOUND,
            &["notifications/initialized"],
            json!(22),
        ),
    ];
    run_cases(&gw, &victim, &bystander, cases).await;
}

#[tokio::test]
async fn missing_or_mistyped_required_params_are_400_invalid_params() {
    let gw = Gateway::start().await;
    let (victim, bystander) = two_sessions(&gw, LATEST).await;
    let cases = vec![
        case(
            "tools/call without params",
            r#"{"jsonrpc":"2.0","id":30,"method":"tools/call"}"#,
            400,
            INVALID_PARAMS,
            &["tools/call", "name"],
            json!(30),
        ),
        case(
            "tools/call without name",
            r#"{"jsonrpc":"2.0","id":31,"method":"tools/call","params":{"arguments":{}}}"#,
            400,
            INVALID_PARAMS,
            &["tools/call", "name"],
            json!(31),
        ),
        case(
            "tools/call with a numeric name",
            r#"{"jsonrpc":"2.0","id":32,"method":"tools/call","params":{"name":5}}"#,
            400,
            INVALID_PARAMS,
            &["name", "string"],
            json!(32),
        ),
        case(
            "tools/call with params as an array",
            r#"{"jsonrpc":"2.0","id":33,"method":"tools/call","params":["local__echo"]}"#,
            400,
            INVALID_PARAMS,
            &["params", "object"],
            json!(33),
        ),
        case(
            "resources/read without uri",
            r#"{"jsonrpc":"2.0","id":34,"method":"resources/read","params":{}}"#,
            400,
            INVALID_PARAMS,
            &["uri"],
            json!(34),
        ),
        case(
            "prompts/get without name",
            r#"{"jsonrpc":"2.0","id":35,"method":"prompts/get","params":{}}"#,
            400,
            INVALID_PARAMS,
            &["name"],
            json!(35),
        ),
        case(
            "logging/setLevel without level",
            r#"{"jsonrpc":"2.0","id":36,"method":"logging/setLevel","params":{}}"#,
            400,
            INVALID_PARAMS,
            &["level"],
            json!(36),
        ),
    ];
    run_cases(&gw, &victim, &bystander, cases).await;
}

#[tokio::test]
async fn initialize_without_required_params_is_400_invalid_params() {
    let gw = Gateway::start().await;
    let bystander = gw.initialize().await;
    for params in [
        json!(null),
        json!({}),
        json!({"protocolVersion": LATEST, "capabilities": {}}),
        json!({"protocolVersion": 2025, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
        json!({"protocolVersion": LATEST, "capabilities": "all", "clientInfo": {"name": "t", "version": "0"}}),
    ] {
        let mut body = json!({"jsonrpc": "2.0", "id": 40, "method": "initialize"});
        if !params.is_null() {
            body["params"] = params.clone();
        }
        let reply = gw.post_json(None, &body).await;
        let error = reply.assert_error(400, INVALID_PARAMS, &["initialize"]);
        assert_eq!(error["id"], json!(40), "{params}: {reply:?}");
        assert!(
            reply.header("mcp-session-id").is_none(),
            "{params}: a refused initialize created a session: {reply:?}"
        );
        gw.assert_echo(&bystander, &format!("initialize with params {params}"))
            .await;
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let gw = Gateway::builder()
        .server("max_body_bytes = 1024")
        .start()
        .await;
    let (victim, bystander) = two_sessions(&gw, LATEST).await;
    let huge = json!({"jsonrpc": "2.0", "id": 50, "method": "tools/call",
        "params": {"name": "local__echo", "arguments": {"text": "y".repeat(64 * 1024)}}});
    let cases = vec![
        case(
            "64 KiB echo with a 1 KiB limit",
            huge.to_string(),
            413,
            INVALID_REQUEST,
            &["1024"],
            Value::Null,
        ),
        case(
            "one byte over",
            vec![b' '; 1025],
            413,
            INVALID_REQUEST,
            &["1024"],
            Value::Null,
        ),
    ];
    run_cases(&gw, &victim, &bystander, cases).await;
    // Exactly at the limit is read (and, being spaces, is a parse error — not a 413).
    let reply = gw.post(Some(&victim), vec![b' '; 1024], &[]).await;
    reply.assert_error(400, PARSE_ERROR, &["Parse error"]);
}

#[tokio::test]
async fn duplicate_ids_within_a_batch_are_400() {
    let gw = Gateway::start().await;
    let (victim, bystander) = two_sessions(&gw, BATCH_VERSION).await;
    let cases = vec![
        case(
            "two pings with id 1",
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            400,
            INVALID_REQUEST,
            &["duplicate", "1"],
            json!(1),
        ),
        case(
            "string ids, a notification between them",
            r#"[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","method":"tools/list"}]"#,
            400,
            INVALID_REQUEST,
            &["duplicate", "\"a\""],
            json!("a"),
        ),
        case(
            "a malformed member",
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":5}]"#,
            400,
            INVALID_REQUEST,
            &["method"],
            json!(2),
        ),
    ];
    run_cases(&gw, &victim, &bystander, cases).await;
    // 1 and "1" are different ids.
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": "1", "method": "ping"}]);
    let reply = gw.post_json(Some(&victim), &batch).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json().as_array().map(Vec::len), Some(2), "{reply:?}");
}

fn slow_call(id: Value, ms: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "local__slow", "arguments": {"ms": ms}}})
}

fn echo_call(id: Value, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "local__echo", "arguments": {"text": text}}})
}

#[tokio::test]
async fn a_duplicate_of_a_request_in_flight_is_400_and_the_original_completes() {
    let gw = Gateway::start().await;
    let (victim, bystander) = two_sessions(&gw, LATEST).await;
    let slow_body = slow_call(json!(7), 1500);
    let slow = gw.post_json(Some(&victim), &slow_body);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let duplicate = gw
            .post_json(Some(&victim), &echo_call(json!(7), "dup"))
            .await;
        // The same id in another session is no conflict.
        let other = gw
            .post_json(Some(&bystander), &echo_call(json!(7), "other"))
            .await;
        (duplicate, other)
    };
    let (slow, (duplicate, other)) = tokio::join!(slow, meanwhile);
    duplicate.assert_error(400, INVALID_REQUEST, &["7", "in flight"]);
    assert_eq!(duplicate.json()["id"], json!(7), "{duplicate:?}");
    assert_eq!(other.status, StatusCode::OK, "{other:?}");
    assert_eq!(
        other.json()["result"]["content"][0]["text"],
        json!("other"),
        "{other:?}"
    );
    assert_eq!(slow.status, StatusCode::OK, "{slow:?}");
    assert_eq!(slow.json()["id"], json!(7), "{slow:?}");
    assert_eq!(
        slow.json()["result"]["content"][0]["text"],
        json!("done"),
        "the original request was disturbed: {slow:?}"
    );
    // Once answered, the id is free again.
    let reuse = gw
        .post_json(Some(&victim), &echo_call(json!(7), "again"))
        .await;
    assert_eq!(
        reuse.json()["result"]["content"][0]["text"],
        json!("again"),
        "{reuse:?}"
    );
    gw.assert_echo(&bystander, "a duplicate in-flight id").await;
}

#[tokio::test]
async fn a_batch_reusing_an_id_in_flight_is_400() {
    let gw = Gateway::start().await;
    let (victim, bystander) = two_sessions(&gw, BATCH_VERSION).await;
    let slow_body = slow_call(json!("long"), 1500);
    let slow = gw.post_json(Some(&victim), &slow_body);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let batch = json!([
            echo_call(json!("fresh"), "x"),
            echo_call(json!("long"), "y")
        ]);
        gw.post_json(Some(&victim), &batch).await
    };
    let (slow, duplicate) = tokio::join!(slow, meanwhile);
    duplicate.assert_error(400, INVALID_REQUEST, &["\"long\"", "in flight"]);
    assert_eq!(
        slow.json()["result"]["content"][0]["text"],
        json!("done"),
        "{slow:?}"
    );
    // The refused batch's other id was not left marked as in flight.
    let reply = gw
        .post_json(Some(&victim), &echo_call(json!("fresh"), "z"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        reply.json()["result"]["content"][0]["text"],
        json!("z"),
        "{reply:?}"
    );
    gw.assert_echo(&bystander, "a batch with an in-flight id")
        .await;
}

#[tokio::test]
async fn cancelling_another_sessions_request_id_does_nothing_to_it() {
    let gw = Gateway::start().await;
    let (attacker, target) = two_sessions(&gw, LATEST).await;
    let slow_body = slow_call(json!(9), 800);
    let slow = gw.post_json(Some(&target), &slow_body);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}});
        gw.post_json(Some(&attacker), &cancel).await
    };
    let (slow, cancel) = tokio::join!(slow, meanwhile);
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{cancel:?}");
    assert_eq!(
        slow.json()["result"]["content"][0]["text"],
        json!("done"),
        "another session cancelled this request: {slow:?}"
    );
}

#[tokio::test]
async fn responses_with_forged_or_unknown_ids_are_400() {
    let gw = Gateway::start().await;
    let (victim, bystander) = two_sessions(&gw, LATEST).await;
    let cases = vec![
        case(
            "unknown string id",
            r#"{"jsonrpc":"2.0","id":"forged","result":{}}"#,
            400,
            INVALID_REQUEST,
            &["forged"],
            json!("forged"),
        ),
        case(
            "unknown numeric id",
            r#"{"jsonrpc":"2.0","id":12345,"result":{}}"#,
            400,
            INVALID_REQUEST,
            &["12345"],
            json!(12345),
        ),
        case(
            "gateway-looking id with a bad MAC",
            r#"{"jsonrpc":"2.0","id":"mcpgate.WyJsb2NhbCIsMV0.AAAA","result":{}}"#,
            400,
            INVALID_REQUEST,
            &["does not answer"],
            json!("mcpgate.WyJsb2NhbCIsMV0.AAAA"),
        ),
        case(
            "error response to nothing",
            r#"{"jsonrpc":"2.0","id":"x","error":{"code":-1,"message":"no"}}"#,
            400,
            INVALID_REQUEST,
            &["\"x\""],
            json!("x"),
        ),
    ];
    run_cases(&gw, &victim, &bystander, cases).await;
}

#[tokio::test]
async fn a_server_request_id_cannot_be_answered_from_another_session() {
    let gw = Gateway::start().await;
    let owner = gw.initialize_with(LATEST, json!({"elicitation": {}})).await;
    let intruder = gw.initialize_with(LATEST, json!({"elicitation": {}})).await;
    let call = json!({"jsonrpc": "2.0", "id": 60, "method": "tools/call",
        "params": {"name": "local__test_elicitation", "arguments": {"message": "name?"}}});
    let mut stream = SseReader::new(gw.post_stream(Some(&owner), &call).await);
    let events = stream
        .until(WAIT, |e| {
            e.data
                .as_deref()
                .is_some_and(|d| d.contains("elicitation/create"))
        })
        .await;
    let id = events.last().unwrap().json()["id"].clone();

    let hijack = json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept",
        "content": {"username": "mallory", "email": "mallory@example.com"}}});
    let reply = gw.post_json(Some(&intruder), &hijack).await;
    let error = reply.assert_error(400, INVALID_REQUEST, &["does not answer"]);
    assert_eq!(error["id"], id, "{reply:?}");

    // Tampering with the payload breaks the MAC too.
    let text = id.as_str().unwrap().to_owned();
    let (_, rest) = text.split_once('.').unwrap();
    let (_, mac) = rest.split_once('.').unwrap();
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"["local",1]"#);
    let tampered = json!(format!("mcpgate.{forged_payload}.{mac}"));
    if tampered != id {
        let reply = gw
            .post_json(
                Some(&owner),
                &json!({"jsonrpc": "2.0", "id": tampered, "result": {}}),
            )
            .await;
        reply.assert_error(400, INVALID_REQUEST, &["does not answer"]);
    }

    // The owner's genuine answer still goes through.
    let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept",
        "content": {"username": "alice", "email": "alice@example.com"}}});
    let reply = gw.post_json(Some(&owner), &answer).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    let events = stream
        .until(WAIT, |e| {
            e.data.as_deref().is_some_and(|d| d.contains("\"id\":60"))
        })
        .await;
    let response = events.last().unwrap().json();
    let text = response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("alice@example.com") && !text.contains("mallory"),
        "{response}"
    );
    gw.assert_echo(&intruder, "a hijack attempt").await;
}

#[tokio::test]
async fn a_batch_with_one_unknown_method_still_answers_its_other_requests() {
    let gw = Gateway::start().await;
    let (victim, bystander) = two_sessions(&gw, BATCH_VERSION).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/explode"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"arguments": {}}},
    ]);
    let reply = gw.post_json(Some(&victim), &batch).await;
    // JSON-RPC 2.0 §6: a valid batch is answered with an array holding one response per request;
    // a single error object leaves the client waiting forever for the answers to ids 1 and 3.
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let answers = reply.json();
    let answers = answers
        .as_array()
        .unwrap_or_else(|| panic!("a batch must be answered with an array: {reply:?}"));
    let by_id = |id: i64| {
        answers
            .iter()
            .find(|a| a["id"] == json!(id))
            .unwrap_or_else(|| panic!("no answer for id {id}: {reply:?}"))
    };
    assert_eq!(by_id(1)["result"], json!({}), "{reply:?}");
    assert_eq!(
        by_id(2)["error"]["code"],
        json!(METHOD_NOT_FOUND),
        "{reply:?}"
    );
    assert_eq!(
        by_id(3)["error"]["code"],
        json!(INVALID_PARAMS),
        "{reply:?}"
    );
    gw.assert_echo(&bystander, "a batch with a bad member")
        .await;
}

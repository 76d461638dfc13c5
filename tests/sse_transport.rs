//! The 2024-11-05 HTTP+SSE transport (`GET /sse`, `POST /message`, issue 11), against real
//! gateways, a real redis-server and the stdio fixture: a client's whole conversation over its
//! one stream; answers reaching the stream from whichever replica ran the request; a reconnect
//! with `Last-Event-ID` resuming the same session on another replica with nothing missed;
//! forged and foreign ids refused like unknown sessions; precise refusals of bad posts.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::redis::RedisServer;
use crate::support::{
    Gateway, LATEST, METHOD_NOT_FOUND, Reply, SESSION_NOT_FOUND, SseEvent, SseReader,
    api_key_entry, bearer,
};

/// Longest wait for one event.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// One HTTP+SSE client: its stream, the endpoint the stream announced, the last event id.
struct SseClient {
    reader: SseReader,
    /// The absolute URL to POST to.
    endpoint: String,
    /// What the endpoint event said, as announced.
    announced: String,
    last_id: Option<String>,
    key: Option<String>,
    next_id: i64,
}

fn sse_url(gateway: &Gateway) -> String {
    gateway.mcp_url.replace("/mcp", "/sse")
}

/// `GET /sse` (with `Last-Event-ID` when given), as `key`'s principal.
async fn open(gateway: &Gateway, key: Option<&str>, last_id: Option<&str>) -> reqwest::Response {
    let mut request = gateway
        .http
        .get(sse_url(gateway))
        .header("accept", "text/event-stream");
    if let Some(key) = key {
        request = request.header("authorization", bearer(key));
    }
    if let Some(last_id) = last_id {
        request = request.header("last-event-id", last_id);
    }
    request.send().await.expect("GET /sse failed")
}

impl SseClient {
    async fn connect(gateway: &Gateway, key: Option<&str>, last_id: Option<&str>) -> SseClient {
        let mut reader = SseReader::new(open(gateway, key, last_id).await);
        let first = reader
            .next_event(EVENT_WAIT)
            .await
            .expect("an endpoint event");
        assert_eq!(first.event.as_deref(), Some("endpoint"), "{first:?}");
        let announced = first.data.clone().expect("endpoint data");
        assert!(announced.starts_with("message?sessionId="), "{first:?}");
        assert!(
            first.retry.is_some(),
            "the endpoint event carries `retry`: {first:?}"
        );
        SseClient {
            endpoint: sse_url(gateway).replace("/sse", &format!("/{announced}")),
            announced,
            last_id: first.id,
            reader,
            key: key.map(str::to_owned),
            next_id: 1,
        }
    }

    fn session_id(&self) -> &str {
        self.announced.trim_start_matches("message?sessionId=")
    }

    /// POSTs one message to `gateway` (any replica) at this client's endpoint.
    async fn post_to(&self, gateway: &Gateway, body: &Value) -> Reply {
        let endpoint = self.endpoint.replace(
            &sse_url_base(&self.endpoint),
            &sse_url_base(&gateway.mcp_url),
        );
        let mut request = gateway
            .http
            .post(endpoint)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = &self.key {
            request = request.header("authorization", bearer(key));
        }
        Reply::read(request.send().await.expect("POST /message failed")).await
    }

    /// The next JSON-RPC message on the stream.
    async fn next_message(&mut self) -> Value {
        let event = self.next_event().await;
        assert_eq!(event.event.as_deref(), Some("message"), "{event:?}");
        event.json()
    }

    async fn next_event(&mut self) -> SseEvent {
        let event = self
            .reader
            .next_event(EVENT_WAIT)
            .await
            .expect("an event on the SSE stream");
        if event.id.is_some() {
            self.last_id = event.id.clone();
        }
        event
    }

    /// Sends a request through `gateway` and returns its response from the stream.
    async fn request_via(&mut self, gateway: &Gateway, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let posted = self.post_to(gateway, &body).await;
        assert_eq!(posted.status, StatusCode::ACCEPTED, "{method}: {posted:?}");
        loop {
            let message = self.next_message().await;
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    async fn initialize_via(&mut self, gateway: &Gateway) -> Value {
        self.initialize_as_version(gateway, LATEST).await
    }

    async fn initialize_as_version(&mut self, gateway: &Gateway, version: &str) -> Value {
        let params = json!({"protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "sse-test", "version": "1"}});
        let answer = self.request_via(gateway, "initialize", params).await;
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let posted = self.post_to(gateway, &initialized).await;
        assert_eq!(posted.status, StatusCode::ACCEPTED, "{posted:?}");
        answer
    }

    async fn echo_via(&mut self, gateway: &Gateway, text: &str) {
        let params = json!({"name": "local__echo", "arguments": {"text": text}});
        let answer = self.request_via(gateway, "tools/call", params).await;
        assert_eq!(
            answer["result"]["content"][0]["text"],
            json!(text),
            "{answer}"
        );
    }
}

/// `http://127.0.0.1:PORT` of a URL on that listener.
fn sse_url_base(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    format!("http://{}", rest.split('/').next().unwrap_or_default())
}

#[tokio::test]
async fn a_client_initializes_lists_and_calls_over_its_one_stream() {
    let gateway = Gateway::start().await;
    let mut client = SseClient::connect(&gateway, None, None).await;
    let answer = client.initialize_via(&gateway).await;
    assert_eq!(
        answer["result"]["protocolVersion"],
        json!(LATEST),
        "{answer}"
    );
    assert_eq!(answer["result"]["serverInfo"]["name"], json!("mcpgate"));
    let tools = client.request_via(&gateway, "tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"local__echo"), "{tools}");
    client.echo_via(&gateway, "over the legacy transport").await;
    let unknown = client
        .request_via(&gateway, "no/such/method", json!({}))
        .await;
    assert_eq!(
        unknown["error"]["code"],
        json!(METHOD_NOT_FOUND),
        "{unknown}"
    );
    let again = client
        .request_via(
            &gateway,
            "initialize",
            json!({"protocolVersion": LATEST,
            "capabilities": {}, "clientInfo": {"name": "again", "version": "1"}}),
        )
        .await;
    assert_eq!(again["error"]["code"], json!(-32600), "{again}");
    assert_eq!(gateway.metric("mcpgate_sessions_created_total").await, 1.0);
}

/// A client of the transport's own revision (2024-11-05) gets it: an older client would give
/// up on a newer one.
#[tokio::test]
async fn a_2024_11_05_client_gets_its_own_revision() {
    let gateway = Gateway::start().await;
    let mut client = SseClient::connect(&gateway, None, None).await;
    let answer = client.initialize_as_version(&gateway, "2024-11-05").await;
    assert_eq!(
        answer["result"]["protocolVersion"], "2024-11-05",
        "{answer}"
    );
    client
        .echo_via(&gateway, "on the 2024-11-05 revision")
        .await;
}

#[tokio::test]
async fn answers_reach_the_stream_from_any_replica_and_a_reconnect_resumes_elsewhere() {
    let redis = RedisServer::start().await;
    let a = redis.replica("1h").start().await;
    let b = redis.replica("1h").start().await;
    let mut client = SseClient::connect(&a, None, None).await;
    client.initialize_via(&b).await;
    client.echo_via(&b, "ran on b, read on a").await;
    let resume_from = client.last_id.clone().expect("an event id");
    drop(a);
    let missed = json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
        "params": {"name": "local__echo", "arguments": {"text": "while away"}}});
    let posted = client.post_to(&b, &missed).await;
    assert_eq!(posted.status, StatusCode::ACCEPTED, "{posted:?}");
    let c = redis.replica("1h").start().await;
    let mut resumed = SseClient::connect(&c, None, Some(&resume_from)).await;
    assert_eq!(
        resumed.announced, client.announced,
        "the same endpoint again"
    );
    let replayed = resumed.next_message().await;
    assert_eq!(
        replayed["id"],
        json!(99),
        "the missed answer, and nothing before it"
    );
    assert_eq!(
        replayed["result"]["content"][0]["text"],
        json!("while away")
    );
    resumed.next_id = 100;
    resumed.echo_via(&c, "after the reconnect").await;
    assert!(c.metric("mcpgate_sse_events_replayed_total").await >= 1.0);
}

#[tokio::test]
async fn forged_foreign_and_stale_event_ids_are_unknown_sessions() {
    let keys = format!(
        "[server.auth]\nmode = \"api_key\"\n{}{}",
        api_key_entry("alice-key", "alice", "red"),
        api_key_entry("bob-key", "bob", "red"),
    );
    let gateway = Gateway::builder().toml(&keys).start().await;
    let mut alice = SseClient::connect(&gateway, Some("alice-key"), None).await;
    alice.initialize_via(&gateway).await;
    let genuine = alice.last_id.clone().expect("an event id");
    let resumed = SseClient::connect(&gateway, Some("alice-key"), Some(&genuine)).await;
    assert_eq!(resumed.session_id(), alice.session_id());
    let (rest, mac) = genuine.rsplit_once('.').expect("<session>.<seq>.<mac>");
    let flipped = if mac.starts_with('A') { "B" } else { "A" };
    let forged = format!("{rest}.{flipped}{}", &mac[1..]);
    let mut refusals = Vec::new();
    for (key, last_id) in [
        ("bob-key", genuine.as_str()),
        ("alice-key", forged.as_str()),
        ("alice-key", "get-3"),
    ] {
        let reply = Reply::read(open(&gateway, Some(key), Some(last_id)).await).await;
        reply.assert_error(404, SESSION_NOT_FOUND, &[]);
        refusals.push(reply.text());
    }
    assert_eq!(
        refusals[0], refusals[1],
        "a foreign id looks like a forged one"
    );
    let fresh = SseClient::connect(&gateway, Some("alice-key"), None).await;
    assert_ne!(
        fresh.session_id(),
        alice.session_id(),
        "no Last-Event-ID: a new session"
    );
}

#[tokio::test]
async fn bad_posts_are_refused_precisely() {
    let gateway = Gateway::start().await;
    let client = SseClient::connect(&gateway, None, None).await;
    let base = sse_url_base(&gateway.mcp_url);
    let post = |url: String, body: &'static str| {
        let request = gateway
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        async move { Reply::read(request.send().await.expect("POST failed")).await }
    };
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    post(format!("{base}/message"), ping)
        .await
        .assert_error(400, -32600, &["sessionId"]);
    post(
        format!("{base}/message?sessionId=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ping,
    )
    .await
    .assert_error(404, SESSION_NOT_FOUND, &[]);
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}"#;
    post(
        format!("{base}/message?sessionId=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        initialize,
    )
    .await
    .assert_error(404, SESSION_NOT_FOUND, &[]);
    post(client.endpoint.clone(), "{not json")
        .await
        .assert_error(400, -32700, &[]);
    post(
        client.endpoint.clone(),
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
    )
    .await
    .assert_error(400, -32600, &["batch"]);
    let wrong = gateway
        .http
        .get(client.endpoint.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "POST");
    let wrong = gateway.http.post(sse_url(&gateway)).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "GET");
    let foreign = gateway
        .http
        .get(sse_url(&gateway))
        .header("accept", "text/event-stream")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_stream_whose_client_never_initializes_ends() {
    let gateway = Gateway::builder()
        .server("sse_initialize_timeout = \"1s\"")
        .start()
        .await;
    let mut client = SseClient::connect(&gateway, None, None).await;
    let events = client.reader.until_end(Duration::from_secs(5)).await;
    assert!(events.is_empty(), "{events:?}");
    let late = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    client
        .post_to(&gateway, &late)
        .await
        .assert_error(404, SESSION_NOT_FOUND, &[]);
}

#[tokio::test]
async fn progress_comes_before_its_response_on_the_stream() {
    let gateway = Gateway::builder().remote().start().await;
    let mut client = SseClient::connect(&gateway, None, None).await;
    client.initialize_via(&gateway).await;
    for round in 0..20 {
        for upstream in ["local", "remote"] {
            let body = json!({"jsonrpc": "2.0", "id": 1000 + round, "method": "tools/call",
                "params": {"name": format!("{upstream}__test_tool_with_progress"), "arguments": {},
                    "_meta": {"progressToken": format!("t{round}")}}});
            let posted = client.post_to(&gateway, &body).await;
            assert_eq!(posted.status, StatusCode::ACCEPTED, "{posted:?}");
            let mut progress = Vec::new();
            loop {
                let message = client.next_message().await;
                if message["id"] == json!(1000 + round) {
                    break;
                }
                progress.push(message["params"]["progress"].as_f64());
            }
            let expected = [Some(0.0), Some(50.0), Some(100.0)];
            assert_eq!(progress, expected, "{upstream}, round {round}");
        }
    }
}

/// A draining replica ends the stream with a comment: the client's EventSource reconnects with
/// the last event's id and the `retry` it has, and an event without data would reach the SDK
/// as a message it cannot parse.
#[tokio::test]
async fn a_draining_replica_ends_the_stream_without_an_empty_event() {
    let gateway = Gateway::start().await;
    let mut client = SseClient::connect(&gateway, None, None).await;
    client.initialize_via(&gateway).await;
    client.echo_via(&gateway, "before the drain").await;
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &gateway.pid().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let events = client.reader.until_end(Duration::from_secs(5)).await;
    assert!(events.is_empty(), "{events:?}");
}

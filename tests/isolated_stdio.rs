//! Isolated stdio upstreams (`isolation = "team"` / `"session"`): each team or session gets a
//! child of its own, initialized with its own client's clientInfo and capabilities, and what
//! that child sends (sampling, logging) reaches only its own sessions, also while several
//! sessions have calls in flight at once. Children are bounded (`max_children`), stop when
//! idle or when their session is deleted, and a replica reviving a session starts its own.

use std::time::{Duration, Instant};

use crate::support::redis::RedisServer;
use crate::support::{
    ACCEPT_BOTH, Gateway, GatewayBuilder, LATEST, Reply, Session, SseReader, api_key_entry, bearer,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Longest wait for one tool call, or for a child to stop.
const WAIT: Duration = Duration::from_secs(15);

/// A client of one gateway: its session and, with `mode = "api_key"`, its credentials.
struct Client<'a> {
    gw: &'a Gateway,
    authorization: Option<String>,
    session: Session,
}

/// Everything the gateway sent for one `tools/call`, before its response and the response.
#[derive(Debug)]
struct Exchange {
    before: Vec<Value>,
    response: Value,
}

impl Exchange {
    fn text(&self) -> &str {
        self.response["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text result: {self:#?}"))
    }

    fn logs(&self) -> usize {
        let is_log = |m: &&Value| m["method"] == json!("notifications/message");
        self.before.iter().filter(is_log).count()
    }
}

impl<'a> Client<'a> {
    /// `initialize` as `key` (none: anonymous) with `capabilities` and a clientInfo named `name`.
    async fn start(
        gw: &'a Gateway,
        key: Option<&str>,
        name: &str,
        capabilities: Value,
    ) -> Client<'a> {
        let authorization = key.map(bearer);
        let body = json!({"jsonrpc": "2.0", "id": gw.next_id(), "method": "initialize",
            "params": {"protocolVersion": LATEST, "capabilities": capabilities,
                "clientInfo": {"name": name, "version": "1.0"}}});
        let headers = auth(authorization.as_deref());
        let reply = gw.post(None, body.to_string(), &headers).await;
        assert_eq!(reply.status, StatusCode::OK, "initialize: {reply:?}");
        let session = Session {
            id: reply.header("mcp-session-id").expect("a session id"),
            version: LATEST.into(),
        };
        let client = Client {
            gw,
            authorization,
            session,
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(client.post(&note).await.status, StatusCode::ACCEPTED);
        client
    }

    /// The same session, used through another replica.
    fn on(&self, gw: &'a Gateway) -> Client<'a> {
        Client {
            gw,
            authorization: self.authorization.clone(),
            session: self.session.clone(),
        }
    }

    async fn post(&self, body: &Value) -> Reply {
        self.gw
            .post(Some(&self.session), body.to_string(), &self.auth())
            .await
    }

    async fn request(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": self.gw.next_id(), "method": method,
            "params": params});
        self.post(&body).await.json()
    }

    async fn set_level(&self, level: &str) {
        let answer = self
            .request("logging/setLevel", json!({"level": level}))
            .await;
        assert!(answer.get("result").is_some(), "setLevel: {answer}");
    }

    /// Calls `tool`, answering every sampling request with the prompt it carries, and reads
    /// the gateway's messages until the call's response.
    async fn call(&self, tool: &str, arguments: Value) -> Exchange {
        let id = self.gw.next_id();
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}});
        let response = self.post_stream(&body).await;
        if response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
        {
            let response = Reply::read(response).await.json();
            let before = Vec::new();
            return Exchange { before, response };
        }
        self.read_exchange(SseReader::new(response), id).await
    }

    async fn read_exchange(&self, mut stream: SseReader, id: i64) -> Exchange {
        let deadline = Instant::now() + WAIT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = stream
                .next_event(left)
                .await
                .unwrap_or_else(|| panic!("no response within {WAIT:?}; got {before:#?}"));
            if event.data.as_deref().is_none_or(str::is_empty) {
                continue;
            }
            let message = event.json();
            if message["id"] == json!(id) && message.get("method").is_none() {
                return Exchange {
                    before,
                    response: message,
                };
            }
            if message["method"] == json!("sampling/createMessage") {
                let prompt = &message["params"]["messages"][0]["content"]["text"];
                let answer = json!({"jsonrpc": "2.0", "id": message["id"], "result": {
                    "role": "assistant", "content": {"type": "text", "text": prompt},
                    "model": "test", "stopReason": "endTurn"}});
                assert_eq!(self.post(&answer).await.status, StatusCode::ACCEPTED);
            }
            before.push(message);
        }
    }

    async fn post_stream(&self, body: &Value) -> reqwest::Response {
        let defaults = [
            ("content-type", "application/json"),
            ("accept", ACCEPT_BOTH),
        ];
        let headers = self
            .gw
            .headers(Some(&self.session), &defaults, &self.auth());
        let send = self
            .gw
            .http
            .post(&self.gw.mcp_url)
            .headers(headers)
            .body(body.to_string())
            .send();
        tokio::time::timeout(WAIT, send)
            .await
            .expect("no response headers in time")
            .expect("POST /mcp failed")
    }

    /// What the session's child was initialized with, and its process id.
    async fn child(&self) -> Value {
        let exchange = self.call("local__client_info", json!({})).await;
        serde_json::from_str(exchange.text()).expect("client_info answers JSON")
    }

    fn auth(&self) -> Vec<(&'static str, &str)> {
        auth(self.authorization.as_deref())
    }

    async fn delete(&self) {
        let reply = self.gw.delete(Some(&self.session), &self.auth()).await;
        assert!(reply.status.is_success(), "DELETE: {reply:?}");
    }
}

/// The `Authorization` header, when there is one.
fn auth(authorization: Option<&str>) -> Vec<(&'static str, &str)> {
    authorization
        .map(|value| ("authorization", value))
        .into_iter()
        .collect()
}

/// A gateway with API keys `red-key` (team red), `blue-key` (team blue) and `red-key-2`
/// (team red), and the fixture `local` configured with `lines`.
async fn gateway(lines: &[&str]) -> Gateway {
    let keys = format!(
        "[server.auth]\nmode = \"api_key\"\n{}{}{}",
        api_key_entry("red-key", "rita", "red"),
        api_key_entry("blue-key", "bob", "blue"),
        api_key_entry("red-key-2", "rolf", "red"),
    );
    with_lines(Gateway::builder(), lines)
        .toml(&keys)
        .start()
        .await
}

fn with_lines(mut builder: GatewayBuilder, lines: &[&str]) -> GatewayBuilder {
    for line in lines {
        builder = builder.local(line);
    }
    builder
}

/// Whether the process `pid` still runs.
fn alive(pid: &Value) -> bool {
    let pid = pid.as_u64().expect("a pid");
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split(' ').nth(2).is_none_or(|state| state != "Z"))
}

async fn wait_until_gone(pid: &Value) {
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "child {pid} still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SAMPLING: fn() -> Value = || json!({"sampling": {}});

/// Two clients call the sampling and the logging tool at once; each gets its own answers and
/// only its own logs (`first` logs at info, `second` asked for warnings only).
async fn assert_kept_apart(first: &Client<'_>, second: &Client<'_>) {
    first.set_level("info").await;
    second.set_level("warning").await;
    let first_prompt = format!("for {}", first.session.id);
    let second_prompt = format!("for {}", second.session.id);
    let slow = json!({"ms": 300});
    let (a, b, _, _) = tokio::join!(
        first.call("local__test_sampling", json!({"prompt": first_prompt})),
        second.call("local__test_sampling", json!({"prompt": second_prompt})),
        first.call("local__slow", slow.clone()),
        second.call("local__slow", slow),
    );
    assert_eq!(a.text(), format!("LLM response: {first_prompt}"), "{a:#?}");
    assert_eq!(b.text(), format!("LLM response: {second_prompt}"), "{b:#?}");
    let (a, b) = tokio::join!(
        first.call("local__test_tool_with_logging", json!({})),
        second.call("local__test_tool_with_logging", json!({})),
    );
    assert_eq!(a.logs(), 3, "the info logs of the first client: {a:#?}");
    assert_eq!(
        b.logs(),
        0,
        "the second client asked for warnings only: {b:#?}"
    );
}

#[tokio::test]
async fn each_team_has_its_own_child_and_gets_only_its_own_traffic() {
    let gw = gateway(&["isolation = \"team\""]).await;
    let red = Client::start(&gw, Some("red-key"), "red-client", SAMPLING()).await;
    let blue = Client::start(
        &gw,
        Some("blue-key"),
        "blue-client",
        json!({"sampling": {}, "roots": {}}),
    )
    .await;
    let (red_child, blue_child) = (red.child().await, blue.child().await);
    assert_eq!(red_child["clientInfo"]["name"], "red-client", "{red_child}");
    assert_eq!(red_child["capabilities"], SAMPLING(), "{red_child}");
    assert_eq!(
        blue_child["clientInfo"]["name"], "blue-client",
        "{blue_child}"
    );
    assert!(
        blue_child["capabilities"]["roots"].is_object(),
        "{blue_child}"
    );
    assert_ne!(red_child["pid"], blue_child["pid"]);
    assert_kept_apart(&red, &blue).await;
    assert_kept_apart(&blue, &red).await;
    let red_again = Client::start(&gw, Some("red-key-2"), "red-client-2", SAMPLING()).await;
    let shared = red_again.child().await;
    assert_eq!(shared["pid"], red_child["pid"], "a team shares its child");
    assert_eq!(
        shared["clientInfo"]["name"], "red-client",
        "started by the first session"
    );
    assert_eq!(
        gw.metric("mcpgate_isolated_children{upstream=\"local\"}")
            .await,
        2.0
    );
    assert_eq!(
        gw.metric("mcpgate_isolated_children_started_total{upstream=\"local\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn each_session_has_its_own_child_within_a_team() {
    let gw = gateway(&["isolation = \"session\""]).await;
    let one = Client::start(&gw, Some("red-key"), "first", SAMPLING()).await;
    let two = Client::start(&gw, Some("red-key-2"), "second", SAMPLING()).await;
    let (first, second) = (one.child().await, two.child().await);
    assert_eq!(first["clientInfo"]["name"], "first", "{first}");
    assert_eq!(second["clientInfo"]["name"], "second", "{second}");
    assert_ne!(first["pid"], second["pid"]);
    assert_kept_apart(&one, &two).await;
    assert_kept_apart(&two, &one).await;
}

#[tokio::test]
async fn the_child_bound_is_a_clear_error_and_a_deleted_session_frees_its_child() {
    let gw = gateway(&["isolation = \"session\"", "max_children = 1"]).await;
    let first = Client::start(&gw, Some("red-key"), "first", json!({})).await;
    let second = Client::start(&gw, Some("blue-key"), "second", json!({})).await;
    let pid = first.child().await["pid"].clone();
    let refused = second.call("local__echo", json!({"text": "hi"})).await;
    assert_eq!(
        refused.response["error"]["code"],
        json!(-32000),
        "{refused:#?}"
    );
    let message = refused.response["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("upstream local already runs 1 processes on this replica (max_children)"),
        "{message}"
    );
    assert!(
        gw.metric("mcpgate_isolated_children_refused_total{upstream=\"local\"}")
            .await
            >= 1.0
    );
    first.delete().await;
    wait_until_gone(&pid).await;
    let stopped =
        "mcpgate_isolated_children_stopped_total{reason=\"session_ended\",upstream=\"local\"}";
    assert_eq!(gw.metric_reaching(stopped, 1.0, WAIT).await, 1.0);
    assert_eq!(second.child().await["clientInfo"]["name"], "second");
}

#[tokio::test]
async fn an_idle_child_stops_and_the_next_use_starts_one_from_the_record() {
    let gw = gateway(&["isolation = \"session\"", "idle_timeout = \"1s\""]).await;
    let client = Client::start(&gw, Some("red-key"), "sleepy", SAMPLING()).await;
    client.set_level("warning").await;
    let pid = client.child().await["pid"].clone();
    wait_until_gone(&pid).await;
    let stopped = "mcpgate_isolated_children_stopped_total{reason=\"idle\",upstream=\"local\"}";
    assert_eq!(gw.metric_reaching(stopped, 1.0, WAIT).await, 1.0);
    let child = client.child().await;
    assert_ne!(child["pid"], pid);
    assert_eq!(child["clientInfo"]["name"], "sleepy", "{child}");
    let logged = client
        .call("local__test_tool_with_logging", json!({}))
        .await;
    assert_eq!(
        logged.logs(),
        0,
        "the log level was not restored: {logged:#?}"
    );
}

#[tokio::test]
async fn a_revived_session_gets_a_child_on_the_new_replica_initialized_from_the_record() {
    let redis = RedisServer::start().await;
    let isolated = ["isolation = \"session\""];
    let a = with_lines(redis.replica("1h"), &isolated).start().await;
    let b = with_lines(redis.replica("1h"), &isolated).start().await;
    let on_a = Client::start(&a, None, "travelling", SAMPLING()).await;
    on_a.set_level("warning").await;
    let first = on_a.child().await;
    let on_b = on_a.on(&b);
    let second = on_b.child().await;
    assert_ne!(second["pid"], first["pid"]);
    assert_eq!(second["clientInfo"]["name"], "travelling", "{second}");
    assert_eq!(second["capabilities"], SAMPLING(), "{second}");
    let logged = on_b.call("local__test_tool_with_logging", json!({})).await;
    assert_eq!(
        logged.logs(),
        0,
        "the log level was not restored: {logged:#?}"
    );
    let sampled = on_b
        .call("local__test_sampling", json!({"prompt": "on b"}))
        .await;
    assert_eq!(sampled.text(), "LLM response: on b");
    assert_eq!(
        b.metric("mcpgate_isolated_children{upstream=\"local\"}")
            .await,
        1.0
    );
}

//! rmcp's own client against mcpgate in `Auto` lifecycle mode: it probes `server/discover`,
//! settles on 2026-07-28, calls tools, reads a resource, drives multi round-trip requests
//! through its `ClientHandler` and holds a `subscriptions/listen` stream.
//!
//! Two ways to run, one client flow ([`exercise`]):
//!
//! * by default, against a gateway started here (stdio upstream `local`, HTTP upstream
//!   `remote`);
//! * with `MCPGATE_E2E_URL` set, against that URL instead. tests/fleet/run-all.sh runs it
//!   through the fleet (Redis, 3 replicas, haproxy round-robin):
//!   `fleet.py run --replicas 3 --upstreams stdio,http -- env MCPGATE_E2E_URL={url} cargo nextest run rmcp_client::`.
//!   There list changes are triggered on `remote` only (its one fixture process is shared by
//!   every replica; each replica has a `local` child of its own), and, as `fleet.py` also sets
//!   `MCPGATE_FLEET_CONTROL`, the replicas' metrics and haproxy's log show which replica
//!   served the listen stream and which the triggers: never the same.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::Gateway;
use futures::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ClientJsonRpcMessage,
    ElicitRequestParams, ElicitResult, ElicitationAction, GetMeta, ProtocolVersion,
    ReadResourceRequestParams, ServerNotification, SubscriptionFilter,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RequestContext};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use rmcp::{ClientHandler, ErrorData, RoleClient};
use serde_json::{Value, json};
use sse_stream::Sse;

/// Longest wait for a change on the listen stream.
const CHANGE_WAIT: Duration = Duration::from_secs(10);
/// How long the listen stream must stay quiet after the last change.
const QUIET: Duration = Duration::from_millis(500);
const TOOL_TRIGGER: &str = "test_trigger_tool_change";
const PROMPT_TRIGGER: &str = "test_trigger_prompt_change";

/// A client that answers every elicitation with the name Alice.
#[derive(Clone)]
struct Alice;

impl ClientHandler for Alice {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation = Some(Default::default());
        ClientConfig::new(
            capabilities,
            rmcp::model::Implementation::new("rmcp-e2e", "0.0.0"),
        )
    }

    async fn create_elicitation(
        &self,
        _request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let mut result = ElicitResult::new(ElicitationAction::Accept);
        result.content = Some(json!({"name": "Alice", "color": "blue"}));
        Ok(result)
    }
}

fn text_of(result: &rmcp::model::CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// One HTTP request as the client sent it.
#[derive(Debug, Clone)]
struct Sent {
    /// The `?rq=` query tag (haproxy logs it with the replica that served the request).
    tag: String,
    /// The JSON-RPC method (`None` for a response, a GET or a DELETE).
    method: Option<String>,
    /// `params.name` (the tool of a `tools/call`).
    name: Option<String>,
    /// Whether it carried an `Mcp-Session-Id`.
    session: bool,
}

/// rmcp's HTTP client with every request recorded and tagged `?rq=<prefix>-<n>`.
#[derive(Clone)]
struct Recorder<C> {
    inner: C,
    prefix: String,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl<C> Recorder<C> {
    fn new(inner: C) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        Self {
            inner,
            prefix: format!("{:08x}", nanos ^ std::process::id()),
            sent: Arc::default(),
        }
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("recorder lock").clone()
    }

    /// Records a request and returns `uri` with its tag.
    fn tag(&self, uri: &str, message: Option<&ClientJsonRpcMessage>, session: bool) -> Arc<str> {
        let body = message.and_then(|m| serde_json::to_value(m).ok());
        let field = |key: &str| {
            let value = match key {
                "name" => body.as_ref()?.get("params")?.get("name"),
                _ => body.as_ref()?.get(key),
            };
            value?.as_str().map(str::to_owned)
        };
        let mut sent = self.sent.lock().expect("recorder lock");
        let tag = format!("{}-{}", self.prefix, sent.len() + 1);
        sent.push(Sent {
            tag: tag.clone(),
            method: field("method"),
            name: field("name"),
            session,
        });
        let separator = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{separator}rq={tag}").into()
    }
}

type PostResult<E> = Result<StreamableHttpPostResponse, StreamableHttpError<E>>;
type StreamResult<E> = Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<E>>;

impl<C: StreamableHttpClient> StreamableHttpClient for Recorder<C> {
    type Error = C::Error;

    fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = PostResult<Self::Error>> + Send + '_ {
        let uri = self.tag(&uri, Some(&message), session_id.is_some());
        self.inner
            .post_message(uri, message, session_id, auth_header, custom_headers)
    }

    fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<Output = PostResult<Self::Error>> + Send + '_ {
        let uri = self.tag(&uri, Some(&message), session_id.is_some());
        self.inner.post_message_with_max_sse_event_size(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        )
    }

    fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> impl Future<Output = PostResult<Self::Error>> + Send + '_ {
        let uri = self.tag(&uri, Some(&message), session_id.is_some());
        self.inner.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
    }

    fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<(), StreamableHttpError<Self::Error>>> + Send + '_ {
        let uri = self.tag(&uri, None, true);
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
    }

    fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = StreamResult<Self::Error>> + Send + '_ {
        let uri = self.tag(&uri, None, session_id.is_some());
        self.inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
    }

    fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<Output = StreamResult<Self::Error>> + Send + '_ {
        let uri = self.tag(&uri, None, session_id.is_some());
        self.inner.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        )
    }
}

/// A new client of rmcp's own reqwest (0.13, not this crate's 0.12): its type is taken from
/// the signature of `StreamableHttpClientTransport::from_uri`.
fn rmcp_http_client<C: StreamableHttpClient + Default>(
    _from_uri: fn(&'static str) -> StreamableHttpClientTransport<C>,
) -> C {
    C::default()
}

/// Where the client connects and what it may assume there.
struct Target<'a> {
    url: &'a str,
    /// Upstreams whose list-change triggers reach this client's listen stream.
    triggers: &'a [&'a str],
    /// Whether this client's listen stream is the only one (the triggers say how many they
    /// reached).
    alone: bool,
    /// The fleet's control endpoint (`MCPGATE_FLEET_CONTROL`, set by tests/fleet/fleet.py):
    /// where the replicas' metrics and haproxy's log are.
    fleet_control: Option<&'a str>,
}

/// The whole client flow, in either mode.
async fn exercise<C: StreamableHttpClient>(http: Recorder<C>, target: &Target<'_>) {
    let transport = StreamableHttpClientTransport::with_client(
        http.clone(),
        StreamableHttpClientTransportConfig::with_uri(target.url),
    );
    let lifecycle = ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    };
    let client = Alice
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("the client connects");
    let info = client.peer_info().expect("the server is known");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2026_07_28);

    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"local__echo") && names.contains(&"remote__echo"),
        "{names:?}"
    );
    for upstream in ["local", "remote"] {
        let call = CallToolRequestParams::new(format!("{upstream}__whoami"));
        let who = client.call_tool(call).await.expect("whoami");
        assert_eq!(text_of(&who), upstream);
        let call = CallToolRequestParams::new(format!(
            "{upstream}__test_input_required_result_elicitation"
        ));
        let hello = client
            .call_tool(call)
            .await
            .expect("the MRTR call completes");
        assert_eq!(text_of(&hello), "Hello, Alice!");
    }
    let read = client
        .read_resource(ReadResourceRequestParams::new("test://static-text"))
        .await
        .expect("resources/read");
    assert_eq!(read.contents.len(), 1, "{read:?}");

    // A listen stream for tool list changes; each upstream announces a prompt change (not
    // asked for) and then a tool change. rmcp's `Subscription::next` fails on a notification
    // outside the acknowledged filter or without the subscription id, so `Ok(Some(..))` of a
    // tool change also says that no prompt change came before it.
    let filter = SubscriptionFilter::builder().tools_list_changed().build();
    let before = listens_opened(target.fleet_control).await;
    let mut subscription = client.listen(filter.clone()).await.expect("listen");
    let after = listens_opened(target.fleet_control).await;
    assert_eq!(subscription.acknowledged(), &filter);
    for upstream in target.triggers {
        for trigger in [PROMPT_TRIGGER, TOOL_TRIGGER] {
            let call = CallToolRequestParams::new(format!("{upstream}__{trigger}"));
            let done = text_of(&client.call_tool(call).await.expect("trigger"));
            let expected = if target.alone {
                "announced to 1 listen stream(s)"
            } else {
                "announced to "
            };
            assert!(done.contains(expected), "{upstream}__{trigger}: {done}");
        }
        let change = tokio::time::timeout(CHANGE_WAIT, subscription.next())
            .await
            .unwrap_or_else(|_| panic!("no tool list change from {upstream}"))
            .expect("a change within the filter, with the subscription id")
            .unwrap_or_else(|| panic!("the stream ended: {:?}", subscription.end()));
        assert!(
            matches!(change, ServerNotification::ToolListChangedNotification(_)),
            "{change:?}"
        );
        assert_eq!(
            change.get_meta().subscription_id().as_ref(),
            Some(subscription.id())
        );
    }
    let quiet = tokio::time::timeout(QUIET, subscription.next()).await;
    assert!(quiet.is_err(), "an unexpected end or event: {quiet:?}");
    subscription.cancel().await.expect("the subscription ends");
    client.cancel().await.expect("the client closes");

    let sent = http.sent();
    for request in &sent {
        assert!(!request.session, "a request carried a session: {request:?}");
    }
    let methods: Vec<_> = sent.iter().filter_map(|s| s.method.as_deref()).collect();
    assert_eq!(methods.first(), Some(&"server/discover"), "{methods:?}");
    assert!(!methods.contains(&"initialize"), "{methods:?}");
    for upstream in ["local", "remote"] {
        let tool = format!("{upstream}__test_input_required_result_elicitation");
        let rounds = sent
            .iter()
            .filter(|s| s.name.as_ref() == Some(&tool))
            .count();
        assert_eq!(rounds, 2, "{tool}: the call and its retry with the answer");
    }
    if let Some(control) = target.fleet_control {
        assert_listen_and_triggers_apart(control, &sent, &before, &after).await;
    }
}

/// Under the fleet: replica -> how many `subscriptions/listen` requests it has answered
/// (counted when the stream opens), from the replicas' metrics; empty elsewhere.
async fn listens_opened(control: Option<&str>) -> HashMap<String, f64> {
    let Some(control) = control else {
        return HashMap::new();
    };
    let metrics: Value = reqwest::get(format!("{control}/metrics"))
        .await
        .expect("GET /metrics")
        .json()
        .await
        .expect("the replicas' metrics");
    let replicas = metrics.as_object().expect("replica -> metrics");
    replicas
        .iter()
        .map(|(replica, series)| {
            let listens = series
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(key, _)| {
                    key.starts_with("mcpgate_requests_total{")
                        && key.contains(r#"method="subscriptions/listen""#)
                })
                .filter_map(|(_, value)| value.as_f64())
                .sum();
            (replica.clone(), listens)
        })
        .collect()
}

/// tag -> (replica, status) from haproxy's log (in the fleet's log directory), waiting until
/// every tag is logged (haproxy logs a request when its response ends).
async fn served_by(control: &str, tags: &[&str]) -> HashMap<String, (String, u16)> {
    let fleet: Value = reqwest::get(format!("{control}/fleet"))
        .await
        .expect("GET /fleet")
        .json()
        .await
        .expect("the fleet's state");
    let log =
        std::path::Path::new(fleet["logdir"].as_str().expect("logdir")).join("haproxy.stdout.log");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let mut found = HashMap::new();
        for line in text.lines() {
            // httplog: ... mcp replicas/r1 0/0/0/3/3 200 ... "POST /mcp?rq=<tag> HTTP/1.1"
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = words.iter().position(|w| w.starts_with("replicas/")) else {
                continue;
            };
            let Some(tag) = words
                .iter()
                .find_map(|w| w.strip_prefix("/mcp?rq="))
                .map(|t| t.split('&').next().unwrap_or(t))
            else {
                continue;
            };
            let status = words.get(at + 2).and_then(|s| s.parse().ok()).unwrap_or(0);
            let replica = words[at].trim_start_matches("replicas/").to_owned();
            found.insert(tag.to_owned(), (replica, status));
        }
        if tags.iter().all(|t| found.contains_key(*t)) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "haproxy never logged every one of {tags:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Under the fleet: the listen stream and the triggers were served by different replicas.
/// The stream's replica is the one whose listen counter rose when it opened (haproxy logs a
/// request only when it ends); the triggers' replicas are in haproxy's log.
async fn assert_listen_and_triggers_apart(
    control: &str,
    sent: &[Sent],
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
) {
    let opened: Vec<(&String, f64)> = after
        .iter()
        .map(|(replica, n)| (replica, n - before.get(replica).copied().unwrap_or(0.0)))
        .filter(|(_, more)| *more != 0.0)
        .collect();
    assert!(
        matches!(opened.as_slice(), [(_, more)] if *more == 1.0),
        "listen streams opened per replica: {opened:?}"
    );
    let listen_on = opened[0].0;
    let mut triggers = Vec::new();
    for trigger in [PROMPT_TRIGGER, TOOL_TRIGGER] {
        let tool = format!("remote__{trigger}");
        let calls = sent.iter().filter(|s| {
            s.method.as_deref() == Some("tools/call") && s.name.as_deref() == Some(tool.as_str())
        });
        triggers.extend(calls.map(|s| s.tag.as_str()));
    }
    assert_eq!(triggers.len(), 2, "{sent:?}");
    let served = served_by(control, &triggers).await;
    let triggers_on: Vec<&String> = triggers.iter().map(|t| &served[*t].0).collect();
    println!("[fleet] listen stream on {listen_on}, triggers (prompt, tool) on {triggers_on:?}");
    for tag in &triggers {
        assert_eq!(served[*tag].1, 200, "{tag}: {:?}", served[*tag]);
    }
    assert!(
        !triggers_on.contains(&listen_on),
        "a trigger was served by the listen stream's replica {listen_on}"
    );
}

#[tokio::test]
async fn rmcp_auto_client_settles_on_2026_07_28_answers_mrtr_and_listens() {
    let http = Recorder::new(rmcp_http_client(StreamableHttpClientTransport::from_uri));
    if let Ok(url) = std::env::var("MCPGATE_E2E_URL") {
        // Someone else's gateway (or fleet): no admin port here, so the session metric below
        // is not checked; `remote` is the upstream whose triggers reach every replica.
        let control = std::env::var("MCPGATE_FLEET_CONTROL").ok();
        let target = Target {
            url: &url,
            triggers: &["remote"],
            alone: false,
            fleet_control: control.as_deref(),
        };
        exercise(http, &target).await;
        return;
    }
    let gw = Gateway::builder().remote().start().await;
    let target = Target {
        url: gw.mcp_url.as_str(),
        triggers: &["local", "remote"],
        alone: true,
        fleet_control: None,
    };
    exercise(http, &target).await;
    assert_eq!(gw.metric("mcpgate_sessions_created_total").await, 0.0);
}

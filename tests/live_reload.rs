//! Live reload of `[[upstreams]]`: a changed file (renamed over, or a ConfigMap's symlink swap)
//! or SIGHUP applies added, removed and changed upstreams without a restart and without losing
//! sessions; sessions hear `list_changed`; a removed stdio child stops once its call finished;
//! an invalid file is refused with its key and the running upstreams stay; a fleet converges.

use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::{Gateway, GatewayBuilder, SseReader, stdio_upstream};
use serde_json::json;

/// How often the gateways of these tests read their file.
const CHECK_EVERY: &str = "config_check_interval = \"100ms\"";
/// Longest wait for a reload to show.
const RELOAD_LIMIT: Duration = Duration::from_secs(10);

fn watched() -> GatewayBuilder {
    Gateway::builder().server(CHECK_EVERY)
}

/// Waits, at most [`RELOAD_LIMIT`], until `tools/list` on `session` satisfies `done`.
async fn tools_until(
    gateway: &Gateway,
    session: &crate::support::Session,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + RELOAD_LIMIT;
    loop {
        let names = gateway.tool_names(session).await;
        if done(&names) || tokio::time::Instant::now() >= deadline {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until one reload ended with `result`; then the success gauge must say `successful`.
async fn assert_reloaded(gateway: &Gateway, result: &str, successful: f64) {
    let counter = format!("mcpgate_config_reloads_total{{result=\"{result}\"}}");
    let count = gateway.metric_reaching(&counter, 1.0, RELOAD_LIMIT).await;
    assert_eq!(count, 1.0, "reloads with result {result}");
    let gauge = gateway
        .metric("mcpgate_config_last_reload_successful")
        .await;
    assert_eq!(gauge, successful, "after a reload with result {result}");
}

fn has(names: &[String], tool: &str) -> bool {
    names.iter().any(|n| n == tool)
}

#[tokio::test]
async fn an_added_upstream_serves_at_once_and_open_sessions_hear_of_it() {
    let gateway = watched().start().await;
    let session = gateway.initialize().await;
    let mut stream = SseReader::new(gateway.get(Some(&session), &[]).await);
    assert!(!has(&gateway.tool_names(&session).await, "extra__echo"));

    gateway.rewrite_config(&format!("{}\n{}", gateway.config, stdio_upstream("extra")));
    let names = tools_until(&gateway, &session, |n| has(n, "extra__echo")).await;
    assert!(has(&names, "extra__echo"), "after the reload: {names:?}");
    assert!(
        has(&names, "local__echo"),
        "the old upstream stays: {names:?}"
    );
    let is_tools_changed = |e: &crate::support::SseEvent| {
        e.data
            .as_deref()
            .is_some_and(|d| d.contains("notifications/tools/list_changed"))
    };
    let heard = stream.until(RELOAD_LIMIT, is_tools_changed).await;
    assert!(
        heard.iter().any(is_tools_changed),
        "the open GET stream heard of the new tools: {heard:?}"
    );
    let reply = gateway
        .call_tool(&session, "extra__echo", json!({"text": "new"}))
        .await;
    assert_eq!(reply["result"]["content"][0]["text"], "new", "{reply}");
    gateway.assert_echo(&session, "the reload").await;
    assert_reloaded(&gateway, "applied", 1.0).await;
}

#[tokio::test]
async fn a_removed_upstream_finishes_its_call_then_stops_and_its_tools_are_refused_clearly() {
    let gateway = watched().toml(&stdio_upstream("extra")).start().await;
    let session = gateway.initialize().await;
    let children = gateway.child_pids();
    assert_eq!(children.len(), 2, "local and extra run: {children:?}");
    let original = gateway.config.clone();
    let slow = gateway.call_tool(&session, "extra__slow", json!({"ms": 1500}));
    let remove = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let without_extra = original.split("[[upstreams]]\nname = \"extra\"").next();
        gateway.rewrite_config(without_extra.expect("the config"));
    };
    let (reply, ()) = tokio::join!(slow, remove);
    assert!(
        reply.get("result").is_some(),
        "the call in flight when its upstream was removed finished: {reply}"
    );
    let names = tools_until(&gateway, &session, |n| !has(n, "extra__echo")).await;
    assert!(!has(&names, "extra__echo"), "{names:?}");
    let refused = gateway
        .request(
            &session,
            "tools/call",
            json!({"name": "extra__echo", "arguments": {}}),
        )
        .await;
    refused.assert_error(200, crate::support::INVALID_PARAMS, &["extra__echo"]);
    // The child is gone a moment before its supervisor logs the retirement: wait for both.
    let retired =
        || gateway.child_pids().len() == 1 && gateway.log().contains("stdio upstream retired");
    let deadline = tokio::time::Instant::now() + RELOAD_LIMIT;
    while !retired() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gateway.child_pids().len(), 1, "extra's child stopped");
    assert!(
        gateway.log().contains("stdio upstream retired"),
        "{}",
        gateway.log()
    );
    gateway
        .assert_echo(&session, "removing another upstream")
        .await;
}

/// The process id of the stdio child behind `tool` (the fixture's `client_info`).
async fn child_pid(gateway: &Gateway, session: &crate::support::Session, tool: &str) -> u64 {
    let reply = gateway.call_tool(session, tool, json!({})).await;
    let text = reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let info: serde_json::Value = serde_json::from_str(text).expect("client_info answers JSON");
    info["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {info}"))
}

#[tokio::test]
async fn a_new_view_keeps_the_child_and_a_new_command_replaces_it() {
    let gateway = watched().start().await;
    let session = gateway.initialize().await;
    let first = child_pid(&gateway, &session, "local__client_info").await;
    let args = "args = [\"stdio\", \"--name\", \"local\"]\n";
    let view = format!("{args}prefix = \"here\"\ndeny = [\"slow\"]\n");
    gateway.rewrite_config(&gateway.config.replace(args, &view));
    let names = tools_until(&gateway, &session, |n| has(n, "here__echo")).await;
    assert!(has(&names, "here__echo"), "{names:?}");
    assert!(!has(&names, "here__slow"), "denied now: {names:?}");
    assert!(!names.iter().any(|n| n.starts_with("local__")), "{names:?}");
    let reply = gateway
        .call_tool(&session, "here__echo", json!({"text": "renamed"}))
        .await;
    assert_eq!(reply["result"]["content"][0]["text"], "renamed", "{reply}");
    let same = child_pid(&gateway, &session, "here__client_info").await;
    assert_eq!(
        same, first,
        "a new prefix and filter keep the running child"
    );

    let command = view.replace("\"local\"]", "\"renamed\"]");
    gateway.rewrite_config(&gateway.config.replace(args, &command));
    let deadline = tokio::time::Instant::now() + RELOAD_LIMIT;
    while alive(first) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(first), "the child of the old command stopped");
    let next = child_pid(&gateway, &session, "here__client_info").await;
    assert_ne!(next, first, "new arguments start a new child");
}

#[tokio::test]
async fn an_invalid_file_is_refused_with_its_key_and_the_running_upstreams_stay() {
    let gateway = watched().start().await;
    let session = gateway.initialize().await;
    let broken = format!(
        "{}\n[[upstreams]]\nname = \"broken\"\ntransport = \"stdio\"\n",
        gateway.config
    );
    gateway.rewrite_config(&broken);
    assert_reloaded(&gateway, "invalid", 0.0).await;
    let log = gateway.log();
    assert!(log.contains("configuration refused"), "{log}");
    assert!(
        log.contains("upstreams[1].command"),
        "the key is named: {log}"
    );
    gateway.assert_echo(&session, "a refused reload").await;

    gateway.rewrite_config(&gateway.config);
    assert_reloaded(&gateway, "unchanged", 1.0).await;
}

#[tokio::test]
async fn sighup_reloads_even_when_the_file_is_not_checked_soon() {
    let gateway = Gateway::builder()
        .server("config_check_interval = \"1h\"")
        .start()
        .await;
    let session = gateway.initialize().await;
    gateway.rewrite_config(&format!("{}\n{}", gateway.config, stdio_upstream("extra")));
    gateway.hang_up();
    let names = tools_until(&gateway, &session, |n| has(n, "extra__echo")).await;
    assert!(has(&names, "extra__echo"), "{names:?}");
}

/// Makes the gateway's file what a Kubernetes ConfigMap volume holds: a symlink through
/// `..data`, itself a symlink to a timestamped folder; `version` is the folder written now.
fn configmap_version(gateway: &Gateway, version: &str, text: &str) {
    let dir = gateway.config_path().parent().expect("a folder").to_owned();
    let folder = dir.join(version);
    std::fs::create_dir(&folder).expect("cannot make the version folder");
    std::fs::write(folder.join("mcpgate.toml"), text).expect("cannot write");
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &staged).expect("cannot link");
    std::fs::rename(&staged, dir.join("..data")).expect("cannot swap ..data");
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    let gateway = watched().start().await;
    let session = gateway.initialize().await;
    configmap_version(&gateway, "..2026_12_01_v1", &gateway.config);
    let link = gateway.config_path().with_extension("link");
    std::os::unix::fs::symlink("..data/mcpgate.toml", &link).expect("cannot link");
    std::fs::rename(&link, gateway.config_path()).expect("cannot replace the file");
    let with_extra = format!("{}\n{}", gateway.config, stdio_upstream("extra"));
    configmap_version(&gateway, "..2026_12_01_v2", &with_extra);
    let names = tools_until(&gateway, &session, |n| has(n, "extra__echo")).await;
    assert!(has(&names, "extra__echo"), "{names:?}");
}

/// Three replicas on one Redis, each watching its own copy of the file (as each pod mounts the
/// ConfigMap), callers spread over them: upstreams come and go and no call fails but those to
/// the removed upstream; every replica ends up serving the new file.
#[tokio::test]
async fn a_fleet_under_load_converges_and_only_calls_to_a_removed_upstream_fail() {
    let redis = RedisServer::start().await;
    let start = || redis.replica("1h").server(CHECK_EVERY).start();
    let fleet = [start().await, start().await, start().await];
    let base = fleet[0].config.clone();
    let sessions = futures::future::join_all((0..6).map(|i| fleet[i % 3].initialize())).await;
    let rewrite_all = |text: &str| fleet.iter().for_each(|g| g.rewrite_config(text));
    let calls = async {
        let mut failures = Vec::new();
        for round in 0..60 {
            for (i, session) in sessions.iter().enumerate() {
                let replica = &fleet[(i + round) % 3];
                let reply = replica
                    .call_tool(session, "local__echo", json!({"text": "x"}))
                    .await;
                if reply["result"]["content"][0]["text"] != "x" {
                    failures.push(reply);
                }
                let extra = json!({"name": "extra__echo", "arguments": {"text": "x"}});
                let reply = replica.request(session, "tools/call", extra).await.json();
                let answered = reply["result"]["content"][0]["text"] == "x";
                let message = reply["error"]["message"].as_str().unwrap_or_default();
                if !answered && message != "Unknown tool: extra__echo" {
                    failures.push(reply);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failures
    };
    let churn = async {
        for _ in 0..3 {
            rewrite_all(&format!("{base}\n{}", stdio_upstream("extra")));
            tokio::time::sleep(Duration::from_millis(400)).await;
            rewrite_all(&base);
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        rewrite_all(&format!("{base}\n{}", stdio_upstream("extra")));
    };
    let (failures, ()) = tokio::join!(calls, churn);
    assert!(
        failures.is_empty(),
        "calls failed other than those to a removed upstream: {failures:?}"
    );
    for (i, replica) in fleet.iter().enumerate() {
        let names = tools_until(replica, &sessions[i], |n| has(n, "extra__echo")).await;
        assert!(has(&names, "extra__echo"), "replica {i}: {names:?}");
        let reply = replica
            .call_tool(&sessions[i], "extra__echo", json!({"text": "here"}))
            .await;
        assert_eq!(
            reply["result"]["content"][0]["text"], "here",
            "replica {i}: {reply}"
        );
    }
}

/// Whether the process `pid` still runs (and is not a zombie).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split(' ').nth(2).is_none_or(|state| state != "Z"))
}

#[tokio::test]
async fn a_removed_isolated_upstream_stops_its_children() {
    let isolated = format!("{}isolation = \"session\"\n", stdio_upstream("extra"));
    let gateway = watched().toml(&isolated).start().await;
    let session = gateway.initialize().await;
    let reply = gateway
        .call_tool(&session, "extra__client_info", json!({}))
        .await;
    let text = reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let info: serde_json::Value = serde_json::from_str(text).expect("client_info answers JSON");
    let pid = info["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid: {info}"));
    assert!(alive(pid), "the session's child runs");
    let original = gateway.config.clone();
    let without_extra = original.split("[[upstreams]]\nname = \"extra\"").next();
    gateway.rewrite_config(without_extra.expect("the config"));
    let stopped = "mcpgate_isolated_children_stopped_total{reason=\"retired\",upstream=\"extra\"}";
    assert_eq!(
        gateway.metric_reaching(stopped, 1.0, RELOAD_LIMIT).await,
        1.0
    );
    let deadline = tokio::time::Instant::now() + RELOAD_LIMIT;
    while alive(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "the session's child stopped");
    gateway
        .assert_echo(&session, "its isolated upstream was removed")
        .await;
}

//! `mcpgate bench` as a user runs it: the built binary against real gateways (the stdio
//! fixture as upstream `local`, a real Redis for revival), about a second of load per run. The
//! report's fields, each mode, ids handed from idle mode to calls mode, errors counted by kind,
//! and no header value ever printed.

use std::process::Stdio;
use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::*;
use serde_json::Value;
use tokio::process::Command;

/// Longest a bench run may take here (the runs ask for about a second).
const RUN_LIMIT: Duration = Duration::from_secs(60);
const TOOL: &str = "local__echo";
const API_KEY: &str = "bench-test-key-that-must-never-be-printed";

/// What a run printed, and whether it succeeded.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

async fn bench(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_LIMIT, output)
        .await
        .expect("mcpgate bench did not end in time")
        .expect("cannot run mcpgate bench");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A short measured run with `--json`, the given options after the defaults here.
async fn bench_json(url: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--url",
        url,
        "--json",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
    ];
    args.extend_from_slice(&["--connections", "4", "--tool", TOOL]);
    args.extend_from_slice(extra);
    let run = bench(&args).await;
    assert!(run.success, "bench failed: {}\n{}", run.stdout, run.stderr);
    run.json()
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {report}"))
}

fn assert_latency(latency: &Value, context: &str) {
    for field in ["p50", "p90", "p99", "p999", "max", "mean"] {
        let value = latency[field].as_f64();
        assert!(value.is_some(), "{context}.{field} missing: {latency}");
    }
    assert!(latency["p50"].as_f64() > Some(0.0), "{context}: {latency}");
}

/// Measured requests, all answered 200 and without errors.
fn assert_clean(report: &Value) {
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(count(report, "requests") > 0, "{report}");
    assert_eq!(count(report, "ok"), count(report, "requests"), "{report}");
}

#[tokio::test]
async fn calls_mode_reports_every_field() {
    let gw = Gateway::start().await;
    let report = bench_json(&gw.mcp_url, &["--method", "tools/call,tools/list"]).await;
    for field in [
        "mode",
        "url",
        "connections",
        "sessions",
        "duration_s",
        "requests",
        "ok",
        "errors",
        "statuses",
        "throughput_per_s",
        "latency_ms",
    ] {
        assert!(report.get(field).is_some(), "{field} missing: {report}");
    }
    assert_eq!(report["mode"], "calls");
    assert_eq!(report["url"], gw.mcp_url.as_str());
    assert_eq!(count(&report, "connections"), 4);
    assert_eq!(count(&report, "sessions"), 4);
    assert_clean(&report);
    let statuses = report["statuses"].as_object().expect("statuses");
    assert_eq!(statuses.keys().collect::<Vec<_>>(), ["200"], "{report}");
    assert!(report["throughput_per_s"].as_f64() > Some(0.0), "{report}");
    assert!(report["duration_s"].as_f64() > Some(0.5), "{report}");
    assert_latency(&report["latency_ms"], "latency_ms");
}

#[tokio::test]
async fn the_table_shows_the_same_figures() {
    let gw = Gateway::start().await;
    let args = [
        "--url",
        &gw.mcp_url,
        "--duration",
        "500ms",
        "--warmup",
        "0s",
    ];
    let run = bench(&[&args[..], &["--tool", TOOL, "--requests", "50"]].concat()).await;
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    for needle in [
        "calls mode",
        "requests",
        "latency",
        "p99.9",
        "statuses",
        "200: ",
    ] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
}

#[tokio::test]
async fn sessions_mode_measures_each_phase() {
    let gw = Gateway::start().await;
    let report = bench_json(&gw.mcp_url, &["--mode", "sessions"]).await;
    assert_clean(&report);
    assert!(report["sessions_per_s"].as_f64() > Some(0.0), "{report}");
    for phase in ["initialize", "initialized", "call", "delete"] {
        assert_latency(&report["phases"][phase], phase);
    }
}

#[tokio::test]
async fn revival_mode_measures_first_and_steady_requests_on_another_replica() {
    let redis = RedisServer::start().await;
    let creator = redis.replica("1h").start().await;
    let reviver = redis.replica("1h").start().await;
    let args = ["--mode", "revival", "--revive-from", &creator.mcp_url];
    let report = bench_json(&reviver.mcp_url, &args).await;
    assert_clean(&report);
    assert_latency(&report["first"], "first");
    assert_latency(&report["steady"], "steady");
    let revived = reviver.metric("mcpgate_sessions_revived_total").await;
    assert!(revived > 0.0, "no revival on the second replica: {report}");
}

#[tokio::test]
async fn idle_sessions_are_then_used_by_calls_mode() {
    let gw = Gateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.txt");
    let ids = ids.to_str().unwrap();
    let idle = bench_json(
        &gw.mcp_url,
        &["--mode", "idle", "--sessions", "20", "--ids-out", ids],
    )
    .await;
    assert_clean(&idle);
    assert_eq!(count(&idle, "sessions"), 20, "{idle}");
    assert!(idle["sessions_per_s"].as_f64() > Some(0.0), "{idle}");
    let written = std::fs::read_to_string(ids).unwrap();
    assert_eq!(written.lines().count(), 20, "{written}");

    let calls = bench_json(&gw.mcp_url, &["--ids-in", ids]).await;
    assert_clean(&calls);
    assert_eq!(count(&calls, "sessions"), 20, "{calls}");
}

#[tokio::test]
async fn refusals_are_counted_by_kind_and_header_values_never_printed() {
    let gw = Gateway::builder()
        .toml(&format!(
            // No rate limit: the default (20/s per principal) would answer most calls 429.
            "[limits]\nrequests_per_second = 0\n[server.auth]\nmode = \"api_key\"\n{}",
            api_key_entry(API_KEY, "alice", "red")
        ))
        .start()
        .await;
    let unauthenticated = bench_json(&gw.mcp_url, &[]).await;
    assert!(
        unauthenticated["errors"]["http_401"].as_u64() > Some(0),
        "{unauthenticated}"
    );
    assert_eq!(count(&unauthenticated, "ok"), 0, "{unauthenticated}");

    let wrong = format!("Authorization: Bearer {API_KEY}-wrong");
    let args = [
        "--url",
        &gw.mcp_url,
        "--duration",
        "500ms",
        "--header",
        &wrong,
    ];
    let run = bench(&[&args[..], &["--tool", TOOL]].concat()).await;
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("http_401"), "{}", run.stdout);
    assert!(!run.stdout.contains(API_KEY) && !run.stderr.contains(API_KEY));

    let right = format!("Authorization: Bearer {API_KEY}");
    let authenticated = bench_json(&gw.mcp_url, &["--header", &right]).await;
    assert_clean(&authenticated);
}

#[tokio::test]
async fn bad_options_and_dead_endpoints_fail_without_printing_secrets() {
    let malformed = [
        "--url",
        "http://127.0.0.1:9/mcp",
        "--header",
        "Authorization Bearer s3cret",
    ];
    let run = bench(&malformed).await;
    assert!(!run.success);
    assert!(run.stderr.contains("--header"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret") && !run.stdout.contains("s3cret"));

    // Nothing listens on the discard port: every connection is refused.
    let refused = [
        "--url",
        "http://127.0.0.1:9/mcp",
        "--json",
        "--duration",
        "300ms",
    ];
    let run = bench(&[&refused[..], &["--warmup", "0s"]].concat()).await;
    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.json()["errors"]["connect"].as_u64() > Some(0),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("nothing could be measured"),
        "{}",
        run.stderr
    );
}

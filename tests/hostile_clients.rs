//! Hostile clients are contained (issue 7): what one client sends cannot fill the replica's
//! memory, start unbounded work, hold its connections and file descriptors, or flood its log.
//! Each test replays a probe against a real gateway, bounded in count and time, on loopback
//! only, and prints the figures it measured.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::hostile::*;
use crate::support::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The default `server.max_client_metadata_bytes`.
const METADATA_LIMIT: usize = 16 * 1024;
/// Longest answer a well-behaved client may wait for while others misbehave.
const GOOD_CLIENT_BOUND: Duration = Duration::from_secs(3);

/// How many sockets a process holds open.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("cannot list /proc fds")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// A batch of `local__echo` calls with distinct ids, as many as fit in `bytes`; and their count.
fn flood_batch(bytes: usize) -> (String, usize) {
    let mut batch = String::from("[");
    let mut entries = 0;
    loop {
        let entry = echo_call(entries).to_string();
        if batch.len() + entry.len() + 2 > bytes {
            break;
        }
        if entries > 0 {
            batch.push(',');
        }
        batch.push_str(&entry);
        entries += 1;
    }
    batch.push(']');
    (batch, entries)
}

/// Calls `local__echo` `count` times; returns the slowest answer's time.
async fn slowest_echo(gw: &Gateway, session: &Session, count: usize, context: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..count {
        let started = Instant::now();
        tokio::time::timeout(GOOD_CLIENT_BOUND, gw.assert_echo(session, context))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "a well-behaved client got no answer within {GOOD_CLIENT_BOUND:?} ({context})"
                )
            });
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[tokio::test]
async fn oversized_client_metadata_is_refused_with_the_limit() {
    let gw = Gateway::start().await;
    let reply = gw.post(None, initialize_body(7, 20 * 1024), &[]).await;
    let body = reply.assert_error(
        400,
        INVALID_PARAMS,
        &["16384 bytes", "server.max_client_metadata_bytes"],
    );
    assert_eq!(body["id"], json!(7), "{reply:?}");
    let capabilities = json!({"experimental": {"blob": "y".repeat(METADATA_LIMIT)}});
    let request = json!({"jsonrpc": "2.0", "id": 8, "method": "initialize", "params": {
        "protocolVersion": LATEST, "capabilities": capabilities,
        "clientInfo": {"name": "hostile", "version": "0"}}});
    let reply = gw.post_json(None, &request).await;
    reply.assert_error(400, INVALID_PARAMS, &["16384 bytes"]);
    let reply = gw.post(None, initialize_body(9, 15 * 1024), &[]).await;
    assert_eq!(reply.status, 200, "metadata under the limit: {reply:?}");
}

/// Sends `count` initialize requests with `padding` bytes of client metadata, four at a time;
/// returns their statuses.
async fn initialize_many(gw: &Gateway, count: usize, padding: usize) -> Vec<u16> {
    futures::stream::iter(0..count)
        .map(|_| async move {
            let body = initialize_body(gw.next_id(), padding);
            gw.post(None, body, &[]).await.status.as_u16()
        })
        .buffer_unordered(4)
        .collect()
        .await
}

#[tokio::test]
async fn initialize_floods_cannot_grow_memory() {
    const HUGE: usize = 100;
    const ALLOWED: usize = 300;
    /// What 300 sessions of 15 KiB each (4.4 MiB of metadata) may add, with every buffer and
    /// allocator arena they touch.
    const BOUND_MIB: u64 = 32;
    let gw = Gateway::start().await;
    let warm = gw.initialize().await;
    gw.assert_echo(&warm, "warm-up").await;
    let before = rss_kib(gw.pid());
    let huge = initialize_many(&gw, HUGE, 1024 * 1024).await;
    let refused = huge.iter().filter(|status| **status == 400).count();
    let huge_rss = rss_kib(gw.pid());
    let allowed = initialize_many(&gw, ALLOWED, 15 * 1024).await;
    assert!(
        allowed.iter().all(|status| *status == 200),
        "an allowed initialize failed: {allowed:?}"
    );
    let after = rss_kib(gw.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    println!(
        "RSS: {} MiB at start, {} MiB after {HUGE} initialize of 1 MiB ({refused} refused), \
         {} MiB after {ALLOWED} more of 15 KiB: grew {grown_mib} MiB (bound {BOUND_MIB} MiB)",
        before / 1024,
        huge_rss / 1024,
        after / 1024
    );
    assert_eq!(refused, HUGE, "every 1 MiB initialize must be refused");
    assert!(
        grown_mib <= BOUND_MIB,
        "RSS grew {grown_mib} MiB (bound {BOUND_MIB} MiB)"
    );
    gw.assert_echo(&warm, "the flood").await;
}

#[tokio::test]
async fn oversized_batches_are_refused_before_any_entry_runs() {
    const UPSTREAM_CALLS: &str =
        "mcpgate_upstream_requests_total{outcome=\"ok\",upstream=\"local\"}";
    let gw = Gateway::start().await;
    let session = gw.initialize_with(BATCH_VERSION, json!({})).await;
    let calls_before = gw.metric(UPSTREAM_CALLS).await;
    let batch: Vec<Value> = (0..=BATCH_LIMIT).map(echo_call).collect();
    let reply = gw.post_json(Some(&session), &Value::Array(batch)).await;
    let body = reply.assert_error(400, INVALID_REQUEST, &["at most 64 messages"]);
    assert_eq!(body["id"], Value::Null, "{reply:?}");
    assert_eq!(
        gw.metric(UPSTREAM_CALLS).await,
        calls_before,
        "an entry of the refused batch reached the upstream"
    );
    let batch: Vec<Value> = (0..BATCH_LIMIT).map(echo_call).collect();
    let reply = gw.post_json(Some(&session), &Value::Array(batch)).await;
    assert_eq!(reply.status, 200, "a batch at the limit: {reply:?}");
    let answers = reply.json();
    assert_eq!(
        answers.as_array().map(Vec::len),
        Some(BATCH_LIMIT),
        "{reply:?}"
    );
}

#[tokio::test]
async fn batch_floods_leave_other_clients_unaffected() {
    const HOSTILE_CLIENTS: usize = 3;
    const MAX_BATCHES_EACH: usize = 30;
    let gw = Gateway::start().await;
    let victim = gw.initialize().await;
    let hostile = gw.initialize_with(BATCH_VERSION, json!({})).await;
    let (flood, entries) = flood_batch(4 * 1024 * 1024);
    let victim_done = AtomicBool::new(false);
    let refused = AtomicUsize::new(0);
    let hostile_client = || async {
        for _ in 0..MAX_BATCHES_EACH {
            if victim_done.load(Ordering::Relaxed) {
                break;
            }
            let reply = gw.post(Some(&hostile), flood.clone(), &[]).await;
            reply.assert_error(400, INVALID_REQUEST, &["at most 64 messages"]);
            refused.fetch_add(1, Ordering::Relaxed);
        }
    };
    let victim_calls = async {
        let slowest = slowest_echo(&gw, &victim, 20, "a batch flood").await;
        victim_done.store(true, Ordering::Relaxed);
        slowest
    };
    let started = Instant::now();
    let hostile_posts = futures::future::join_all((0..HOSTILE_CLIENTS).map(|_| hostile_client()));
    let (_, slowest) = tokio::join!(hostile_posts, victim_calls);
    println!(
        "{} batches of {entries} tools/call entries ({} bytes) refused in {:?}; slowest of 20 \
         echo calls meanwhile: {slowest:?} (bound {GOOD_CLIENT_BOUND:?})",
        refused.load(Ordering::Relaxed),
        flood.len(),
        started.elapsed()
    );
}

/// Opens `count` connections sending `head`, each then trickling `drip` in its own task.
async fn slow_clients(
    authority: &str,
    head: &[u8],
    count: usize,
    drip: u8,
    give_up: Duration,
) -> Vec<tokio::task::JoinHandle<Ending>> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let opened = Instant::now();
        let stream = open_slow(authority, head).await;
        tasks.push(tokio::spawn(trickle(stream, opened, drip, give_up)));
    }
    tasks
}

/// Sets this process's soft limit on open files (children started now inherit it).
fn set_soft_fd_limit(soft: u64) {
    let (_, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
    rlimit::Resource::NOFILE
        .set(soft.min(hard), hard)
        .expect("setrlimit");
}

/// The gateway's soft limit on open files, from `/proc/<pid>/limits`.
fn soft_fd_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("no /proc limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .expect("no open-file limit in /proc limits")
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_the_replica_stays_reachable() {
    const SLOW_BODIES: usize = 300;
    const SLOW_HEADS: usize = 20;
    // The gateway starts with a soft limit of 256 open files, below the slow connections: it
    // must raise its own limit, then cut the slow ones off at the read timeouts.
    let (own_soft, _) = rlimit::Resource::NOFILE.get().expect("getrlimit");
    set_soft_fd_limit(256);
    let gw = Gateway::start().await;
    set_soft_fd_limit(own_soft);
    let gateway_limit = soft_fd_limit(gw.pid());
    println!("gateway's soft open-file limit: {gateway_limit} (started with 256)");
    assert!(
        gateway_limit > 256,
        "the gateway kept the soft limit it was started with"
    );
    let give_up = BODY_READ_TIMEOUT + SLACK;
    let body_head = slow_body_head(&gw.authority, 4096, None);
    let slow = slow_clients(&gw.authority, &body_head, SLOW_BODIES, b' ', give_up).await;
    let head_start = format!("POST /mcp HTTP/1.1\r\nHost: {}\r\nX-Slow: ", gw.authority);
    let heads = slow_clients(
        &gw.authority,
        head_start.as_bytes(),
        SLOW_HEADS,
        b'z',
        give_up,
    )
    .await;
    // Give the gateway time to accept them all before the well-behaved client comes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let session = tokio::time::timeout(GOOD_CLIENT_BOUND, gw.initialize())
        .await
        .expect("a well-behaved client could not initialize while slow clients were connected");
    let slowest = slowest_echo(&gw, &session, 10, "slow clients").await;
    println!(
        "with {SLOW_BODIES} slow bodies and {SLOW_HEADS} slow heads open: initialize + 10 calls \
         in {:?}, slowest call {slowest:?} (bound {GOOD_CLIENT_BOUND:?})",
        started.elapsed()
    );
    report_endings("slow bodies", slow, BODY_READ_TIMEOUT, 408).await;
    report_endings("slow heads", heads, HEADER_READ_TIMEOUT, 408).await;
}

/// Waits for every slow connection; each must have been answered with `status` and closed
/// within `timeout` (plus slack).
async fn report_endings(
    what: &str,
    tasks: Vec<tokio::task::JoinHandle<Ending>>,
    timeout: Duration,
    status: u16,
) {
    let endings: Vec<Ending> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("a slow connection task failed"))
        .collect();
    assert_endings(what, &endings, timeout, status);
}

#[tokio::test]
async fn websocket_upgrade_posts_are_answered() {
    let gw = Gateway::start().await;
    let headers = [
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let started = Instant::now();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let reply = tokio::time::timeout(SLACK, gw.raw("POST", &headers, ping.as_bytes()))
        .await
        .expect("a POST with Upgrade: websocket got no answer");
    println!(
        "Upgrade: websocket POST answered in {:?}",
        started.elapsed()
    );
    reply.assert_error(400, INVALID_REQUEST, &["WebSocket"]);
}

#[tokio::test]
async fn duplicated_session_ids_are_refused() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let other = Session::unknown();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let post = [
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
        ("Mcp-Session-Id", session.id.as_str()),
        ("Mcp-Session-Id", other.id.as_str()),
    ];
    let reply = gw.raw("POST", &post, ping.as_bytes()).await;
    reply.assert_error(400, INVALID_REQUEST, &["mcp-session-id", "at most once"]);
    let get = [
        ("Accept", "text/event-stream"),
        ("Mcp-Session-Id", other.id.as_str()),
        ("Mcp-Session-Id", session.id.as_str()),
    ];
    let reply = gw.raw("GET", &get, b"").await;
    reply.assert_error(400, INVALID_REQUEST, &["at most once"]);
    let delete = [
        ("Mcp-Session-Id", session.id.as_str()),
        ("Mcp-Session-Id", other.id.as_str()),
    ];
    let reply = gw.raw("DELETE", &delete, b"").await;
    reply.assert_error(400, INVALID_REQUEST, &["at most once"]);
    gw.assert_echo(&session, "duplicated session ids").await;
}

/// Requests a fuzzer sends: each is refused with a 4xx, none may log at WARN or ERROR.
fn malformed_requests(authority: &str, session: &str) -> Vec<Vec<u8>> {
    let post = |extra: &str, body: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Accept: {ACCEPT_BOTH}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    vec![
        b"GARBAGE \x01 HTTP/1.1\r\n\r\n".to_vec(),
        format!("POST /mcp HTTP/1.1\r\nHost: {authority}\r\nBad Header: x\r\n\r\n").into_bytes(),
        format!("POST /mcp HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").into_bytes(),
        format!("POST /mcp HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nAccept: {ACCEPT_BOTH}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n").into_bytes(),
        post("", "{not json"),
        post("", "[]"),
        post(&format!("Mcp-Session-Id: {session}\r\nMcp-Session-Id: x\r\n"), ping),
        post("Mcp-Session-Id: not-a-session\r\n", ping),
        post("MCP-Protocol-Version: 1999-01-01\r\n", ping),
        post("Origin: http://evil.example\r\n", ping),
        post("Upgrade: websocket\r\n", ping),
        format!("GET /mcp HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {session}\r\nLast-Event-ID: nope\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("PUT /mcp HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").into_bytes(),
        b"DELETE /mcp HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_vec(),
    ]
}

/// Sends raw bytes, reads whatever comes back until the gateway closes (bounded).
async fn send_raw(authority: &str, request: &[u8]) -> Vec<u8> {
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await.expect("cannot connect");
        let _ = stream.write_all(request).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_default()
}

/// Lines of `log` after `offset` that are at WARN or ERROR.
fn loud_lines(log: &str, offset: usize) -> Vec<String> {
    log.get(offset..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn malformed_requests_do_not_log_at_warn_or_error() {
    const ROUNDS: usize = 10;
    let key = toml_str(&"k".repeat(32));
    let gw = Gateway::builder()
        .server(&format!("hmac_key = {key}"))
        .start()
        .await;
    let session = gw.initialize().await;
    let offset = gw.log().len();
    let requests = malformed_requests(&gw.authority, &session.id);
    let mut sent = 0;
    for _ in 0..ROUNDS {
        for request in &requests {
            let answer = send_raw(&gw.authority, request).await;
            let status = String::from_utf8_lossy(&answer).chars().nth(9);
            assert_eq!(
                status,
                Some('4'),
                "not a 4xx: {:?} for {:?}",
                String::from_utf8_lossy(&answer),
                String::from_utf8_lossy(request)
            );
            sent += 1;
        }
    }
    let head = format!("POST /mcp HTTP/1.1\r\nHost: {}\r\nX-Slow: ", gw.authority);
    let opened = Instant::now();
    let stream = open_slow(&gw.authority, head.as_bytes()).await;
    let slow = trickle(stream, opened, b'z', HEADER_READ_TIMEOUT + SLACK).await;
    gw.assert_echo(&session, "the fuzzing").await;
    let loud = loud_lines(&gw.log(), offset);
    println!(
        "{sent} malformed requests and one slow head (answered {:?} after {:?}): {} WARN/ERROR lines",
        slow.status,
        slow.after,
        loud.len()
    );
    assert!(loud.is_empty(), "client mistakes logged loudly: {loud:#?}");
}

#[tokio::test]
async fn refusals_are_logged_at_debug_with_header_values_escaped() {
    let gw = Gateway::builder().env("RUST_LOG", "debug").start().await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let reply = gw
        .post(None, ping, &[("mcp-protocol-version", "2025\tforged=1")])
        .await;
    reply.assert_error(400, INVALID_REQUEST, &["MCP-Protocol-Version"]);
    let log = gw.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    println!("refusal log lines: {refused:#?}");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("2025\\\\tforged")),
        "no DEBUG line with the escaped header value"
    );
    assert!(
        !log.contains("2025\tforged"),
        "a header value reached the log unescaped"
    );
}

#[tokio::test]
async fn connection_bounds_follow_the_configuration() {
    const PER_WORKER: usize = 16;
    let gw = Gateway::builder()
        .server("body_read_timeout = \"1s\"")
        .server("header_read_timeout = \"1s\"")
        .server("keep_alive = \"1s\"")
        .server(&format!("max_connections = {PER_WORKER}"))
        .start()
        .await;
    let sockets_before = open_sockets(gw.pid());
    let idle: Vec<TcpStream> = futures::future::join_all(
        (0..5 * PER_WORKER).map(|_| TcpStream::connect(gw.authority.as_str())),
    )
    .await
    .into_iter()
    .map(|c| c.expect("cannot connect"))
    .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = open_sockets(gw.pid()).saturating_sub(sockets_before);
    println!(
        "{} connections opened; the gateway holds {held} (2 workers × {PER_WORKER}, plus the \
         few actix accepts while its workers report they are full)",
        idle.len()
    );
    assert!(held <= 2 * PER_WORKER + 4, "held {held} connections");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let opened = Instant::now();
    let stream = open_slow(&gw.authority, &slow_body_head(&gw.authority, 100, None)).await;
    let body = trickle(stream, opened, b' ', Duration::from_secs(1) + SLACK).await;
    println!(
        "slow body answered {:?} after {:?}",
        body.status, body.after
    );
    assert_eq!(body.status, Some(408), "{}", body.answer);
    assert!(
        body.answer.contains(r#""code":-32600"#)
            && body.answer.contains("did not arrive within 1000 ms"),
        "not a JSON-RPC error: {}",
        body.answer
    );
    assert!(body.after < Duration::from_secs(1) + SLACK);
    let idle_after = kept_alive_for(&gw).await;
    println!("an idle kept-alive connection was closed after {idle_after:?}");
    assert!(idle_after < Duration::from_secs(1) + SLACK);
}

/// Sends one request on a kept-alive connection, then measures how long the gateway keeps the
/// idle connection open.
async fn kept_alive_for(gw: &Gateway) -> Duration {
    let mut stream = TcpStream::connect(&gw.authority)
        .await
        .expect("cannot connect");
    let request = format!("DELETE /mcp HTTP/1.1\r\nHost: {}\r\n\r\n", gw.authority);
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buffer = [0u8; 4096];
    let n = stream.read(&mut buffer).await.expect("read");
    assert!(
        buffer[..n].starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&buffer[..n])
    );
    let answered = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    });
    closed.await.expect("the idle connection stayed open");
    answered.elapsed()
}

/// A session's subscriptions live in its record for its whole life, so their number and the
/// length of each URI are bounded; at the bound the subscription is refused and the session
/// keeps working.
#[tokio::test]
async fn subscriptions_a_record_keeps_are_bounded() {
    let gw = Gateway::start().await;
    let session = gw.initialize().await;
    let subscribe = |uri: String| {
        let (gw, session) = (&gw, &session);
        async move {
            gw.request(session, "resources/subscribe", json!({"uri": uri}))
                .await
                .json()
        }
    };
    let long = format!("test://template/{}/data", "x".repeat(2048));
    let refused = subscribe(long).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    for i in 0..256 {
        let answer = subscribe(format!("test://template/{i}/data")).await;
        assert!(answer.get("result").is_some(), "subscription {i}: {answer}");
    }
    let again = subscribe("test://template/7/data".into()).await;
    assert!(again.get("result").is_some(), "a repeated one: {again}");
    let refused = subscribe("test://template/256/data".into()).await;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("at most 256 subscriptions"), "{refused}");
    gw.assert_echo(&session, "refused subscriptions").await;
}

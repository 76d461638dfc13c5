//! Every hostile client at once, on one replica (issue 7, "How it is shown"): slow headers and
//! slow bodies, a flood of `initialize`, oversized bodies, deeply nested JSON, a million-entry
//! batch and an upstream flooding notifications all run together while a well-behaved client
//! calls a tool. Each attack must get its documented answer (README, "Limits worth knowing"),
//! the well-behaved client's latency must stay within a bound of its latency without attacks,
//! none of its calls may fail, and the replica's resident memory must stay bounded. Everything
//! is bounded in count and time, on loopback only.
//!
//! With `server.auth.mode = "api_key"` the per-principal limits are on at their defaults (20
//! requests per second in bursts of 40, 100 sessions). The well-behaved client and each attack
//! are different principals: the initialize flood runs as fast as it can and must meet its
//! principal's limits, while the other attacks keep under their principal's rate so that each
//! of their requests reaches the check it is meant for.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::hostile::*;
use crate::support::{
    ACCEPT_BOTH, Gateway, INVALID_REQUEST, PARSE_ERROR, Reply, Session, api_key_entry, bearer,
    chunked,
};
use bytes::Bytes;
use serde_json::json;
use tokio::time::MissedTickBehavior;

/// One API key per client; the principal is the key without `-key`.
const VICTIM: &str = "victim-key";
const SLOWLORIS: &str = "slowloris-key";
const INITIALIZER: &str = "initializer-key";
const OVERSIZER: &str = "oversizer-key";
const NESTER: &str = "nester-key";
const BATCHER: &str = "batcher-key";
const NOTIFIER: &str = "notifier-key";
const KEYS: [&str; 7] = [
    VICTIM,
    SLOWLORIS,
    INITIALIZER,
    OVERSIZER,
    NESTER,
    BATCHER,
    NOTIFIER,
];

/// Defaults the attacks meet (README, "Limits worth knowing" and `[limits]`).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
const SESSIONS_PER_PRINCIPAL: usize = 100;
const UNSOLICITED_PER_SECOND: f64 = 100.0;
/// JSON-RPC code of every limit refusal.
const LIMITED: i64 = -32000;

/// `tools/call local__echo` the well-behaved client makes in each phase.
const CALLS: usize = 200;
/// Spacing of those calls: 20 a second, its principal's sustained rate.
const VICTIM_PACE: Duration = Duration::from_millis(50);
/// Spacing of the requests of the paced attacks: about 16 a second, under their rate.
const ATTACK_PACE: Duration = Duration::from_millis(60);
/// Concurrent connections sending `initialize` as fast as they are answered.
const INITIALIZERS: usize = 4;
/// Client metadata each flooded `initialize` carries (under the 16 KiB limit).
const INITIALIZE_PADDING: usize = 8 * 1024;
/// Connections trickling their headers, and their bodies, one byte a second; each is opened
/// again when the gateway closes it. The bodies stay under their principal's burst (40).
const SLOW_HEADS: usize = 200;
const SLOW_BODIES: usize = 30;
/// Depth of the nested JSON (`{"a":` repeated).
const NESTING: usize = 100_000;
/// Entries of the batch (`{}` repeated: 3 MB, under the body limit).
const BATCH_ENTRIES: usize = 1_000_000;
/// Notifications of each kind the upstream floods, with 1 KiB of padding each.
const NOTIFICATIONS: u64 = 20_000;
/// Longest wait for the upstream's flood to be read once the attacks stopped.
const FLOOD_DRAIN: Duration = Duration::from_secs(20);
/// How much the replica's resident memory may grow during the attack. Measured: 30 to 36 MiB
/// (100 sessions with 8 KiB of metadata, bodies of up to 4 MiB being read, allocator arenas of
/// busy threads). What a missing bound costs is more: a million-entry batch parsed whole is over
/// 32 MB, the initializer's sessions beyond the cap tens of MiB, the notifications queued rather
/// than merged or dropped 20 MiB of each kind.
const RSS_GROWTH_BOUND_MIB: u64 = 64;
/// Fewest requests each paced attack must have sent for the run to count.
const MIN_PROBES: usize = 50;

/// The latency bound under attack, from the p99 without attack. The attackers run in this
/// process, on the same two cores as the replica, so the attacks together slow every call:
/// measured with a debug build, p99 about 12 ms without attack and about 280 ms under it, and
/// twice that while another build shares the machine. Ten times the quiet p99, and at least
/// 1 s, holds there, yet fails when the replica is really degraded: a call that waits for a
/// slow client's read timeout (5 or 10 s), for a worker busy parsing a whole million-entry
/// batch, or behind a stdio pipe stalled by the flood takes seconds.
fn latency_bound(quiet_p99: Duration) -> Duration {
    (quiet_p99 * 10).max(Duration::from_secs(1))
}

/// p50, p99 and the maximum of a series of latencies.
struct Latencies {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Latencies {
    /// Summarises a non-empty series.
    fn of(mut series: Vec<Duration>) -> Latencies {
        series.sort();
        let at = |quantile: f64| series[((series.len() as f64 * quantile).ceil() as usize) - 1];
        Latencies {
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:?}, p99 {:?}, max {:?}",
            self.p50, self.p99, self.max
        )
    }
}

/// The replica under attack and the signal that ends the attacks.
#[derive(Clone)]
struct Attack {
    gw: Arc<Gateway>,
    stop: Arc<AtomicBool>,
}

impl Attack {
    /// Whether the attacks are still to go on.
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Runs `probe(n)` for n = 0, 1, … at most once per `pace` until stopped; returns how many
    /// ran, at least [`MIN_PROBES`].
    async fn paced<F: Future<Output = ()>>(
        &self,
        pace: Duration,
        mut probe: impl FnMut(usize) -> F,
    ) -> usize {
        let mut ticks = tokio::time::interval(pace);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut count = 0;
        while self.running() {
            ticks.tick().await;
            probe(count).await;
            count += 1;
        }
        assert!(count >= MIN_PROBES, "an attack sent only {count} requests");
        count
    }
}

/// The `[server.auth]` section admitting every key of [`KEYS`].
fn auth_toml() -> String {
    let entries: String = KEYS
        .iter()
        .map(|key| api_key_entry(key, key.trim_end_matches("-key"), "everyone"))
        .collect();
    format!("[server.auth]\nmode = \"api_key\"\n{entries}")
}

/// POST of `body` as the holder of `key`, on `session` when given.
async fn post_as(gw: &Gateway, key: &str, session: Option<&Session>, body: Bytes) -> Reply {
    gw.post(session, body, &[("authorization", &bearer(key))])
        .await
}

/// One `local__echo` call of the well-behaved client; returns its latency, or why it failed.
async fn victim_call(gw: &Gateway, session: &Session, id: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let reply = post_as(gw, VICTIM, Some(session), echo_call(id).to_string().into()).await;
    let took = started.elapsed();
    let ok = reply.status == 200
        && reply.content_type().starts_with("application/json")
        && reply.json()["result"]["content"][0]["text"] == json!(ECHO_TEXT);
    ok.then_some(took).ok_or_else(|| format!("{reply:?}"))
}

/// [`CALLS`] paced calls of the well-behaved client; panics if one failed.
async fn victim_latencies(gw: &Gateway, session: &Session, phase: &str) -> Latencies {
    let mut ticks = tokio::time::interval(VICTIM_PACE);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut series = Vec::with_capacity(CALLS);
    let mut failures = Vec::new();
    for id in 0..CALLS {
        ticks.tick().await;
        match victim_call(gw, session, id).await {
            Ok(took) => series.push(took),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CALLS} calls of the well-behaved client failed {phase}: {failures:#?}",
        failures.len()
    );
    Latencies::of(series)
}

/// Slow connections, each opened again once the gateway closed it, until the attack stops;
/// every one must be answered 408 and closed at its read timeout.
async fn slowloris(attack: Attack) -> String {
    let authority = attack.gw.authority.clone();
    let heads = format!("POST /mcp HTTP/1.1\r\nHost: {authority}\r\nX-Slow: ");
    let bodies = slow_body_head(&authority, 4096, Some(&bearer(SLOWLORIS)));
    let slow = |head: Vec<u8>, drip: u8, timeout: Duration| {
        let (attack, authority) = (attack.clone(), authority.clone());
        tokio::spawn(async move {
            let mut endings = Vec::new();
            while attack.running() {
                let opened = Instant::now();
                let stream = open_slow(&authority, &head).await;
                endings.push(trickle(stream, opened, drip, timeout + SLACK).await);
            }
            endings
        })
    };
    let heads: Vec<_> = (0..SLOW_HEADS)
        .map(|_| slow(heads.clone().into_bytes(), b'z', HEADER_READ_TIMEOUT))
        .collect();
    let bodies: Vec<_> = (0..SLOW_BODIES)
        .map(|_| slow(bodies.clone(), b' ', BODY_READ_TIMEOUT))
        .collect();
    let heads = joined(heads).await;
    let bodies = joined(bodies).await;
    assert_endings("slow heads", &heads, HEADER_READ_TIMEOUT, 408);
    assert_endings("slow bodies", &bodies, BODY_READ_TIMEOUT, 408);
    format!(
        "{} slow heads and {} slow bodies answered 408",
        heads.len(),
        bodies.len()
    )
}

/// Every ending of every slow connection task.
async fn joined(tasks: Vec<tokio::task::JoinHandle<Vec<Ending>>>) -> Vec<Ending> {
    let mut endings = Vec::new();
    for task in tasks {
        endings.extend(task.await.expect("a slow connection task failed"));
    }
    endings
}

/// What the initialize flood got.
#[derive(Default)]
struct Initialized {
    admitted: usize,
    over_rate: usize,
    over_sessions: usize,
}

/// `initialize` as fast as answered on [`INITIALIZERS`] connections: beyond the principal's
/// rate and session cap each is refused with 429.
async fn initialize_flood(attack: Attack) -> String {
    let flood = (0..INITIALIZERS).map(|_| initializer(attack.clone()));
    let mut total = Initialized::default();
    for each in futures::future::join_all(flood).await {
        total.admitted += each.admitted;
        total.over_rate += each.over_rate;
        total.over_sessions += each.over_sessions;
    }
    assert!(
        total.admitted <= SESSIONS_PER_PRINCIPAL,
        "{} sessions admitted for one principal",
        total.admitted
    );
    assert!(
        total.over_rate > 0 && total.over_sessions > 0,
        "the flood met neither its rate ({}) nor its session cap ({})",
        total.over_rate,
        total.over_sessions
    );
    format!(
        "initialize: {} admitted, {} refused 429 over the rate, {} over the session cap",
        total.admitted, total.over_rate, total.over_sessions
    )
}

/// One connection of the initialize flood.
async fn initializer(attack: Attack) -> Initialized {
    let mut got = Initialized::default();
    let over_sessions = format!("at most {SESSIONS_PER_PRINCIPAL} sessions");
    while attack.running() {
        let body = initialize_body(attack.gw.next_id(), INITIALIZE_PADDING);
        let reply = post_as(&attack.gw, INITIALIZER, None, body.into()).await;
        if reply.status == 200 {
            got.admitted += 1;
            continue;
        }
        let refusal = reply.assert_error(429, LIMITED, &[]);
        let message = refusal["error"]["message"].as_str().unwrap_or_default();
        if message.contains(&over_sessions) {
            got.over_sessions += 1;
        } else {
            assert!(message.contains("20 requests per second"), "{reply:?}");
            got.over_rate += 1;
        }
    }
    got
}

/// Bodies over `max_body_bytes`, alternately declared by `Content-Length` (refused before they
/// are read) and chunked (refused once 4 MiB were read): each is 413.
async fn oversized_bodies(attack: Attack) -> String {
    let pieces = vec![vec![b' '; 64 * 1024]; MAX_BODY_BYTES / (64 * 1024) + 1];
    let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
    let body = chunked(&pieces);
    let authorization = bearer(OVERSIZER);
    let declared = (MAX_BODY_BYTES * 2).to_string();
    let probe = |n: usize| {
        let (authorization, declared, body) = (&authorization, &declared, &body);
        let gw = &attack.gw;
        async move {
            let mut headers = vec![
                ("Content-Type", "application/json"),
                ("Accept", ACCEPT_BOTH),
                ("Authorization", authorization.as_str()),
            ];
            let reply = if n.is_multiple_of(2) {
                headers.push(("Content-Length", declared.as_str()));
                gw.raw("POST", &headers, b"").await
            } else {
                headers.push(("Transfer-Encoding", "chunked"));
                gw.raw("POST", &headers, body).await
            };
            reply.assert_error(413, INVALID_REQUEST, &[&MAX_BODY_BYTES.to_string()]);
        }
    };
    let sent = attack.paced(ATTACK_PACE, probe).await;
    format!("{sent} oversized bodies answered 413")
}

/// The same rejected body, paced, as the holder of `key`: each must be answered `status` with
/// a JSON-RPC error `code` mentioning `needle`; returns how many were sent.
async fn refused_bodies(
    attack: &Attack,
    key: &str,
    body: Bytes,
    (status, code, needle): (u16, i64, &str),
) -> usize {
    let probe = |_| {
        let (gw, body) = (&attack.gw, body.clone());
        async move {
            let reply = post_as(gw, key, None, body).await;
            reply.assert_error(status, code, &[needle]);
        }
    };
    attack.paced(ATTACK_PACE, probe).await
}

/// JSON objects nested [`NESTING`] deep: each is a 400 parse error.
async fn nested_json(attack: Attack) -> String {
    let body = format!("{}1{}", "{\"a\":".repeat(NESTING), "}".repeat(NESTING));
    let answer = (400, PARSE_ERROR, "recursion");
    let sent = refused_bodies(&attack, NESTER, body.into(), answer).await;
    format!("{sent} bodies nested {NESTING} deep answered 400 (parse error)")
}

/// Batches of [`BATCH_ENTRIES`] entries: each is 400 with the batch bound.
async fn huge_batches(attack: Attack) -> String {
    let mut body = "{},".repeat(BATCH_ENTRIES);
    body.pop();
    let body = format!("[{body}]");
    let bound = format!("at most {BATCH_LIMIT} messages");
    let answer = (400, INVALID_REQUEST, bound.as_str());
    let sent = refused_bodies(&attack, BATCHER, body.into(), answer).await;
    format!("{sent} batches of {BATCH_ENTRIES} entries answered 400 (-32600)")
}

/// Has the stdio upstream flood [`NOTIFICATIONS`] list changes and as many resource updates
/// outside any request; they must be merged and dropped over the upstream's rate.
async fn notification_flood(attack: Attack) -> String {
    let gw = &attack.gw;
    let session = gw.initialize_as(NOTIFIER).await;
    let started = Instant::now();
    let methods = [
        "notifications/tools/list_changed",
        "notifications/resources/updated",
    ];
    for method in methods {
        let arguments = json!({"count": NOTIFICATIONS, "bytes": 1024, "method": method});
        let call = json!({"jsonrpc": "2.0", "id": gw.next_id(), "method": "tools/call",
            "params": {"name": "local__flood_notifications", "arguments": arguments}});
        let reply = post_as(gw, NOTIFIER, Some(&session), call.to_string().into()).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    while attack.running() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = tokio::time::timeout(FLOOD_DRAIN, async {
        while gw.log().matches("flood done").count() < methods.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    drained.await.expect("the upstream's flood was not read");
    assert_flood_bounded(gw, started.elapsed()).await
}

/// Checks the flood's list changes were merged and its updates over the rate dropped.
async fn assert_flood_bounded(gw: &Gateway, took: Duration) -> String {
    let merged = gw
        .metric("mcpgate_upstream_messages_coalesced_total{upstream=\"local\"}")
        .await;
    let dropped = gw
        .metric(
            "mcpgate_upstream_messages_dropped_total{reason=\"rate_limited\",upstream=\"local\"}",
        )
        .await;
    let allowed = UNSOLICITED_PER_SECOND * (took.as_secs_f64() + 1.0);
    assert!(
        merged >= (NOTIFICATIONS / 2) as f64,
        "only {merged} list changes merged"
    );
    assert!(
        dropped >= NOTIFICATIONS as f64 - allowed,
        "only {dropped} resource updates dropped"
    );
    format!(
        "{NOTIFICATIONS} list changes and {NOTIFICATIONS} resource updates read in {took:?}: \
         {merged} merged, {dropped} dropped over the rate"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_well_behaved_client_is_served_while_every_attack_runs_at_once() {
    let gw = Arc::new(Gateway::builder().toml(&auth_toml()).start().await);
    let victim = gw.initialize_as(VICTIM).await;
    let quiet = victim_latencies(&gw, &victim, "without attacks").await;
    println!("without attacks, {CALLS} calls: {quiet}");

    let rss_before = rss_kib(gw.pid());
    let peak = RssPeak::start(gw.pid());
    let attack = Attack {
        gw: gw.clone(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let attacks = [
        tokio::spawn(slowloris(attack.clone())),
        tokio::spawn(initialize_flood(attack.clone())),
        tokio::spawn(oversized_bodies(attack.clone())),
        tokio::spawn(nested_json(attack.clone())),
        tokio::spawn(huge_batches(attack.clone())),
        tokio::spawn(notification_flood(attack.clone())),
    ];
    // Let every attack get going before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attacked = victim_latencies(&gw, &victim, "under attack").await;
    // Its principal is not the initializer's: it still gets a session.
    gw.initialize_as(VICTIM).await;
    attack.stop.store(true, Ordering::Relaxed);
    println!("under attack, {CALLS} calls: {attacked}");
    for outcome in futures::future::join_all(attacks).await {
        println!("{}", outcome.expect("an attack failed"));
    }
    let (peak, after) = (peak.kib(), rss_kib(gw.pid()));
    println!(
        "replica RSS: {} MiB before the attacks, {} MiB at most during, {} MiB after",
        rss_before >> 10,
        peak >> 10,
        after >> 10
    );
    let bound = latency_bound(quiet.p99);
    assert!(
        attacked.p99 <= bound,
        "p99 under attack {:?} over the bound {bound:?}",
        attacked.p99
    );
    let growth = peak.saturating_sub(rss_before) >> 10;
    assert!(
        growth <= RSS_GROWTH_BOUND_MIB,
        "RSS grew {growth} MiB (bound {RSS_GROWTH_BOUND_MIB} MiB)"
    );
}

//! What requests cost the store and the upstreams, read from a real redis-server's own command
//! statistics (`INFO commandstats`), the gateway's per-operation metrics and the fixture's count
//! of open sessions:
//! - a `tools/call` on a live session is one Redis round trip (the load pipeline) and nothing
//!   else: no connection check before it, and no event-log write for a plain JSON answer;
//! - `initialize` is one round trip and opens no upstream session; a session opens its session
//!   on an HTTP upstream at its first request there, once however many requests race to it;
//! - the round trip that saves a new upstream session also takes its stream's lease, and one
//!   round trip renews the leases of all the streams a replica holds;
//! - calls to an HTTP upstream that answers on SSE streams keep their kept-alive connections;
//! - a DELETE frees no stream lease of the session it ends, and revives nothing on a replica
//!   that never served the session.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::{Fixture, Gateway};
use serde_json::json;

const CALLS: u64 = 20;

/// Calls per command since the last `CONFIG RESETSTAT`, without the test's own commands.
async fn command_counts(redis: &RedisServer) -> BTreeMap<String, u64> {
    let mut client = redis.client().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut client)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter_map(|line| {
            let (name, stats) = line.split_once(':')?;
            let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "config|resetstat"))
        .collect()
}

async fn reset_stats(redis: &RedisServer) {
    let mut client = redis.client().await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut client)
        .await
        .expect("CONFIG RESETSTAT");
}

/// Store operations (round trips) the gateway counted for `op`.
async fn round_trips(gateway: &Gateway, op: &str) -> f64 {
    gateway
        .metric(&format!(
            "mcpgate_store_duration_seconds_count{{op=\"{op}\"}}"
        ))
        .await
}

/// How long the lease of a session's stream of the upstream `remote` still runs, in ms.
async fn remote_lease_ms(redis: &RedisServer, session: &str) -> i64 {
    let mut client = redis.client().await;
    redis::cmd("PTTL")
        .arg(format!("mcpgate:{{{session}}}:h:remote"))
        .query_async(&mut client)
        .await
        .expect("PTTL")
}

#[tokio::test]
async fn a_tool_call_on_a_live_session_is_one_redis_round_trip() {
    let redis = RedisServer::start().await;
    let gateway = redis.replica("1h").start().await;
    let session = gateway.initialize().await;
    gateway.assert_echo(&session, "the first call").await;
    let loads_before = round_trips(&gateway, "session_load").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    reset_stats(&redis).await;

    for n in 0..CALLS {
        let text = format!("call {n}");
        let response = gateway
            .call_tool(&session, "local__echo", json!({"text": text}))
            .await;
        assert_eq!(response["result"]["content"][0]["text"], json!(text));
    }

    let counts = command_counts(&redis).await;
    let load_pipeline = BTreeMap::from([
        ("hgetall".to_owned(), 2 * CALLS),
        ("pexpire".to_owned(), CALLS),
    ]);
    assert_eq!(
        counts, load_pipeline,
        "{CALLS} calls sent other commands than their load pipelines"
    );
    let loads = round_trips(&gateway, "session_load").await - loads_before;
    assert_eq!(loads, CALLS as f64, "one load per call");
}

#[tokio::test]
async fn initialize_is_one_round_trip_and_opens_no_upstream_session() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gateway = redis.replica("1h").remote_at(&fixture).start().await;
    let first = gateway.initialize().await;
    gateway
        .call_tool(&first, "remote__echo", json!({"text": "x"}))
        .await;
    let upstream_sessions = fixture.open_sessions().await;
    let (creates, loads) = (
        round_trips(&gateway, "session_create").await,
        round_trips(&gateway, "session_load").await,
    );
    reset_stats(&redis).await;

    let session = gateway.initialize().await;

    assert_eq!(round_trips(&gateway, "session_create").await, creates + 1.0);
    assert_eq!(
        round_trips(&gateway, "session_load").await,
        loads + 1.0,
        "notifications/initialized loads the record once"
    );
    let counts = command_counts(&redis).await;
    assert!(
        ["ping", "unwatch", "evalsha", "xadd"]
            .iter()
            .all(|command| !counts.contains_key(*command)),
        "initialize sent {counts:?}"
    );
    assert_eq!(fixture.open_sessions().await, upstream_sessions);
    let tools = gateway.tool_names(&session).await;
    assert!(tools.contains(&"remote__echo".to_owned()), "{tools:?}");
    assert_eq!(fixture.open_sessions().await, upstream_sessions + 1);
}

/// The fixture answers every POST on an SSE stream whose last chunk often comes in a read of
/// its own after the response event: a body dropped before that chunk closes the connection.
#[tokio::test]
async fn calls_to_an_http_upstream_answering_on_sse_streams_keep_their_connections() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gateway = Gateway::builder().remote_at(&fixture).start().await;
    let session = gateway.initialize().await;
    gateway.assert_remote_echo(&session, "warm").await;
    let before = fixture.accepted_connections().await;

    for n in 0..300 {
        gateway
            .assert_remote_echo(&session, &format!("call {n}"))
            .await;
    }

    let opened = fixture.accepted_connections().await - before - 1;
    assert!(
        opened <= 2,
        "300 sequential calls opened {opened} new upstream connections"
    );
}

/// A session's held upstream stream is not cut when the session ends: the upstream ends it
/// (the upstream session's DELETE follows), and its connection goes back to the pool, so
/// sessions one after another do not each open a connection for their stream.
#[tokio::test]
async fn held_streams_of_ended_sessions_leave_their_connections_to_the_pool() {
    const SESSIONS: u64 = 30;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gateway = Gateway::builder().remote_at(&fixture).start().await;
    let warm = gateway.initialize().await;
    gateway.assert_remote_echo(&warm, "warm").await;
    let before = fixture.accepted_connections().await;

    for n in 0..SESSIONS {
        let session = gateway.initialize().await;
        gateway
            .assert_remote_echo(&session, &format!("session {n}"))
            .await;
        let deleted = gateway.delete(Some(&session), &[]).await;
        assert_eq!(deleted.status, reqwest::StatusCode::NO_CONTENT);
    }

    let opened = fixture.accepted_connections().await - before - 1;
    assert!(
        opened <= SESSIONS / 5,
        "{SESSIONS} sessions, each holding a stream, opened {opened} new upstream connections"
    );
}

#[tokio::test]
async fn racing_first_requests_open_one_upstream_session() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gateway = Gateway::builder().remote_at(&fixture).start().await;
    let warm = gateway.initialize().await;
    gateway
        .call_tool(&warm, "remote__echo", json!({"text": "x"}))
        .await;
    let sessions: Vec<_> = futures::future::join_all((0..20).map(|_| gateway.initialize())).await;
    assert_eq!(
        fixture.open_sessions().await,
        1,
        "idle sessions hold no upstream session"
    );

    let (gateway, session) = (&gateway, &sessions[0]);
    let calls = (0..8).map(|n| {
        let text = format!("race {n}");
        async move {
            let response = gateway
                .call_tool(session, "remote__echo", json!({"text": text}))
                .await;
            assert_eq!(response["result"]["content"][0]["text"], json!(text));
        }
    });
    futures::future::join_all(calls).await;

    assert_eq!(fixture.open_sessions().await, 2);
}

/// First requests of one session racing on two replicas may open two upstream sessions; the
/// first saved is kept for every request, and the other is closed.
#[tokio::test]
async fn racing_first_requests_on_two_replicas_keep_one_upstream_session() {
    const SESSIONS: u64 = 10;
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let replica = || redis.replica("1h").remote_at(&fixture).start();
    let (a, b) = (replica().await, replica().await);
    let warm = a.initialize().await;
    a.assert_remote_echo(&warm, "a knows the upstream's capabilities")
        .await;
    let sessions: Vec<_> = futures::future::join_all((0..SESSIONS).map(|_| a.initialize())).await;
    let before = fixture.open_sessions().await;

    let calls = sessions.iter().enumerate().flat_map(|(n, session)| {
        [&a, &b, &a, &b]
            .into_iter()
            .enumerate()
            .map(move |(k, replica)| async move {
                replica
                    .assert_remote_echo(session, &format!("session {n} call {k}"))
                    .await;
            })
    });
    futures::future::join_all(calls).await;

    let open = fixture.open_sessions().await - before;
    assert_eq!(open, SESSIONS, "one upstream session per session");
    for session in &sessions {
        b.assert_remote_echo(session, "again on b").await;
        a.assert_remote_echo(session, "again on a").await;
    }
    assert_eq!(fixture.open_sessions().await - before, SESSIONS);
}

#[tokio::test]
async fn idle_sessions_keep_nothing_on_the_replica() {
    let gateway = Gateway::start().await;
    let idle = futures::future::join_all((0..50).map(|_| gateway.initialize())).await;
    let busy = gateway.initialize().await;
    gateway.assert_echo(&busy, "a call").await;

    let held = gateway
        .metric_reaching("mcpgate_sessions_held", 1.0, Duration::from_secs(10))
        .await;

    assert_eq!(held, 1.0, "only the session that made a request is held");
    assert_eq!(gateway.metric("mcpgate_sessions_revived_total").await, 0.0);
    gateway.assert_echo(&idle[0], "its first call").await;
    assert_eq!(
        gateway.metric("mcpgate_sessions_revived_total").await,
        0.0,
        "a session created here is not revived here"
    );
}

/// Ending a session stops its held upstream stream without freeing the lease: the lease of an
/// ended session only runs out, so the DELETE costs no round trip for it.
#[tokio::test]
async fn a_delete_frees_no_lease_of_the_ended_session() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gateway = redis.replica("1h").remote_at(&fixture).start().await;
    let session = gateway.initialize().await;
    gateway
        .assert_remote_echo(&session, "holds the stream")
        .await;
    let held = "mcpgate_upstream_streams_held ";
    assert_eq!(gateway.metric(held).await, 1.0);
    let releases = round_trips(&gateway, "session_release").await;

    let reply = gateway.delete(Some(&session), &[]).await;

    assert_eq!(reply.status, reqwest::StatusCode::NO_CONTENT);
    let stopped = gateway
        .metric_reaching(held, 0.0, Duration::from_secs(5))
        .await;
    assert_eq!(stopped, 0.0, "the held stream stopped");
    assert_eq!(round_trips(&gateway, "session_release").await, releases);
}

/// A DELETE ends the session without serving it first: on a replica that never served the
/// session it revives nothing (no restore, no stream held only to be stopped, no read of the
/// stream holders), and costs the load, the delete and the event log's removal.
#[tokio::test]
async fn a_delete_on_another_replica_revives_nothing() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let a = redis.replica("1h").remote_at(&fixture).start().await;
    let b = redis.replica("1h").remote_at(&fixture).start().await;
    let session = a.initialize().await;
    a.assert_remote_echo(&session, "a holds the stream").await;

    let reply = b.delete(Some(&session), &[]).await;

    assert_eq!(reply.status, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(b.metric("mcpgate_sessions_revived_total").await, 0.0);
    assert_eq!(b.metric("mcpgate_sessions_held").await, 0.0);
    for (op, trips) in [
        ("session_load", 1.0),
        ("session_delete", 1.0),
        ("events_remove_session", 1.0),
        ("session_holders", 0.0),
        ("session_hold", 0.0),
    ] {
        assert_eq!(round_trips(&b, op).await, trips, "{op}");
    }
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}).to_string();
    let ended = a.post(Some(&session), ping, &[]).await;
    assert_eq!(ended.status, reqwest::StatusCode::NOT_FOUND);
}

/// A replica renews the leases of the streams it holds together: one round trip for all of
/// them, rather than one each.
#[tokio::test]
async fn the_leases_of_held_streams_are_renewed_in_one_round_trip() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gateway = redis.replica("1h").remote_at(&fixture).start().await;
    let mut sessions = Vec::new();
    for _ in 0..12 {
        sessions.push(gateway.initialize().await);
    }
    let taking = std::time::Instant::now();
    let first_calls = sessions
        .iter()
        .map(|session| gateway.assert_remote_echo(session, "takes the lease"));
    futures::future::join_all(first_calls).await;
    let taken_within = taking.elapsed().as_secs_f64();
    let held = gateway.metric("mcpgate_upstream_streams_held ").await;
    assert_eq!(held, 12.0);
    let holds = round_trips(&gateway, "session_hold").await;

    // Leases are renewed every 10 s, at the gateway's next one-second tick.
    tokio::time::sleep(Duration::from_millis(12_500)).await;

    assert_eq!(round_trips(&gateway, "session_hold").await, holds);
    let renewals = round_trips(&gateway, "session_renew").await;
    let ticks_spanned = 1.0 + taken_within.ceil();
    assert!(
        renewals >= 1.0 && renewals <= ticks_spanned,
        "12 leases taken within {taken_within:.2} s took {renewals} round trips to renew"
    );
    for session in &sessions {
        let ttl = remote_lease_ms(&redis, &session.id).await;
        assert!(
            ttl > 25_000,
            "{}'s lease runs for {ttl} ms: not renewed",
            session.id
        );
    }
}

/// A session's first request on a replica that never served it (a revival) reads who holds
/// its upstream streams in the round trip that loads it: a stream another replica holds is
/// neither taken nor waited for, and one that nobody holds any more is taken at once.
#[tokio::test]
async fn the_first_call_to_an_upstream_takes_its_stream_lease_with_the_upstream_session() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let gateway = redis.replica("1h").remote_at(&fixture).start().await;
    // The replica's first session opens its upstream session at `initialize`, for the
    // upstream's capabilities; later ones open theirs at their first call.
    let warm = gateway.initialize().await;
    gateway.assert_remote_echo(&warm, "warm").await;
    let (claims, holds) = (
        round_trips(&gateway, "session_claim_upstream").await,
        round_trips(&gateway, "session_hold").await,
    );
    let session = gateway.initialize().await;

    gateway.assert_remote_echo(&session, "first").await;

    let claimed = round_trips(&gateway, "session_claim_upstream").await - claims;
    assert_eq!(claimed, 1.0);
    assert_eq!(round_trips(&gateway, "session_hold").await, holds);
    let held = "mcpgate_upstream_streams_held ";
    assert_eq!(gateway.metric(held).await, 2.0);
    let ttl = remote_lease_ms(&redis, &session.id).await;
    assert!(ttl > 20_000, "the stream lease runs for {ttl} ms");
}

#[tokio::test]
async fn a_revival_takes_only_the_streams_no_replica_holds() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::start_http("remote", dir.path()).await;
    let replica = || redis.replica("1h").remote_at(&fixture).start();
    let (a, b, c) = (replica().await, replica().await, replica().await);
    let session = a.initialize().await;
    a.assert_remote_echo(&session, "a holds the stream").await;
    let held = "mcpgate_upstream_streams_held ";
    assert_eq!(a.metric(held).await, 1.0);

    b.assert_remote_echo(&session, "revived on b").await;

    assert_eq!(b.metric("mcpgate_sessions_revived_total").await, 1.0);
    assert_eq!(round_trips(&b, "session_hold").await, 0.0, "a holds it");
    assert_eq!(round_trips(&b, "session_holders").await, 1.0);
    assert_eq!(b.metric(held).await, 0.0);

    let mut client = redis.client().await;
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg("mcpgate:*:h:remote")
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    let _: () = redis::cmd("DEL")
        .arg(&leases)
        .query_async(&mut client)
        .await
        .unwrap();
    c.assert_remote_echo(&session, "revived on c, where a's lease ran out")
        .await;

    assert_eq!(round_trips(&c, "session_hold").await, 1.0);
    assert_eq!(c.metric(held).await, 1.0, "c holds the stream now");
}

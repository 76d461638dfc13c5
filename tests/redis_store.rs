//! `RedisStore` against a real redis-server: key layout, TTLs, classification of gone sessions,
//! expiries noticed once across replicas, outages and restarts. Every test starts its own server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::redis::RedisServer;
use mcpgate::config::RedisConfig;
use mcpgate::protocol::ProtocolVersion;
use mcpgate::redis::{RedisPool, keys};
use mcpgate::session::{
    Claimed, Hold, LeaseWanted, Lookup, RecordChange, RedisStore, SessionId, SessionRecord,
    SessionStore, StoreError, UpstreamSession,
};
use mcpgate::telemetry::Metrics;
use redis::AsyncCommands;
use serde_json::json;

const HOUR: Duration = Duration::from_secs(3600);
/// The per-operation deadline of every test pool.
const TIMEOUT: Duration = Duration::from_millis(300);

fn pool(server: &RedisServer) -> RedisPool {
    let config = RedisConfig {
        url: server.url(),
        timeout: TIMEOUT,
        ..Default::default()
    };
    RedisPool::new(&config, Arc::new(Metrics::new().expect("metrics"))).expect("pool")
}

fn store(server: &RedisServer, idle_ttl: Duration) -> RedisStore {
    RedisStore::new(pool(server), idle_ttl)
}

fn record(max_lifetime: Duration) -> SessionRecord {
    SessionRecord::new(
        ProtocolVersion::LATEST,
        json!({"name": "test-client", "version": "1.0"}),
        json!({"roots": {}}),
        max_lifetime,
    )
}

fn record_key(id: &SessionId) -> String {
    format!("mcpgate:{{{id}}}:s")
}

fn tombstone_key(id: &SessionId) -> String {
    format!("mcpgate:{{{id}}}:t")
}

async fn pttl(server: &RedisServer, key: &str) -> i64 {
    server.client().await.pttl(key).await.expect("PTTL")
}

fn upstreams_key(id: &SessionId) -> String {
    format!("mcpgate:{{{id}}}:u")
}

async fn exists(server: &RedisServer, key: &str) -> bool {
    server.client().await.exists(key).await.expect("EXISTS")
}

fn upstream_change(name: &str, upstream_session: &str) -> RecordChange {
    RecordChange::Upstream {
        name: name.into(),
        session: UpstreamSession {
            session_id: Some(upstream_session.into()),
            protocol_version: Some("2025-11-25".into()),
        },
    }
}

async fn get(server: &RedisServer, key: &str) -> Option<String> {
    server.client().await.get(key).await.expect("GET")
}

async fn remove(server: &RedisServer, key: &str) {
    let _: u64 = server.client().await.del(key).await.expect("DEL");
}

fn live(lookup: Lookup) -> SessionRecord {
    match lookup {
        Lookup::Live(record) => Arc::unwrap_or_clone(record),
        other => panic!("expected a live session, got {other:?}"),
    }
}

#[tokio::test]
async fn create_then_load_round_trips_the_record() {
    let server = RedisServer::start().await;
    let store = store(&server, HOUR);
    let id = SessionId::generate();
    let mut created = record(HOUR);
    created.log_level = Some("debug".into());
    created
        .subscriptions
        .insert("file:///a".into(), "files".into());
    store.create(&id, &created).await.unwrap();

    let loaded = live(store.load(&id).await.unwrap());
    assert_eq!(
        serde_json::to_value(&loaded).unwrap(),
        serde_json::to_value(&created).unwrap()
    );
    store.ping().await.unwrap();
}

#[tokio::test]
async fn keys_are_named_and_hash_tagged_as_documented() {
    let server = RedisServer::start().await;
    let store = store(&server, HOUR);
    let id = SessionId::generate();
    let created = record(HOUR);
    store.create(&id, &created).await.unwrap();

    let mut keys: Vec<String> = server.client().await.keys("*").await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [format!("mcpgate:{{{id}}}:s"), format!("mcpgate:{{{id}}}:t")]
    );
    let stored: std::collections::HashMap<String, String> = server
        .client()
        .await
        .hgetall(record_key(&id))
        .await
        .unwrap();
    assert_eq!(stored["schema"], "2");
    let kept: u64 = stored["kept"].parse().unwrap();
    assert!(
        kept > unix_ms() + 7_100_000,
        "kept for two idle TTLs: {kept}"
    );
    let core: serde_json::Value = serde_json::from_str(&stored["core"]).unwrap();
    assert_eq!(core["client_info"], created.client_info);
    assert_eq!(
        get(&server, &tombstone_key(&id)).await.as_deref(),
        Some("live")
    );
}

#[tokio::test]
async fn gone_sessions_are_classified() {
    let server = RedisServer::start().await;
    let store = store(&server, Duration::from_millis(400));
    let (expiring, deleted) = (SessionId::generate(), SessionId::generate());
    store.create(&expiring, &record(HOUR)).await.unwrap();
    store.create(&deleted, &record(HOUR)).await.unwrap();

    live(store.load(&expiring).await.unwrap());
    assert!(store.delete(&deleted).await.unwrap(), "was live");
    assert!(!store.delete(&deleted).await.unwrap(), "already deleted");
    assert!(matches!(
        store.load(&deleted).await.unwrap(),
        Lookup::Deleted
    ));
    assert_eq!(
        get(&server, &tombstone_key(&deleted)).await.as_deref(),
        Some("deleted")
    );
    assert!(
        pttl(&server, &tombstone_key(&deleted)).await > 0,
        "tombstones expire too"
    );

    // Let Redis expire the record; the tombstone (idle TTL + 1 min here) remembers the id.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(&server, &record_key(&expiring)).await, None);
    let first = store.load(&expiring).await.unwrap();
    assert!(
        matches!(
            first,
            Lookup::Expired {
                first_notice: true,
                ..
            }
        ),
        "{first:?}"
    );
    let again = store.load(&expiring).await.unwrap();
    assert!(
        matches!(
            again,
            Lookup::Expired {
                first_notice: false,
                ..
            }
        ),
        "{again:?}"
    );
    assert_eq!(
        get(&server, &tombstone_key(&expiring)).await.as_deref(),
        Some("expired")
    );

    let unknown = store.load(&SessionId::generate()).await.unwrap();
    assert!(matches!(unknown, Lookup::Unknown), "{unknown:?}");
}

/// Sets the record's note of until when its tombstone and upstream sessions are kept.
async fn set_kept(server: &RedisServer, id: &SessionId, kept_ms: u64) {
    let _: () = server
        .client()
        .await
        .hset(record_key(id), "kept", kept_ms)
        .await
        .unwrap();
}

fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since.unwrap().as_millis()).unwrap()
}

/// A load slides the record's idle TTL. The tombstone and the upstream sessions, kept beyond
/// it, are slid only once they would outlive the record by less than 3/4 of that margin.
#[tokio::test]
async fn loads_slide_the_idle_ttl_and_keep_the_tombstone_beyond_it() {
    let server = RedisServer::start().await;
    let store = store(&server, Duration::from_millis(1000));
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();
    store
        .update(&id, &upstream_change("remote", "u-1"))
        .await
        .unwrap();
    let tombstone_ttl = pttl(&server, &tombstone_key(&id)).await;
    assert!(
        (60_500..=61_000).contains(&tombstone_ttl),
        "tombstone PTTL {tombstone_ttl}"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = pttl(&server, &record_key(&id)).await;
    assert!(before <= 600, "record PTTL before the load: {before}");
    live(store.load(&id).await.unwrap());
    let after = pttl(&server, &record_key(&id)).await;
    assert!(after > 900, "record PTTL after the load: {after}");
    let not_due = pttl(&server, &tombstone_key(&id)).await;
    assert!(
        (46_000..=60_700).contains(&not_due),
        "tombstone PTTL after a load it was not due at: {not_due}"
    );

    set_kept(&server, &id, unix_ms() + 1_000 + 44_000).await;
    live(store.load(&id).await.unwrap());
    for key in [tombstone_key(&id), upstreams_key(&id)] {
        let slid = pttl(&server, &key).await;
        assert!(
            slid > 60_900,
            "{key} PTTL after a load it was due at: {slid}"
        );
    }
    let kept: u64 = server
        .client()
        .await
        .hget(record_key(&id), "kept")
        .await
        .unwrap();
    assert!(kept >= unix_ms() + 60_000, "kept until {kept}");

    // Busy for longer than the idle TTL: still live.
    let short = RedisStore::new(pool(&server), Duration::from_millis(300));
    let busy = SessionId::generate();
    short.create(&busy, &record(HOUR)).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        live(short.load(&busy).await.unwrap());
    }
}

#[tokio::test]
async fn the_absolute_cap_bounds_the_ttl() {
    let server = RedisServer::start().await;
    let store = store(&server, HOUR);
    let id = SessionId::generate();
    store
        .create(&id, &record(Duration::from_secs(2)))
        .await
        .unwrap();
    let created_ttl = pttl(&server, &record_key(&id)).await;
    assert!(
        (1..=2000).contains(&created_ttl),
        "PTTL after create: {created_ttl}"
    );

    live(store.load(&id).await.unwrap());
    let loaded_ttl = pttl(&server, &record_key(&id)).await;
    assert!(
        (1..=2000).contains(&loaded_ttl),
        "PTTL after load: {loaded_ttl}"
    );
    assert!(pttl(&server, &tombstone_key(&id)).await > loaded_ttl);

    // A record past its cap (say, a replica's clock was behind) is expired on read.
    let overdue = SessionId::generate();
    let mut stale = record(HOUR);
    stale.expires_at = stale.created_at - 1;
    let json = serde_json::to_string(&stale).unwrap();
    let mut client = server.client().await;
    let _: () = client.set_ex(record_key(&overdue), json, 60).await.unwrap();
    let _: () = client
        .set_ex(tombstone_key(&overdue), "live", 120)
        .await
        .unwrap();
    let lookup = store.load(&overdue).await.unwrap();
    assert!(
        matches!(
            lookup,
            Lookup::Expired {
                first_notice: true,
                ..
            }
        ),
        "{lookup:?}"
    );
    assert_eq!(get(&server, &record_key(&overdue)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expiry_is_noticed_once_across_replicas() {
    let server = RedisServer::start().await;
    let replicas = Arc::new([store(&server, HOUR), store(&server, HOUR)]);
    for round in 0..5 {
        let id = SessionId::generate();
        replicas[0].create(&id, &record(HOUR)).await.unwrap();
        live(replicas[1].load(&id).await.unwrap());
        remove(&server, &record_key(&id)).await; // what Redis does when the idle TTL passes

        let loads = (0..20).map(|i| {
            let (replicas, id) = (replicas.clone(), id.clone());
            tokio::spawn(async move { replicas[i % 2].load(&id).await })
        });
        let mut first_notices = 0;
        for lookup in futures::future::join_all(loads).await {
            match lookup.unwrap().unwrap() {
                Lookup::Expired {
                    first_notice: true, ..
                } => first_notices += 1,
                Lookup::Expired {
                    first_notice: false,
                    ..
                } => {}
                other => panic!("round {round}: expected an expiry, got {other:?}"),
            }
        }
        assert_eq!(first_notices, 1, "round {round}");
    }
}

#[tokio::test]
async fn updates_keep_the_ttl_and_never_resurrect() {
    let server = RedisServer::start().await;
    let store = store(&server, Duration::from_secs(10));
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let level = RecordChange::LogLevel("warning".into());
    store.update(&id, &level).await.unwrap();
    let ttl = pttl(&server, &record_key(&id)).await;
    assert!(
        (1..=9750).contains(&ttl),
        "an update must not reset the TTL: {ttl}"
    );
    let loaded = live(store.load(&id).await.unwrap());
    assert_eq!(loaded.log_level.as_deref(), Some("warning"));

    store.delete(&id).await.unwrap();
    store.update(&id, &level).await.unwrap();
    store
        .update(&id, &upstream_change("remote", "u1"))
        .await
        .unwrap();
    assert!(!exists(&server, &record_key(&id)).await);
    assert!(!exists(&server, &upstreams_key(&id)).await);
    assert!(matches!(store.load(&id).await.unwrap(), Lookup::Deleted));

    let expired = SessionId::generate();
    store.create(&expired, &record(HOUR)).await.unwrap();
    remove(&server, &record_key(&expired)).await;
    store.update(&expired, &level).await.unwrap();
    assert!(!exists(&server, &record_key(&expired)).await);
    let lookup = store.load(&expired).await.unwrap();
    assert!(
        matches!(
            lookup,
            Lookup::Expired {
                first_notice: true,
                ..
            }
        ),
        "{lookup:?}"
    );
}

/// Several replicas change different fields of one session at the same moment; every change
/// survives (schema 1 replaced the whole record, so all but one were lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_from_many_replicas_all_survive() {
    let server = RedisServer::start().await;
    let replicas: Arc<Vec<RedisStore>> = Arc::new((0..4).map(|_| store(&server, HOUR)).collect());
    let id = SessionId::generate();
    replicas[0].create(&id, &record(HOUR)).await.unwrap();
    let mut changes: Vec<RecordChange> = (0..24)
        .map(|i| RecordChange::Subscribe {
            uri: format!("file:///{i}"),
            upstream: "files".into(),
        })
        .collect();
    changes.push(upstream_change("remote", "fresh-upstream-session"));
    changes.push(RecordChange::LogLevel("error".into()));
    let updates = changes.into_iter().enumerate().map(|(i, change)| {
        let (replicas, id) = (replicas.clone(), id.clone());
        tokio::spawn(async move { replicas[i % 4].update(&id, &change).await })
    });
    for update in futures::future::join_all(updates).await {
        update.unwrap().unwrap();
    }
    let loaded = live(replicas[1].load(&id).await.unwrap());
    assert_eq!(loaded.subscriptions.len(), 24, "{:?}", loaded.subscriptions);
    assert_eq!(
        loaded.upstreams["remote"].session_id.as_deref(),
        Some("fresh-upstream-session")
    );
    assert_eq!(loaded.log_level.as_deref(), Some("error"));
    replicas[2]
        .update(
            &id,
            &RecordChange::Unsubscribe {
                uri: "file:///3".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        live(replicas[3].load(&id).await.unwrap())
            .subscriptions
            .len(),
        23
    );
}

/// The one that notices an expiry gets the upstream sessions, once, to close them.
#[tokio::test]
async fn the_first_notice_of_an_expiry_hands_over_the_upstream_sessions() {
    let server = RedisServer::start().await;
    let store = store(&server, HOUR);
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();
    store
        .update(&id, &upstream_change("remote", "u-7"))
        .await
        .unwrap();
    assert_eq!(
        store.notice_gone(&id).await.unwrap().map(|_| ()),
        None,
        "still live"
    );
    remove(&server, &record_key(&id)).await;
    match store.notice_gone(&id).await.unwrap() {
        Some(Lookup::Expired {
            first_notice: true,
            orphans,
        }) => {
            assert_eq!(orphans["remote"].session_id.as_deref(), Some("u-7"))
        }
        other => panic!("expected the first notice, got {other:?}"),
    }
    match store.load(&id).await.unwrap() {
        Lookup::Expired {
            first_notice: false,
            orphans,
        } => assert!(orphans.is_empty()),
        other => panic!("expected a later notice, got {other:?}"),
    }
    assert!(!exists(&server, &upstreams_key(&id)).await);
}

/// A lost tombstone (evicted, say) is restored by the next slide, which a record an older
/// release wrote (no `kept` field) is due for at once.
#[tokio::test]
async fn a_missing_tombstone_is_restored_by_the_next_slide() {
    let server = RedisServer::start().await;
    let store = store(&server, HOUR);
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();
    remove(&server, &tombstone_key(&id)).await;
    let _: () = server
        .client()
        .await
        .hdel(record_key(&id), "kept")
        .await
        .unwrap();

    live(store.load(&id).await.unwrap());
    assert_eq!(
        get(&server, &tombstone_key(&id)).await.as_deref(),
        Some("live")
    );
    assert!(pttl(&server, &tombstone_key(&id)).await > 0);
}

/// A schema-1 record (one JSON string, as written by the previous release during a rolling
/// upgrade) is read, upgraded in place with its TTL, and then changed field by field.
#[tokio::test]
async fn schema_1_records_are_upgraded_in_place() {
    let server = RedisServer::start().await;
    let store = store(&server, HOUR);
    let id = SessionId::generate();
    let legacy = json!({
        "schema": 1,
        "protocol_version": "2025-06-18",
        "client_info": {"name": "old-client", "version": "0.9"},
        "client_capabilities": {"sampling": {}},
        "created_at": 1_700_000_000u64,
        "expires_at": 4_000_000_000u64,
        "upstreams": {"remote": {"session_id": "abc", "protocol_version": "2025-06-18"}},
        "log_level": "notice",
        "subscriptions": {"file:///x": "remote"},
    });
    let mut client = server.client().await;
    let _: () = client
        .set_ex(record_key(&id), legacy.to_string(), 600)
        .await
        .unwrap();
    let _: () = client
        .set_ex(tombstone_key(&id), "live", 1200)
        .await
        .unwrap();

    let loaded = live(store.load(&id).await.unwrap());
    assert_eq!(
        loaded.client_info,
        json!({"name": "old-client", "version": "0.9"})
    );
    assert_eq!(loaded.protocol_version, "2025-06-18");
    assert_eq!(
        loaded.upstreams["remote"].session_id.as_deref(),
        Some("abc")
    );
    assert_eq!(loaded.log_level.as_deref(), Some("notice"));
    assert_eq!(loaded.subscriptions["file:///x"], "remote");
    let kind: String = redis::cmd("TYPE")
        .arg(record_key(&id))
        .query_async(&mut client)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
    assert!(pttl(&server, &record_key(&id)).await > 0, "the TTL is kept");

    store
        .update(&id, &RecordChange::LogLevel("debug".into()))
        .await
        .unwrap();
    assert_eq!(
        live(store.load(&id).await.unwrap()).log_level.as_deref(),
        Some("debug")
    );
}

/// A record written by a newer release is refused (503 at the edge), never half-read and never
/// reported missing; garbage is corrupt.
#[tokio::test]
async fn newer_schemas_are_refused_and_garbage_is_corrupt() {
    let server = RedisServer::start().await;
    let store = store(&server, HOUR);
    let id = SessionId::generate();
    let mut client = server.client().await;
    let _: () = client
        .hset_multiple(record_key(&id), &[("schema", "3"), ("core", "{}")])
        .await
        .unwrap();
    let _: () = client
        .set_ex(tombstone_key(&id), "live", 120)
        .await
        .unwrap();
    let result = store.load(&id).await;
    assert!(
        matches!(
            result,
            Err(StoreError::NewerSchema {
                found: 3,
                supported: 2
            })
        ),
        "{result:?}"
    );

    let garbage = SessionId::generate();
    let _: () = client
        .set_ex(record_key(&garbage), "{not json", 60)
        .await
        .unwrap();
    let _: () = client
        .set_ex(tombstone_key(&garbage), "live", 120)
        .await
        .unwrap();
    let result = store.load(&garbage).await;
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

/// With `maxmemory` reached and `noeviction`, Redis refuses new data: existing sessions still
/// load (and slide), creating one fails as unavailable, and the readiness probe passes.
#[tokio::test]
async fn a_full_redis_still_serves_existing_sessions() {
    let server = RedisServer::start_args(false, &["--maxmemory-policy", "noeviction"]).await;
    let store = store(&server, Duration::from_secs(30));
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();
    set_kept(&server, &id, 0).await;
    let _: () = server
        .client()
        .await
        .pexpire(tombstone_key(&id), 5_000)
        .await
        .unwrap();
    server.fill_past_maxmemory().await;

    let loaded = live(store.load(&id).await.unwrap());
    assert_eq!(loaded.client_info["name"], "test-client");
    let ttl = pttl(&server, &record_key(&id)).await;
    assert!(ttl > 29_000, "the load slid the TTL: {ttl}");
    let tombstone_ttl = pttl(&server, &tombstone_key(&id)).await;
    assert!(
        tombstone_ttl > 80_000,
        "and the due tombstone's: {tombstone_ttl}"
    );
    let created = store.create(&SessionId::generate(), &record(HOUR)).await;
    assert!(
        matches!(created, Err(StoreError::Unavailable(_))),
        "{created:?}"
    );
    store
        .ping()
        .await
        .expect("a full Redis still serves sessions: ready");
}

/// `CLIENT PAUSE WRITE` makes every write wait: the readiness probe fails.
#[tokio::test]
async fn a_redis_refusing_writes_is_not_ready() {
    let server = RedisServer::start().await;
    let store = store(&server, HOUR);
    store.ping().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "3000", "WRITE"])
        .query_async(&mut server.client().await)
        .await
        .unwrap();
    assert_unavailable("ping", store.ping()).await;
}

/// Asserts an operation failed as unavailable within about the pool's deadline.
async fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> String {
    let started = Instant::now();
    let result = operation.await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < TIMEOUT + Duration::from_millis(400),
        "{what} took {elapsed:?}"
    );
    match result {
        Err(StoreError::Unavailable(message)) => message,
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stopped_redis_is_unavailable_never_a_missing_session() {
    let mut server = RedisServer::start().await;
    let store = store(&server, HOUR);
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();
    live(store.load(&id).await.unwrap());

    server.stop().await;
    assert_unavailable("load", store.load(&id)).await;
    assert_unavailable("load unknown", store.load(&SessionId::generate())).await;
    assert_unavailable(
        "create",
        store.create(&SessionId::generate(), &record(HOUR)),
    )
    .await;
    assert_unavailable(
        "update",
        store.update(&id, &RecordChange::LogLevel("debug".into())),
    )
    .await;
    assert_unavailable("delete", store.delete(&id)).await;
    assert_unavailable("ping", store.ping()).await;
}

#[tokio::test]
async fn a_hanging_redis_times_out_as_unavailable() {
    let server = RedisServer::start().await;
    let store = store(&server, HOUR);
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();

    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "2000", "ALL"])
        .query_async(&mut server.client().await)
        .await
        .unwrap();
    let started = Instant::now();
    let message = assert_unavailable("load", store.load(&id)).await;
    assert!(started.elapsed() >= TIMEOUT - Duration::from_millis(50));
    assert!(message.contains("timed out"), "{message}");
}

#[tokio::test]
async fn sessions_survive_a_persistent_redis_restart() {
    let mut server = RedisServer::start_persistent().await;
    let store = store(&server, HOUR);
    let ids: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store.create(id, &record(HOUR)).await.unwrap();
    }
    assert!(store.delete(&ids[2]).await.unwrap());

    server.restart().await;
    for id in &ids[..2] {
        live(store.load(id).await.unwrap());
    }
    assert!(matches!(
        store.load(&ids[2]).await.unwrap(),
        Lookup::Deleted
    ));
    assert!(
        pttl(&server, &record_key(&ids[0])).await > 0,
        "TTLs survive too"
    );
}

/// An upstream session named `sid`.
fn upstream_session(sid: &str) -> UpstreamSession {
    UpstreamSession {
        session_id: Some(sid.into()),
        protocol_version: Some("2025-11-25".into()),
    }
}

/// The first upstream session claimed for an upstream is kept; a later claim gets it back,
/// and a claim on a gone session saves nothing.
#[tokio::test]
async fn the_first_claimed_upstream_session_is_kept() {
    let server = RedisServer::start().await;
    let store = store(&server, Duration::from_secs(10));
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();

    let first = store
        .claim_upstream(&id, "remote", &upstream_session("u-1"), None)
        .await;
    let second = store
        .claim_upstream(&id, "remote", &upstream_session("u-2"), None)
        .await;

    assert_eq!(first.unwrap(), Claimed::Won { holding: false });
    assert_eq!(second.unwrap(), Claimed::Taken(upstream_session("u-1")));
    let loaded = live(store.load(&id).await.unwrap());
    assert_eq!(
        loaded.upstreams.get("remote"),
        Some(&upstream_session("u-1"))
    );
    assert!(pttl(&server, &upstreams_key(&id)).await > 0);
    store.delete(&id).await.unwrap();
    let gone = store
        .claim_upstream(&id, "remote", &upstream_session("u-3"), None)
        .await;
    assert_eq!(gone.unwrap(), Claimed::SessionGone);
    assert!(!exists(&server, &upstreams_key(&id)).await);
}

/// A claim that asks for the stream's lease takes it when it saves the upstream session and
/// the lease is free; a lost claim takes nothing.
#[tokio::test]
async fn a_claim_takes_the_stream_lease_it_asks_for_with_the_upstream_session() {
    let server = RedisServer::start().await;
    let store = store(&server, Duration::from_secs(10));
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();
    let lease = Duration::from_secs(30);
    let wanted = |holder| {
        Some(LeaseWanted {
            holder,
            time: lease,
        })
    };
    store.hold(&id, "b", "replica-1", lease).await.unwrap();

    let claim = |upstream, sid, holder| {
        let (store, id, claimed) = (&store, &id, upstream_session(sid));
        async move {
            let lease = wanted(holder);
            let claimed = store.claim_upstream(id, upstream, &claimed, lease);
            claimed.await.unwrap()
        }
    };

    let a = claim("a", "u-a", "replica-2").await;
    let b = claim("b", "u-b", "replica-2").await;
    let again = claim("a", "u-x", "replica-3").await;

    assert_eq!(a, Claimed::Won { holding: true });
    assert_eq!(b, Claimed::Won { holding: false });
    assert_eq!(again, Claimed::Taken(upstream_session("u-a")));
    let holders = store.holders(&id, &["a".into(), "b".into()]).await.unwrap();
    assert_eq!(
        holders,
        vec![Some("replica-2".to_owned()), Some("replica-1".to_owned())]
    );
    let lease_ttl = pttl(&server, &keys::holder_lease(&id, "a")).await;
    assert!(lease_ttl > 20_000 && lease_ttl <= 30_000, "{lease_ttl}");
}

/// `holders` reads the live leases in the order asked, and takes none.
#[tokio::test]
async fn holders_reads_leases_without_taking_them() {
    let server = RedisServer::start().await;
    let store = store(&server, Duration::from_secs(10));
    let id = SessionId::generate();
    store.create(&id, &record(HOUR)).await.unwrap();
    let lease = Duration::from_secs(30);
    assert_eq!(
        store.hold(&id, "b", "replica-1", lease).await.unwrap(),
        Hold::Held
    );

    let names = ["a".to_owned(), "b".to_owned()];
    let holders = store.holders(&id, &names).await.unwrap();

    assert_eq!(holders, vec![None, Some("replica-1".to_owned())]);
    assert_eq!(
        store.hold(&id, "a", "replica-2", lease).await.unwrap(),
        Hold::Held
    );
    assert_eq!(
        store.holders(&id, &[]).await.unwrap(),
        Vec::<Option<String>>::new()
    );
}

/// The id Redis gave the connection that `pool` runs an operation on from the calling thread.
async fn connection_id(pool: &RedisPool) -> i64 {
    pool.run("client_id", |mut conn| async move {
        redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await
    })
    .await
    .expect("CLIENT ID")
}

/// Each thread's operations go over a connection of its own, which its own runtime drives (as
/// each actix worker has a runtime of its own): a worker never waits on another's connection.
#[tokio::test]
async fn each_thread_runs_its_operations_on_a_connection_of_its_own() {
    let server = RedisServer::start().await;
    let pool = pool(&server);
    let here = [connection_id(&pool).await, connection_id(&pool).await];

    let (sent, received) = tokio::sync::oneshot::channel();
    let elsewhere = pool.clone();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let ids = runtime.block_on(async {
            [
                connection_id(&elsewhere).await,
                connection_id(&elsewhere).await,
            ]
        });
        let _ = sent.send(ids);
    });
    let there = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .expect("the other thread's operations finish")
        .expect("the other thread answers");
    worker.join().expect("the other thread");

    assert_eq!(here[0], here[1], "one thread, one connection");
    assert_eq!(there[0], there[1], "one thread, one connection");
    assert_ne!(here[0], there[0], "another thread, another connection");
    assert_eq!(
        connection_id(&pool).await,
        here[0],
        "kept for the next request"
    );
}

//! Redis Cluster and Redis Sentinel deployments against real processes: the session store and
//! the event log (with cross-instance wake-ups) in both modes, a Sentinel failover, and
//! `mcpgate serve` with two replicas in each mode. Every test starts its own servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::redis::{MASTER_NAME, RedisCluster, RedisSentinel, spawn_read};
use crate::support::{Gateway, GatewayBuilder, toml_str};
use mcpgate::config::{RedisConfig, RedisMode};
use mcpgate::events::{EventLog, EventLogError, RedisEventLog, StreamId, StreamKey};
use mcpgate::protocol::ProtocolVersion;
use mcpgate::redis::RedisPool;
use mcpgate::redis::pubsub::{self, Notification, Subscriber};
use mcpgate::session::{
    Hold, Lookup, RecordChange, RedisStore, SessionId, SessionRecord, SessionStore, StreamLease,
};
use mcpgate::telemetry::Metrics;
use serde_json::json;

const HOUR: Duration = Duration::from_secs(3600);
/// The per-operation deadline of every test pool and subscriber (a cluster connection is
/// opened within it, so not too tight).
const TIMEOUT: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(60);
const LEASE: Duration = Duration::from_secs(30);
/// How long a test reader is willing to wait, and the most a prompt wake-up may take.
const LONG_WAIT: Duration = Duration::from_secs(5);
const PROMPT: Duration = Duration::from_secs(2);
/// Sessions per test: enough that their ids spread over every cluster node.
const SESSIONS: usize = 12;
const HMAC_KEY: &str = "modes-test-key-0123456789abcdefghijklmnopqrstuvwxyz";

fn cluster_config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig {
        mode: RedisMode::Cluster,
        nodes: cluster.urls(),
        timeout: TIMEOUT,
        ..Default::default()
    }
}

fn sentinel_config(sentinel: &RedisSentinel) -> RedisConfig {
    RedisConfig {
        mode: RedisMode::Sentinel,
        sentinels: vec![sentinel.sentinel_url()],
        master_name: Some(MASTER_NAME.into()),
        timeout: TIMEOUT,
        ..Default::default()
    }
}

fn pool(config: &RedisConfig) -> RedisPool {
    RedisPool::new(config, Arc::new(Metrics::new().expect("metrics"))).expect("pool")
}

fn record() -> SessionRecord {
    SessionRecord::new(
        ProtocolVersion::LATEST,
        json!({"name": "test-client", "version": "1.0"}),
        json!({"roots": {}}),
        HOUR,
    )
}

/// One replica's event log, once its subscriber is connected.
async fn replica(config: &RedisConfig) -> (Arc<RedisEventLog>, Arc<Subscriber>) {
    let target = pubsub::subscriber_target(config).expect("subscriber target");
    let subscriber = Arc::new(Subscriber::start(target, config.timeout));
    let deadline = Instant::now() + LONG_WAIT;
    while !subscriber.is_connected() {
        assert!(
            Instant::now() < deadline,
            "the subscriber did not connect within {LONG_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = RedisEventLog::new(pool(config), subscriber.clone(), WINDOW, 100);
    (Arc::new(log), subscriber)
}

/// Creates, loads, updates and deletes `SESSIONS` sessions (ids in many slots).
async fn exercise_store(config: &RedisConfig) {
    let store = RedisStore::new(pool(config), HOUR);
    store.ping().await.expect("ping");
    let ids: Vec<SessionId> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
    for id in &ids {
        store.create(id, &record()).await.expect("create");
    }
    for id in &ids {
        let Lookup::Live(_) = store.load(id).await.expect("load") else {
            panic!("session {id} is not live");
        };
        let level = RecordChange::LogLevel("debug".into());
        store.update(id, &level).await.expect("update");
        let Lookup::Live(saved) = store.load(id).await.expect("load") else {
            panic!("session {id} is not live after save");
        };
        assert_eq!(saved.log_level.as_deref(), Some("debug"));
    }
    renew_leases_in_every_slot(&store, &ids).await;
    for id in ids.iter().step_by(2) {
        assert!(store.delete(id).await.expect("delete"));
        assert!(matches!(
            store.load(id).await.expect("load"),
            Lookup::Deleted
        ));
    }
    assert!(matches!(
        store.load(&SessionId::generate()).await.expect("load"),
        Lookup::Unknown
    ));
}

/// Renews, in one call, leases of sessions in many slots: taken when free, kept when the
/// caller's, refused when another replica's.
async fn renew_leases_in_every_slot(store: &RedisStore, ids: &[SessionId]) {
    let streams: Vec<StreamLease> = ids
        .iter()
        .map(|id| StreamLease {
            session: id.clone(),
            upstream: "remote".into(),
        })
        .collect();
    let other = store.hold(&ids[0], "remote", "replica-b", LEASE).await;
    assert_eq!(other.expect("hold"), Hold::Held);
    let taken = store.renew_holds(&streams, "replica-a", LEASE).await;
    let renewed = store.renew_holds(&streams, "replica-a", LEASE).await;
    for answers in [taken.expect("renew"), renewed.expect("renew")] {
        assert_eq!(answers[0], Hold::HeldElsewhere);
        assert!(answers[1..].iter().all(|answer| *answer == Hold::Held));
        assert_eq!(answers.len(), SESSIONS);
    }
}

/// Two replicas' event logs: for sessions in many slots, a reader on one is woken promptly by
/// an append (then a close) on the other; removing a session forgets its streams.
async fn exercise_events(config: &RedisConfig) {
    let ((a, _sa), (b, _sb)) = (replica(config).await, replica(config).await);
    for _ in 0..SESSIONS / 3 {
        let key = StreamKey {
            session: SessionId::generate(),
            stream: StreamId::random(),
        };
        b.open(&key).await.expect("open");
        let reader = spawn_read(&a, &key, LONG_WAIT, 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(b.append(&key, "hello".into()).await.expect("append"), 1);
        let (batch, elapsed) = reader.await.expect("reader");
        let batch = batch.expect("read");
        assert_eq!(batch.events.len(), 1, "{batch:?}");
        assert!(
            elapsed < PROMPT + Duration::from_millis(100),
            "woken after {elapsed:?}"
        );

        let reader = spawn_read(&a, &key, LONG_WAIT, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.close(&key).await.expect("close");
        let (batch, elapsed) = reader.await.expect("reader");
        assert!(
            batch.expect("read").closed,
            "close did not reach the reader"
        );
        assert!(
            elapsed < PROMPT + Duration::from_millis(100),
            "woken after {elapsed:?}"
        );

        a.mark_delivered(&key, 1).await.expect("mark delivered");
        b.remove_session(&key.session)
            .await
            .expect("remove session");
        assert!(matches!(
            a.read(&key, 0, Duration::ZERO).await,
            Err(EventLogError::UnknownStream(_))
        ));
    }
}

#[tokio::test]
async fn cluster_store_serves_sessions_in_every_slot() {
    let cluster = RedisCluster::start().await;
    exercise_store(&cluster_config(&cluster)).await;
    let counts = cluster.key_counts().await;
    assert!(
        counts.iter().filter(|&&n| n > 0).count() >= 2,
        "the sessions' keys did not spread over the cluster: {counts:?}"
    );
}

#[tokio::test]
async fn cluster_event_log_wakes_readers_across_instances() {
    let cluster = RedisCluster::start().await;
    exercise_events(&cluster_config(&cluster)).await;
}

#[tokio::test]
async fn cluster_subscriber_moves_to_another_node_when_its_node_dies() {
    let mut cluster = RedisCluster::start().await;
    let config = cluster_config(&cluster);
    let ((a, sa), (b, sb)) = (replica(&config).await, replica(&config).await);
    // Both subscribers start on the first node; kill it. Keys in its slots are then
    // unavailable, so sessions whose slot lives there are skipped.
    let mut watches = [sa.subscribe("watch").await, sb.subscribe("watch").await];
    cluster.nodes[0].stop().await;
    for watch in &mut watches {
        // The link drop is told as a Gap.
        let gap = tokio::time::timeout(LONG_WAIT, watch.recv()).await;
        assert_eq!(gap.expect("no Gap after the node died"), Notification::Gap);
    }
    let deadline = Instant::now() + LONG_WAIT;
    while !(sa.is_connected() && sb.is_connected()) {
        assert!(
            Instant::now() < deadline,
            "the subscribers did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each session in a dead slot costs a timeout (1s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut woken = 0;
    while woken < 2 {
        assert!(Instant::now() < deadline, "no wake-up after node 0 died");
        let key = StreamKey {
            session: SessionId::generate(),
            stream: StreamId::random(),
        };
        if b.open(&key).await.is_err() {
            continue; // a slot of the dead node
        }
        let reader = spawn_read(&a, &key, LONG_WAIT, 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.append(&key, "hello".into()).await.expect("append");
        let (batch, elapsed) = reader.await.expect("reader");
        assert_eq!(batch.expect("read").events.len(), 1);
        assert!(
            elapsed < PROMPT + Duration::from_millis(200),
            "woken after {elapsed:?}"
        );
        woken += 1;
    }
}

#[tokio::test]
async fn sentinel_store_and_event_log_work() {
    let sentinel = RedisSentinel::start().await;
    let config = sentinel_config(&sentinel);
    exercise_store(&config).await;
    exercise_events(&config).await;
}

#[tokio::test]
async fn sentinel_failover_moves_the_store_and_the_wake_ups_to_the_new_master() {
    let sentinel = RedisSentinel::start().await;
    let config = sentinel_config(&sentinel);
    let store = RedisStore::new(pool(&config), HOUR);
    let ((a, sa), (b, sb)) = (replica(&config).await, replica(&config).await);
    let id = SessionId::generate();
    store.create(&id, &record()).await.expect("create");

    sentinel.failover().await;

    // Connections to the demoted master are killed by the Sentinel; new ones go to the new
    // master. A request or two may fail meanwhile (503 for a client), never report "gone".
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.load(&id).await {
            Ok(Lookup::Live(_)) => {
                if store
                    .create(&SessionId::generate(), &record())
                    .await
                    .is_ok()
                {
                    break;
                }
            }
            Ok(other) => panic!("the session was lost in the failover: {other:?}"),
            Err(error) => assert!(Instant::now() < deadline, "no new master: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = StreamKey {
        session: id,
        stream: StreamId::random(),
    };
    loop {
        if b.open(&key).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the event log found no master");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + LONG_WAIT;
    while !(sa.is_connected() && sb.is_connected()) {
        assert!(
            Instant::now() < deadline,
            "the subscribers did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Pub/sub is lossy: a wake-up published while a subscriber still follows the demoted master
    // can be lost (the reader then finds the event at its wait limit). What must hold is that
    // wake-ups work again once the subscribers follow the new master.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    loop {
        let reader = spawn_read(&a, &key, LONG_WAIT, seen);
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.append(&key, format!("after failover {seen}"))
            .await
            .expect("append");
        let (batch, elapsed) = reader.await.expect("reader");
        let events = batch.expect("read").events;
        seen = events.last().map_or(seen, |e| e.seq);
        if !events.is_empty() && elapsed < PROMPT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wake-ups did not recover after the failover"
        );
    }
}

/// A replica of the gateway using `redis` (raw `[redis]` lines).
fn gateway(redis: &str) -> GatewayBuilder {
    Gateway::builder()
        .server(&format!("hmac_key = {}", toml_str(HMAC_KEY)))
        .toml(&format!(
            "[session]\nstore = \"redis\"\nidle_ttl = \"1h\"\n[redis]\n{redis}\ntimeout = \"1s\""
        ))
}

async fn serve_across_two_replicas(redis: &str) {
    let (a, b) = (gateway(redis).start().await, gateway(redis).start().await);
    for _ in 0..3 {
        let session = a.initialize().await;
        b.assert_echo(&session, "on the replica that did not create it")
            .await;
        a.assert_echo(&session, "back on the first replica").await;
    }
}

#[tokio::test]
async fn serve_in_cluster_mode_across_two_replicas() {
    let cluster = RedisCluster::start().await;
    let nodes: Vec<String> = cluster.urls().iter().map(|u| toml_str(u)).collect();
    serve_across_two_replicas(&format!(
        "mode = \"cluster\"\nnodes = [{}]",
        nodes.join(", ")
    ))
    .await;
}

#[tokio::test]
async fn serve_in_sentinel_mode_across_two_replicas() {
    let sentinel = RedisSentinel::start().await;
    serve_across_two_replicas(&format!(
        "mode = \"sentinel\"\nsentinels = [{}]\nmaster_name = {}",
        toml_str(&sentinel.sentinel_url()),
        toml_str(MASTER_NAME)
    ))
    .await;
}

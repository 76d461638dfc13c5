//! `RedisEventLog` and the pub/sub `Subscriber` against a real redis-server: replay, closure,
//! pause markers, bounds, expiry, cross-replica wake-ups, delivery marks, session removal,
//! outages and reconnection. Every test starts its own server; two `RedisEventLog`s with their
//! own pools and subscribers stand for two replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::redis::{RedisServer, spawn_read};
use mcpgate::config::RedisConfig;
use mcpgate::events::{Batch, EventLog, EventLogError, RedisEventLog, StreamId, StreamKey};
use mcpgate::redis::pubsub::{self, Notification, Subscriber, Subscription};
use mcpgate::redis::{RedisPool, keys};
use mcpgate::session::SessionId;
use mcpgate::telemetry::Metrics;
use redis::AsyncCommands;

/// The per-operation deadline of every test pool and subscriber.
const TIMEOUT: Duration = Duration::from_millis(300);
const WINDOW: Duration = Duration::from_secs(60);
/// How long a test reader is willing to wait, and the most a prompt wake-up may take.
const LONG_WAIT: Duration = Duration::from_secs(5);
const PROMPT: Duration = Duration::from_secs(2);

fn pool(server: &RedisServer) -> RedisPool {
    let config = RedisConfig {
        url: server.url(),
        timeout: TIMEOUT,
        ..Default::default()
    };
    RedisPool::new(&config, Arc::new(Metrics::new().expect("metrics"))).expect("pool")
}

fn subscriber(server: &RedisServer) -> Arc<Subscriber> {
    let client = redis::Client::open(server.url()).expect("redis url");
    Arc::new(Subscriber::start(client, TIMEOUT))
}

/// One replica's event log, and its subscriber once connected.
async fn replica(
    server: &RedisServer,
    window: Duration,
    max_events: usize,
) -> (Arc<RedisEventLog>, Arc<Subscriber>) {
    let subscriber = subscriber(server);
    wait_connected(&subscriber).await;
    let log = RedisEventLog::new(pool(server), subscriber.clone(), window, max_events);
    (Arc::new(log), subscriber)
}

async fn wait_connected(subscriber: &Subscriber) {
    let deadline = Instant::now() + LONG_WAIT;
    while !subscriber.is_connected() {
        assert!(
            Instant::now() < deadline,
            "the subscriber did not connect within {LONG_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stream_of(session: &SessionId) -> StreamKey {
    StreamKey {
        session: session.clone(),
        stream: StreamId::random(),
    }
}

fn new_stream() -> StreamKey {
    stream_of(&SessionId::generate())
}

fn seqs(batch: &Batch) -> Vec<u64> {
    batch.events.iter().map(|e| e.seq).collect()
}

fn data(batch: &Batch) -> Vec<String> {
    batch.events.iter().map(|e| e.data.to_string()).collect()
}

fn keys_of(key: &StreamKey) -> [String; 3] {
    let (sid, stream) = (&key.session, key.stream.as_str());
    [
        format!("mcpgate:{{{sid}}}:e:{stream}"),
        format!("mcpgate:{{{sid}}}:em:{stream}"),
        format!("mcpgate:{{{sid}}}:es"),
    ]
}

async fn exists(server: &RedisServer, key: &str) -> bool {
    server.client().await.exists(key).await.expect("EXISTS")
}

fn assert_unknown(result: Result<Batch, EventLogError>, what: &str) {
    match result {
        Err(EventLogError::UnknownStream(_)) => {}
        other => panic!("{what}: expected UnknownStream, got {other:?}"),
    }
}

#[tokio::test]
async fn replays_after_a_position_and_reports_closure() {
    let server = RedisServer::start().await;
    let (log, _subscriber) = replica(&server, WINDOW, 100).await;
    let key = new_stream();
    log.open(&key).await.expect("open");
    let empty = log.read(&key, 0, Duration::ZERO).await.expect("read");
    assert!(empty.events.is_empty() && !empty.closed, "{empty:?}");
    for n in 1..=3 {
        assert_eq!(log.append(&key, format!("m{n}")).await.expect("append"), n);
    }
    let batch = log.read(&key, 1, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&batch), vec![2, 3]);
    assert_eq!(data(&batch), vec!["m2", "m3"]);
    assert!(!batch.closed);
    for key in keys_of(&key) {
        let ttl: i64 = server.client().await.pttl(&key).await.expect("PTTL");
        assert!(ttl > 0 && ttl <= 60_000, "{key} has TTL {ttl}");
    }

    log.close(&key).await.expect("close");
    let started = Instant::now();
    let closed = log.read(&key, 3, LONG_WAIT).await.expect("read");
    assert!(closed.closed && closed.events.is_empty(), "{closed:?}");
    assert!(
        started.elapsed() < PROMPT,
        "a closed stream made the reader wait"
    );
    let all = log.read(&key, 0, Duration::ZERO).await.expect("read");
    assert_eq!((seqs(&all), all.closed), (vec![1, 2, 3], true));
}

#[tokio::test]
async fn pause_markers_are_stored_and_returned_like_any_event() {
    let server = RedisServer::start().await;
    let (log, _subscriber) = replica(&server, WINDOW, 100).await;
    let key = new_stream();
    for message in ["a", "", "b"] {
        log.append(&key, message.into()).await.expect("append");
    }
    let batch = log.read(&key, 0, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&batch), vec![1, 2, 3]);
    assert_eq!(data(&batch), vec!["a", "", "b"]);
}

#[tokio::test]
async fn keeps_the_last_replay_max_events_and_trims_storage() {
    let server = RedisServer::start().await;
    let (log, _subscriber) = replica(&server, WINDOW, 10).await;
    let key = new_stream();
    for n in 1..=300 {
        log.append(&key, format!("m{n}")).await.expect("append");
    }
    let batch = log.read(&key, 0, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&batch), (291..=300).collect::<Vec<_>>());
    let later = log.read(&key, 295, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&later), (296..=300).collect::<Vec<_>>());
    let stored: u64 = server
        .client()
        .await
        .xlen(&keys_of(&key)[0])
        .await
        .expect("XLEN");
    assert!(
        (10..300).contains(&stored),
        "MAXLEN ~ 10 left {stored} entries"
    );
}

#[tokio::test]
async fn streams_are_forgotten_after_the_replay_window() {
    let server = RedisServer::start().await;
    let (log, _subscriber) = replica(&server, Duration::from_millis(300), 100).await;
    let key = new_stream();
    log.append(&key, "m1".into()).await.expect("append");
    let batch = log.read(&key, 0, Duration::ZERO).await.expect("read");
    assert_eq!(seqs(&batch), vec![1]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_unknown(log.read(&key, 0, Duration::ZERO).await, "after the window");
    for key in keys_of(&key) {
        assert!(!exists(&server, &key).await, "{key} outlived the window");
    }
    assert_eq!(
        log.append(&key, "again".into()).await.expect("append"),
        1,
        "a forgotten stream starts over"
    );
}

#[tokio::test]
async fn unknown_streams_are_refused_until_opened() {
    let server = RedisServer::start().await;
    let (log, _subscriber) = replica(&server, WINDOW, 100).await;
    let key = new_stream();
    assert_unknown(log.read(&key, 0, Duration::ZERO).await, "never opened");
    assert_unknown(
        log.read(&key, 0, Duration::from_millis(200)).await,
        "never opened, waiting",
    );
    log.open(&key).await.expect("open");
    let batch = log.read(&key, 0, Duration::ZERO).await.expect("read");
    assert!(batch.events.is_empty() && !batch.closed, "{batch:?}");
    log.open(&key).await.expect("reopen");
    assert_eq!(log.append(&key, "m".into()).await.expect("append"), 1);
}

#[tokio::test]
async fn a_reader_on_one_replica_is_woken_by_an_append_on_another() {
    let server = RedisServer::start().await;
    let (a, _sa) = replica(&server, WINDOW, 100).await;
    let (b, _sb) = replica(&server, WINDOW, 100).await;
    let session = SessionId::generate();
    let (key, sibling) = (stream_of(&session), stream_of(&session));
    b.open(&key).await.expect("open");
    b.open(&sibling).await.expect("open");

    let reader = spawn_read(&a, &key, LONG_WAIT, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.append(&sibling, "elsewhere".into())
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reader.is_finished(),
        "a wake-up for another stream ended the read"
    );
    b.append(&key, "hello".into()).await.expect("append");
    let (batch, elapsed) = reader.await.expect("reader");
    let batch = batch.expect("read");
    assert_eq!(data(&batch), vec!["hello"]);
    assert!(
        elapsed < Duration::from_millis(500) + PROMPT,
        "woken after {elapsed:?}"
    );

    let reader = spawn_read(&a, &key, LONG_WAIT, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.close(&key).await.expect("close");
    let (batch, elapsed) = reader.await.expect("reader");
    assert!(
        batch.expect("read").closed,
        "close did not reach the reader"
    );
    assert!(elapsed < PROMPT, "woken by close after {elapsed:?}");
}

#[tokio::test]
async fn delivered_is_monotonic_and_shared_by_replicas() {
    let server = RedisServer::start().await;
    let (a, _sa) = replica(&server, WINDOW, 100).await;
    let (b, _sb) = replica(&server, WINDOW, 100).await;
    let key = new_stream();
    log_delivered(&a, &key, None, 0).await;
    a.open(&key).await.expect("open");
    log_delivered(&a, &key, Some(5), 5).await;
    log_delivered(&a, &key, Some(3), 5).await;
    log_delivered(&b, &key, Some(7), 7).await;
    assert_eq!(a.delivered(&key).await.expect("delivered"), 7);

    let never_opened = new_stream();
    a.mark_delivered(&never_opened, 4).await.expect("mark");
    assert_eq!(a.delivered(&never_opened).await.expect("delivered"), 0);
    assert_unknown(
        a.read(&never_opened, 0, Duration::ZERO).await,
        "marking does not create a stream",
    );
}

/// Marks `seq` (if any) and checks what `delivered` says afterwards.
async fn log_delivered(log: &RedisEventLog, key: &StreamKey, seq: Option<u64>, expected: u64) {
    if let Some(seq) = seq {
        log.mark_delivered(key, seq).await.expect("mark");
    }
    assert_eq!(
        log.delivered(key).await.expect("delivered"),
        expected,
        "after marking {seq:?}"
    );
}

#[tokio::test]
async fn remove_session_removes_every_stream_of_that_session_only() {
    let server = RedisServer::start().await;
    let (log, _subscriber) = replica(&server, WINDOW, 100).await;
    let (doomed, kept) = (SessionId::generate(), SessionId::generate());
    let standalone = StreamKey {
        session: doomed.clone(),
        stream: StreamId::standalone(),
    };
    let doomed_streams = [stream_of(&doomed), stream_of(&doomed), standalone];
    for key in &doomed_streams {
        log.append(key, "m".into()).await.expect("append");
    }
    log.close(&doomed_streams[1]).await.expect("close");
    log.mark_delivered(&doomed_streams[2], 1)
        .await
        .expect("mark");
    let survivor = stream_of(&kept);
    log.append(&survivor, "stays".into()).await.expect("append");

    log.remove_session(&doomed).await.expect("remove");
    for key in &doomed_streams {
        assert_unknown(log.read(key, 0, Duration::ZERO).await, "removed stream");
    }
    let pattern = format!("mcpgate:{{{doomed}}}:*");
    let left: Vec<String> = server.client().await.keys(&pattern).await.expect("KEYS");
    assert!(left.is_empty(), "left behind: {left:?}");
    let batch = log.read(&survivor, 0, Duration::ZERO).await.expect("read");
    assert_eq!(data(&batch), vec!["stays"]);
}

#[tokio::test]
async fn subscriptions_share_a_channel_and_the_last_drop_unsubscribes() {
    let server = RedisServer::start().await;
    let subscriber = subscriber(&server);
    wait_connected(&subscriber).await;
    let pool = pool(&server);
    let channel = keys::session_channel(&SessionId::generate());
    let mut first = subscriber.subscribe(&channel).await;
    let mut second = subscriber.subscribe(&channel).await;
    pubsub::publish(&pool, &channel, "hi")
        .await
        .expect("publish");
    for subscription in [&mut first, &mut second] {
        let got = tokio::time::timeout(PROMPT, subscription.recv()).await;
        assert_eq!(got.ok(), Some(Notification::Message("hi".into())));
    }
    drop(first);
    pubsub::publish(&pool, &channel, "still")
        .await
        .expect("publish");
    let got = tokio::time::timeout(PROMPT, second.recv()).await;
    assert_eq!(got.ok(), Some(Notification::Message("still".into())));
    assert_eq!(subscribers_of(&server, &channel).await, 1);
    drop(second);
    let deadline = Instant::now() + PROMPT;
    while subscribers_of(&server, &channel).await != 0 {
        assert!(Instant::now() < deadline, "the channel stayed subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `PUBSUB NUMSUB channel`: how many connections listen to it.
async fn subscribers_of(server: &RedisServer, channel: &str) -> u64 {
    let (_, count): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut server.client().await)
        .await
        .expect("PUBSUB NUMSUB");
    count
}

#[tokio::test]
async fn an_outage_is_unavailable_and_wake_ups_resume_after_a_restart() {
    let mut server = RedisServer::start().await;
    let (a, subscriber_a) = replica(&server, WINDOW, 100).await;
    let (b, subscriber_b) = replica(&server, WINDOW, 100).await;
    let key = new_stream();
    a.open(&key).await.expect("open");
    let channel = keys::session_channel(&key.session);
    let mut held = subscriber_a.subscribe(&channel).await;
    let waiting = spawn_read(&a, &key, LONG_WAIT, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.stop().await;
    let (result, elapsed) = waiting.await.expect("reader");
    assert!(
        matches!(result, Err(EventLogError::Unavailable(_))),
        "a waiting reader got {result:?}"
    );
    assert!(elapsed < PROMPT, "a waiting reader hung for {elapsed:?}");
    assert_outage(&a, &key).await;
    assert!(!subscriber_a.is_connected());
    let gap = tokio::time::timeout(PROMPT, held.recv()).await;
    assert_eq!(gap.ok(), Some(Notification::Gap), "no gap on disconnect");

    server.restart().await;
    wait_connected(&subscriber_a).await;
    wait_connected(&subscriber_b).await;
    pubsub::publish(&pool(&server), &channel, "resubscribed")
        .await
        .expect("publish");
    assert_eq!(
        next_message(&mut held).await.as_deref(),
        Some("resubscribed"),
        "a channel held across the outage was not re-subscribed"
    );
    let key = new_stream();
    b.open(&key).await.expect("open after restart");
    let reader = spawn_read(&a, &key, LONG_WAIT, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.append(&key, "back".into()).await.expect("append");
    let (batch, elapsed) = reader.await.expect("reader");
    assert_eq!(data(&batch.expect("read")), vec!["back"]);
    assert!(
        elapsed < PROMPT,
        "woken after {elapsed:?} following a restart"
    );
}

/// The next message on a subscription (gaps skipped), if one comes promptly.
async fn next_message(subscription: &mut Subscription) -> Option<String> {
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        match tokio::time::timeout_at(deadline, subscription.recv()).await {
            Ok(Notification::Gap) => continue,
            Ok(Notification::Message(message)) => return Some(message),
            Err(_) => return None,
        }
    }
}

/// Every operation fails promptly with `Unavailable` while redis-server is down.
async fn assert_outage(log: &RedisEventLog, key: &StreamKey) {
    let started = Instant::now();
    let results = [
        log.open(key).await.err(),
        log.append(key, "m".into()).await.err(),
        log.close(key).await.err(),
        log.read(key, 0, LONG_WAIT).await.err(),
        log.delivered(key).await.err(),
        log.mark_delivered(key, 1).await.err(),
        log.remove_session(&key.session).await.err(),
    ];
    for (n, result) in results.into_iter().enumerate() {
        match result {
            Some(EventLogError::Unavailable(message)) => {
                assert!(!message.contains("redis://"), "operation {n}: {message}")
            }
            other => panic!("operation {n}: expected Unavailable, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the outage took {:?} to report",
        started.elapsed()
    );
}

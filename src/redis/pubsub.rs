//! Cross-replica notifications over Redis pub/sub.
//!
//! A [`Subscriber`] owns one dedicated pub/sub connection per replica (not a pooled one: a
//! subscribed connection can run nothing else) and multiplexes every channel this replica
//! listens to onto local receivers. [`Subscriber::subscribe`] returns a [`Subscription`]; the
//! first subscription to a channel sends `SUBSCRIBE`, the last one dropped sends `UNSUBSCRIBE`.
//! Writers send with [`publish`] through the [`RedisPool`] (or `PUBLISH` inside their own
//! scripts).
//!
//! Channels are per session ([`keys::session_channel`](super::keys::session_channel)), shared
//! by every kind of message about that session (event-log wake-ups, DELETE fan-out, routed client answers). The
//! payload is a short string whose prefix says what it is about; the event log uses
//! `e:<stream>` for "stream `<stream>` has new events or was closed".
//!
//! Pub/sub is lossy: a message published while the connection is down is gone. A background
//! task reconnects with backoff (and pings, so a dead link is noticed), re-subscribes every
//! live channel, and tells each subscription [`Notification::Gap`] both when the link drops
//! and once it is back: holders must then re-read whatever state the channel signals. While
//! disconnected, [`Subscriber::subscribe`] returns at once and nothing wakes a waiter except a
//! `Gap`, so callers always wait with a timeout.
//!
//! The connection goes to one node that sees every `PUBLISH` of the fleet ([`Target`]): the
//! server; in a Redis Cluster any node, since classic `PUBLISH` is broadcast to the whole
//! cluster (the first that answers; after a lost link the next one is tried first); with
//! Sentinel, the master the Sentinels report, asked again at every (re)connect.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::redis::aio::{PubSub, PubSubSink, PubSubStream};
use ::redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use ::redis::{AsyncCommands, Client, ConnectionInfo, Msg, TlsMode};
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::settings::{cluster_nodes, connection_info, sentinel_settings};
use super::{RedisError, RedisPool};
use crate::config::{RedisConfig, RedisMode};

/// Notifications buffered per channel for a slow receiver; beyond this it gets a `Gap`.
const CHANNEL_CAPACITY: usize = 64;
/// How often an idle connection is pinged to notice a dead link.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// First and longest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Publishes `message` on `channel` through the pool.
pub async fn publish(pool: &RedisPool, channel: &str, message: &str) -> Result<(), RedisError> {
    pool.run("publish", |mut conn| async move {
        conn.publish::<_, _, ()>(channel, message).await
    })
    .await
}

/// What a subscription receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// A message published on the channel.
    Message(String),
    /// Messages may have been lost (the connection dropped or came back, or this receiver fell
    /// behind): re-read whatever state the channel signals.
    Gap,
}

/// Why the pub/sub connection was given up (it is then re-established).
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("redis pub/sub {op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("redis pub/sub {op} failed: {source}")]
    Command {
        op: &'static str,
        source: ::redis::RedisError,
    },
    #[error("redis closed the pub/sub connection")]
    Closed,
    #[error("no redis node configured for pub/sub")]
    NoNode,
}

/// Where the pub/sub connection goes (see the module documentation).
#[allow(clippy::large_enum_variant, reason = "one per replica, moved once")]
pub enum Target {
    /// One server.
    Server(Client),
    /// Any node of a Redis Cluster.
    AnyNode(Vec<Client>),
    /// The master the Sentinels report.
    SentinelMaster(Box<SentinelClient>),
}

impl From<Client> for Target {
    fn from(client: Client) -> Self {
        Target::Server(client)
    }
}

/// The [`Target`] of `config`: what the [`Subscriber`] connects to: the server
/// (standalone), any cluster node (classic `PUBLISH` reaches every node of a cluster), or the
/// master the Sentinels report at each (re)connect.
pub fn subscriber_target(config: &RedisConfig) -> Result<Target, RedisError> {
    let client = |info: ConnectionInfo| {
        Client::open(info).map_err(|e| RedisError::Config(format!("redis pub/sub: {e}")))
    };
    Ok(match config.mode {
        RedisMode::Standalone => Target::Server(client(connection_info(config)?)?),
        RedisMode::Cluster => Target::AnyNode(
            cluster_nodes(config)?
                .into_iter()
                .map(client)
                .collect::<Result<_, _>>()?,
        ),
        RedisMode::Sentinel => {
            let (sentinels, master_name, node) = sentinel_settings(config)?;
            let mut info =
                SentinelNodeConnectionInfo::default().set_redis_connection_info(node.settings);
            if node.tls {
                info = info.set_tls_mode(TlsMode::Secure);
            }
            let client = SentinelClient::build(
                sentinels,
                master_name,
                Some(info),
                SentinelServerType::Master,
            )
            .map_err(|e| RedisError::Config(format!("redis.sentinels: {e}")))?;
            Target::SentinelMaster(Box::new(client))
        }
    })
}

/// Opens pub/sub connections to the [`Target`].
struct Connector {
    target: Target,
    /// Cluster: the node to try first.
    next: usize,
}

impl Connector {
    async fn open(&mut self, timeout: Duration) -> Result<PubSub, LinkError> {
        match &mut self.target {
            Target::Server(client) => bounded(timeout, "connect", client.get_async_pubsub()).await,
            Target::AnyNode(clients) => {
                let mut error = LinkError::NoNode;
                for offset in 0..clients.len() {
                    let index = (self.next + offset) % clients.len();
                    match bounded(timeout, "connect", clients[index].get_async_pubsub()).await {
                        Ok(pubsub) => {
                            self.next = index;
                            return Ok(pubsub);
                        }
                        Err(e) => error = e,
                    }
                }
                Err(error)
            }
            Target::SentinelMaster(sentinel) => {
                let master = bounded(timeout, "find master", sentinel.async_get_client()).await?;
                bounded(timeout, "connect", master.get_async_pubsub()).await
            }
        }
    }

    /// The link was lost: in a cluster, try another node first next time.
    fn lost(&mut self) {
        self.next = self.next.wrapping_add(1);
    }
}

/// A change of this replica's subscriptions, applied by the connection task in order.
enum Command {
    Subscribe { channel: String, generation: u64 },
    Unsubscribe(String),
}

/// One channel this replica listens to.
struct Channel {
    /// Tells a re-created channel apart from an earlier one of the same name.
    generation: u64,
    holders: usize,
    notifications: broadcast::Sender<Notification>,
    /// Redis has confirmed the `SUBSCRIBE` on the current connection.
    confirmed: watch::Sender<bool>,
}

impl Channel {
    fn new(generation: u64) -> Self {
        Self {
            generation,
            holders: 0,
            notifications: broadcast::Sender::new(CHANNEL_CAPACITY),
            confirmed: watch::Sender::new(false),
        }
    }

    fn set_confirmed(&self, confirmed: bool) {
        self.confirmed.send_replace(confirmed);
    }

    fn notify(&self, notification: Notification) {
        // No receiver left is fine: the last holder is being dropped.
        let _ = self.notifications.send(notification);
    }
}

#[derive(Default)]
struct Registry {
    channels: HashMap<String, Channel>,
    connected: bool,
    next_generation: u64,
}

/// State shared by the subscriber, its subscriptions and the connection task.
struct Shared {
    registry: Mutex<Registry>,
    commands: mpsc::UnboundedSender<Command>,
    timeout: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers one more holder of `channel`; the first one queues the `SUBSCRIBE`. Returns
    /// the subscription, a view of its confirmation, and whether the link is up.
    fn hold(self: &Arc<Self>, channel: &str) -> (Subscription, watch::Receiver<bool>, bool) {
        let mut guard = self.lock();
        let Registry {
            channels,
            connected,
            next_generation,
        } = &mut *guard;
        let entry = match channels.entry(channel.to_owned()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let generation = *next_generation;
                *next_generation += 1;
                let _ = self.commands.send(Command::Subscribe {
                    channel: channel.to_owned(),
                    generation,
                });
                entry.insert(Channel::new(generation))
            }
        };
        entry.holders += 1;
        let subscription = Subscription {
            channel: channel.to_owned(),
            receiver: entry.notifications.subscribe(),
            shared: self.clone(),
        };
        (subscription, entry.confirmed.subscribe(), *connected)
    }

    /// Drops one holder of `channel`; the last one queues the `UNSUBSCRIBE`.
    fn release(&self, channel: &str) {
        let mut registry = self.lock();
        let Some(entry) = registry.channels.get_mut(channel) else {
            return;
        };
        entry.holders -= 1;
        if entry.holders == 0 {
            registry.channels.remove(channel);
            let _ = self.commands.send(Command::Unsubscribe(channel.to_owned()));
        }
    }

    /// On a new connection: forgets queued changes (the registry already reflects them) and
    /// returns every channel to subscribe, with its generation.
    fn snapshot(&self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Vec<(String, u64)> {
        let registry = self.lock();
        while commands.try_recv().is_ok() {}
        registry
            .channels
            .iter()
            .map(|(name, channel)| (name.clone(), channel.generation))
            .collect()
    }

    /// The snapshot's channels are subscribed: confirm them and tell every holder to re-read.
    fn connected(&self, subscribed: &[(String, u64)]) {
        let mut registry = self.lock();
        registry.connected = true;
        for (name, generation) in subscribed {
            if let Some(channel) = registry.channels.get(name)
                && channel.generation == *generation
            {
                channel.set_confirmed(true);
            }
        }
        for channel in registry.channels.values() {
            channel.notify(Notification::Gap);
        }
    }

    /// The connection is gone: nothing is confirmed any more, and holders should re-read.
    fn disconnected(&self) {
        let mut registry = self.lock();
        registry.connected = false;
        for channel in registry.channels.values() {
            channel.set_confirmed(false);
            channel.notify(Notification::Gap);
        }
    }

    fn confirm(&self, name: &str, generation: u64) {
        if let Some(channel) = self.lock().channels.get(name)
            && channel.generation == generation
        {
            channel.set_confirmed(true);
        }
    }

    fn deliver(&self, message: &Msg) {
        let notification = match message.get_payload::<String>() {
            Ok(payload) => Notification::Message(payload),
            Err(_) => Notification::Gap,
        };
        if let Some(channel) = self.lock().channels.get(message.get_channel_name()) {
            channel.notify(notification);
        }
    }
}

/// This replica's Redis pub/sub connection and the channels it listens to.
pub struct Subscriber {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Starts the connection task (within a Tokio runtime). It connects in the background and
    /// keeps reconnecting, so a Redis that is down at start does not stop the gateway.
    ///
    /// `target` (a [`Client`] for one server, or see [`subscriber_target`]) should carry
    /// the same connection settings as the pool (URL, credentials, database); `timeout` bounds
    /// each pub/sub command, the connect, and how long [`Subscriber::subscribe`] waits for
    /// Redis to confirm a new channel.
    pub fn start(target: impl Into<Target>, timeout: Duration) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry::default()),
            commands,
            timeout,
        });
        let connector = Connector {
            target: target.into(),
            next: 0,
        };
        let task = tokio::spawn(run(connector, shared.clone(), receiver));
        Self { shared, task }
    }

    /// Listens to `channel` until the returned subscription is dropped. When connected, waits
    /// (up to the timeout) until Redis confirms the subscription, so that a message published
    /// after this returns is received. When disconnected, returns at once: the channel is
    /// subscribed on reconnection, and the subscription then gets a [`Notification::Gap`].
    pub async fn subscribe(&self, channel: &str) -> Subscription {
        let (subscription, mut confirmed, connected) = self.shared.hold(channel);
        if connected {
            let _ = tokio::time::timeout(self.shared.timeout, confirmed.wait_for(|c| *c)).await;
        }
        subscription
    }

    /// Whether the pub/sub connection is up and every channel re-subscribed.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One holder's view of a channel; unsubscribes when the last holder drops it.
pub struct Subscription {
    channel: String,
    receiver: broadcast::Receiver<Notification>,
    shared: Arc<Shared>,
}

impl Subscription {
    /// The next notification.
    pub async fn recv(&mut self) -> Notification {
        match self.receiver.recv().await {
            Ok(notification) => notification,
            Err(broadcast::error::RecvError::Lagged(_)) => Notification::Gap,
            // Cannot happen: this subscription keeps its channel, and so the sender, registered.
            Err(broadcast::error::RecvError::Closed) => Notification::Gap,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.release(&self.channel);
    }
}

/// The connection task: connect, serve until the link fails, back off, repeat.
async fn run(
    mut connector: Connector,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect(&mut connector, &shared, &mut commands).await {
            Ok((sink, stream)) => {
                tracing::info!("redis pub/sub connected");
                backoff = BACKOFF_MIN;
                let error = serve(&shared, sink, stream, &mut commands).await;
                shared.disconnected();
                connector.lost();
                tracing::warn!(%error, "redis pub/sub connection lost; reconnecting");
            }
            Err(error) => tracing::warn!(%error, "redis pub/sub cannot connect; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Opens the connection and subscribes every channel that has holders.
async fn connect(
    connector: &mut Connector,
    shared: &Shared,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Result<(PubSubSink, PubSubStream), LinkError> {
    let pubsub = connector.open(shared.timeout).await?;
    let (mut sink, stream) = pubsub.split();
    let channels = shared.snapshot(commands);
    if !channels.is_empty() {
        let names: Vec<&str> = channels.iter().map(|(name, _)| name.as_str()).collect();
        bounded(shared.timeout, "subscribe", sink.subscribe(names)).await?;
    }
    shared.connected(&channels);
    Ok((sink, stream))
}

/// Relays messages to holders and applies subscription changes until the link fails.
async fn serve(
    shared: &Shared,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> LinkError {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        let outcome = tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    shared.deliver(&message);
                    Ok(())
                }
                None => Err(LinkError::Closed),
            },
            Some(command) = commands.recv() => apply(shared, &mut sink, command).await,
            _ = ping.tick() => bounded(shared.timeout, "ping", sink.ping::<::redis::Value>())
                .await
                .map(drop),
        };
        if let Err(error) = outcome {
            return error;
        }
    }
}

async fn apply(shared: &Shared, sink: &mut PubSubSink, command: Command) -> Result<(), LinkError> {
    match command {
        Command::Subscribe {
            channel,
            generation,
        } => {
            bounded(shared.timeout, "subscribe", sink.subscribe(&channel)).await?;
            shared.confirm(&channel, generation);
        }
        Command::Unsubscribe(channel) => {
            bounded(shared.timeout, "unsubscribe", sink.unsubscribe(&channel)).await?;
        }
    }
    Ok(())
}

/// Runs one pub/sub command within the deadline.
async fn bounded<T>(
    timeout: Duration,
    op: &'static str,
    command: impl Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, LinkError> {
    tokio::time::timeout(timeout, command)
        .await
        .map_err(|_| LinkError::Timeout { op, after: timeout })?
        .map_err(|source| LinkError::Command { op, source })
}

//! Cross-replica messages about one session, over the Redis pub/sub channel of that session:
//! a client's answer to a server-to-client request, or its cancellation of a request, that
//! reached a replica other than the one whose upstream exchange is waiting for it.
//!
//! Only stdio upstreams need this (their child runs on one replica); an HTTP upstream is
//! answered directly by any replica with the upstream session id from the record. The same
//! channel carries a modern client's retry to the replica holding the upstream exchange it
//! continues, and that exchange's messages and outcome back (`suspended.rs`). Beside the
//! session channels, [`keys::CHANGES_CHANNEL`] carries every upstream list change to every
//! replica's listen streams (`changes.rs`), and each replica's own channel the requests only
//! it can run (`remote.rs`). Payloads are
//! `m:<json>` on [`keys::session_channel`], beside the event log's `e:<stream>` wake-ups.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RpcError;
use super::changes::Change;
use super::remote::ReplicaMessage;
use crate::protocol::jsonrpc::RequestId;
use crate::redis::pubsub::{self, Notification, Subscriber, Subscription};
use crate::redis::{RedisError, RedisPool, keys};
use crate::session::SessionId;

const PREFIX: &str = "m:";

/// One routed message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMessage {
    /// The client answered `upstream`'s request `id`, which `replica` relayed.
    Answer {
        replica: String,
        upstream: String,
        id: RequestId,
        outcome: Result<Value, RpcError>,
    },
    /// The client cancelled its request `request`.
    Cancel { request: RequestId },
    /// A modern client's retry brings `responses` (its `inputResponses`) for the upstream
    /// exchange `replica` holds suspended as `exchange`; what follows goes back under `reply`.
    Resume {
        replica: String,
        exchange: String,
        reply: String,
        responses: Value,
    },
    /// The holding replica took the exchange up (or the retry's wait would end).
    Claimed { reply: String },
    /// A message the resumed exchange sent the client (progress, a log message).
    Relayed { reply: String, message: Value },
    /// The resumed exchange's outcome: the final result, or `input_required` again.
    Resumed {
        reply: String,
        outcome: Result<Value, RpcError>,
    },
}

/// Sends and receives [`BusMessage`]s (Redis deployments only).
pub struct Bus {
    pool: RedisPool,
    subscriber: Arc<Subscriber>,
}

impl Bus {
    pub fn new(pool: RedisPool, subscriber: Arc<Subscriber>) -> Self {
        Self { pool, subscriber }
    }

    /// Publishes a message for whichever replica holds the session's exchange.
    pub async fn send(&self, session: &SessionId, message: &BusMessage) -> Result<(), RedisError> {
        let payload = format!(
            "{PREFIX}{}",
            serde_json::to_string(message).unwrap_or_default()
        );
        pubsub::publish(&self.pool, &keys::session_channel(session), &payload).await
    }

    /// Starts receiving the session's messages; returns once Redis confirmed the subscription
    /// (or its deadline passed), so nothing published afterwards is missed.
    pub async fn listen(&self, session: &SessionId) -> BusListener {
        BusListener {
            subscription: self
                .subscriber
                .subscribe(&keys::session_channel(session))
                .await,
        }
    }
}

impl Bus {
    /// Tells every replica (this one too) that `change` happened.
    pub async fn announce(&self, change: &Change) -> Result<(), RedisError> {
        let payload = serde_json::to_string(change).unwrap_or_default();
        pubsub::publish(&self.pool, keys::CHANGES_CHANNEL, &payload).await
    }

    /// Sends `message` to `replica` alone.
    pub async fn to_replica(
        &self,
        replica: &str,
        message: &ReplicaMessage,
    ) -> Result<(), RedisError> {
        let payload = serde_json::to_string(message).unwrap_or_default();
        pubsub::publish(&self.pool, &keys::replica_channel(replica), &payload).await
    }

    /// Starts receiving what other replicas send `replica` (see [`Bus::listen`]).
    pub async fn replica_inbox(&self, replica: &str) -> Subscription {
        self.subscriber
            .subscribe(&keys::replica_channel(replica))
            .await
    }

    /// Starts receiving the fleet's changes (see [`Bus::listen`]).
    pub async fn hear_changes(&self) -> Subscription {
        self.subscriber.subscribe(keys::CHANGES_CHANNEL).await
    }
}

/// The messages of one session, as one exchange sees them.
pub struct BusListener {
    subscription: Subscription,
}

impl BusListener {
    /// The next routed message; other traffic on the channel is skipped.
    pub async fn next(&mut self) -> BusMessage {
        loop {
            if let Notification::Message(payload) = self.subscription.recv().await
                && let Some(json) = payload.strip_prefix(PREFIX)
                && let Ok(message) = serde_json::from_str(json)
            {
                return message;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_round_trip_through_their_wire_form() {
        let answer = BusMessage::Answer {
            replica: "r1".into(),
            upstream: "local".into(),
            id: RequestId::Number(3),
            outcome: Ok(json!({"content": []})),
        };
        let wire = serde_json::to_string(&answer).unwrap();
        assert_eq!(serde_json::from_str::<BusMessage>(&wire).unwrap(), answer);
        let cancel = BusMessage::Cancel {
            request: RequestId::String("a".into()),
        };
        let wire = serde_json::to_string(&cancel).unwrap();
        assert!(wire.contains("\"kind\":\"cancel\""));
    }
}

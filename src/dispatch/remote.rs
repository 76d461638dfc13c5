//! Requests only one replica can run: what lives in a stdio upstream's child (a task it
//! created) is known to that replica's child alone, each replica running its own.
//!
//! The replica that gets such a request sends it to the replica that holds it, on that
//! replica's channel (`Bus::to_replica`), and waits for the answer on its own. Every replica
//! of a fleet serves its channel from start ([`serve_inbox`]): it runs what it is asked on its
//! child and sends the outcome back, and it hands answers to the requests waiting here.
//!
//! Bounds: at most [`MAX_WAITING`] requests wait here for another replica at once (beyond:
//! -32000); each waits the upstream's timeout and [`GRACE`] more, then fails saying the
//! replica holding it did not answer (it may have stopped, and what it held with it).

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use rand::Rng;
use rmcp::model::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use super::RpcError;
use super::forward::upstream_failure;
use super::{Gateway, Outcome, error_object};
use crate::protocol::jsonrpc::{Message, Request, request_value};
use crate::redis::pubsub::{Notification, Subscription};
use crate::session::{SessionId, UpstreamSession};
use crate::sync::lock;
use crate::upstream::{CallContext, Upstream, response_of};

/// Requests waiting here for another replica at once.
pub const MAX_WAITING: usize = 1024;
/// How much longer than the upstream's timeout a request waits for the replica running it.
pub const GRACE: Duration = Duration::from_secs(5);

/// What travels on a replica's channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplicaMessage {
    /// Run `request` on `upstream` here, and answer `from` under `reply`.
    Run {
        from: String,
        reply: String,
        upstream: String,
        request: Value,
    },
    /// The outcome of the request sent under `reply`.
    Ran { reply: String, outcome: Outcome },
}

/// The requests of this replica waiting for another one, by reply id.
#[derive(Default)]
pub(super) struct Waiting {
    replies: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
}

impl Waiting {
    fn wait(&self, reply: &str) -> Option<oneshot::Receiver<Outcome>> {
        let mut replies = lock(&self.replies);
        if replies.len() >= MAX_WAITING {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        replies.insert(reply.to_owned(), sender);
        Some(receiver)
    }

    fn answer(&self, reply: &str, outcome: Outcome) {
        if let Some(sender) = lock(&self.replies).remove(reply) {
            let _ = sender.send(outcome);
        }
    }

    fn forget(&self, reply: &str) {
        lock(&self.replies).remove(reply);
    }
}

impl Gateway {
    /// Runs `request` on `upstream` on `replica`, which holds what it is about.
    pub(super) async fn run_on(
        &self,
        replica: &str,
        upstream: &Upstream,
        request: Request,
    ) -> Outcome {
        if replica == self.signer.replica() {
            return self.run_here(&upstream.name, request).await;
        }
        let Some(bus) = &self.bus else {
            return Err(gone(replica));
        };
        let reply = reply_id();
        let Some(answer) = self.remote.wait(&reply) else {
            let message = format!(
                "Too Many Requests: {MAX_WAITING} requests wait for other replicas already; retry later"
            );
            return Err(error_object(crate::limits::LimitExceeded::CODE, message));
        };
        let run = ReplicaMessage::Run {
            from: self.signer.replica().to_owned(),
            reply: reply.clone(),
            upstream: upstream.name.clone(),
            request: request_value(&request.id, &request.method, request.params.as_ref()),
        };
        if let Err(error) = bus.to_replica(replica, &run).await {
            tracing::warn!(%error, "could not send a request to the replica holding its upstream's state");
        }
        let outcome = tokio::time::timeout(upstream.timeout + GRACE, answer).await;
        self.remote.forget(&reply);
        match outcome {
            Ok(Ok(outcome)) => outcome,
            _ => Err(gone(replica)),
        }
    }

    /// Runs `request` on this replica's connection to `upstream` and waits for its answer.
    async fn run_here(&self, upstream: &str, request: Request) -> Outcome {
        let upstream = self.upstreams().by_name(upstream).ok_or_else(|| {
            error_object(ErrorCode::INVALID_PARAMS, "unknown upstream".to_owned())
        })?;
        let ctx = CallContext {
            session: SessionId::generate(),
            upstream_session: UpstreamSession::default(),
        };
        let messages = upstream
            .request(&ctx, &request)
            .await
            .map_err(|error| upstream_failure(&error))?;
        let answered = tokio::time::timeout(upstream.timeout, response_of(messages)).await;
        match answered {
            Ok(Some(outcome)) => outcome,
            _ => Err(error_object(
                ErrorCode::INTERNAL_ERROR,
                format!("upstream {} did not answer", upstream.name),
            )),
        }
    }

    /// Acts on one message of this replica's channel.
    async fn on_inbox(&self, message: ReplicaMessage) {
        match message {
            ReplicaMessage::Ran { reply, outcome } => self.remote.answer(&reply, outcome),
            ReplicaMessage::Run {
                from,
                reply,
                upstream,
                request,
            } => {
                let outcome = match Message::from_value(request) {
                    Ok(Message::Request(request)) => self.run_here(&upstream, request).await,
                    _ => Err(error_object(ErrorCode::INVALID_REQUEST, "not a request")),
                };
                if let Some(bus) = &self.bus
                    && let Err(error) = bus
                        .to_replica(&from, &ReplicaMessage::Ran { reply, outcome })
                        .await
                {
                    tracing::warn!(%error, "could not answer another replica's request");
                }
            }
        }
    }
}

/// Serves this replica's channel until the gateway is gone: each request runs in a task of its
/// own, so a slow upstream holds up nothing else.
pub(super) async fn serve_inbox(gateway: Weak<Gateway>) {
    let Some(mut inbox) = subscribe(&gateway).await else {
        return;
    };
    loop {
        let Notification::Message(payload) = inbox.recv().await else {
            continue;
        };
        let Ok(message) = serde_json::from_str::<ReplicaMessage>(&payload) else {
            continue;
        };
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        tokio::spawn(async move { gateway.on_inbox(message).await });
    }
}

async fn subscribe(gateway: &Weak<Gateway>) -> Option<Subscription> {
    let gateway = gateway.upgrade()?;
    let bus = gateway.bus.as_ref()?;
    Some(bus.replica_inbox(gateway.signer.replica()).await)
}

/// The error of a request whose replica did not answer.
fn gone(replica: &str) -> RpcError {
    error_object(
        ErrorCode::INTERNAL_ERROR,
        format!(
            "replica {replica}, which holds what this request is about, did not answer (it may have stopped, and its stdio upstreams' state with it)"
        ),
    )
}

/// A fresh reply id.
fn reply_id() -> String {
    format!("{:016x}", rand::rng().next_u64())
}

//! One exchange with an upstream: relaying its messages until the response arrives. The
//! upstream's timeout restarts with every message it sends, so a long call that reports
//! progress is not cut off.
//!
//! In a fleet, the client's answer to a server-to-client request, or its cancellation, may
//! reach another replica; that replica sends it over the session's [`Bus`](super::bus::Bus),
//! and the exchange listens there. It starts listening before it relays a server-to-client
//! request (so a quick answer is not missed) or once it has run for [`LISTEN_AFTER`] (so long
//! calls can be cancelled from anywhere); quick calls never touch pub/sub.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::RpcError;
use super::bus::{BusListener, BusMessage};
use super::capabilities::{ClientCapabilities, refuse, refuse_unbridged};
use super::forward::upstream_failure;
use super::request_state::Binding;
use super::suspended::Suspension;
use super::{Gateway, Outbox, Outcome, Outgoing};
use crate::events::Origin;
use crate::protocol::jsonrpc::{Message, RequestId, Response};
use crate::upstream::{CallContext, Replies, Upstream, UpstreamError, UpstreamEvent};

/// A call running this long starts listening for cancellations from other replicas.
const LISTEN_AFTER: Duration = Duration::from_secs(1);

/// What one turn of the exchange brought.
enum Turn {
    Upstream(Option<UpstreamEvent>),
    TimedOut,
    Routed(BusMessage),
    Listen,
}

/// What becomes of one upstream message.
enum Verdict {
    /// It goes to the client.
    Relay,
    /// It was refused to the upstream; the exchange goes on.
    Refused,
    /// The call ends with this error.
    Fail(RpcError),
    /// The call waits for a modern client's input, its new state bound as this.
    Suspend(Binding),
}

/// The exchange's view of cross-replica traffic.
struct Routing {
    listener: Option<BusListener>,
    /// Server-to-client requests relayed by this exchange, by the upstream's id.
    relayed: HashSet<RequestId>,
    /// When a call that has not needed the bus yet starts listening anyway.
    listen_at: tokio::time::Instant,
}

impl Gateway {
    /// Relays `messages` to `outbox` until the upstream's response, which it returns. What the
    /// session's client did not declare a capability for is refused instead of relayed.
    pub(super) async fn exchange(
        &self,
        ctx: &CallContext,
        capabilities: &ClientCapabilities,
        upstream: &Arc<Upstream>,
        id: &RequestId,
        mut messages: Replies,
        outbox: &Outbox,
    ) -> Outcome {
        let guard = CancelOnDrop {
            upstream,
            ctx,
            id,
            armed: true,
        };
        let mut routing = Routing {
            listener: None,
            relayed: HashSet::new(),
            listen_at: tokio::time::Instant::now() + LISTEN_AFTER,
        };
        loop {
            let event = self
                .next_event(ctx, upstream, &mut messages, &mut routing)
                .await?;
            match self.judge(capabilities, upstream, ctx, &event).await {
                Verdict::Relay => {}
                Verdict::Refused => continue,
                Verdict::Fail(error) => return Err(error),
                Verdict::Suspend(binding) => {
                    let UpstreamEvent::Message(Message::Request(asked)) = event else {
                        continue;
                    };
                    guard.disarm();
                    let suspension = Suspension {
                        ctx: ctx.clone(),
                        upstream: upstream.clone(),
                        id: id.clone(),
                        asked,
                        messages,
                        capabilities: capabilities.clone(),
                        binding,
                    };
                    let listener = self.resume_listener(&ctx.session).await;
                    return self.suspend(suspension, listener);
                }
            }
            if let UpstreamEvent::Message(Message::Response(response)) = event {
                guard.disarm();
                return response.outcome;
            }
            let outgoing = self.outgoing(ctx, upstream, &mut routing, event).await;
            let _ = outbox.send(outgoing).await;
        }
    }

    /// The upstream's next event. Meanwhile it acts on what other replicas route here, and
    /// starts listening for that once the call has run [`LISTEN_AFTER`]. An error when the
    /// upstream ends the exchange without a response or stays silent for its whole timeout.
    async fn next_event(
        &self,
        ctx: &CallContext,
        upstream: &Upstream,
        messages: &mut Replies,
        routing: &mut Routing,
    ) -> Result<UpstreamEvent, RpcError> {
        loop {
            let can_listen = self.bus.is_some() && routing.listener.is_none();
            let turn = tokio::select! {
                next = tokio::time::timeout(upstream.timeout, messages.recv()) => {
                    next.map_or(Turn::TimedOut, Turn::Upstream)
                }
                routed = next_routed(&mut routing.listener) => Turn::Routed(routed),
                () = tokio::time::sleep_until(routing.listen_at), if can_listen => Turn::Listen,
            };
            let error = match turn {
                Turn::Upstream(Some(event)) => return Ok(event),
                Turn::Upstream(None) => UpstreamError::Protocol {
                    upstream: upstream.name.clone(),
                    reason: "the exchange ended without a response".into(),
                },
                Turn::TimedOut => UpstreamError::Timeout {
                    upstream: upstream.name.clone(),
                    after: upstream.timeout,
                },
                Turn::Routed(message) => {
                    self.on_routed(ctx, upstream, routing, message).await;
                    continue;
                }
                Turn::Listen => {
                    self.start_listening(ctx, routing).await;
                    continue;
                }
            };
            return Err(upstream_failure(&error));
        }
    }

    /// What the client gets for an upstream event other than the response; a relayed
    /// server-to-client request is remembered, and starts listening for its answer.
    async fn outgoing(
        &self,
        ctx: &CallContext,
        upstream: &Upstream,
        routing: &mut Routing,
        event: UpstreamEvent,
    ) -> Outgoing {
        match event {
            UpstreamEvent::Message(Message::Request(request)) => {
                self.start_listening(ctx, routing).await;
                routing.relayed.insert(request.id.clone());
                let request = Message::Request(request);
                Outgoing::Message(self.relayed(&ctx.session, &upstream.name, request))
            }
            UpstreamEvent::Message(other) => {
                Outgoing::Message(self.relayed(&ctx.session, &upstream.name, other))
            }
            UpstreamEvent::Paused => Outgoing::Pause,
            UpstreamEvent::Position(event_id) => Outgoing::Position(Origin {
                upstream: upstream.name.clone(),
                event_id,
            }),
        }
    }

    /// What becomes of an upstream message, by what the client declared and its era; a
    /// refused request is answered to the upstream here.
    async fn judge(
        &self,
        capabilities: &ClientCapabilities,
        upstream: &Upstream,
        ctx: &CallContext,
        event: &UpstreamEvent,
    ) -> Verdict {
        let UpstreamEvent::Message(message) = event else {
            return Verdict::Relay;
        };
        let allowed = capabilities.allows(message);
        match (message, allowed) {
            (Message::Request(_), Err(missing)) if !capabilities.relays_requests() => {
                Verdict::Fail(missing.required_error())
            }
            (_, Err(missing)) => {
                refuse(upstream, ctx, message, &missing).await;
                Verdict::Refused
            }
            (Message::Request(_), Ok(())) if !capabilities.relays_requests() => {
                match capabilities.suspends() {
                    Some(binding) => Verdict::Suspend(binding.clone()),
                    None => {
                        refuse_unbridged(upstream, ctx, message).await;
                        Verdict::Refused
                    }
                }
            }
            (_, Ok(())) => Verdict::Relay,
        }
    }

    async fn start_listening(&self, ctx: &CallContext, routing: &mut Routing) {
        if let (Some(bus), None) = (&self.bus, &routing.listener) {
            routing.listener = Some(bus.listen(&ctx.session).await);
        }
    }

    /// Acts on a message another replica routed here.
    async fn on_routed(
        &self,
        ctx: &CallContext,
        upstream: &Upstream,
        routing: &Routing,
        message: BusMessage,
    ) {
        match message {
            BusMessage::Answer {
                replica,
                upstream: name,
                id,
                outcome,
            } if replica == self.signer.replica()
                && name == upstream.name
                && routing.relayed.contains(&id) =>
            {
                let answer = Message::Response(Response { id, outcome });
                if let Err(error) = upstream.send(ctx, answer).await {
                    tracing::warn!(%error, "could not deliver a routed answer upstream");
                }
            }
            BusMessage::Cancel { request } => {
                self.hub.cancel(&ctx.session, &request);
            }
            BusMessage::Answer { .. }
            | BusMessage::Resume { .. }
            | BusMessage::Claimed { .. }
            | BusMessage::Relayed { .. }
            | BusMessage::Resumed { .. } => {}
        }
    }
}

/// The next routed message, or never when not listening.
async fn next_routed(listener: &mut Option<BusListener>) -> BusMessage {
    match listener {
        Some(listener) => listener.next().await,
        None => std::future::pending().await,
    }
}

/// Tells the upstream to stop when the exchange is abandoned (client cancel, timeout, DELETE).
struct CancelOnDrop<'a> {
    upstream: &'a Arc<Upstream>,
    ctx: &'a CallContext,
    id: &'a RequestId,
    armed: bool,
}

impl CancelOnDrop<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (upstream, ctx, id) = (self.upstream.clone(), self.ctx.clone(), self.id.clone());
        tokio::spawn(async move { upstream.cancel(&ctx, &id, "cancelled by mcpgate").await });
    }
}

//! `subscriptions/listen` (2026-07-28): the client's one long-lived request for change
//! notifications, fanned in from the upstreams that speak 2026-07-28.
//!
//! Each such upstream that can honour part of the filter (by its capabilities) gets a listen
//! request of its own, for that part. The client's acknowledgement names the union of what
//! the upstreams acknowledged; then every notification they send that the client's filter
//! admits is relayed, tagged with the client's subscription id. The stream lives in this
//! request alone, so any replica can serve it; when the client closes it, the upstream
//! streams are cancelled (`exchange.rs`'s guard is not used: a listen request has no
//! response to wait for and no timeout). When every upstream stream has ended, the request
//! ends with a complete result.
//!
//! Legacy upstreams have no listen streams: their list changes (and the gateway's own, when an
//! upstream comes back up) come from the gateway's change feed (`changes.rs`), heard on every
//! replica, and the acknowledgement includes the lists their capabilities announce changes of.
//! Such a stream lasts until the client closes it, or until this replica starts draining: then
//! it ends with its complete result, and the client listens again on another replica.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;
use rmcp::model::ErrorCode;
use serde_json::{Value, json};

use super::changes::{ChangeReceiver, Heard};
use super::{Gateway, Outbox, Outcome, Outgoing, Session, error_object};
use crate::protocol::jsonrpc::{Message, Notification, Request, RequestId};
use crate::protocol::listen::{self, ListenFilter};
use crate::protocol::{Method, ModernRequest};
use crate::session::UpstreamSession;
use crate::upstream::{CallContext, Replies, Upstream, UpstreamEvent};

/// Longest wait for an upstream's acknowledgement; one that does not come in time is left out.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// One upstream's listen stream, cancelled upstream when dropped.
struct UpstreamListen {
    upstream: Arc<Upstream>,
    ctx: CallContext,
    id: RequestId,
}

impl Drop for UpstreamListen {
    fn drop(&mut self) {
        let (upstream, ctx, id) = (self.upstream.clone(), self.ctx.clone(), self.id.clone());
        tokio::spawn(async move {
            upstream
                .cancel(&ctx, &id, "the client closed its listen stream")
                .await
        });
    }
}

impl Gateway {
    /// Serves a listen request until every upstream stream ends (and no legacy upstream is
    /// listened to) or the client goes away.
    pub(super) async fn listen(
        &self,
        session: &Session,
        request: Request,
        filter: ListenFilter,
        outbox: &Outbox,
    ) -> Outcome {
        let Some(modern) = session.modern.as_deref() else {
            let message = "subscriptions/listen belongs to protocol 2026-07-28; this session uses resources/subscribe and its GET stream";
            return Err(error_object(ErrorCode::METHOD_NOT_FOUND, message));
        };
        let mut honoured = ListenFilter::default();
        let mut streams = SelectAll::new();
        let mut guards = Vec::new();
        let mut legacy = LegacyLists::default();
        let mut watching = Vec::new();
        for upstream in self.upstreams_for(session, &Method::Listen) {
            if !upstream.speaks_modern().await {
                if legacy.add(&upstream, &filter) {
                    watching.extend(self.watch_shared_stream(session, &upstream).await);
                }
                continue;
            }
            if let Some((acked, messages, guard)) =
                self.open_listen(modern, &upstream, &request, &filter).await
            {
                honoured.merge(&acked);
                streams.push(Box::pin(stream_of(messages)));
                guards.push(guard);
            }
        }
        honoured.merge(&legacy.lists);
        let mut changes = match legacy.names.is_empty() {
            true => None,
            false => Some(self.hear_changes().await),
        };
        let ack = listen::acknowledgement(&request.id, &honoured);
        let _ = outbox.send(Outgoing::Message(ack)).await;
        let draining = self.hub.draining();
        while !streams.is_empty() || changes.is_some() {
            let notifications = tokio::select! {
                event = streams.next(), if !streams.is_empty() => upstream_notification(event),
                heard = next_heard(&mut changes) => legacy.notifications(heard),
                () = outbox.closed() => break,
                () = draining.cancelled() => break,
            };
            for mut notification in notifications {
                let method = Method::parse(&notification.method);
                if !honoured.admits(&method, notification.params.as_ref()) {
                    continue;
                }
                let params = notification.params.get_or_insert_with(|| json!({}));
                listen::tag(params, &request.id);
                let relayed = Outgoing::Message(Message::Notification(notification).to_value());
                let _ = outbox.send(relayed).await;
            }
        }
        drop((guards, watching));
        let mut result = json!({});
        listen::tag(&mut result, &request.id);
        Ok(result)
    }

    /// Opens `upstream`'s listen stream for what it can honour of `filter`; `None` when it
    /// honours nothing, does not speak 2026-07-28, or does not acknowledge in time.
    async fn open_listen(
        &self,
        modern: &ModernRequest,
        upstream: &Arc<Upstream>,
        request: &Request,
        filter: &ListenFilter,
    ) -> Option<(ListenFilter, Replies, UpstreamListen)> {
        let wanted = filter.honoured_by(&upstream.last_init()?.capabilities);
        if wanted.is_empty() || !upstream.speaks_modern().await {
            return None;
        }
        let ctx = CallContext {
            session: crate::session::SessionId::generate(),
            upstream_session: UpstreamSession::modern(),
        };
        let params = json!({"_meta": modern.meta(), "notifications": wanted.to_value()});
        let upstream_request = Request {
            id: request.id.clone(),
            method: request.method.clone(),
            params: Some(params),
        };
        let mut messages = upstream.request(&ctx, &upstream_request).await.ok()?;
        let guard = UpstreamListen {
            upstream: upstream.clone(),
            ctx,
            id: request.id.clone(),
        };
        let acked = tokio::time::timeout(ACK_TIMEOUT, acknowledged(&mut messages))
            .await
            .ok()??;
        let acked = ListenFilter::parse(Some(&acked)).unwrap_or_default();
        Some((acked.intersect(&wanted), messages, guard))
    }
}

/// Waits for an upstream's acknowledgement and reads what it honours.
async fn acknowledged(messages: &mut Replies) -> Option<Value> {
    loop {
        match messages.recv().await? {
            UpstreamEvent::Message(Message::Notification(n))
                if Method::parse(&n.method) == Method::SubscriptionsAcknowledged =>
            {
                return Some(n.params.unwrap_or_default());
            }
            UpstreamEvent::Message(Message::Response(_)) => return None,
            _ => {}
        }
    }
}

/// The legacy upstreams a listen stream hears through the gateway's change feed, and the
/// lists it hears of them (list changes only: their resource updates follow
/// `resources/subscribe`, which a listen stream does not make).
#[derive(Default)]
struct LegacyLists {
    names: HashSet<String>,
    lists: ListenFilter,
}

impl LegacyLists {
    /// Adds what `upstream` can tell of `filter`; whether it can tell anything.
    fn add(&mut self, upstream: &Upstream, filter: &ListenFilter) -> bool {
        let Some(init) = upstream.last_init() else {
            return false;
        };
        let mut lists = filter.honoured_by(&init.capabilities);
        lists.uris.clear();
        if lists.is_empty() {
            return false;
        }
        self.names.insert(upstream.name.clone());
        self.lists.merge(&lists);
        true
    }

    /// What the client hears of `heard`: the change of a legacy upstream it listens to, or,
    /// after a gap, a change of every list it hears of them.
    fn notifications(&self, heard: Heard) -> Vec<Notification> {
        let methods = match heard {
            Heard::Change(change) if self.names.contains(&change.upstream) => vec![change.method],
            Heard::Change(_) => Vec::new(),
            Heard::Gap => [
                (self.lists.tools, Method::ToolsListChanged),
                (self.lists.prompts, Method::PromptsListChanged),
                (self.lists.resources, Method::ResourcesListChanged),
            ]
            .into_iter()
            .filter(|(listened, _)| *listened)
            .map(|(_, method)| method.as_str().to_owned())
            .collect(),
        };
        methods
            .into_iter()
            .map(|method| Notification {
                method,
                params: None,
            })
            .collect()
    }
}

/// The notification in an upstream's listen stream event, if it is one.
fn upstream_notification(event: Option<UpstreamEvent>) -> Vec<Notification> {
    match event {
        Some(UpstreamEvent::Message(Message::Notification(notification))) => vec![notification],
        _ => Vec::new(),
    }
}

/// What the change feed says next, or never without one.
async fn next_heard(changes: &mut Option<ChangeReceiver>) -> Heard {
    match changes {
        Some(changes) => changes.next().await,
        None => std::future::pending().await,
    }
}

/// A receiver as a stream.
fn stream_of(messages: Replies) -> impl futures::Stream<Item = UpstreamEvent> {
    futures::stream::unfold(messages, |mut messages| async move {
        messages.recv().await.map(|event| (event, messages))
    })
}

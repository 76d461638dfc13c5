//! Messages upstreams send outside any request: list changes, resource updates, and anything
//! an HTTP upstream sends on its GET stream. They come through the bounded queue of
//! `upstream/outlet.rs` (which merges list changes, applies each upstream's rate and says what
//! happens when the queue is full) and are appended to the standalone stream of every session
//! that should see them, where an open GET delivers them, or they wait. List changes are also
//! announced to listen streams (`changes.rs`); that is all that becomes of a message for a
//! stateless id (a shared upstream session's stream held for listen streams, `watch.rs`).

use std::sync::{Arc, Weak};

use serde_json::Value;

use super::Gateway;
use crate::events::{Origin, StreamKey};
use crate::protocol::Method;
use crate::protocol::jsonrpc::Message;
use crate::session::SessionId;
use crate::upstream::{Unsolicited, UnsolicitedQueue};

/// Runs until every upstream is gone.
pub(super) async fn relay(gateway: Weak<Gateway>, mut messages: UnsolicitedQueue) {
    while let Some(unsolicited) = messages.recv().await {
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        gateway.deliver_unsolicited(unsolicited).await;
    }
}

impl Gateway {
    /// Logs an upstream message for every session that should see it, and tells a waiting
    /// sender whether that worked.
    async fn deliver_unsolicited(self: &Arc<Self>, mut unsolicited: Unsolicited) {
        if let Message::Notification(notification) = &unsolicited.message {
            self.announce_change(&unsolicited.upstream, &notification.method)
                .await;
        }
        let logged = unsolicited.logged.take();
        let stateless = unsolicited
            .session
            .as_ref()
            .is_some_and(super::stateless::is_stateless_id);
        let ok = stateless || self.log_unsolicited(unsolicited).await;
        if let Some(logged) = logged {
            let _ = logged.send(ok);
        }
    }

    /// Appends the message to the standalone stream of its audience; `false` when an append
    /// failed (the event log is unavailable). A message refused for a session counts as done.
    async fn log_unsolicited(self: &Arc<Self>, unsolicited: Unsolicited) -> bool {
        let uri = resource_uri(&unsolicited.message);
        let audience: Vec<SessionId> = match &unsolicited.session {
            Some(session) if !self.admits_unsolicited(session, &unsolicited).await => return true,
            Some(session) => vec![session.clone()],
            None if matches!(unsolicited.message, Message::Request(_)) => return true,
            None => self.hub.audience(uri.as_deref()),
        };
        let mut all_logged = true;
        let origin = unsolicited.event_id.map(|event_id| Origin {
            upstream: unsolicited.upstream.clone(),
            event_id,
        });
        for session in audience {
            let value = self.relayed(&session, &unsolicited.upstream, unsolicited.message.clone());
            let key = StreamKey::standalone(session);
            let appended = self
                .events
                .append_from(&key, value.to_string(), origin.as_ref())
                .await;
            if let Err(error) = appended {
                tracing::warn!(%error, "could not queue an unsolicited message");
                all_logged = false;
            }
        }
        all_logged
    }
}

/// The URI of a `notifications/resources/updated`: a shared stdio child's update goes to the
/// sessions of this replica that subscribed to it. An HTTP upstream's update names its session
/// already (the upstream tracks the subscription, wherever the client made it).
fn resource_uri(message: &Message) -> Option<String> {
    let Message::Notification(n) = message else {
        return None;
    };
    if Method::parse(&n.method) != Method::ResourceUpdated {
        return None;
    }
    n.params
        .as_ref()?
        .get("uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

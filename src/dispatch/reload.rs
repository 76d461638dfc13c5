//! Live reload of the upstreams: the new set swaps in once its new stdio children finished
//! their first start (at most [`SETTLE_LIMIT`]; requests under way keep the set they started
//! with), the removed and replaced upstreams retire in the background once
//! their requests finish, and every session of this replica hears that its lists changed.

use std::sync::Arc;
use std::time::Duration;

use super::Gateway;
use crate::config::UpstreamConfig;
use crate::protocol::jsonrpc::{Message, Notification};
use crate::upstream::{UpstreamChanges, UpstreamError, Upstreams};

/// Longest wait for new stdio children to start before the new set serves anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// The list changes a reload announces for each upstream it touched.
const LIST_CHANGES: [&str; 3] = [
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
];

impl Gateway {
    /// The upstreams as configured now.
    pub(super) fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams.load_full()
    }

    /// Applies a new `[[upstreams]]` list; the running set stays when one cannot be built.
    pub async fn reload_upstreams(
        &self,
        configs: &[UpstreamConfig],
    ) -> Result<UpstreamChanges, UpstreamError> {
        let reconciled = self.upstreams().reconcile(configs, &self.sink)?;
        if reconciled.changes.is_empty() {
            return Ok(reconciled.changes);
        }
        reconciled.upstreams.settle(SETTLE_LIMIT).await;
        self.upstreams.store(Arc::new(reconciled.upstreams));
        for upstream in reconciled.retired {
            tokio::spawn(async move { upstream.retire().await });
        }
        for name in &reconciled.changes.removed {
            self.metrics.forget_upstream(name);
        }
        self.announce_reload(&reconciled.changes);
        Ok(reconciled.changes)
    }

    /// Tells the sessions of this replica (and listen streams, through the fleet's change
    /// channel) that the lists of every upstream the reload touched changed.
    fn announce_reload(&self, changes: &UpstreamChanges) {
        for name in changes.names() {
            let outlet = self.sink.outlet(name, std::num::NonZeroU32::MAX);
            for method in LIST_CHANGES {
                let message = Message::Notification(Notification {
                    method: method.into(),
                    params: None,
                });
                outlet.broadcast(message, 0);
            }
        }
    }
}

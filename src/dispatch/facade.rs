//! What the layers above `dispatch/` (`http/`, `delivery/`, `main.rs`) may use of the
//! [`Gateway`] besides serving requests: its metrics, reading the event log, the replica's
//! record of open streams and of draining, and the health of what it depends on. Everything
//! else of its state stays private to `dispatch/`.

use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::events::EventLog;
use crate::session::{SessionId, SessionRecord, StoreError};
use crate::telemetry::Metrics;

impl Gateway {
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The event log, for delivery to read streams out of (and to open them).
    pub fn event_log(&self) -> &dyn EventLog {
        self.events.as_ref()
    }

    /// Notes an open SSE stream of `session` here; ended by [`Gateway::stream_closed`].
    pub fn stream_opened(&self, session: &SessionId) {
        self.hub.stream_opened(session);
    }

    pub fn stream_closed(&self, session: &SessionId) {
        self.hub.stream_closed(session);
    }

    /// Ties a response stream to `session`: the token is cancelled when the session ends here.
    pub fn attach_stream(&self, session: &SessionId, record: &SessionRecord) -> CancellationToken {
        self.hub.attach(session, record).0
    }

    /// Makes this the session's standalone stream on this replica; the token is cancelled
    /// when the session ends or a newer GET takes the stream over.
    pub fn claim_standalone(&self, session: &SessionId) -> CancellationToken {
        self.hub.claim_standalone(session)
    }

    /// Starts draining: open streams end with a resume hint, listen streams with their result.
    pub fn drain(&self) {
        self.hub.drain();
    }

    /// Cancelled once draining started.
    pub fn draining(&self) -> CancellationToken {
        self.hub.draining()
    }

    /// Whether requests or held upstream streams still keep this replica busy.
    pub fn is_busy(&self) -> bool {
        self.hub.requests_in_flight() > 0 || self.hub.streams_held() > 0
    }

    /// Waits (at most `limit`) for the upstreams to be reachable at start.
    pub async fn settle_upstreams(&self, limit: std::time::Duration) {
        self.upstreams().settle(limit).await;
    }

    /// Whether each upstream is reachable, by name.
    pub fn upstream_health(&self) -> Vec<(String, bool)> {
        self.upstreams()
            .iter()
            .map(|upstream| (upstream.name.clone(), upstream.is_healthy()))
            .collect()
    }

    /// Checks the session store answers.
    pub async fn ping_store(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

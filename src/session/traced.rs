//! A span per session store operation (`session.load`, `session.update`, …), around any
//! [`SessionStore`], for operations made inside a traced span (a client's request): background
//! work (lease renewals, readiness probes, expiry checks) starts no trace of its own. The spans
//! are recorded only while traces are exported ([`crate::telemetry::Tracing::layer`]).
//!
//! Attributes: `db.system.name` (`redis`, or `memory`), `db.operation.name`, and on failure
//! `error.type` (`unavailable`, `corrupt`, `newer_schema`) with an error status; a Redis
//! operation is a client span. The session id is never recorded: the request's span carries
//! its tag.

use async_trait::async_trait;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::{
    Claimed, Hold, LeaseWanted, Lookup, RecordChange, SessionId, SessionRecord, SessionStore,
    StoreError, StreamLease, UpstreamSession,
};

/// Traces the operations of the store it wraps.
pub struct TracedStore<S> {
    inner: S,
    /// `db.system.name`.
    system: &'static str,
}

impl<S: SessionStore> TracedStore<S> {
    /// Wraps `inner`, a store of kind `system` (`redis` or `memory`).
    pub fn new(inner: S, system: &'static str) -> Self {
        Self { inner, system }
    }

    /// The span of one operation, or none outside a traced span.
    fn span(&self, operation: &'static str) -> Span {
        if Span::current().is_none() {
            return Span::none();
        }
        let kind = if self.system == "memory" {
            "internal"
        } else {
            "client"
        };
        tracing::info_span!(
            "session store",
            otel.name = format!("session.{operation}"),
            otel.kind = kind,
            otel.status_code = Empty,
            db.system.name = self.system,
            db.operation.name = operation,
            error.type = Empty,
        )
    }

    /// Runs one operation of the inner store inside its span.
    async fn traced<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let span = self.span(operation);
        let result = work.instrument(span.clone()).await;
        if let Err(error) = &result {
            let kind = match error {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Corrupt(_) => "corrupt",
                StoreError::NewerSchema { .. } => "newer_schema",
            };
            span.record("error.type", kind);
            span.record("otel.status_code", "error");
        }
        result
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for TracedStore<S> {
    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        self.traced("create", self.inner.create(id, record)).await
    }

    async fn load(&self, id: &SessionId) -> Result<Lookup, StoreError> {
        self.traced("load", self.inner.load(id)).await
    }

    async fn update(&self, id: &SessionId, change: &RecordChange) -> Result<(), StoreError> {
        self.traced("update", self.inner.update(id, change)).await
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.traced("delete", self.inner.delete(id)).await
    }

    async fn exists(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.traced("exists", self.inner.exists(id)).await
    }

    async fn notice_gone(&self, id: &SessionId) -> Result<Option<Lookup>, StoreError> {
        self.traced("notice_gone", self.inner.notice_gone(id)).await
    }

    async fn hold(
        &self,
        id: &SessionId,
        upstream: &str,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<Hold, StoreError> {
        self.traced("hold", self.inner.hold(id, upstream, holder, lease))
            .await
    }

    async fn renew_holds(
        &self,
        streams: &[StreamLease],
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<Vec<Hold>, StoreError> {
        self.traced(
            "renew_holds",
            self.inner.renew_holds(streams, holder, lease),
        )
        .await
    }

    async fn claim_upstream(
        &self,
        id: &SessionId,
        upstream: &str,
        session: &UpstreamSession,
        lease: Option<LeaseWanted<'_>>,
    ) -> Result<Claimed, StoreError> {
        self.traced(
            "claim_upstream",
            self.inner.claim_upstream(id, upstream, session, lease),
        )
        .await
    }

    async fn holders(
        &self,
        id: &SessionId,
        upstreams: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        self.traced("holders", self.inner.holders(id, upstreams))
            .await
    }

    async fn release(
        &self,
        id: &SessionId,
        upstream: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        self.traced("release", self.inner.release(id, upstream, holder))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.traced("ping", self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::session::MemoryStore;

    /// Counts the store spans opened.
    #[derive(Clone, Default)]
    struct StoreSpans(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StoreSpans {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if attrs.metadata().name() == "session store" {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[tokio::test]
    async fn only_operations_inside_a_traced_span_get_a_span() {
        let spans = StoreSpans::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
        let store = TracedStore::new(MemoryStore::new(Duration::from_secs(60)), "memory");
        let id = SessionId::generate();
        store.load(&id).await.unwrap();
        store.ping().await.unwrap();
        assert_eq!(spans.0.load(Ordering::SeqCst), 0);
        let request = tracing::info_span!("request");
        store.load(&id).instrument(request).await.unwrap();
        assert_eq!(spans.0.load(Ordering::SeqCst), 1);
    }
}

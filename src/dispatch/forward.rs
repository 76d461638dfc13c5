//! Forwarding one request to one upstream: the upstream session it needs (opened, or re-opened
//! once when the upstream forgot it), and how upstream messages are rewritten for the client:
//! server-to-client requests get signed ids, and an upstream's cancellation of such a request
//! is rewritten to match. The exchange itself is in [`super::exchange`].

use std::sync::Arc;
use std::time::Instant;

use rmcp::model::ErrorCode;
use serde_json::Value;
use tracing::Instrument;

use super::RpcError;
use super::capabilities::ClientCapabilities;
use super::holder::Lease;
use super::suspended::take_retry;
use super::{Gateway, Outbox, Outcome, Session, error_object};
use crate::protocol::Method;
use crate::protocol::jsonrpc::{Message, Notification, Request, RequestId};
use crate::session::{Claimed, RecordChange, SessionId};
use crate::telemetry::mcp_spans::{self, Side};
use crate::upstream::{CallContext, Upstream, UpstreamError};

impl Gateway {
    /// Sends `request` to `upstream` for `session`, relaying intermediate messages to `outbox`.
    pub(super) async fn forward(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
        request: Request,
        outbox: &Outbox,
    ) -> Outcome {
        let started = Instant::now();
        let transport = if upstream.has_upstream_sessions() {
            "tcp"
        } else {
            "pipe"
        };
        let span = mcp_spans::upstream_span(&upstream.name, transport, &request);
        let outcome = self
            .forward_with_reopen(session, upstream, request, outbox)
            .instrument(span.clone())
            .await;
        mcp_spans::record_outcome(&span, Side::Client, &outcome);
        self.metrics.upstream_request(
            &upstream.name,
            outcome.is_ok(),
            started.elapsed().as_secs_f64(),
        );
        outcome
    }

    /// An upstream session that is gone (an HTTP upstream forgot it: 404; an SSE upstream's
    /// connection dropped, expired, or is held by another replica) is re-initialized, and the
    /// call is retried once.
    /// What a plain call on an open upstream session does not need is boxed, so that this
    /// future (moved with every request) stays small.
    async fn forward_with_reopen(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
        request: Request,
        outbox: &Outbox,
    ) -> Outcome {
        if upstream.only_modern() && !session.is_stateless() {
            return Box::pin(self.forward_for_legacy(session, upstream, request, outbox)).await;
        }
        let mut request = request;
        let mut suspend_as = None;
        if session.is_stateless() {
            if upstream.speaks_modern().await {
                return Box::pin(self.forward_modern(session, upstream, request, outbox)).await;
            }
            let binding = super::modern::binding(session, &request);
            let retry = take_retry(&mut request);
            if let Some(params) = request.params.as_mut() {
                crate::protocol::era::strip_modern_meta(params);
            }
            if let Some(state) = retry.state {
                let resumed =
                    self.resume_retry(session, upstream, &state, retry.responses, &binding, outbox);
                return Box::pin(resumed).await;
            }
            suspend_as = Some(binding);
        }
        let opens_first =
            upstream.has_upstream_sessions() || (session.is_stateless() && upstream.is_isolated());
        let ctx = match session.record.upstreams.get(&upstream.name) {
            Some(_) => self.context_for(session, &upstream.name),
            None if opens_first => {
                let open = || Box::pin(self.open_first(session, upstream));
                self.first_opens
                    .open(&session.id, &upstream.name, open)
                    .await?
            }
            None => self.context_for(session, &upstream.name),
        };
        let messages = match upstream.request(&ctx, &request).await {
            Err(UpstreamError::SessionGone { .. }) => {
                tracing::info!(upstream = %upstream.name, "upstream session ended; re-initializing it");
                self.metrics.upstream_reinitialized(&upstream.name);
                let ctx = Box::pin(self.reopen(session, upstream)).await?;
                upstream.request(&ctx, &request).await
            }
            other => other,
        };
        let messages = messages.map_err(|e| upstream_failure(&e))?;
        let declared = &session.record.client_capabilities;
        let capabilities = match suspend_as {
            Some(binding) => ClientCapabilities::modern(declared).suspending(binding),
            None => ClientCapabilities::from_declared(declared),
        };
        self.exchange(&ctx, &capabilities, upstream, &request.id, messages, outbox)
            .await
    }

    /// Opens the session's first session on `upstream`. Another request of the session may
    /// have opened one since this one loaded the record (on another replica, or just before):
    /// the first saved is kept, and the other closed. A stateless session uses this replica's
    /// shared upstream session when there is one.
    async fn open_first(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
    ) -> Result<CallContext, RpcError> {
        if session.is_stateless() {
            return match self.stateless.get(&upstream.name) {
                Some(upstream_session) => Ok(CallContext {
                    session: session.id.clone(),
                    upstream_session,
                }),
                None => self.reopen(session, upstream).await,
            };
        }
        let (upstream_session, _) = upstream
            .open_session(&session.id, &session.record)
            .await
            .map_err(|e| upstream_failure(&e))?;
        let ours = CallContext {
            session: session.id.clone(),
            upstream_session,
        };
        let claimed = self.store.claim_upstream(
            &ours.session,
            &upstream.name,
            &ours.upstream_session,
            self.stream_lease_wanted(upstream),
        );
        let lease = match claimed.await {
            Ok(Claimed::Taken(upstream_session)) => {
                upstream.close_session(&ours).await;
                return Ok(CallContext {
                    session: ours.session,
                    upstream_session,
                });
            }
            Ok(Claimed::SessionGone) => {
                upstream.close_session(&ours).await;
                return Err(error_object(ErrorCode::INTERNAL_ERROR, "the session ended"));
            }
            Ok(Claimed::Won { holding: true }) => Lease::Taken,
            Ok(Claimed::Won { holding: false }) => Lease::ToTake,
            Err(error) => {
                tracing::warn!(%error, "could not save a new upstream session");
                Lease::ToTake
            }
        };
        self.settle_upstream_session(session, upstream, &ours, lease)
            .await;
        Ok(ours)
    }

    /// Opens a new upstream session with the stored client info and saves it in the record
    /// (a stateless session's, for this replica's modern requests). An isolated stdio child
    /// restores the session's state by itself when it starts.
    pub(super) async fn reopen(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
    ) -> Result<CallContext, RpcError> {
        let shared_record;
        let record = if session.is_stateless() && upstream.has_upstream_sessions() {
            shared_record = super::stateless::shared_upstream_record(&session.record);
            &shared_record
        } else {
            &session.record
        };
        let (upstream_session, _) = upstream
            .open_session(&session.id, record)
            .await
            .map_err(|e| upstream_failure(&e))?;
        if session.is_stateless() {
            if upstream.has_upstream_sessions() {
                self.stateless
                    .remember(&upstream.name, upstream_session.clone());
            }
            return Ok(CallContext {
                session: session.id.clone(),
                upstream_session,
            });
        }
        let ctx = CallContext {
            session: session.id.clone(),
            upstream_session,
        };
        let save = self.save_upstream_session(upstream, &ctx);
        if upstream.has_upstream_sessions() {
            let settle = self.settle_upstream_session(session, upstream, &ctx, Lease::ToTake);
            tokio::join!(save, settle);
        } else {
            save.await;
        }
        Ok(ctx)
    }

    /// Names a newly opened upstream session in the record; a failure is logged, and the next
    /// request on another replica opens its own.
    async fn save_upstream_session(&self, upstream: &Upstream, ctx: &CallContext) {
        let change = RecordChange::Upstream {
            name: upstream.name.clone(),
            session: ctx.upstream_session.clone(),
        };
        if let Err(error) = self.store.update(&ctx.session, &change).await {
            tracing::warn!(%error, "could not save a re-opened upstream session");
        }
    }

    /// Puts the session's state back on a newly opened upstream session and holds its stream
    /// (while the record is saved: neither needs the other).
    async fn settle_upstream_session(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
        ctx: &CallContext,
        lease: Lease,
    ) {
        self.restore_state(session, upstream, ctx).await;
        if upstream.holds_standalone() {
            let resume = super::Resume::FromStart;
            self.hold_leased_stream(upstream.clone(), ctx.clone(), resume, lease)
                .await;
        }
    }

    /// Rewrites an upstream message for the client of `session`.
    pub(super) fn relayed(&self, session: &SessionId, upstream: &str, message: Message) -> Value {
        match message {
            Message::Request(mut request) => {
                request.id = self.signer.sign(session, upstream, &request.id);
                Message::Request(request).to_value()
            }
            Message::Notification(notification) => {
                self.relayed_notification(session, upstream, notification)
            }
            Message::Response(response) => Message::Response(response).to_value(),
        }
    }

    fn relayed_notification(
        &self,
        session: &SessionId,
        upstream: &str,
        mut notification: Notification,
    ) -> Value {
        if Method::parse(&notification.method) == Method::Cancelled {
            let params = notification.params.as_mut().and_then(Value::as_object_mut);
            if let Some(params) = params {
                let signed = params
                    .get("requestId")
                    .and_then(RequestId::from_value)
                    .map(|id| self.signer.sign(session, upstream, &id));
                if let Some(signed) = signed {
                    params.insert("requestId".into(), signed.to_value());
                }
            }
        }
        Message::Notification(notification).to_value()
    }
}

/// The error a client sees when an upstream fails: it names the upstream and says how, while
/// the details (paths, addresses, the upstream's own words) go to the log only.
pub(super) fn upstream_failure(error: &UpstreamError) -> RpcError {
    tracing::warn!(%error, "upstream call failed");
    let code = match error {
        UpstreamError::TooManyChildren { .. } | UpstreamError::TooManyConnections { .. } => {
            crate::limits::LimitExceeded::CODE
        }
        _ => ErrorCode::INTERNAL_ERROR,
    };
    error_object(code, error.client_message())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::super::Gateway;
    use crate::protocol::jsonrpc::{Message, Notification, RequestId};
    use crate::session::SessionId;

    fn gateway() -> Arc<Gateway> {
        super::super::test_gateway(&[])
    }

    #[tokio::test]
    async fn an_upstream_cancelling_its_own_request_is_relayed_with_the_signed_id() {
        let gateway = gateway();
        let session = SessionId::generate();
        let request = Message::Request(crate::protocol::jsonrpc::Request {
            id: RequestId::Number(4),
            method: "sampling/createMessage".into(),
            params: Some(json!({})),
        });
        let relayed_request = gateway.relayed(&session, "local", request);
        let cancelled = Message::Notification(Notification {
            method: "notifications/cancelled".into(),
            params: Some(json!({"requestId": 4, "reason": "gave up"})),
        });
        let relayed_cancel = gateway.relayed(&session, "local", cancelled);
        assert_eq!(relayed_cancel["params"]["requestId"], relayed_request["id"]);
        assert_eq!(relayed_cancel["params"]["reason"], json!("gave up"));
        let signed = RequestId::from_value(&relayed_request["id"]).unwrap();
        let verified = gateway.signer.verify(&session, &signed).unwrap();
        assert_eq!(
            (verified.upstream.as_str(), verified.id),
            ("local", RequestId::Number(4))
        );
    }
}

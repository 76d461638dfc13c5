//! Putting a session's state back on upstreams that lost it, so the client never notices: the
//! resource subscriptions and log level of a session revived on this replica (whose stdio
//! children never heard of it), and of an upstream session re-initialized (an HTTP upstream
//! forgot it, an SSE upstream's connection dropped or is held by another replica). HTTP
//! upstreams keep subscriptions and levels in their own session, so a revival leaves them
//! alone. An isolated stdio upstream starts the revived session's own
//! child on this replica, which is initialized and restored from the record.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Gateway, Session};
use crate::protocol::{Method, ServerCapability};
use crate::upstream::{CallContext, Upstream, response_succeeded, restore_request};

/// Longest a revival waits for its state to be restored before serving the request anyway.
pub(super) const REVIVAL_RESTORE_LIMIT: Duration = Duration::from_secs(2);

impl Gateway {
    /// Restores a revived session's subscriptions and log level on this replica's stdio
    /// children.
    pub(super) async fn restore_on_revival(&self, session: &Session) {
        self.start_isolated_children(session).await;
        let upstreams = self.upstreams();
        let children = upstreams
            .iter()
            .filter(|u| !u.has_upstream_sessions() && !u.is_isolated())
            .cloned();
        for upstream in children {
            let ctx = self.context_for(session, &upstream.name);
            self.restore_state(session, &upstream, &ctx).await;
        }
    }

    /// Puts the session's log level and resource subscriptions back on an upstream that does
    /// not have them: a revived session's stdio child, a new upstream session.
    pub(super) async fn restore_state(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
        ctx: &CallContext,
    ) {
        self.restore_log_level(session, upstream, ctx).await;
        let subscribed = session
            .record
            .subscriptions
            .iter()
            .filter(|(_, name)| **name == upstream.name);
        for (uri, _) in subscribed {
            let params = json!({"uri": uri});
            self.quietly(upstream, ctx, &Method::Subscribe, params)
                .await;
        }
    }

    /// Starts (or joins) the revived session's children of the isolated upstreams it used.
    async fn start_isolated_children(&self, session: &Session) {
        let upstreams = self.upstreams();
        let used = upstreams
            .iter()
            .filter(|u| u.is_isolated() && session.record.upstreams.contains_key(&u.name))
            .filter(|u| self.policy(session).allows_upstream(&u.name));
        let opened = used.map(|upstream| upstream.open_session(&session.id, &session.record));
        for outcome in futures::future::join_all(opened).await {
            if let Err(error) = outcome {
                tracing::warn!(%error, "could not start a revived session's isolated child");
            }
        }
    }

    /// Sends the session's log level, if the client set one, to an upstream that logs.
    async fn restore_log_level(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
        ctx: &CallContext,
    ) {
        let Some(level) = &session.record.log_level else {
            return;
        };
        if upstream.has_capability(ServerCapability::Logging) && !upstream.only_modern() {
            let params = json!({"level": level});
            self.quietly(upstream, ctx, &Method::SetLevel, params).await;
        }
    }

    /// Sends a request of mcpgate's own and waits (within the upstream's timeout) for its
    /// response; whatever else the upstream sends meanwhile is not for any client.
    async fn quietly(
        &self,
        upstream: &Upstream,
        ctx: &CallContext,
        method: &Method,
        params: serde_json::Value,
    ) {
        let method = method.as_str();
        let request = restore_request(method, params);
        let answered = async {
            let messages = upstream.request(ctx, &request).await.ok()?;
            response_succeeded(messages).await
        };
        let outcome = tokio::time::timeout(upstream.timeout, answered).await;
        if !matches!(outcome, Ok(Some(true))) {
            tracing::warn!(upstream = %upstream.name, method, "could not restore session state upstream");
        }
    }
}

//! Per-method behaviour: local answers, routing by namespaced name or resource URI, and the
//! session-state updates (`logging/setLevel`, subscriptions).

use std::sync::Arc;

use rmcp::model::ErrorCode;
use serde_json::{Value, json};

use super::RpcError;
use super::{Gateway, Outbox, Outcome, Session, error_object};
use crate::catalog;
use crate::protocol::jsonrpc::{Request, RequestId};
use crate::protocol::{Call, Capability, Method};
use crate::session::RecordChange;
use crate::upstream::Upstream;

impl Gateway {
    /// Runs one client request to its outcome.
    pub(super) async fn run_method(
        &self,
        session: &Session,
        call: Call,
        request: Request,
        outbox: &Outbox,
    ) -> Outcome {
        match call {
            Call::Ping => Ok(json!({})),
            Call::List(kind) => self.list(session, kind, request, outbox).await,
            Call::CallTool { name } => self.call_named(session, request, outbox, name, true).await,
            Call::GetPrompt { name } => {
                self.call_named(session, request, outbox, name, false).await
            }
            Call::ReadResource { uri } => self.call_by_uri(session, request, outbox, uri).await,
            Call::Subscribe { uri } => self.subscription(session, request, outbox, uri, true).await,
            Call::Unsubscribe { uri } => {
                self.subscription(session, request, outbox, uri, false)
                    .await
            }
            Call::Complete => self.complete(session, request, outbox).await,
            Call::SetLevel { level } => self.set_level(session, request, outbox, level).await,
            Call::Listen(filter) => self.listen(session, request, filter, outbox).await,
            Call::Task { task_id } => self.task_request(session, request, outbox, task_id).await,
            Call::Initialize => Err(error_object(
                ErrorCode::INVALID_REQUEST,
                "this session is already initialized",
            )),
        }
    }

    /// `tools/call` and `prompts/get`: strip the namespace, check the tool filter and the
    /// team's policy, forward. A forbidden name gets the same answer as an unknown one.
    async fn call_named(
        &self,
        session: &Session,
        mut request: Request,
        outbox: &Outbox,
        name: String,
        is_tool: bool,
    ) -> Outcome {
        let what = if is_tool { "tool" } else { "prompt" };
        let policy = self.policy(session);
        let upstreams = self.upstreams();
        let (upstream, own_name) = catalog::resolve(&upstreams, &name)
            .filter(|(u, own)| !is_tool || u.filter.allows(own))
            .filter(|(u, _)| {
                if is_tool {
                    policy.allows_tool(&u.name, &name)
                } else {
                    policy.allows_prompt(&u.name, &name)
                }
            })
            .ok_or_else(|| {
                error_object(ErrorCode::INVALID_PARAMS, format!("Unknown {what}: {name}"))
            })?;
        let (upstream, own_name) = (upstream.clone(), own_name.to_owned());
        if is_tool && let Some(modern) = &session.modern {
            let arguments = request.params.as_ref().and_then(|p| p.get("arguments"));
            self.check_param_headers(session, modern, &upstream, &own_name, arguments)
                .await?;
        }
        set_param(&mut request, "name", json!(own_name));
        let mut result = self.forward(session, &upstream, request, outbox).await?;
        self.issue_task_id(session, &upstream.name, &mut result);
        Ok(result)
    }

    /// `resources/read`: to the upstream that listed the URI, or the first that can read it.
    /// A URI the team may not read is not found.
    async fn call_by_uri(
        &self,
        session: &Session,
        request: Request,
        outbox: &Outbox,
        uri: String,
    ) -> Outcome {
        if !self.policy(session).allows_resource(&uri) {
            return Err(resource_not_found(&uri));
        }
        if let Some(upstream) = self.resource_owner(session, &uri) {
            return self.forward(session, &upstream, request, outbox).await;
        }
        let mut last_error = None;
        for upstream in self.upstreams_for(session, &Method::ReadResource) {
            match self
                .forward(session, &upstream, request.clone(), outbox)
                .await
            {
                Ok(result) => {
                    self.routes.learn_resource(&uri, &upstream.name);
                    return Ok(result);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| resource_not_found(&uri)))
    }

    /// `resources/subscribe` and `unsubscribe`: forward, then remember it in the record.
    async fn subscription(
        &self,
        session: &Session,
        request: Request,
        outbox: &Outbox,
        uri: String,
        subscribe: bool,
    ) -> Outcome {
        if subscribe {
            check_subscription_room(session, &uri)?;
        }
        let upstream = self.locate_resource(session, &uri, outbox).await?;
        let result = self.forward(session, &upstream, request, outbox).await?;
        self.hub.set_subscribed(&session.id, &uri, subscribe);
        let change = if subscribe {
            RecordChange::Subscribe {
                uri,
                upstream: upstream.name.clone(),
            }
        } else {
            RecordChange::Unsubscribe { uri }
        };
        self.update_record(session, &change).await?;
        Ok(result)
    }

    /// `completion/complete`: route by the prompt name or the resource URI in `ref`.
    async fn complete(&self, session: &Session, mut request: Request, outbox: &Outbox) -> Outcome {
        let reference = request
            .params
            .as_ref()
            .and_then(|p| p.get("ref"))
            .cloned()
            .unwrap_or(Value::Null);
        let invalid = || {
            error_object(
                ErrorCode::INVALID_PARAMS,
                "completion/complete needs a ref/prompt name or a ref/resource uri",
            )
        };
        let upstream = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let name = reference
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?;
                let upstreams = self.upstreams();
                let (upstream, own) = catalog::resolve(&upstreams, name)
                    .filter(|(u, _)| self.policy(session).allows_prompt(&u.name, name))
                    .ok_or_else(invalid)?;
                let (upstream, own) = (upstream.clone(), own.to_owned());
                if let Some(params) = request.params.as_mut() {
                    params["ref"]["name"] = json!(own);
                }
                upstream
            }
            Some("ref/resource") => {
                let uri = reference
                    .get("uri")
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?;
                self.locate_resource(session, uri, outbox).await?
            }
            _ => return Err(invalid()),
        };
        self.forward(session, &upstream, request, outbox).await
    }

    /// `logging/setLevel`: kept in the record and passed to every upstream that logs.
    async fn set_level(
        &self,
        session: &Session,
        request: Request,
        outbox: &Outbox,
        level: String,
    ) -> Outcome {
        if !crate::protocol::era::LOG_LEVELS.contains(&level.as_str()) {
            return Err(error_object(
                ErrorCode::INVALID_PARAMS,
                format!("unknown log level {level:?}"),
            ));
        }
        for upstream in self.upstreams_for(session, &Method::SetLevel) {
            if let Err(error) = self
                .forward(session, &upstream, request.clone(), outbox)
                .await
            {
                tracing::debug!(upstream = %upstream.name, %error, "upstream refused logging/setLevel");
            }
        }
        self.update_record(session, &RecordChange::LogLevel(level))
            .await?;
        Ok(json!({}))
    }

    async fn update_record(
        &self,
        session: &Session,
        change: &RecordChange,
    ) -> Result<(), RpcError> {
        self.store
            .update(&session.id, change)
            .await
            .map_err(|error| {
                tracing::error!(%error, "could not save a session record");
                error_object(
                    ErrorCode::INTERNAL_ERROR,
                    "the session store is unavailable; retry later",
                )
            })
    }

    /// The upstream serving `uri`: known from a listing, the only one with resources, or the
    /// first that can read it (a URI never listed on this replica, e.g. after a revival). Only
    /// among what the session's team may use.
    async fn locate_resource(
        &self,
        session: &Session,
        uri: &str,
        outbox: &Outbox,
    ) -> Result<Arc<Upstream>, RpcError> {
        if !self.policy(session).allows_resource(uri) {
            return Err(resource_not_found(uri));
        }
        if let Some(upstream) = self.resource_owner(session, uri) {
            return Ok(upstream);
        }
        let candidates = self.upstreams_for(session, &Method::ReadResource);
        if let [only] = candidates.as_slice() {
            return Ok(only.clone());
        }
        for upstream in candidates {
            let probe = Request {
                id: RequestId::String("mcpgate-locate".into()),
                method: Method::ReadResource.as_str().into(),
                params: Some(json!({"uri": uri})),
            };
            if self
                .forward(session, &upstream, probe, outbox)
                .await
                .is_ok()
            {
                self.routes.learn_resource(uri, &upstream.name);
                return Ok(upstream);
            }
        }
        Err(resource_not_found(uri))
    }

    /// The upstream that listed `uri`, when the session's team may use it.
    pub(super) fn resource_owner(&self, session: &Session, uri: &str) -> Option<Arc<Upstream>> {
        let name = self.routes.owner(uri)?;
        let upstream = self.upstreams().by_name(&name)?;
        self.policy(session)
            .allows_upstream(&upstream.name)
            .then(|| upstream.clone())
    }

    /// Healthy upstreams whose last known capabilities include what `method` needs of a server,
    /// among those the session's team may use, and not a modern-only upstream for a method the
    /// modern era does not have. A session lists an upstream that came up after it started
    /// too: forwarding opens its upstream session.
    pub(super) fn upstreams_for(&self, session: &Session, method: &Method) -> Vec<Arc<Upstream>> {
        let policy = self.policy(session);
        let needed = match method.required_capability() {
            Some(Capability::Server(needed)) => Some(needed),
            _ => None,
        };
        self.upstreams()
            .iter()
            .filter(|u| u.is_healthy() && needed.is_none_or(|c| u.has_capability(c)))
            .filter(|u| !u.only_modern() || method.served_in_modern_era())
            .filter(|u| policy.allows_upstream(&u.name))
            .cloned()
            .collect()
    }
}

/// Most resources one session may be subscribed to: each is kept in its record for the
/// session's whole life.
const MAX_SUBSCRIPTIONS: usize = 256;
/// Longest resource URI a session may subscribe to, in bytes.
const MAX_SUBSCRIBED_URI_BYTES: usize = 2048;

/// Refuses a subscription the record would have to keep beyond its bounds.
fn check_subscription_room(session: &Session, uri: &str) -> Result<(), RpcError> {
    let subscriptions = &session.record.subscriptions;
    let refusal = if uri.len() > MAX_SUBSCRIBED_URI_BYTES {
        format!("resources/subscribe: a URI may take at most {MAX_SUBSCRIBED_URI_BYTES} bytes")
    } else if subscriptions.len() >= MAX_SUBSCRIPTIONS && !subscriptions.contains_key(uri) {
        format!(
            "resources/subscribe: a session may hold at most {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe from one first"
        )
    } else {
        return Ok(());
    };
    Err(error_object(ErrorCode::INVALID_PARAMS, refusal))
}

fn resource_not_found(uri: &str) -> RpcError {
    error_object(
        ErrorCode::RESOURCE_NOT_FOUND,
        format!("Resource not found: {uri}"),
    )
}

fn set_param(request: &mut Request, name: &str, value: Value) {
    if let Some(Value::Object(params)) = request.params.as_mut() {
        params.insert(name.to_owned(), value);
    }
}

//! Forwarding a modern request to an upstream that speaks the modern era too: the client's
//! `_meta` goes along, there is no upstream session, and multi round-trip state is sealed.
//!
//! An upstream's `input_required` result reaches the client with the gateway's own
//! `requestState` (see [`super::request_state`]), which wraps the upstream's. The client's
//! retry, on any replica, is opened and checked against who sends it and what it asks for;
//! the upstream gets its own state back, and the client's `inputResponses` as they are.

use std::sync::Arc;

use rmcp::model::ErrorCode;
use serde_json::{Value, json};

use super::RpcError;
use super::capabilities::ClientCapabilities;
use super::forward::upstream_failure;
use super::request_state::{Binding, Held, StateError};
use super::{Gateway, Outbox, Outcome, Session, error_object};
use crate::protocol::jsonrpc::{Request, RequestId};
use crate::protocol::{ListKind, Method, ModernRequest, param_headers};
use crate::session::UpstreamSession;
use crate::upstream::{CallContext, Upstream, UpstreamError};

pub(super) const REQUEST_STATE: &str = "requestState";

impl Gateway {
    /// Sends a modern request to a modern upstream and seals what it asks to be sent back.
    pub(super) async fn forward_modern(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
        mut request: Request,
        outbox: &Outbox,
    ) -> Outcome {
        let binding = binding(session, &request);
        self.open_request_state(upstream, &mut request, &binding)?;
        let mut result = self.send_modern(session, upstream, request, outbox).await?;
        if result.get("resultType").and_then(Value::as_str) == Some("input_required") {
            let state = result
                .get(REQUEST_STATE)
                .and_then(Value::as_str)
                .map(str::to_owned);
            let sealed = self
                .sealer
                .seal(&upstream.name, Held::Upstream { state }, binding);
            result[REQUEST_STATE] = json!(sealed);
        }
        Ok(result)
    }

    /// Sends a request in the modern form (its `_meta` already in place) and relays the
    /// exchange until the upstream's answer, which it returns as it is.
    pub(super) async fn send_modern(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
        request: Request,
        outbox: &Outbox,
    ) -> Outcome {
        let ctx = CallContext {
            session: session.id.clone(),
            upstream_session: UpstreamSession::modern(),
        };
        let messages = upstream.request(&ctx, &request).await.map_err(|error| {
            if matches!(error, UpstreamError::Status { .. }) {
                upstream.forget_era();
            }
            upstream_failure(&error)
        })?;
        let capabilities = ClientCapabilities::modern(&session.record.client_capabilities);
        self.exchange(&ctx, &capabilities, upstream, &request.id, messages, outbox)
            .await
    }

    /// Replaces the client's sealed `requestState` with the upstream's own (or removes it when
    /// the upstream gave none); a state that does not open is the client's error.
    fn open_request_state(
        &self,
        upstream: &Upstream,
        request: &mut Request,
        binding: &Binding,
    ) -> Result<(), RpcError> {
        let Some(params) = request.params.as_mut().and_then(Value::as_object_mut) else {
            return Ok(());
        };
        let Some(state) = params.remove(REQUEST_STATE) else {
            return Ok(());
        };
        let invalid = |reason: String| error_object(ErrorCode::INVALID_PARAMS, reason);
        let held = self
            .open_state_for(upstream, &state, binding)
            .map_err(|error| invalid(error.to_string()))?;
        match held {
            Held::Upstream { state: Some(inner) } => {
                params.insert(REQUEST_STATE.into(), json!(inner));
            }
            Held::Upstream { state: None } => {}
            Held::Suspended { .. } => return Err(invalid(StateError::Foreign.to_string())),
        }
        Ok(())
    }
}

impl Gateway {
    /// Opens a client's `requestState` for a request to `upstream` bound as `binding`.
    pub(super) fn open_state_for(
        &self,
        upstream: &Upstream,
        state: &Value,
        binding: &Binding,
    ) -> Result<Held, StateError> {
        let state = state.as_str().ok_or(StateError::NotAString)?;
        let opened = self.sealer.open(state, binding)?;
        if opened.upstream != upstream.name {
            return Err(StateError::Foreign);
        }
        Ok(opened.held)
    }
}

/// What a request's state is bound to: its caller, its method and what it names (as the
/// upstream knows it).
pub(super) fn binding(session: &Session, request: &Request) -> Binding {
    let params = request.params.as_ref();
    let target = ["name", "uri"]
        .iter()
        .find_map(|field| params?.get(*field)?.as_str())
        .unwrap_or_default();
    Binding {
        owner: session.record.owner.clone(),
        method: request.method.clone(),
        target: target.to_owned(),
    }
}

/// Pages of an upstream's `tools/list` read to learn its `x-mcp-header` annotations.
const MAX_TOOL_PAGES: usize = 10;

impl Gateway {
    /// Checks a modern call's `Mcp-Param-*` headers against its arguments, by the annotations
    /// of the tool's schema (listed from the upstream first if this replica has not yet).
    pub(super) async fn check_param_headers(
        &self,
        session: &Session,
        modern: &ModernRequest,
        upstream: &Arc<Upstream>,
        own_name: &str,
        arguments: Option<&Value>,
    ) -> Result<(), RpcError> {
        let annotations = match upstream.tool_headers.of(own_name) {
            Some(known) => known,
            None => {
                self.learn_tools(session, modern, upstream).await;
                upstream.tool_headers.of(own_name).unwrap_or_default()
            }
        };
        param_headers::check(&annotations, arguments, &modern.param_headers).map_err(|error| {
            let mut object = error_object(error.code(), error.to_string());
            object.data = error.data();
            object
        })
    }

    /// Lists an upstream's tools (as the client would see them), only to learn their
    /// annotations: `fanout.rs` learns them from every list it merges anyway.
    async fn learn_tools(
        &self,
        session: &Session,
        modern: &ModernRequest,
        upstream: &Arc<Upstream>,
    ) {
        let (outbox, _discarded) = tokio::sync::mpsc::channel(super::OUTBOX_CAPACITY);
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let request = Request {
                id: RequestId::String("mcpgate-tools".into()),
                method: Method::List(ListKind::Tools).as_str().to_owned(),
                params: Some(super::fanout::page_params(
                    cursor.as_deref(),
                    Some(modern.meta()),
                )),
            };
            let Ok(page) = self.forward(session, upstream, request, &outbox).await else {
                return;
            };
            let tools = page.get("tools").and_then(Value::as_array);
            upstream
                .tool_headers
                .learn(tools.map_or(&[], Vec::as_slice));
            cursor = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                return;
            }
        }
    }
}

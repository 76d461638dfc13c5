//! The capabilities a client declared at `initialize`, as they gate what an upstream may send
//! it. An upstream may have been initialized with more than this client declared (a shared
//! stdio child is initialized with everything mcpgate can relay), so every server-to-client
//! message is checked here where it meets its session, before it is relayed:
//!
//! | the upstream sends | the client must have declared |
//! |---|---|
//! | `sampling/createMessage` | `sampling`; with `tools` or `toolChoice`, `sampling.tools` |
//! | `elicitation/create`, form mode (the default) | `elicitation.form`, or `elicitation: {}` |
//! | `elicitation/create`, `mode: "url"` | `elicitation.url` |
//! | `roots/list` | `roots` |
//! | `notifications/elicitation/complete` | `elicitation.url` |
//!
//! An empty `elicitation` object (2025-06-18, before modes existed) declares form mode.
//!
//! Nothing else is gated (ping, progress, logging, list changes, resource updates,
//! cancellations). `includeContext` is not gated on `sampling.context`: the value is a hint a
//! client may ignore, and clients of 2025-06-18 and earlier could not declare it.
//!
//! A refused request is answered to the upstream with the error an MCP SDK client gives: -32601
//! when the client lacks the feature (what rmcp and the TypeScript SDK answer when no handler
//! is registered), -32602 when it has the feature but not the variant the request asks for
//! (what rmcp raises for sampling tools). A refused notification is dropped.

use rmcp::model::ErrorCode;
use serde_json::Value;

use std::sync::Arc;

use super::RpcError;
use super::request_state::Binding;
use super::{Gateway, error_object};
use crate::protocol::jsonrpc::{Message, Request, RequestId, Response};
use crate::protocol::{Capability, ClientCapability, Method, ModernError};
use crate::session::SessionId;
use crate::upstream::{CallContext, Unsolicited, Upstream};

/// Why a server-to-client message may not reach the client of a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the client of this session did not declare the `{}` capability that {method} needs",
    capability.path()
)]
pub struct MissingCapability {
    pub capability: ClientCapability,
    pub method: String,
}

impl MissingCapability {
    /// The JSON-RPC error code the upstream gets.
    pub fn code(&self) -> ErrorCode {
        if self.capability.is_refinement() {
            ErrorCode::INVALID_PARAMS
        } else {
            ErrorCode::METHOD_NOT_FOUND
        }
    }

    /// The error a modern client gets for a request that needs what it did not declare:
    /// `MissingRequiredClientCapabilityError` (-32021), naming the capability.
    pub fn required_error(&self) -> RpcError {
        let mut required = serde_json::json!({});
        for key in self.capability.path().split('.').rev() {
            required = serde_json::json!({ key: required });
        }
        let message = format!(
            "this request needs the client capability `{}`, which the request did not declare",
            self.capability.path()
        );
        let mut error = error_object(ModernError::MISSING_CLIENT_CAPABILITY, message);
        error.data = Some(serde_json::json!({"requiredCapabilities": required}));
        error
    }

    /// The error response to the refused request `id`.
    pub fn answer(&self, id: &RequestId) -> Message {
        Message::Response(Response {
            id: id.clone(),
            outcome: Err(error_object(self.code(), self.to_string())),
        })
    }
}

/// `sampling` as declared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sampling {
    tools: bool,
}

/// `elicitation` as declared, with the 2025-06-18 empty object read as form mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Elicitation {
    form: bool,
    url: bool,
}

/// What the client of a session declared, as far as it gates server-to-client messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCapabilities {
    sampling: Option<Sampling>,
    elicitation: Option<Elicitation>,
    roots: bool,
    requests: ServerRequests,
}

/// What becomes of an upstream's request to the client in the middle of a call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum ServerRequests {
    /// Relayed to the client (a legacy session).
    #[default]
    Relayed,
    /// Refused to the upstream: a modern client has no server-to-client requests, and a
    /// modern upstream has no business sending one.
    Refused,
    /// Put to a modern client as `input_required`, the exchange suspended until its retry
    /// (`suspended.rs`); the new `requestState` is bound as this.
    Suspended(Binding),
}

impl ClientCapabilities {
    /// Reads the `capabilities` object of the client's `initialize`. A capability is declared
    /// when its key is present with a value other than `null` or `false`.
    pub fn from_declared(capabilities: &Value) -> Self {
        let sampling = declared(capabilities, "sampling").map(|sampling| Sampling {
            tools: declared(sampling, "tools").is_some(),
        });
        let elicitation = declared(capabilities, "elicitation").map(|elicitation| {
            let form = declared(elicitation, "form").is_some();
            let url = declared(elicitation, "url").is_some();
            Elicitation {
                form: form || !url,
                url,
            }
        });
        Self {
            sampling,
            elicitation,
            roots: declared(capabilities, "roots").is_some(),
            requests: ServerRequests::Relayed,
        }
    }

    /// Reads a modern request's `clientCapabilities`: the same gates, and no server-to-client
    /// request is ever relayed.
    pub fn modern(capabilities: &Value) -> Self {
        Self {
            requests: ServerRequests::Refused,
            ..Self::from_declared(capabilities)
        }
    }

    /// These capabilities, for a modern request to a legacy upstream: what the upstream asks
    /// of the client during the call becomes `input_required`, with a state bound as `binding`.
    pub fn suspending(self, binding: Binding) -> Self {
        Self {
            requests: ServerRequests::Suspended(binding),
            ..self
        }
    }

    pub fn relays_requests(&self) -> bool {
        self.requests == ServerRequests::Relayed
    }

    /// How a suspended exchange's `requestState` is bound, when requests suspend it.
    pub fn suspends(&self) -> Option<&Binding> {
        match &self.requests {
            ServerRequests::Suspended(binding) => Some(binding),
            _ => None,
        }
    }

    /// Whether `message` needs any client capability at all.
    pub fn gates(message: &Message) -> bool {
        Self::default().allows(message).is_err()
    }

    /// Whether the client may receive `message`; if not, the capability it lacks.
    pub fn allows(&self, message: &Message) -> Result<(), MissingCapability> {
        match message {
            Message::Request(request) => self.allows_request(request),
            Message::Notification(note) => self.allows_method(&note.method, note.params.as_ref()),
            Message::Response(_) => Ok(()),
        }
    }

    /// Whether the client may receive the server-to-client `request`.
    pub fn allows_request(&self, request: &Request) -> Result<(), MissingCapability> {
        self.allows_method(&request.method, request.params.as_ref())
    }

    fn allows_method(&self, method: &str, params: Option<&Value>) -> Result<(), MissingCapability> {
        let missing = match Method::parse(method).required_capability() {
            Some(Capability::Client(needed)) => self.gap(needed, params),
            _ => None,
        };
        match missing {
            None => Ok(()),
            Some(capability) => Err(MissingCapability {
                capability,
                method: method.to_owned(),
            }),
        }
    }

    /// What the client lacks of `needed` for a message with `params`: the feature itself, or
    /// the mode or option the params ask for.
    fn gap(&self, needed: ClientCapability, params: Option<&Value>) -> Option<ClientCapability> {
        match needed {
            ClientCapability::Sampling => self.sampling_gap(params),
            ClientCapability::Elicitation => self.elicitation_gap(params),
            exact => (!self.declares(exact)).then_some(exact),
        }
    }

    fn declares(&self, capability: ClientCapability) -> bool {
        match capability {
            ClientCapability::Sampling => self.sampling.is_some(),
            ClientCapability::SamplingTools => self.sampling.is_some_and(|s| s.tools),
            ClientCapability::Elicitation => self.elicitation.is_some(),
            ClientCapability::ElicitationForm => self.elicitation.is_some_and(|e| e.form),
            ClientCapability::ElicitationUrl => self.elicitation.is_some_and(|e| e.url),
            ClientCapability::Roots => self.roots,
        }
    }

    fn sampling_gap(&self, params: Option<&Value>) -> Option<ClientCapability> {
        if !self.declares(ClientCapability::Sampling) {
            return Some(ClientCapability::Sampling);
        }
        let uses_tools = ["tools", "toolChoice"]
            .iter()
            .any(|key| params.and_then(|p| declared(p, key)).is_some());
        let needed = ClientCapability::SamplingTools;
        (uses_tools && !self.declares(needed)).then_some(needed)
    }

    /// Any mode other than `url` is treated as form mode, the default.
    fn elicitation_gap(&self, params: Option<&Value>) -> Option<ClientCapability> {
        if !self.declares(ClientCapability::Elicitation) {
            return Some(ClientCapability::Elicitation);
        }
        let needed = match params.and_then(|p| p.get("mode")).and_then(Value::as_str) {
            Some("url") => ClientCapability::ElicitationUrl,
            _ => ClientCapability::ElicitationForm,
        };
        (!self.declares(needed)).then_some(needed)
    }
}

/// The value under `key`, when it declares something.
fn declared<'a>(object: &'a Value, key: &str) -> Option<&'a Value> {
    object
        .get(key)
        .filter(|value| !matches!(value, Value::Null | Value::Bool(false)))
}

/// Keeps a refused message from the client: a request is answered to the upstream that sent
/// it with the refusal, a notification is dropped.
pub(super) async fn refuse(
    upstream: &Upstream,
    ctx: &CallContext,
    message: &Message,
    missing: &MissingCapability,
) {
    tracing::info!(upstream = %upstream.name, capability = missing.capability.path(),
        method = %missing.method, "refusing a message the client declared no capability for");
    let Message::Request(request) = message else {
        return;
    };
    if let Err(error) = upstream.send(ctx, missing.answer(&request.id)).await {
        tracing::warn!(%error, "could not refuse a server-to-client request upstream");
    }
}

/// Answers an upstream's server-to-client request made during a modern request whose client
/// declared the capability: the request cannot be relayed, since the modern era has none.
pub(super) async fn refuse_unbridged(upstream: &Upstream, ctx: &CallContext, message: &Message) {
    let Message::Request(request) = message else {
        return;
    };
    tracing::info!(upstream = %upstream.name, method = %request.method,
        "refusing a server-to-client request during a modern (2026-07-28) request");
    let refusal = Message::Response(Response {
        id: request.id.clone(),
        outcome: Err(error_object(
            ErrorCode::METHOD_NOT_FOUND,
            format!(
                "{} cannot reach a client of protocol 2026-07-28 through mcpgate: the modern era has no server-to-client requests",
                request.method
            ),
        )),
    });
    if let Err(error) = upstream.send(ctx, refusal).await {
        tracing::warn!(%error, "could not refuse a server-to-client request upstream");
    }
}

impl Gateway {
    /// Whether the client of `session` may receive a message an upstream sent outside any
    /// request (an HTTP upstream's GET stream). Only a gated message costs a session lookup; a
    /// refused request is answered to its upstream.
    pub(super) async fn admits_unsolicited(
        self: &Arc<Self>,
        session: &SessionId,
        unsolicited: &Unsolicited,
    ) -> bool {
        if !ClientCapabilities::gates(&unsolicited.message) {
            return true;
        }
        let Some(upstream) = self.upstreams().by_name(&unsolicited.upstream) else {
            return false;
        };
        let session = match self.lookup(session, super::Caller::Gateway).await {
            Ok(session) => session,
            Err(error) => {
                tracing::debug!(%error, "dropping a message for a session that cannot be served");
                return false;
            }
        };
        let capabilities = ClientCapabilities::from_declared(&session.record.client_capabilities);
        let Err(missing) = capabilities.allows(&unsolicited.message) else {
            return true;
        };
        let ctx = self.context_for(&session, &upstream.name);
        refuse(&upstream, &ctx, &unsolicited.message, &missing).await;
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::protocol::ProtocolVersion;
    use crate::protocol::jsonrpc::{Notification, Request};
    use crate::session::SessionRecord;

    /// A gateway whose one upstream, `remote`, is an HTTP upstream nobody listens for.
    fn gateway() -> Arc<Gateway> {
        let remote = serde_json::from_value(json!({
            "name": "remote", "transport": "http", "url": "http://127.0.0.1:9/mcp"
        }))
        .unwrap();
        super::super::test_gateway(&[remote])
    }

    /// A live session whose client declared `capabilities`.
    async fn session(gateway: &Gateway, capabilities: Value) -> SessionId {
        let id = SessionId::generate();
        let record = SessionRecord::new(
            ProtocolVersion::LATEST,
            json!({"name": "test", "version": "0"}),
            capabilities,
            Duration::from_secs(3600),
        );
        gateway.store.create(&id, &record).await.unwrap();
        id
    }

    fn request(method: &str, params: Value) -> Message {
        Message::Request(Request {
            id: RequestId::Number(7),
            method: method.into(),
            params: Some(params),
        })
    }

    fn notification(method: &str) -> Message {
        Message::Notification(Notification {
            method: method.into(),
            params: Some(json!({})),
        })
    }

    /// The capability `declared` lacks for `message`, if any.
    fn gap(declared: Value, message: &Message) -> Option<ClientCapability> {
        ClientCapabilities::from_declared(&declared)
            .allows(message)
            .err()
            .map(|missing| missing.capability)
    }

    #[test]
    fn sampling_needs_sampling_and_tools_need_sampling_tools() {
        let plain = request("sampling/createMessage", json!({"messages": []}));
        let tools = request("sampling/createMessage", json!({"tools": []}));
        let choice = request("sampling/createMessage", json!({"toolChoice": {}}));
        assert_eq!(gap(json!({}), &plain), Some(ClientCapability::Sampling));
        assert_eq!(
            gap(json!({"sampling": null}), &plain),
            Some(ClientCapability::Sampling)
        );
        assert_eq!(gap(json!({"sampling": {}}), &plain), None);
        assert_eq!(
            gap(json!({"sampling": {}}), &tools),
            Some(ClientCapability::SamplingTools)
        );
        assert_eq!(
            gap(json!({"sampling": {}}), &choice),
            Some(ClientCapability::SamplingTools)
        );
        assert_eq!(gap(json!({"sampling": {"tools": {}}}), &tools), None);
    }

    #[test]
    fn include_context_is_not_gated() {
        let context = request(
            "sampling/createMessage",
            json!({"includeContext": "allServers"}),
        );
        assert_eq!(gap(json!({"sampling": {}}), &context), None);
    }

    #[test]
    fn elicitation_modes_follow_the_declared_ones() {
        let form = request("elicitation/create", json!({"message": "?"}));
        let explicit_form = request("elicitation/create", json!({"mode": "form"}));
        let url = request(
            "elicitation/create",
            json!({"mode": "url", "url": "https://x"}),
        );
        assert_eq!(gap(json!({}), &form), Some(ClientCapability::Elicitation));
        assert_eq!(gap(json!({"elicitation": {}}), &form), None);
        assert_eq!(gap(json!({"elicitation": {}}), &explicit_form), None);
        assert_eq!(
            gap(json!({"elicitation": {}}), &url),
            Some(ClientCapability::ElicitationUrl)
        );
        assert_eq!(
            gap(json!({"elicitation": {"url": {}}}), &form),
            Some(ClientCapability::ElicitationForm)
        );
        assert_eq!(gap(json!({"elicitation": {"url": {}}}), &url), None);
        assert_eq!(
            gap(json!({"elicitation": {"form": {}, "url": {}}}), &form),
            None
        );
    }

    #[test]
    fn roots_and_elicitation_completion_are_gated() {
        let roots = request("roots/list", json!({}));
        let complete = notification("notifications/elicitation/complete");
        assert_eq!(gap(json!({}), &roots), Some(ClientCapability::Roots));
        assert_eq!(gap(json!({"roots": {"listChanged": true}}), &roots), None);
        assert_eq!(
            gap(json!({"elicitation": {}}), &complete),
            Some(ClientCapability::ElicitationUrl)
        );
        assert_eq!(gap(json!({"elicitation": {"url": {}}}), &complete), None);
    }

    #[test]
    fn other_messages_need_nothing() {
        for message in [
            request("ping", json!({})),
            notification("notifications/progress"),
            notification("notifications/message"),
            notification("notifications/tools/list_changed"),
            notification("notifications/resources/updated"),
            notification("notifications/cancelled"),
        ] {
            assert_eq!(gap(json!({}), &message), None, "{message:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_capability_with_the_code_of_sdk_clients() {
        let missing = |capability| MissingCapability {
            capability,
            method: "sampling/createMessage".into(),
        };
        let Message::Response(answer) =
            missing(ClientCapability::Sampling).answer(&RequestId::Number(7))
        else {
            panic!("a refusal is a response");
        };
        assert_eq!(answer.id, RequestId::Number(7));
        let error = answer.outcome.expect_err("a refusal is an error");
        assert_eq!(error.code, ErrorCode::METHOD_NOT_FOUND);
        let message = "the client of this session did not declare the `sampling` capability \
            that sampling/createMessage needs";
        assert_eq!(error.message, message);
        assert_eq!(
            missing(ClientCapability::SamplingTools).code(),
            ErrorCode::INVALID_PARAMS
        );
    }

    #[tokio::test]
    async fn an_unsolicited_message_reaches_only_a_client_that_declared_its_capability() {
        let gateway = gateway();
        let without = session(&gateway, json!({})).await;
        let with = session(&gateway, json!({"sampling": {}})).await;
        let from_remote = |session: &SessionId, message: Message| Unsolicited {
            upstream: "remote".into(),
            session: Some(session.clone()),
            message,
            event_id: None,
            logged: None,
        };
        let sampling = || request("sampling/createMessage", json!({"messages": []}));
        let progress = || notification("notifications/progress");
        assert!(
            !gateway
                .admits_unsolicited(&without, &from_remote(&without, sampling()))
                .await
        );
        assert!(
            gateway
                .admits_unsolicited(&with, &from_remote(&with, sampling()))
                .await
        );
        assert!(
            gateway
                .admits_unsolicited(&without, &from_remote(&without, progress()))
                .await
        );
    }
}

//! Modern (2026-07-28) requests, served without a session: nothing is written to the store and
//! no event is logged. A modern request runs through the same methods as a session's, as a
//! [`Session`] that lives for that one request:
//!
//! - its record is built from the request's `_meta` and owned by the caller's principal and
//!   team, so team policy applies; it is never saved;
//! - its id is the principal's *stateless id*, derived from its owner tag: an isolated stdio
//!   upstream gives each principal (or team) one child for its modern requests, stopped when
//!   idle like any other;
//! - HTTP upstreams are reached through one upstream session per upstream on this replica,
//!   opened with the gateway's own identity and no client capabilities, and re-opened when the
//!   upstream forgets it ([`StatelessUpstreams`]);
//! - the record declares the request's `clientCapabilities`; the modern era has no
//!   server-to-client requests, so a legacy upstream's sampling, elicitation or roots request
//!   during a call suspends the call and becomes `input_required` (`suspended.rs`);
//! - `notifications/message` reaches the client only when its request asked for logs
//!   (`_meta` log level), at or above that level;
//! - when the client goes away (the response is dropped), the request is cancelled upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::join_all;
use opentelemetry::context::FutureExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::initialize::{Answered, merged_capabilities, merged_instructions};
use super::{Gateway, MessageRejected, OUTBOX_CAPACITY, Outgoing, Session, response_value};
use crate::auth::Principal;
use crate::protocol::era::{self, ModernRequest};
use crate::protocol::jsonrpc::Request;
use crate::protocol::listen::ListenFilter;
use crate::protocol::{Call, Method, ProtocolVersion};
use crate::session::{SessionId, SessionRecord, UpstreamSession};
use crate::sync::lock;
use crate::telemetry::mcp_spans::{self, Side};

/// The upstream sessions this replica keeps for modern requests, one per HTTP upstream.
#[derive(Default)]
pub(super) struct StatelessUpstreams {
    sessions: Mutex<HashMap<String, UpstreamSession>>,
}

impl StatelessUpstreams {
    fn snapshot(&self) -> HashMap<String, UpstreamSession> {
        lock(&self.sessions).clone()
    }

    /// The shared upstream session of `upstream`, if this replica has one.
    pub(super) fn get(&self, upstream: &str) -> Option<UpstreamSession> {
        lock(&self.sessions).get(upstream).cloned()
    }

    /// Keeps `session` for `upstream`, replacing one the upstream forgot.
    pub(super) fn remember(&self, upstream: &str, session: UpstreamSession) {
        lock(&self.sessions).insert(upstream.to_owned(), session);
    }
}

impl Gateway {
    /// Makes sure what every healthy upstream offers is known on this replica before a modern
    /// request merges it: a modern upstream is probed (its discovery says), a legacy HTTP one
    /// gets this replica's shared upstream session (its `initialize` says). Stdio children
    /// initialize when they start.
    async fn know_upstreams(&self, session: &Session) {
        let upstreams = self.upstreams();
        let unknown = upstreams.iter().filter(|u| u.is_healthy() && !u.is_known());
        join_all(unknown.map(|upstream| async move {
            if upstream.speaks_modern().await || !upstream.has_upstream_sessions() {
                return;
            }
            let opening = self.reopen(session, upstream);
            if let Ok(Err(error)) = tokio::time::timeout(upstream.timeout, opening).await {
                tracing::debug!(%error, upstream = %upstream.name, "upstream left out of a modern request");
            }
        }))
        .await;
    }

    /// The `server/discover` result: both eras' versions and what every upstream offers. It
    /// depends on no principal, so it may be cached publicly.
    pub async fn discover(&self, principal: &Principal) -> Value {
        let session = self.stateless_session(principal, Arc::new(ModernRequest::gateway()));
        self.know_upstreams(&session).await;
        let answered: Vec<Answered> = self
            .upstreams()
            .iter()
            .filter_map(|upstream| {
                Some(Answered {
                    name: upstream.name.clone(),
                    prefix: upstream.prefix.clone(),
                    info: upstream.last_init()?,
                })
            })
            .collect();
        let some_missing = answered.len() < self.upstreams().iter().count();
        let infos: Vec<_> = answered.iter().map(|a| a.info.as_ref()).collect();
        let merged = merged_capabilities(&infos, some_missing);
        let mut listenable = ListenFilter::default();
        for upstream in self.upstreams().iter() {
            let Some(init) = upstream.last_init() else {
                continue;
            };
            let mut honoured = everything().honoured_by(&init.capabilities);
            if !upstream.speaks_modern().await {
                honoured.uris.clear();
            }
            listenable.merge(&honoured);
        }
        let mut result = json!({
            "supportedVersions": era::supported_versions(),
            "capabilities": modern_capabilities(merged, &listenable),
        });
        if let Some(instructions) = merged_instructions(&answered) {
            result["instructions"] = json!(instructions);
        }
        era::complete_result(&Method::Discover, &mut result, era::CacheScope::Public);
        result
    }

    /// Starts a modern request; the channel carries what the client must receive, its
    /// response last. Dropping the channel cancels the request. Refused when the principal has
    /// as many modern requests in flight on this replica as `limits` allows.
    pub fn handle_stateless(
        self: &Arc<Self>,
        principal: &Principal,
        modern: ModernRequest,
        request: Request,
        call: Call,
    ) -> Result<mpsc::Receiver<Outgoing>, MessageRejected> {
        let modern = Arc::new(modern);
        let session = self.stateless_session(principal, modern.clone());
        let slot = self.begin_modern(&session.record.owner, &request.id)?;
        let method = Method::parse(&request.method);
        let (outbox, receiver) = mpsc::channel(OUTBOX_CAPACITY);
        let gateway = self.clone();
        let work = async move {
            let _slot = slot;
            let id = request.id.clone();
            gateway.know_upstreams(&session).await;
            let (inner, mut relayed) = mpsc::channel(OUTBOX_CAPACITY);
            let run = async move {
                let outcome = gateway.run_method(&session, call, request, &inner).await;
                drop(inner);
                outcome
            };
            let relay = async {
                while let Some(outgoing) = relayed.recv().await {
                    if passes(&modern, &outgoing) && outbox.send(outgoing).await.is_err() {
                        return;
                    }
                }
            };
            let outcome = tokio::select! {
                (outcome, ()) = async { tokio::join!(run, relay) } => outcome,
                () = outbox.closed() => return,
            };
            mcp_spans::record_outcome(&tracing::Span::current(), Side::Server, &outcome);
            let outcome = outcome.map(|mut result| {
                era::complete_result(&method, &mut result, era::CacheScope::Private);
                result
            });
            let _ = outbox
                .send(Outgoing::Message(response_value(&id, outcome)))
                .await;
        };
        tokio::spawn(
            work.instrument(tracing::Span::current())
                .with_current_context(),
        );
        Ok(receiver)
    }

    /// The one-request session a modern request (or the gateway, for discovery) is served as.
    fn stateless_session(&self, principal: &Principal, modern: Arc<ModernRequest>) -> Session {
        let owner = self.signer.owner_tag(principal);
        let client_info = modern
            .client_info
            .clone()
            .unwrap_or_else(|| json!({"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")}));
        let mut record = SessionRecord::new(
            ProtocolVersion::LATEST,
            client_info,
            modern.client_capabilities.clone(),
            self.settings.max_lifetime,
        )
        .owned_by(owner.clone(), principal.team().map(str::to_owned));
        record.upstreams.extend(self.stateless.snapshot());
        Session {
            id: stateless_id(&owner),
            record: Arc::new(record),
            modern: Some(modern),
        }
    }
}

/// The record an HTTP upstream session shared by this replica's modern requests is opened
/// with: the gateway's identity and every capability it can gate per request.
pub(super) fn shared_upstream_record(record: &SessionRecord) -> SessionRecord {
    let mut shared = record.clone();
    shared.client_info = json!({"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")});
    shared.client_capabilities = crate::upstream::relayable_capabilities();
    shared
}

/// Whether `id` is a stateless id: it has no record, no event log and no standalone stream.
pub(super) fn is_stateless_id(id: &SessionId) -> bool {
    id.as_str().starts_with(STATELESS_PREFIX)
}

/// How every stateless id starts.
const STATELESS_PREFIX: &str = "stateless-";

/// A principal's stateless id: never a session in the store, and never issued to a client.
fn stateless_id(owner_tag: &str) -> SessionId {
    SessionId::parse(&format!("{STATELESS_PREFIX}{owner_tag}")).unwrap_or_else(SessionId::generate)
}

/// Whether a message may reach a modern client: log messages only when it asked for them.
fn passes(modern: &ModernRequest, outgoing: &Outgoing) -> bool {
    let Outgoing::Message(message) = outgoing else {
        return false;
    };
    if message.get("method").and_then(Value::as_str) != Some(Method::LogMessage.as_str()) {
        return true;
    }
    let level = message.pointer("/params/level").and_then(Value::as_str);
    modern.wants_log(level)
}

/// A filter asking for every kind of change, and for one resource (standing for any).
fn everything() -> ListenFilter {
    ListenFilter {
        tools: true,
        prompts: true,
        resources: true,
        uris: vec![String::new()],
    }
}

/// Capabilities as the modern era knows them: list changes and resource subscriptions come
/// through `subscriptions/listen` (`listen.rs`), which relays list changes from every upstream
/// and resource updates from upstreams that speak 2026-07-28, so each is announced only when
/// one of those (`listenable`) offers it.
fn modern_capabilities(mut capabilities: Value, listenable: &ListenFilter) -> Value {
    let Some(map) = capabilities.as_object_mut() else {
        return capabilities;
    };
    for (kind, capability) in map.iter_mut() {
        let Some(capability) = capability.as_object_mut() else {
            continue;
        };
        let list_changes = match kind.as_str() {
            "tools" => listenable.tools,
            "prompts" => listenable.prompts,
            "resources" => listenable.resources,
            _ => false,
        };
        set_or_remove(capability, "listChanged", list_changes);
        let subscribe = kind == "resources" && !listenable.uris.is_empty();
        set_or_remove(capability, "subscribe", subscribe);
    }
    capabilities
}

fn set_or_remove(capability: &mut serde_json::Map<String, Value>, key: &str, set: bool) {
    if set {
        capability.insert(key.into(), json!(true));
    } else {
        capability.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stateless_ids_are_valid_session_ids_that_differ_per_principal() {
        let signer = super::super::IdSigner::random();
        let alice = signer.owner_tag(&Principal::anonymous());
        let id = stateless_id(&alice);
        assert!(id.as_str().starts_with("stateless-"), "{}", id.as_str());
        assert_eq!(stateless_id(&alice), id);
    }

    #[test]
    fn modern_capabilities_announce_only_what_listen_relays() {
        let merged = json!({"tools": {"listChanged": true}, "prompts": {"listChanged": true}, "resources": {"subscribe": true, "listChanged": true}, "logging": {}});
        assert_eq!(
            modern_capabilities(merged.clone(), &ListenFilter::default()),
            json!({"tools": {}, "prompts": {}, "resources": {}, "logging": {}})
        );
        let tools_only = ListenFilter {
            tools: true,
            ..Default::default()
        };
        assert_eq!(
            modern_capabilities(merged, &tools_only),
            json!({"tools": {"listChanged": true}, "prompts": {}, "resources": {}, "logging": {}})
        );
    }
}

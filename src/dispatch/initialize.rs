//! `initialize`: a new session (with a slot in its principal's session count), upstream
//! sessions opened on the client's behalf, and the merged capabilities of every upstream that
//! answered.

use std::sync::Arc;

use futures::future::join_all;
use rmcp::model::{ErrorCode, ErrorData};
use serde_json::{Map, Value, json};

use super::Gateway;
use crate::auth::Principal;
use crate::catalog::namespaced;
use crate::limits::LimitExceeded;
use crate::protocol::jsonrpc::{Request, error_data};
use crate::protocol::{ProtocolVersion, TASKS_EXTENSION};
use crate::session::{SessionId, SessionRecord, StoreError};
use crate::upstream::InitInfo;

/// Why `initialize` did not create a session.
#[derive(Debug, thiserror::Error)]
pub enum InitializeError {
    #[error("invalid initialize request: {}", .0.message)]
    Invalid(ErrorData),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The principal holds as many sessions as it may.
    #[error(transparent)]
    Limited(#[from] LimitExceeded),
}

impl Gateway {
    /// Creates a session owned by `principal`; returns its id and the `initialize` result.
    /// `max_metadata_bytes` bounds the client metadata the session record keeps.
    pub async fn initialize(
        &self,
        request: &Request,
        principal: &Principal,
        max_metadata_bytes: usize,
    ) -> Result<(SessionId, Value), InitializeError> {
        let id = SessionId::generate();
        let result = self
            .initialize_as(id.clone(), request, principal, max_metadata_bytes)
            .await?;
        Ok((id, result))
    }

    /// Creates the session `id` (a fresh one of ours); returns the `initialize` result.
    pub(super) async fn initialize_as(
        &self,
        id: SessionId,
        request: &Request,
        principal: &Principal,
        max_metadata_bytes: usize,
    ) -> Result<Value, InitializeError> {
        let params = request.params.as_ref().and_then(Value::as_object);
        let requested = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str);
        let capabilities = params
            .and_then(|p| p.get("capabilities"))
            .filter(|c| c.is_object());
        let client_info = params
            .and_then(|p| p.get("clientInfo"))
            .filter(|c| c.is_object());
        let (Some(requested), Some(capabilities), Some(client_info)) =
            (requested, capabilities, client_info)
        else {
            let message = "initialize needs params.protocolVersion (string), params.capabilities and params.clientInfo (objects)";
            return Err(InitializeError::Invalid(error_data(
                ErrorCode::INVALID_PARAMS,
                message,
            )));
        };
        check_metadata_size(client_info, capabilities, max_metadata_bytes)?;
        let version = ProtocolVersion::negotiate(requested);
        let mut record = SessionRecord::new(
            version,
            client_info.clone(),
            capabilities.clone(),
            self.settings.max_lifetime,
        )
        .owned_by(
            self.signer.owner_tag(principal),
            principal.team().map(str::to_owned),
        );
        self.take_session_slot(&id, &record).await?;
        let answered = self.open_upstream_sessions(&id, &mut record).await;
        let policy = self.settings.policy.for_team(record.team.as_deref());
        let upstreams = self.upstreams();
        let permitted = upstreams.iter().filter(|u| policy.allows_upstream(&u.name));
        let some_missing = answered.len() < permitted.count();
        if let Err(error) = self.store.create(&id, &record).await {
            self.free_session_slot(&id, &record).await;
            return Err(error.into());
        }
        self.created_here.insert(&id);
        self.metrics.sessions_created.inc();
        let session = super::Session {
            id,
            record: Arc::new(record),
            modern: None,
        };
        self.hold_streams(&session, super::Resume::FromStart).await;
        Ok(initialize_result(version, &answered, some_missing))
    }

    /// Opens every healthy upstream the session's team may use, in parallel (starting the
    /// session's own child of an isolated stdio upstream); failures leave that upstream out. An
    /// HTTP upstream whose answer is known here is not opened now but on the session's first
    /// request to it (`first_open.rs`), as is an upstream left out, once it is back.
    async fn open_upstream_sessions(
        &self,
        id: &SessionId,
        record: &mut SessionRecord,
    ) -> Vec<Answered> {
        let snapshot = &*record;
        let policy = self.settings.policy.for_team(record.team.as_deref());
        let upstreams = self.upstreams();
        let healthy = upstreams
            .iter()
            .filter(|u| u.is_healthy() && policy.allows_upstream(&u.name));
        let attempts = join_all(healthy.map(|upstream| async move {
            if let Some(info) = upstream.answer_without_opening() {
                return (upstream, Ok(Ok((None, info))));
            }
            let opened =
                tokio::time::timeout(upstream.timeout, upstream.open_session(id, snapshot)).await;
            let opened = opened.map(|o| o.map(|(session, info)| (Some(session), info)));
            (upstream, opened)
        }))
        .await;
        let mut answered = Vec::new();
        let mut opened_sessions = Vec::new();
        for (upstream, attempt) in attempts {
            match attempt {
                Ok(Ok((upstream_session, info))) => {
                    if let Some(upstream_session) = upstream_session {
                        opened_sessions.push((upstream.name.clone(), upstream_session));
                    }
                    answered.push(Answered {
                        name: upstream.name.clone(),
                        prefix: upstream.prefix.clone(),
                        info,
                    });
                }
                Ok(Err(error)) => tracing::warn!(%error, "upstream left out of a new session"),
                Err(_) => {
                    tracing::warn!(upstream = %upstream.name, "upstream did not initialize in time; left out of a new session")
                }
            }
        }
        record.upstreams.extend(opened_sessions);
        answered
    }
}

/// Refuses client metadata of more than `limit` bytes serialized: the session record keeps it
/// for the session's whole life, so its size is the client's to choose only within a bound.
fn check_metadata_size(
    client_info: &Value,
    capabilities: &Value,
    limit: usize,
) -> Result<(), InitializeError> {
    let size = serialized_len(client_info) + serialized_len(capabilities);
    if size <= limit {
        return Ok(());
    }
    let message = format!(
        "params.clientInfo and params.capabilities take {size} bytes; the limit is {limit} bytes (server.max_client_metadata_bytes)"
    );
    Err(InitializeError::Invalid(error_data(
        ErrorCode::INVALID_PARAMS,
        message,
    )))
}

fn serialized_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len())
}

/// What one upstream answered when a session was opened.
pub(super) struct Answered {
    pub(super) name: String,
    pub(super) prefix: String,
    pub(super) info: Arc<InitInfo>,
}

/// The answer to `initialize`. `some_missing`: an upstream did not answer, and may come later.
fn initialize_result(version: ProtocolVersion, answered: &[Answered], some_missing: bool) -> Value {
    let infos: Vec<&InitInfo> = answered.iter().map(|a| a.info.as_ref()).collect();
    let mut result = json!({
        "protocolVersion": version.as_str(),
        "capabilities": merged_capabilities(&infos, some_missing),
        "serverInfo": {"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")},
    });
    if let Some(instructions) = merged_instructions(answered) {
        result["instructions"] = json!(instructions);
    }
    result
}

/// The union of the upstreams' server capabilities, as far as the gateway can serve them.
///
/// The gateway announces list changes itself when an upstream recovers, so every list
/// capability declares `listChanged`. While an upstream has not answered, every list
/// capability is declared: that upstream may bring it when it comes up.
///
/// The tasks extension is announced under `extensions` when an upstream that answered offers it
/// (`tasks.rs`).
pub(super) fn merged_capabilities(infos: &[&InitInfo], some_missing: bool) -> Value {
    let has = |name: &str| some_missing || infos.iter().any(|i| i.capabilities.get(name).is_some());
    let subscribe = infos.iter().any(|i| {
        i.capabilities
            .get("resources")
            .and_then(|c| c.get("subscribe"))
            .and_then(Value::as_bool)
            == Some(true)
    });
    let mut capabilities = Map::new();
    capabilities.insert("logging".into(), json!({}));
    for name in ["tools", "prompts"] {
        if has(name) {
            capabilities.insert(name.into(), json!({"listChanged": true}));
        }
    }
    if has("resources") {
        let resources = json!({"subscribe": subscribe, "listChanged": true});
        capabilities.insert("resources".into(), resources);
    }
    if infos
        .iter()
        .any(|i| i.capabilities.get("completions").is_some())
    {
        capabilities.insert("completions".into(), json!({}));
    }
    if super::tasks::offered(infos) {
        let mut extensions = Map::new();
        extensions.insert(TASKS_EXTENSION.into(), json!({}));
        capabilities.insert("extensions".into(), Value::Object(extensions));
    }
    Value::Object(capabilities)
}

/// Every upstream's `instructions`, in configuration order, each under a heading that names
/// the upstream and how its names appear here; `None` when no upstream gave any.
pub(super) fn merged_instructions(answered: &[Answered]) -> Option<String> {
    let parts: Vec<String> = answered
        .iter()
        .filter_map(|a| {
            let text = a.info.instructions.as_deref()?.trim();
            (!text.is_empty()).then(|| format!("{}\n\n{text}", heading(a)))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// `## <upstream>`, and the form its tool and prompt names take through the gateway.
fn heading(answered: &Answered) -> String {
    format!(
        "## {}\n\nThis server's tools and prompts are named `{}` here.",
        answered.name,
        namespaced(&answered.prefix, "<name>")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(capabilities: Value) -> InitInfo {
        InitInfo {
            protocol_version: "2025-11-25".into(),
            capabilities,
            server_info: Value::Null,
            instructions: None,
        }
    }

    fn answered(name: &str, prefix: &str, instructions: Option<&str>) -> Answered {
        let mut info = info(json!({}));
        info.instructions = instructions.map(str::to_owned);
        Answered {
            name: name.into(),
            prefix: prefix.into(),
            info: Arc::new(info),
        }
    }

    #[test]
    fn merges_capabilities_as_a_union_that_announces_list_changes() {
        let tools = info(json!({"tools": {}}));
        let resources = info(json!({"resources": {"subscribe": true}, "completions": {}}));
        let merged = merged_capabilities(&[&tools, &resources], false);
        assert_eq!(merged["tools"]["listChanged"], json!(true));
        assert_eq!(merged["resources"]["subscribe"], json!(true));
        assert_eq!(merged["resources"]["listChanged"], json!(true));
        assert!(merged.get("prompts").is_none());
        assert!(merged.get("completions").is_some());
        assert!(merged.get("logging").is_some());
    }

    #[test]
    fn announces_the_tasks_extension_only_where_an_upstream_offers_it() {
        let plain = info(json!({"tools": {}}));
        let merged = merged_capabilities(&[&plain], true);
        assert!(merged.get("extensions").is_none(), "{merged}");
        let tasks = info(json!({"extensions": {TASKS_EXTENSION: {}}, "tasks": {}}));
        let merged = merged_capabilities(&[&plain, &tasks], false);
        assert_eq!(merged["extensions"], json!({TASKS_EXTENSION: {}}));
        assert!(merged.get("tasks").is_none(), "{merged}");
    }

    #[test]
    fn declares_every_list_while_an_upstream_is_missing() {
        let tools = info(json!({"tools": {}}));
        let merged = merged_capabilities(&[&tools], true);
        for list in ["tools", "prompts", "resources"] {
            assert_eq!(merged[list]["listChanged"], json!(true), "{merged}");
        }
        assert_eq!(merged["resources"]["subscribe"], json!(false));
        assert!(merged.get("completions").is_none());
    }

    #[test]
    fn merges_instructions_attributed_per_upstream_in_order() {
        let merged = merged_instructions(&[
            answered("files", "fs", Some("Read before you write.")),
            answered("quiet", "q", None),
            answered("blank", "b", Some("  ")),
            answered("search", "", Some("Search first.\n")),
        ])
        .unwrap();
        assert_eq!(
            merged,
            "## files\n\nThis server's tools and prompts are named `fs__<name>` here.\n\n\
             Read before you write.\n\n\
             ## search\n\nThis server's tools and prompts are named `<name>` here.\n\n\
             Search first."
        );
    }

    #[test]
    fn bounds_client_metadata_by_its_serialized_size() {
        let info = json!({"name": "c", "version": "1"});
        let size = serialized_len(&info) + serialized_len(&json!({}));
        assert!(check_metadata_size(&info, &json!({}), size).is_ok());
        let error = check_metadata_size(&info, &json!({}), size - 1).unwrap_err();
        assert!(error.to_string().contains(&format!(
            "take {size} bytes; the limit is {} bytes (server.max_client_metadata_bytes)",
            size - 1
        )));
    }

    #[test]
    fn no_instructions_when_no_upstream_gave_any() {
        assert_eq!(merged_instructions(&[answered("quiet", "q", None)]), None);
        assert_eq!(merged_instructions(&[]), None);
    }
}

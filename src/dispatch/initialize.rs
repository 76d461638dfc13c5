//! `initialize`: a new session, upstream sessions opened on the client's behalf, and the
//! merged capabilities of every upstream that answered.

use futures::future::join_all;
use rmcp::model::{ErrorCode, ErrorData};
use serde_json::{Map, Value, json};

use super::Gateway;
use crate::jsonrpc::{Request, error_data};
use crate::protocol::ProtocolVersion;
use crate::session::{SessionId, SessionRecord, StoreError};
use crate::upstream::InitInfo;

/// Why `initialize` did not create a session.
#[derive(Debug, thiserror::Error)]
pub enum InitializeError {
    #[error("invalid initialize request: {}", .0.message)]
    Invalid(ErrorData),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Gateway {
    /// Creates a session; returns its id and the `initialize` result.
    pub async fn initialize(
        &self,
        request: &Request,
    ) -> Result<(SessionId, Value), InitializeError> {
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
        let version = ProtocolVersion::negotiate(requested);
        let id = SessionId::generate();
        let mut record = SessionRecord::new(
            version,
            client_info.clone(),
            capabilities.clone(),
            self.settings.max_lifetime,
        );
        let infos = self.open_upstream_sessions(&mut record).await;
        self.store.create(&id, &record).await?;
        self.hub.attach(&id, &record);
        self.metrics.sessions_created.inc();
        Ok((id, initialize_result(version, &infos)))
    }

    /// Opens every upstream for the session in parallel; failures leave that upstream out.
    async fn open_upstream_sessions(&self, record: &mut SessionRecord) -> Vec<InitInfo> {
        let snapshot = &*record;
        let attempts = join_all(self.upstreams.iter().map(|upstream| async move {
            let opened =
                tokio::time::timeout(upstream.timeout, upstream.open_session(snapshot)).await;
            (upstream, opened)
        }))
        .await;
        let mut infos = Vec::new();
        let mut opened_sessions = Vec::new();
        for (upstream, attempt) in attempts {
            match attempt {
                Ok(Ok((upstream_session, info))) => {
                    opened_sessions.push((upstream.name.clone(), upstream_session));
                    infos.push(info);
                }
                Ok(Err(error)) => tracing::warn!(%error, "upstream left out of a new session"),
                Err(_) => {
                    tracing::warn!(upstream = %upstream.name, "upstream did not initialize in time; left out of a new session")
                }
            }
        }
        record.upstreams.extend(opened_sessions);
        infos
    }
}

/// The answer to `initialize`.
fn initialize_result(version: ProtocolVersion, infos: &[InitInfo]) -> Value {
    json!({
        "protocolVersion": version.as_str(),
        "capabilities": merged_capabilities(infos),
        "serverInfo": {"name": "mcpgate", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// The union of the upstreams' server capabilities, as far as the gateway can serve them.
fn merged_capabilities(infos: &[InitInfo]) -> Value {
    let has = |name: &str| infos.iter().any(|i| i.capabilities.get(name).is_some());
    let flag = |name: &str, field: &str| {
        infos.iter().any(|i| {
            i.capabilities
                .get(name)
                .and_then(|c| c.get(field))
                .and_then(Value::as_bool)
                == Some(true)
        })
    };
    let mut capabilities = Map::new();
    capabilities.insert("logging".into(), json!({}));
    for name in ["tools", "prompts"] {
        if has(name) {
            capabilities.insert(
                name.into(),
                json!({"listChanged": flag(name, "listChanged")}),
            );
        }
    }
    if has("resources") {
        let resources = json!({"subscribe": flag("resources", "subscribe"), "listChanged": flag("resources", "listChanged")});
        capabilities.insert("resources".into(), resources);
    }
    if has("completions") {
        capabilities.insert("completions".into(), json!({}));
    }
    Value::Object(capabilities)
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

    #[test]
    fn merges_capabilities_as_a_union() {
        let merged = merged_capabilities(&[
            info(json!({"tools": {"listChanged": true}})),
            info(json!({"resources": {"subscribe": true}, "completions": {}})),
        ]);
        assert_eq!(merged["tools"]["listChanged"], json!(true));
        assert_eq!(merged["resources"]["subscribe"], json!(true));
        assert_eq!(merged["resources"]["listChanged"], json!(false));
        assert!(merged.get("prompts").is_none());
        assert!(merged.get("completions").is_some());
        assert!(merged.get("logging").is_some());
    }
}

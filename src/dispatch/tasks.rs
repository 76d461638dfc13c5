//! The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) through the gateway: the
//! task ids clients see, the routing of `tasks/get`, `tasks/update` and `tasks/cancel` by
//! them, and whether the gateway offers the extension at all.
//!
//! An upstream answers a `tools/call` it runs as a task with a `CreateTaskResult` naming its
//! own task id. The client sees `mcpgate-task.<payload>.<mac>` instead: the payload names the
//! upstream and its id, and an HMAC-SHA256 under the fleet's key (`signing.rs`) binds them to
//! the owner tag of the principal the task was created for. Any replica can route a task
//! request from the id alone (no task is remembered anywhere), and a client can neither
//! forge an id, nor reach another upstream's task, nor another principal's: such an id is
//! answered -32602 exactly as an unknown one. A client that did not declare the extension
//! (in its `initialize` or the request's `_meta`) gets -32021 naming it, before its id is
//! looked at.
//!
//! Only the three methods of the extension are served; `tasks/result` and `tasks/list` (the
//! experimental tasks of 2025-11-25, which the extension removed) stay unknown methods.
//! A stdio upstream's task lives in the child of the replica that created it (each replica
//! runs its own): its id also names that replica, and another replica sends the task's
//! requests there over the fleet's bus (`remote.rs`). Task status notifications (`notifications/tasks`) are
//! not rewritten yet: a client sees them with the upstream's own task id.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use rmcp::model::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::RpcError;
use super::{Gateway, IdSigner, Outbox, Outcome, Session, error_object};
use crate::protocol::ModernError;
use crate::protocol::jsonrpc::Request;
use crate::protocol::{ServerCapability, TASKS_EXTENSION, extension_declared};
use crate::upstream::{InitInfo, Upstream};

/// How every task id the gateway issues starts.
const PREFIX: &str = "mcpgate-task.";
/// Bytes of the MAC kept in an id: 128 bits.
const MAC_BYTES: usize = 16;
/// Where a result names its task.
const TASK_ID: &str = "taskId";

/// Why a task request is refused before it reaches an upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum TaskError {
    #[error(
        "tasks need the client capability extensions[\"io.modelcontextprotocol/tasks\"], which was not declared"
    )]
    NotDeclared,
    /// Unknown, forged, or issued to another principal: indistinguishable on purpose.
    #[error("Unknown task: {0}")]
    Unknown(String),
}

impl TaskError {
    /// The JSON-RPC error object, with the capability the client must declare for -32021.
    fn object(&self) -> RpcError {
        match self {
            TaskError::NotDeclared => {
                let mut error =
                    error_object(ModernError::MISSING_CLIENT_CAPABILITY, self.to_string());
                let extension = json!({ TASKS_EXTENSION: {} });
                error.data = Some(json!({"requiredCapabilities": {"extensions": extension}}));
                error
            }
            TaskError::Unknown(_) => error_object(ErrorCode::INVALID_PARAMS, self.to_string()),
        }
    }
}

/// What a valid task id names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TaskRef {
    #[serde(rename = "u")]
    upstream: String,
    /// The upstream's own id for the task.
    #[serde(rename = "t")]
    id: String,
    /// The replica whose stdio child holds the task; none for an HTTP upstream, which any
    /// replica reaches.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
}

impl Gateway {
    /// `tasks/get`, `tasks/update`, `tasks/cancel`: to the upstream the id names, with its own
    /// id; a result naming the task names it as the client knows it.
    pub(super) async fn task_request(
        &self,
        session: &Session,
        mut request: Request,
        outbox: &Outbox,
        task_id: String,
    ) -> Outcome {
        if !declares_tasks(&session.record.client_capabilities) {
            return Err(TaskError::NotDeclared.object());
        }
        let (upstream, task) = self
            .task_upstream(session, &task_id)
            .ok_or_else(|| TaskError::Unknown(task_id.clone()).object())?;
        if let Some(Value::Object(params)) = request.params.as_mut() {
            params.insert(TASK_ID.into(), json!(task.id));
        }
        let mut result = match &task.replica {
            Some(replica) => self.run_on(replica, &upstream, request).await?,
            None => self.forward(session, &upstream, request, outbox).await?,
        };
        if let Some(named) = result.get_mut(TASK_ID) {
            *named = json!(task_id);
        }
        Ok(result)
    }

    /// A `tools/call` result as the client sees it: a `CreateTaskResult` names the task by
    /// the id the gateway issues for it.
    pub(super) fn issue_task_id(&self, session: &Session, upstream: &str, result: &mut Value) {
        if result.get("resultType").and_then(Value::as_str) != Some("task") {
            return;
        }
        let Some(Value::String(own_id)) = result.get(TASK_ID) else {
            return;
        };
        let upstreams = self.upstreams();
        let replica = upstreams
            .by_name(upstream)
            .filter(|upstream| !upstream.has_upstream_sessions())
            .map(|_| self.signer.replica().to_owned());
        let task = TaskRef {
            upstream: upstream.to_owned(),
            id: own_id.clone(),
            replica,
        };
        let issued = seal_task_id(&self.signer, &session.record.owner, &task);
        result[TASK_ID] = json!(issued);
    }

    /// The upstream `task_id` names and its own id, if a replica issued it to this session's
    /// principal and the session's team may still use that upstream.
    fn task_upstream(&self, session: &Session, task_id: &str) -> Option<(Arc<Upstream>, TaskRef)> {
        let task = open_task_id(&self.signer, &session.record.owner, task_id)?;
        let upstream = self.upstreams().by_name(&task.upstream)?;
        self.policy(session)
            .allows_upstream(&upstream.name)
            .then(|| (upstream.clone(), task))
    }
}

/// The id the client sees for `task`, issued to `owner`.
fn seal_task_id(signer: &IdSigner, owner: &str, task: &TaskRef) -> String {
    let payload = serde_json::to_string(task).unwrap_or_default();
    let mac = signer.task_mac(owner, payload.as_bytes()).finalize();
    let mac = URL_SAFE_NO_PAD.encode(&mac.into_bytes()[..MAC_BYTES]);
    format!("{PREFIX}{}.{mac}", URL_SAFE_NO_PAD.encode(payload))
}

/// What `task_id` names, if a replica with our key issued it to `owner`.
fn open_task_id(signer: &IdSigner, owner: &str, task_id: &str) -> Option<TaskRef> {
    let (payload, mac) = task_id.strip_prefix(PREFIX)?.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
    if mac.len() != MAC_BYTES {
        return None;
    }
    signer
        .task_mac(owner, &payload)
        .verify_truncated_left(&mac)
        .ok()?;
    serde_json::from_slice(&payload).ok()
}

/// Whether a client's capabilities declare the extension.
fn declares_tasks(capabilities: &Value) -> bool {
    extension_declared(capabilities, TASKS_EXTENSION)
}

/// Whether an upstream that answered offers the extension: the gateway announces it then.
pub(super) fn offered(infos: &[&InitInfo]) -> bool {
    let tasks = ServerCapability::Tasks;
    infos
        .iter()
        .any(|info| tasks.is_declared_in(&info.capabilities))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;

    #[test]
    fn issued_ids_open_only_for_their_owner() {
        let signer = IdSigner::random();
        let alice = signer.owner_tag(&Principal::anonymous());
        let task = TaskRef {
            upstream: "fs".into(),
            id: "task-1".into(),
            replica: Some("r1".into()),
        };
        let id = seal_task_id(&signer, &alice, &task);
        assert!(id.starts_with(PREFIX));
        assert_eq!(open_task_id(&signer, &alice, &id), Some(task));
        assert_eq!(open_task_id(&signer, "someone else", &id), None);
        assert_eq!(open_task_id(&IdSigner::random(), &alice, &id), None);
    }

    #[test]
    fn forged_or_truncated_ids_do_not_open() {
        let signer = IdSigner::random();
        let owner = signer.owner_tag(&Principal::anonymous());
        let task = TaskRef {
            upstream: "fs".into(),
            id: "task-1".into(),
            replica: None,
        };
        let id = seal_task_id(&signer, &owner, &task);
        let (head, mac) = id.rsplit_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(json!({"u": "db", "t": "task-1"}).to_string());
        let forged = format!("{PREFIX}{other}.{mac}");
        assert_eq!(open_task_id(&signer, &owner, &forged), None);
        let truncated = format!("{head}.{}", &mac[..2]);
        assert_eq!(open_task_id(&signer, &owner, &truncated), None);
        assert_eq!(open_task_id(&signer, &owner, "task-1"), None);
    }

    #[test]
    fn the_extension_is_declared_under_extensions() {
        assert!(declares_tasks(
            &json!({"extensions": {TASKS_EXTENSION: {}}})
        ));
        assert!(!declares_tasks(&json!({"tasks": {}})));
        assert!(!declares_tasks(&json!({})));
    }
}

//! The list methods, merged across upstreams: namespaced names, filtered tools, resource
//! routes learned, and one cursor that carries every upstream's own cursor.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::join_all;
use rmcp::model::ErrorCode;
use serde_json::{Map, Value, json};

use super::RpcError;
use super::{Gateway, Outbox, Outcome, Session, error_object};
use crate::catalog::{ListCursor, namespaced};
use crate::policy::TeamPolicy;
use crate::protocol::jsonrpc::Request;
use crate::protocol::{ListKind, Method};
use crate::upstream::Upstream;

/// The upstreams one list call asks, each with its own cursor (none for a first page).
type PageTargets = Vec<(Arc<Upstream>, Option<String>)>;

impl Gateway {
    pub(super) async fn list(
        &self,
        session: &Session,
        kind: ListKind,
        request: Request,
        outbox: &Outbox,
    ) -> Outcome {
        let cursor = request.params.as_ref().and_then(|p| p.get("cursor"));
        let targets: PageTargets = match cursor {
            None | Some(Value::Null) => self
                .upstreams_for(session, &Method::List(kind))
                .into_iter()
                .map(|u| (u, None))
                .collect(),
            Some(Value::String(text)) => self.cursor_targets(session, text)?,
            Some(_) => {
                return Err(error_object(
                    ErrorCode::INVALID_PARAMS,
                    "params.cursor must be a string",
                ));
            }
        };
        let meta = request
            .params
            .as_ref()
            .and_then(|p| p.get("_meta"))
            .cloned();
        let pages = join_all(targets.iter().map(|(upstream, cursor)| {
            let mut page_request = request.clone();
            page_request.params = Some(page_params(cursor.as_deref(), meta.clone()));
            self.forward(session, upstream, page_request, outbox)
        }))
        .await;
        let mut items = Vec::new();
        let mut seen_uris = HashSet::new();
        let mut next = ListCursor::default();
        for ((upstream, _), page) in targets.iter().zip(pages) {
            match page {
                Ok(page) => {
                    let adopted = self.adopt(session, kind, upstream, &page, &mut seen_uris);
                    items.extend(adopted);
                    if let Some(c) = page.get("nextCursor").and_then(Value::as_str) {
                        next.pending.insert(upstream.name.clone(), c.to_owned());
                    }
                }
                Err(error) => {
                    tracing::warn!(upstream = %upstream.name, %error, method = kind.method(), "leaving an upstream out of a list")
                }
            }
        }
        let mut result = Map::new();
        result.insert(kind.field().into(), Value::Array(items));
        if let Some(cursor) = next.encode() {
            result.insert("nextCursor".into(), json!(cursor));
        }
        Ok(Value::Object(result))
    }

    /// The upstreams a cursor names, each with its own cursor; a cursor naming an upstream the
    /// team may not use is not one this gateway issued to it.
    fn cursor_targets(&self, session: &Session, text: &str) -> Result<PageTargets, RpcError> {
        let policy = self.policy(session);
        let invalid = || {
            error_object(
                ErrorCode::INVALID_PARAMS,
                "params.cursor is not a cursor this gateway issued",
            )
        };
        let cursor = ListCursor::decode(text).ok_or_else(invalid)?;
        cursor
            .pending
            .into_iter()
            .map(|(name, c)| {
                self.upstreams()
                    .by_name(&name)
                    .filter(|u| policy.allows_upstream(&u.name))
                    .map(|u| (u.clone(), Some(c)))
                    .ok_or_else(invalid)
            })
            .collect()
    }

    /// One upstream's items as the client sees them: what the tool filter and the team's
    /// policy let through. A resource URI already listed by an upstream earlier in the
    /// configuration is left out: that one serves it.
    fn adopt(
        &self,
        session: &Session,
        kind: ListKind,
        upstream: &Upstream,
        page: &Value,
        seen_uris: &mut HashSet<String>,
    ) -> Vec<Value> {
        let items = page
            .get(kind.field())
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if kind == ListKind::Tools {
            upstream.tool_headers.learn(&items);
        }
        let policy = self.policy(session);
        items
            .into_iter()
            .filter_map(|mut item| {
                match kind {
                    ListKind::Tools | ListKind::Prompts => {
                        let own = item.get("name").and_then(Value::as_str)?;
                        item["name"] = json!(visible_name(policy, kind, upstream, own)?);
                    }
                    ListKind::Resources => {
                        let uri = item.get("uri").and_then(Value::as_str)?;
                        if !policy.allows_resource(uri) || !seen_uris.insert(uri.to_owned()) {
                            return None;
                        }
                        self.routes.learn_resource(uri, &upstream.name);
                    }
                    ListKind::ResourceTemplates => self.routes.learn_template(
                        item.get("uriTemplate").and_then(Value::as_str)?,
                        &upstream.name,
                    ),
                }
                Some(item)
            })
            .collect()
    }
}

/// The params of one upstream's page: its own cursor, and the client's `_meta` (a modern
/// request's protocol fields, a progress token).
pub(super) fn page_params(cursor: Option<&str>, meta: Option<Value>) -> Value {
    let mut params = cursor.map_or_else(|| json!({}), |c| json!({"cursor": c}));
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    params
}

/// The name a tool or prompt of `upstream` has for the client, when the upstream's tool filter
/// and the team's policy let it through.
fn visible_name(
    policy: &TeamPolicy,
    kind: ListKind,
    upstream: &Upstream,
    own: &str,
) -> Option<String> {
    let name = namespaced(&upstream.prefix, own);
    let allowed = if kind == ListKind::Tools {
        upstream.filter.allows(own) && policy.allows_tool(&upstream.name, &name)
    } else {
        policy.allows_prompt(&upstream.name, &name)
    };
    allowed.then_some(name)
}

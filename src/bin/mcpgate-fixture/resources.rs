//! Resources: the static catalog, the `test://template/{id}/data` template,
//! `resources/read`, and per-session subscriptions (`resources/subscribe`, legacy sessions; the
//! 2026-07-28 wire subscribes with `subscriptions/listen`, see `subscriptions.rs`).
//! `test://watched-resource` changes every [`WATCH_PERIOD`]; subscribers get
//! `notifications/resources/updated`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rmcp::{
    ErrorData as McpError, Peer, RoleServer,
    model::{
        ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
        ResourceUpdatedNotificationParam,
    },
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::media;

/// URI of the resource whose content changes over time.
pub const WATCHED_URI: &str = "test://watched-resource";

/// How often the watched resource changes.
pub const WATCH_PERIOD: Duration = Duration::from_secs(2);

/// URI prefix and suffix of the template `test://template/{id}/data`.
const TEMPLATE_PREFIX: &str = "test://template/";
const TEMPLATE_SUFFIX: &str = "/data";

/// Direct resources listed by `resources/list`.
pub fn catalog() -> Vec<Resource> {
    vec![
        Resource::new("test://static-text", "static-text")
            .with_title("Static text")
            .with_description("A fixed plain-text resource")
            .with_mime_type("text/plain"),
        Resource::new("test://static-binary", "static-binary")
            .with_title("Static binary")
            .with_description("A fixed PNG image")
            .with_mime_type(media::PNG_MIME),
        Resource::new(WATCHED_URI, "watched-resource")
            .with_title("Watched resource")
            .with_description("Plain text that changes every two seconds; subscribe to be told")
            .with_mime_type("text/plain"),
    ]
}

/// Templates listed by `resources/templates/list`.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(
            format!("{TEMPLATE_PREFIX}{{id}}{TEMPLATE_SUFFIX}"),
            "template",
        )
        .with_title("Data by id")
        .with_description("JSON document generated from the {id} in the URI")
        .with_mime_type("application/json"),
    ]
}

/// Reads a direct resource or a template instance.
pub fn read(uri: &str) -> Result<ReadResourceResult, McpError> {
    let contents = match uri {
        "test://static-text" => {
            ResourceContents::text("This is the content of the static text resource.", uri)
        }
        "test://static-binary" => {
            ResourceContents::blob(media::PNG_BASE64, uri).with_mime_type(media::PNG_MIME)
        }
        WATCHED_URI => ResourceContents::text(
            format!("Watched resource, revision {}", watched_revision()),
            uri,
        ),
        _ => template_instance(uri).ok_or_else(|| not_found(uri))?,
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// Contents of `test://template/{id}/data`, when `uri` matches the template.
fn template_instance(uri: &str) -> Option<ResourceContents> {
    let id = uri
        .strip_prefix(TEMPLATE_PREFIX)?
        .strip_suffix(TEMPLATE_SUFFIX)?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    let body = json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
    Some(ResourceContents::text(body.to_string(), uri).with_mime_type("application/json"))
}

/// The current revision of the watched resource.
fn watched_revision() -> u64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    elapsed.as_secs() / WATCH_PERIOD.as_secs()
}

/// The MCP "resource not found" error (-32002).
fn not_found(uri: &str) -> McpError {
    McpError::resource_not_found(
        format!("Resource not found: {uri}"),
        Some(json!({"uri": uri})),
    )
}

/// URIs one session subscribed to, each with the token that stops its watcher.
#[derive(Clone, Default)]
pub struct Subscriptions(Arc<Mutex<HashMap<String, CancellationToken>>>);

impl Subscriptions {
    /// Records a subscription; the watched resource then reports its changes to `peer`.
    pub fn subscribe(&self, uri: String, peer: Peer<RoleServer>) -> Result<(), McpError> {
        read(&uri)?;
        let mut subscribed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if subscribed.contains_key(&uri) {
            return Ok(());
        }
        let stop = CancellationToken::new();
        if uri == WATCHED_URI {
            tokio::spawn(watch(uri.clone(), peer, stop.clone()));
        }
        subscribed.insert(uri, stop);
        Ok(())
    }

    /// Forgets a subscription and stops its watcher; unknown URIs are ignored.
    pub fn unsubscribe(&self, uri: &str) {
        let removed = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uri);
        if let Some(stop) = removed {
            stop.cancel();
        }
    }
}

/// Notifies `peer` of each change of `uri` until stopped or the session ends.
async fn watch(uri: String, peer: Peer<RoleServer>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(WATCH_PERIOD) => {}
        }
        let params = ResourceUpdatedNotificationParam::new(uri.clone());
        if let Err(error) = peer.notify_resource_updated(params).await {
            tracing::debug!(%error, uri, "stopping resource watcher");
            return;
        }
    }
}

//! List-change announcements and `subscriptions/listen` (2026-07-28): the tools
//! `test_trigger_tool_change` and `test_trigger_prompt_change` announce that a list changed
//! (the lists themselves are fixed) to every open listen stream through [`Changes`], shared by
//! all the handlers of one process, and, in a legacy session, to the calling client too. A
//! listen stream carries what its filter accepted: list changes and, for subscribed resources,
//! `notifications/resources/updated` each time `test://watched-resource` changes.

use rmcp::{
    ErrorData as McpError, RoleServer,
    model::{CallToolResult, SubscriptionFilter},
    service::{RequestContext, SubscriptionContext, SubscriptionSendError},
};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{era, resources, tools::text};

/// Changes not yet taken by a slow listen stream before it misses some.
const BACKLOG: usize = 16;

/// A list that changed.
#[derive(Clone, Copy, Debug)]
pub enum Change {
    Tools,
    Prompts,
}

/// Where list changes are announced to the open listen streams.
#[derive(Clone)]
pub struct Changes(broadcast::Sender<Change>);

impl Default for Changes {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

/// The part of `requested` the fixture serves: both list changes, and updates of readable
/// resources.
pub fn accepted_filter(requested: &SubscriptionFilter) -> SubscriptionFilter {
    let mut accepted = SubscriptionFilter::builder()
        .tools_list_changed()
        .prompts_list_changed()
        .build();
    accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
        uris.iter()
            .filter(|uri| resources::read(uri).is_ok())
            .cloned()
            .collect()
    });
    accepted
}

/// Serves one listen stream until the client goes away.
pub async fn listen(changes: &Changes, subscription: SubscriptionContext) -> Result<(), McpError> {
    let mut announced = changes.0.subscribe();
    let watched = subscription
        .accepted()
        .resource_subscriptions
        .as_ref()
        .is_some_and(|uris| uris.iter().any(|uri| uri == resources::WATCHED_URI));
    let mut ticks = tokio::time::interval(resources::WATCH_PERIOD);
    ticks.tick().await;
    let sink = subscription.sink();
    loop {
        let sent = tokio::select! {
            () = subscription.cancelled() => return Ok(()),
            change = announced.recv() => match change {
                Ok(Change::Tools) => sink.notify_tool_list_changed().await,
                Ok(Change::Prompts) => sink.notify_prompt_list_changed().await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "listen stream fell behind the list changes");
                    Ok(())
                }
                Err(RecvError::Closed) => return Ok(()),
            },
            _ = ticks.tick(), if watched => sink.notify_resource_updated(resources::WATCHED_URI).await,
        };
        match sent {
            Ok(()) | Err(SubscriptionSendError::NotificationNotAccepted(_)) => {}
            Err(error) => {
                tracing::debug!(%error, "listen stream closed");
                return Ok(());
            }
        }
    }
}

/// Body of `test_trigger_tool_change` and `test_trigger_prompt_change`.
pub async fn trigger(
    changes: &Changes,
    context: &RequestContext<RoleServer>,
    change: Change,
) -> CallToolResult {
    let listening = changes.0.send(change).unwrap_or(0);
    if !era::is_modern(context) {
        let told = match change {
            Change::Tools => context.peer.notify_tool_list_changed().await,
            Change::Prompts => context.peer.notify_prompt_list_changed().await,
        };
        if let Err(error) = told {
            tracing::debug!(%error, "could not announce the list change to the session");
        }
    }
    text(format!(
        "{change:?} list change announced to {listening} listen stream(s)"
    ))
}

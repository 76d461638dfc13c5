//! A live reload's new set of upstreams, built from the running one and the new file's
//! `[[upstreams]]`: an entry that did not change keeps its running upstream (its children,
//! its caches, its sessions' upstream sessions); one whose `prefix`, `allow` or `deny` alone
//! changed keeps its transport under the new view; any other change or a new entry starts a
//! new upstream; the running transports no longer used are handed back to be retired.

use std::sync::Arc;

use super::{UnsolicitedSink, Upstream, UpstreamError, Upstreams};
use crate::config::UpstreamConfig;

/// What a reload changes, by upstream name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpstreamChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Entries whose values changed: the upstream is replaced by a new one.
    pub changed: Vec<String>,
}

impl UpstreamChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Every upstream whose tools, prompts or resources may look different now.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.added.iter().chain(&self.removed).chain(&self.changed)
    }
}

/// The new set, what to retire, and what changed.
pub struct Reconciled {
    pub upstreams: Upstreams,
    /// Running upstreams removed or replaced with another transport: to stop once their
    /// requests finish.
    pub retired: Vec<Arc<Upstream>>,
    pub changes: UpstreamChanges,
}

impl Upstreams {
    /// The set `configs` asks for, keeping what runs unchanged. Nothing is retired when a new
    /// upstream cannot be built (the error says which); the upstreams started by then are
    /// dropped again, which stops their children.
    pub fn reconcile(
        &self,
        configs: &[UpstreamConfig],
        sink: &UnsolicitedSink,
    ) -> Result<Reconciled, UpstreamError> {
        let mut changes = UpstreamChanges::default();
        let mut list = Vec::with_capacity(configs.len());
        for config in configs {
            let running = self.by_name(&config.name);
            let upstream = match running {
                Some(upstream) if upstream.is_configured_as(config) => upstream,
                Some(upstream) if upstream.serves_as(config) => {
                    changes.changed.push(config.name.clone());
                    Arc::new(upstream.reviewed(config))
                }
                Some(_) => {
                    changes.changed.push(config.name.clone());
                    Arc::new(Upstream::start(config, sink)?)
                }
                None => {
                    changes.added.push(config.name.clone());
                    Arc::new(Upstream::start(config, sink)?)
                }
            };
            list.push(upstream);
        }
        let kept = |old: &Arc<Upstream>| list.iter().any(|new| new.shares_transport_with(old));
        let retired: Vec<Arc<Upstream>> = self.iter().filter(|u| !kept(u)).cloned().collect();
        changes.removed = retired
            .iter()
            .filter(|u| !configs.iter().any(|c| c.name == u.name))
            .map(|u| u.name.clone())
            .collect();
        Ok(Reconciled {
            upstreams: Upstreams { list },
            retired,
            changes,
        })
    }
}

//! The GET streams of this replica's shared upstream sessions (`stateless.rs`), held while
//! listen streams need them: a legacy HTTP upstream announces list changes only on a session's
//! GET stream, and modern requests have no session of their own to hold one for.
//!
//! The first listen stream that covers such an upstream opens the stream; the last one to end
//! closes it. What arrives goes to the change feed (`changes.rs`) and nowhere else: messages
//! for a stateless id are never logged (`unsolicited.rs`). At most one stream per upstream per
//! replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::{Gateway, Session};
use crate::sync::lock;
use crate::upstream::{Upstream, UpstreamListener};

/// The held streams, by upstream name, with how many listen streams need each.
#[derive(Default)]
pub(super) struct SharedStreams {
    held: Mutex<HashMap<String, (usize, UpstreamListener)>>,
}

/// One listen stream's need of an upstream's shared GET stream; released when dropped.
pub(super) struct Watching {
    gateway: Weak<Gateway>,
    upstream: String,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let Some(gateway) = self.gateway.upgrade() else {
            return;
        };
        let mut held = lock(&gateway.shared_streams.held);
        if let Some((count, _)) = held.get_mut(&self.upstream) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.upstream);
            }
        }
    }
}

impl Gateway {
    /// Makes sure the shared upstream session's GET stream of `upstream` is held while the
    /// returned guard lives; `None` for upstreams without upstream sessions, or when the
    /// session or its stream cannot be opened.
    pub(super) async fn watch_shared_stream(
        &self,
        session: &Session,
        upstream: &Arc<Upstream>,
    ) -> Option<Watching> {
        if !upstream.has_upstream_sessions() {
            return None;
        }
        let watching = Watching {
            gateway: self.me.clone(),
            upstream: upstream.name.clone(),
        };
        if let Some((count, _)) = lock(&self.shared_streams.held).get_mut(&upstream.name) {
            *count += 1;
            return Some(watching);
        }
        let ctx = match session.record.upstreams.get(&upstream.name) {
            Some(shared) => crate::upstream::CallContext {
                session: session.id.clone(),
                upstream_session: shared.clone(),
            },
            None => self.reopen(session, upstream).await.ok()?,
        };
        let listener = upstream.listen(&ctx, None)?;
        let mut held = lock(&self.shared_streams.held);
        let (count, _) = held.entry(upstream.name.clone()).or_insert((0, listener));
        *count += 1;
        Some(watching)
    }
}

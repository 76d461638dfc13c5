//! Legacy sessions open their session on an HTTP upstream lazily: on the first request the
//! session sends that upstream, not at `initialize` (whose answer takes the upstream's
//! capabilities from its last `initialize` on this replica). An idle session thus holds no
//! upstream session, and opening a session costs no upstream round trip.
//!
//! [`FirstOpens`] makes the concurrent first requests of one session to one upstream share one
//! opening on this replica. An entry lives only while its opening runs (bounded by the
//! upstream's timeout). Two replicas opening the same session's upstream at the same moment
//! (or a request that loaded the record just before another's opening here was saved) open
//! two: the first saved is kept ([`SessionStore::claim_upstream`]), and the other is closed
//! upstream before its request goes on through the kept one.
//!
//! [`SessionStore::claim_upstream`]: crate::session::SessionStore::claim_upstream

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::protocol::jsonrpc::RpcError;
use crate::session::SessionId;
use crate::sync::lock;
use crate::upstream::CallContext;

type Opening = Arc<OnceCell<CallContext>>;

/// The openings of upstream sessions running on this replica, by session and upstream.
#[derive(Default)]
pub(super) struct FirstOpens {
    running: Mutex<HashMap<(SessionId, String), Opening>>,
}

impl FirstOpens {
    /// Runs `open`, unless an opening of the same session's `upstream` runs already: then its
    /// result is this one's too (and when it failed, this caller tries in its turn).
    pub(super) async fn open<F, Fut>(
        &self,
        session: &SessionId,
        upstream: &str,
        open: F,
    ) -> Result<CallContext, RpcError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CallContext, RpcError>>,
    {
        let key = (session.clone(), upstream.to_owned());
        let opening = lock(&self.running).entry(key.clone()).or_default().clone();
        let opened = opening.get_or_try_init(open).await.cloned();
        let mut running = lock(&self.running);
        if running
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &opening))
        {
            running.remove(&key);
        }
        opened
    }
}

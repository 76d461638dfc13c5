//! The gateway's side of [`crate::limits`]: the key a caller or a session's owner is limited
//! by, the session slot taken at `initialize`, refreshed while the session is used and freed
//! when it ends (deleted, or noticed expired), the per-session caps that this replica's
//! [`Hub`](super::Hub) counts (requests in flight, GET streams open), and the per-principal
//! cap on modern requests in flight ([`ModernInFlight`]).
//!
//! Refreshing costs a request nothing in the common case: a replica refreshes a session's slot
//! at most once per [`Limits::refresh_every`](crate::limits::Limits::refresh_every), in the
//! background, and never when sessions are not counted.

use std::sync::Arc;

use super::hub::NotBegun;
use super::{Caller, Gateway, MessageRejected, Session};
use crate::auth::Principal;
use crate::limits::{LimitExceeded, PrincipalKey};
use crate::protocol::jsonrpc::RequestId;
use crate::session::{SessionId, SessionRecord};

/// A GET stream's place among its session's streams open on this replica; freed when dropped,
/// with the stream.
pub struct StreamSlot {
    gateway: Arc<Gateway>,
    session: SessionId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.gateway.hub.get_stream_closed(&self.session);
    }
}

/// Modern (sessionless) requests in flight on this replica, by principal (owner tag); an
/// entry goes when its count returns to zero.
#[derive(Default)]
pub(super) struct ModernInFlight {
    counts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl ModernInFlight {
    fn begin(&self, owner: &str, cap: usize) -> bool {
        let mut counts = crate::sync::lock(&self.counts);
        let count = counts.entry(owner.to_owned()).or_default();
        if *count >= cap {
            return false;
        }
        *count += 1;
        true
    }

    fn end(&self, owner: &str) {
        let mut counts = crate::sync::lock(&self.counts);
        if let Some(count) = counts.get_mut(owner) {
            *count -= 1;
            if *count == 0 {
                counts.remove(owner);
            }
        }
    }
}

/// A modern request's place among its principal's requests in flight here; freed when
/// dropped, with the request.
pub struct ModernSlot {
    gateway: Arc<Gateway>,
    owner: String,
}

impl Drop for ModernSlot {
    fn drop(&mut self) {
        self.gateway.modern_in_flight.end(&self.owner);
    }
}

impl Gateway {
    /// Takes a place for a modern request of the principal with owner tag `owner`, unless as
    /// many as allowed are in flight here already.
    pub(super) fn begin_modern(
        self: &Arc<Self>,
        owner: &str,
        id: &RequestId,
    ) -> Result<ModernSlot, MessageRejected> {
        let cap = self.limits.concurrent_modern_requests_per_principal();
        if !self.modern_in_flight.begin(owner, cap) {
            let limit = LimitExceeded::ConcurrentModernRequests { cap };
            return Err(MessageRejected::Limited {
                id: id.clone(),
                limit: self.limits.refused(limit),
            });
        }
        Ok(ModernSlot {
            gateway: self.clone(),
            owner: owner.to_owned(),
        })
    }

    /// The key the limits know `principal` by: its owner tag, a keyed hash.
    pub fn principal_key(&self, principal: &Principal) -> PrincipalKey {
        PrincipalKey::from_tag(self.signer.owner_tag(principal))
    }

    /// Counts a request of `principal` against its rate (and hashes nothing when requests are
    /// not counted).
    pub async fn admit_request(&self, principal: &Principal) -> Result<(), LimitExceeded> {
        if !self.limits.counts_requests() {
            return Ok(());
        }
        self.limits
            .admit_request(&self.principal_key(principal))
            .await
    }

    /// Opens a GET stream of `session` here, unless as many as allowed are open here already
    /// (a stream taking the standalone one over is let through: the old one ends).
    pub fn open_get_stream(
        self: &Arc<Self>,
        session: &SessionId,
        standalone: bool,
    ) -> Result<StreamSlot, LimitExceeded> {
        let cap = self.limits.streams_per_session();
        if !self.hub.open_get_stream(session, cap, standalone) {
            return Err(self.limits.refused(LimitExceeded::Streams { cap }));
        }
        Ok(StreamSlot {
            gateway: self.clone(),
            session: session.clone(),
        })
    }

    /// Marks a request in flight, or says why it cannot be.
    pub(super) fn begin_request(
        &self,
        session: &SessionId,
        request: &RequestId,
    ) -> Result<tokio_util::sync::CancellationToken, MessageRejected> {
        let cap = self.limits.concurrent_requests_per_session();
        self.hub
            .begin(session, request, cap)
            .map_err(|why| match why {
                NotBegun::DuplicateId => MessageRejected::DuplicateId(request.clone()),
                NotBegun::AtCap => MessageRejected::Limited {
                    id: request.clone(),
                    limit: self
                        .limits
                        .refused(LimitExceeded::ConcurrentRequests { cap }),
                },
            })
    }

    /// Takes a slot in its owner's session count for a session about to be created.
    pub(super) async fn take_session_slot(
        &self,
        id: &SessionId,
        record: &SessionRecord,
    ) -> Result<(), LimitExceeded> {
        let owner = self.owner_key(&record.owner);
        self.limits
            .admit_session(&owner, id, record.remaining_lifetime())
            .await
    }

    /// After a lookup: refreshes the session's slot in the background if this replica has
    /// not for a while.
    pub(super) fn refresh_session_slot(&self, session: &Session) {
        let every = self.limits.refresh_every();
        if !self.limits.counts_sessions() || !self.hub.slot_refresh_due(&session.id, every) {
            return;
        }
        let Some(gateway) = self.me.upgrade() else {
            return;
        };
        let owner = self.owner_key(&session.record.owner);
        let (id, lifetime) = (session.id.clone(), session.record.remaining_lifetime());
        tokio::spawn(async move {
            gateway.limits.refresh_session(&owner, &id, lifetime).await;
        });
    }

    /// Frees the slot of a session that ended.
    pub(super) async fn free_session_slot(&self, id: &SessionId, record: &SessionRecord) {
        let owner = self.owner_key(&record.owner);
        self.limits.release_session(&owner, id).await;
    }

    /// Frees, in the background, the slot of a session found expired, when its owner is known
    /// here: from this replica's memory of the session, else the client asking (if that is
    /// not the owner, its own count has no such session and nothing changes). Otherwise the
    /// slot frees when its deadline passes.
    pub(super) fn free_expired_slot(&self, id: &SessionId, caller: Caller<'_>) {
        if !self.limits.counts_sessions() {
            return;
        }
        let owner = match (self.hub.owner(id), caller) {
            (Some(tag), _) => self.owner_key(&tag),
            (None, Caller::Client(principal)) => self.principal_key(principal),
            (None, Caller::Gateway) => return,
        };
        let Some(gateway) = self.me.upgrade() else {
            return;
        };
        let id = id.clone();
        tokio::spawn(async move { gateway.limits.release_session(&owner, &id).await });
    }

    /// The key of the principal a record's owner tag names; records written before sessions
    /// had owners belong to the anonymous principal.
    fn owner_key(&self, owner: &str) -> PrincipalKey {
        if owner.is_empty() {
            return self.principal_key(&Principal::anonymous());
        }
        PrincipalKey::from_tag(owner.to_owned())
    }
}

//! Holding HTTP upstreams' standalone GET streams for sessions (`standalone = "hold"`, the
//! default): one replica of the fleet keeps each such stream open from the opening of the
//! session's upstream session (its first request to the upstream) until the session ends, and
//! logs what it carries to the session's standalone event stream, where the client's GET picks
//! it up on any replica. An upstream's server-to-client request sent outside any request
//! therefore always finds its stream open, whatever order the client's own connections take,
//! and nothing is lost while the client is away.
//!
//! Which replica holds a stream is a lease in the store ([`SessionStore::hold`]), renewed every
//! [`RENEW_EVERY`] with the replica's other leases (`renewals.rs`) and lost [`LEASE`] after its
//! holder stops renewing (it died), or at once when it drains. A replica takes a free lease when it
//! opens a session's upstream session (in the step that saves that session,
//! [`SessionStore::claim_upstream`]), revives a session (whose leases it reads together with the
//! record, so it tries, and waits for, only those nobody holds), opens a client's GET stream, and
//! at each keep-alive of such a stream (so a holder that died is replaced within [`LEASE`] + 15 s
//! while the client listens). It resumes the upstream stream after the last upstream event logged
//! ([`EventLog::positions`](crate::events::EventLog::positions)), so an upstream that keeps events
//! loses nothing across the handover either.
//!
//! A replica holds at most `server.max_held_streams` streams (each is an upstream connection
//! and its buffers): beyond it, a session's stream is left for another replica, or for this one
//! once it holds fewer, at the next occasion above, and counted as refused.
//!
//! [`SessionStore::hold`]: crate::session::SessionStore::hold
//! [`RENEW_EVERY`]: super::renewals::RENEW_EVERY
//! [`SessionStore::claim_upstream`]: crate::session::SessionStore::claim_upstream

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::renewals::{LEASE, LeaseLost, Renewal};
use super::{Gateway, Session};
use crate::events::{Positions, StreamKey};
use crate::session::{Hold, LeaseWanted, SessionId, StreamLease};
use crate::upstream::{CallContext, Upstream, UpstreamListener};

/// Longest wait for an upstream to accept a stream before the request that opened it goes on.
const ACCEPT_LIMIT: Duration = Duration::from_secs(5);
/// Longest a holder stopped by its session's end waits for the upstream to end the stream
/// (the upstream session's DELETE follows the session's end), so that the stream's connection
/// goes back to the pool instead of being closed.
const FINISH_LIMIT: Duration = Duration::from_secs(1);

/// Where the lease of a stream about to be held stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lease {
    /// Holding takes it first, unless another replica has it.
    ToTake,
    /// Taken with the claim of the stream's upstream session
    /// ([`SessionStore::claim_upstream`](crate::session::SessionStore::claim_upstream)).
    Taken,
}

/// Where a newly held stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// At the upstream session's start: it is new (`initialize`, re-initialization), so no
    /// position logged for the upstream can be its own.
    FromStart,
    /// After the last upstream event logged for the session.
    AfterLastLogged,
}

impl Gateway {
    /// Holds the standalone streams of the session's hold-mode upstreams that no replica holds,
    /// waiting (boundedly) until the upstreams accepted them.
    pub async fn hold_streams(&self, session: &Session, resume: Resume) {
        self.hold_streams_except(session, resume, &HeldElsewhere::default())
            .await;
    }

    /// [`Gateway::hold_streams`], leaving out the streams another replica was seen holding.
    pub(super) async fn hold_streams_except(
        &self,
        session: &Session,
        resume: Resume,
        held_elsewhere: &HeldElsewhere,
    ) {
        let upstreams = self.upstreams();
        let held = upstreams
            .iter()
            .filter(|u| u.holds_standalone() && !held_elsewhere.0.contains(&u.name))
            .filter_map(|u| {
                let upstream_session = session.record.upstreams.get(&u.name)?;
                upstream_session.session_id.as_ref()?;
                let ctx = CallContext {
                    session: session.id.clone(),
                    upstream_session: upstream_session.clone(),
                };
                Some(self.hold_stream(u.clone(), ctx, resume))
            });
        futures::future::join_all(held).await;
    }

    /// Takes the lease of one upstream's stream of a session, if free, and holds the stream.
    pub(super) async fn hold_stream(
        &self,
        upstream: Arc<Upstream>,
        ctx: CallContext,
        resume: Resume,
    ) {
        self.hold_leased_stream(upstream, ctx, resume, Lease::ToTake)
            .await;
    }

    /// The lease to ask for with the claim of a new upstream session: its stream's, when this
    /// replica would hold it (a hold-mode upstream, and room for one more held stream).
    pub(super) fn stream_lease_wanted(&self, upstream: &Upstream) -> Option<LeaseWanted<'_>> {
        let room = self.held_streams.available_permits() > 0;
        (upstream.holds_standalone() && room).then(|| LeaseWanted {
            holder: self.signer.replica(),
            time: LEASE,
        })
    }

    /// [`Gateway::hold_stream`], its lease maybe taken already: then freed again when there is
    /// no room to hold the stream after all.
    pub(super) async fn hold_leased_stream(
        &self,
        upstream: Arc<Upstream>,
        ctx: CallContext,
        resume: Resume,
        lease: Lease,
    ) {
        let held = ctx.upstream_session.session_id.clone();
        let Some(stop) = self
            .hub
            .start_holding(&ctx.session, &upstream.name, held.as_deref())
        else {
            // Held here already (a GET of the session got there first), under the same lease.
            return;
        };
        let Ok(permit) = self.held_streams.clone().try_acquire_owned() else {
            tracing::debug!(upstream = %upstream.name, "not holding a stream: server.max_held_streams reached");
            self.metrics.upstream_stream_refused(&upstream.name);
            self.hub
                .stop_holding(&ctx.session, &upstream.name, held.as_deref());
            return self.free_unused(&ctx.session, &upstream.name, lease).await;
        };
        let holder = Holder {
            gateway: self.me.clone(),
            session: ctx.session.clone(),
            upstream: upstream.name.clone(),
            held,
            stop,
            _place: HeldPlace::take(permit, &self.metrics.upstream_streams_held),
        };
        if lease == Lease::ToTake {
            let taken = self
                .store
                .hold(&ctx.session, &upstream.name, self.signer.replica(), LEASE);
            if !matches!(taken.await, Ok(Hold::Held)) {
                return holder.forget(self);
            }
        }
        let resume_after = match resume {
            Resume::FromStart => None,
            Resume::AfterLastLogged => self.upstream_position(&ctx.session, &upstream.name).await,
        };
        let Some(mut listener) = upstream.listen(&ctx, resume_after) else {
            return holder.give_up(self).await;
        };
        if !listener.accepted(ACCEPT_LIMIT).await {
            tracing::debug!(upstream = %upstream.name, "upstream did not accept a held stream in time");
        }
        let renewal = self.renewals.register(StreamLease {
            session: ctx.session.clone(),
            upstream: upstream.name.clone(),
        });
        tokio::spawn(holder.keep(listener, renewal, self.hub.draining()));
    }

    /// Frees a lease taken for a stream this replica does not hold after all.
    async fn free_unused(&self, session: &SessionId, upstream: &str, lease: Lease) {
        if lease == Lease::ToTake {
            return;
        }
        let released = self.store.release(session, upstream, self.signer.replica());
        if let Err(error) = released.await {
            tracing::debug!(%error, "could not free an unused stream lease; it runs out by itself");
        }
    }

    /// The hold-mode upstreams whose stream of a session another replica holds now; none when
    /// the store cannot tell (every stream is then tried as if free).
    pub(super) async fn held_elsewhere(&self, session: &SessionId) -> HeldElsewhere {
        let upstreams = self.upstreams();
        let names: Vec<String> = upstreams
            .iter()
            .filter(|u| u.holds_standalone())
            .map(|u| u.name.clone())
            .collect();
        let holders = match self.store.holders(session, &names).await {
            Ok(holders) => holders,
            Err(error) => {
                tracing::debug!(%error, "cannot tell who holds a session's streams");
                return HeldElsewhere::default();
            }
        };
        let replica = self.signer.replica();
        let elsewhere = names
            .into_iter()
            .zip(holders)
            .filter(|(_, holder)| holder.as_deref().is_some_and(|h| h != replica))
            .map(|(name, _)| name);
        HeldElsewhere(elsewhere.collect())
    }

    /// The upstream event id after which its standalone stream of a session resumes.
    async fn upstream_position(&self, session: &SessionId, upstream: &str) -> Option<String> {
        self.upstream_positions(session).await.remove(upstream)
    }

    /// Where each upstream's standalone stream of a session stands, by upstream name; empty
    /// (every stream resumes from its start) when the event log cannot tell.
    pub(super) async fn upstream_positions(&self, session: &SessionId) -> Positions {
        let key = StreamKey::standalone(session.clone());
        self.events.positions(&key).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read where upstream streams stand; resuming from their start");
            Positions::new()
        })
    }
}

/// The hold-mode upstreams whose stream of a session another replica held when looked up
/// ([`Gateway::held_elsewhere`]): a revival need not try, nor wait for, those.
#[derive(Debug, Default)]
pub(super) struct HeldElsewhere(HashSet<String>);

/// One held stream, on the replica holding it.
struct Holder {
    gateway: Weak<Gateway>,
    session: SessionId,
    upstream: String,
    /// The upstream session whose stream it holds.
    held: Option<String>,
    /// Cancelled when the session ended on this replica, or a newer holder replaced this one.
    stop: CancellationToken,
    /// Its place among the streams this replica may hold, freed with the holder.
    _place: HeldPlace,
}

/// One of the `server.max_held_streams` places, counted in `mcpgate_upstream_streams_held`
/// while it is taken.
struct HeldPlace {
    /// `None` only while dropped.
    permit: Option<OwnedSemaphorePermit>,
    gauge: prometheus::IntGauge,
}

impl HeldPlace {
    fn take(permit: OwnedSemaphorePermit, gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self {
            permit: Some(permit),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for HeldPlace {
    /// Frees the place before the gauge says so: a gauge below the bound means room.
    fn drop(&mut self) {
        drop(self.permit.take());
        self.gauge.dec();
    }
}

impl Holder {
    /// Keeps the stream and renews the lease until the session ends, the lease goes to another
    /// replica, the upstream refuses the stream, or this replica drains. The lease is freed
    /// for another replica, except when the session ended or a newer holder here replaced
    /// this one: an ended session's lease only runs out, and a newer holder's must stay. In
    /// those two cases the upstream ends the stream (its session is closed) and the holder lets
    /// it, within [`FINISH_LIMIT`], so that the stream's connection is kept for the next.
    async fn keep(
        self,
        mut listener: UpstreamListener,
        mut renewal: Renewal,
        draining: CancellationToken,
    ) {
        let stopped = tokio::select! {
            () = self.stop.cancelled() => true,
            () = draining.cancelled() => false,
            () = listener.ended() => false,
            lost = renewal.lost() => {
                self.lease_lost(lost).await;
                false
            }
        };
        drop(renewal);
        if stopped {
            listener.finish(FINISH_LIMIT).await;
            if let Some(gateway) = self.gateway.upgrade() {
                self.forget(&gateway);
            }
        } else {
            drop(listener);
            if let Some(gateway) = self.gateway.upgrade() {
                self.give_up(&gateway).await;
            }
        }
    }

    /// The lease went to another replica, or the session is gone (then ended here too).
    async fn lease_lost(&self, lost: LeaseLost) {
        let Some(gateway) = self.gateway.upgrade() else {
            return;
        };
        if lost == LeaseLost::SessionGone {
            gateway.still_live(&self.session).await;
        }
    }

    /// Frees the lease for another replica, then stops holding here (a draining replica waits
    /// for the latter, so the lease is free before it exits). The lease is no longer renewed
    /// here, and it is freed while no renewal batch runs, so none takes it back.
    async fn give_up(&self, gateway: &Gateway) {
        let _held_off = gateway.renewals.held_off().await;
        let released = gateway
            .store
            .release(&self.session, &self.upstream, gateway.signer.replica())
            .await;
        if let Err(error) = released {
            tracing::debug!(%error, "could not release a stream lease; it runs out by itself");
        }
        self.forget(gateway);
    }

    /// Stops holding here, without a lease to free (another replica has it).
    fn forget(&self, gateway: &Gateway) {
        gateway
            .hub
            .stop_holding(&self.session, &self.upstream, self.held.as_deref());
    }
}

//! A session's steps as a sequence of named exchanges: opening one (`initialize` +
//! `notifications/initialized`), opening and using one (then one call) and a whole lifecycle
//! (then `DELETE`). An endpoint
//! that issues no `Mcp-Session-Id` is served without one.

use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;

use super::client::{Connection, Exchange, Kind};
use super::record::Recorder;
use super::rpc::Bodies;

/// The exchanges of some steps of one session, in order.
pub struct Phases(Vec<(&'static str, Exchange)>);

impl Phases {
    /// Whether `initialize` succeeded.
    pub fn opened(&self) -> bool {
        self.0.first().is_some_and(|(_, exchange)| exchange.is_ok())
    }

    pub fn is_ok(&self) -> bool {
        self.0.iter().all(|(_, exchange)| exchange.is_ok())
    }

    /// The session id `initialize` was answered with.
    pub fn session(&self) -> Option<&HeaderValue> {
        self.0
            .first()
            .and_then(|(_, exchange)| exchange.session.as_ref())
    }

    /// The time spent in the exchanges (connecting excluded).
    pub fn elapsed(&self) -> Duration {
        self.0.iter().map(|(_, exchange)| exchange.elapsed).sum()
    }

    pub fn last(&self) -> Option<&Exchange> {
        self.0.last().map(|(_, exchange)| exchange)
    }

    /// Counts the failures only (steps that are not measured).
    pub fn record_failures(&self, recorder: &mut Recorder) {
        for (_, exchange) in &self.0 {
            recorder.failure(exchange);
        }
    }

    /// Records every step, each under its own name when `named`, then the whole as one
    /// iteration.
    pub fn record(&self, recorder: &mut Recorder, named: bool) {
        for (name, exchange) in &self.0 {
            recorder.exchange(exchange, named.then_some(*name));
        }
        recorder.iteration(self.is_ok().then(|| self.elapsed()));
        if self.opened() {
            recorder.sessions += 1;
        }
    }
}

/// `initialize`, then (if it succeeded) `notifications/initialized`.
pub async fn open(connection: &mut Connection, bodies: &Bodies) -> Phases {
    let initialize = bodies.initialize.clone();
    let answer = connection.send(Kind::Initialize, initialize, None).await;
    let mut phases = Phases(vec![("initialize", answer)]);
    if phases.opened() {
        let session = phases.session().cloned();
        let notification = bodies.initialized.clone();
        let answer = connection
            .send(Kind::Notification, notification, session.as_ref())
            .await;
        phases.0.push(("initialized", answer));
    }
    phases
}

/// A session opened, then one call of the mix (after which the gateway has opened the
/// session's upstream sessions it needs).
pub async fn open_and_call(connection: &mut Connection, bodies: &mut Bodies) -> Phases {
    let mut phases = open(connection, bodies).await;
    if !phases.opened() {
        return phases;
    }
    let session = phases.session().cloned();
    let answer = connection
        .send(Kind::Request, bodies.next_call(), session.as_ref())
        .await;
    phases.0.push(("call", answer));
    phases
}

/// A whole session: opened, one call of the mix, then `DELETE` (when it has an id).
pub async fn lifecycle(connection: &mut Connection, bodies: &mut Bodies) -> Phases {
    let mut phases = open_and_call(connection, bodies).await;
    if let Some(session) = phases.session().cloned().filter(|_| phases.opened()) {
        phases
            .0
            .push(("delete", delete(connection, &session).await));
    }
    phases
}

pub async fn delete(connection: &mut Connection, session: &HeaderValue) -> Exchange {
    connection
        .send(Kind::Delete, Bytes::new(), Some(session))
        .await
}

//! The connections one HTTP+SSE upstream has open on this replica, by id, and their bound.
//!
//! At most `max_connections` are open or opening. At the bound, opening one more closes the
//! least recently used connection without requests waiting (its session re-initializes
//! transparently at its next call); when every one has requests waiting, the opening is
//! refused ([`Full`]), and the call that needed it fails with a JSON-RPC error naming
//! `max_connections`. Connections unused for `idle_timeout` are taken out by
//! [`Table::take_idle`], and so are a session's older connections without requests waiting
//! when it opens a new one (it came back to this replica after another one served it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::connection::Connection;
use crate::session::SessionId;
use crate::sync::lock;

/// Every connection of one upstream on this replica.
pub(super) struct Table {
    max: usize,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    open: HashMap<String, Arc<Connection>>,
    /// Connections being opened, which count against the bound already.
    opening: usize,
}

/// Every connection has requests waiting and the table is at its bound.
#[derive(Debug)]
pub(super) struct Full;

/// A place in the table for a connection being opened; given back when dropped unused.
pub(super) struct Reservation<'a> {
    table: &'a Table,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.table.slots).opening -= 1;
    }
}

impl Reservation<'_> {
    /// Puts the opened connection in the table.
    pub fn fill(self, connection: Arc<Connection>) {
        let id = connection.id.clone();
        lock(&self.table.slots).open.insert(id, connection);
    }
}

impl Table {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            slots: Mutex::default(),
        }
    }

    /// A place for one more connection, and the connection it displaced (to be closed), if
    /// the table was at its bound.
    pub fn reserve(&self) -> Result<(Reservation<'_>, Option<Arc<Connection>>), Full> {
        let mut slots = lock(&self.slots);
        let mut evicted = None;
        if slots.open.len() + slots.opening >= self.max {
            let idlest = slots
                .open
                .values()
                .filter_map(|c| Some((c.idle_for()?, c.id.clone())))
                .max_by_key(|(idle, _)| *idle);
            let (_, id) = idlest.ok_or(Full)?;
            evicted = slots.open.remove(&id);
        }
        slots.opening += 1;
        Ok((Reservation { table: self }, evicted))
    }

    /// The bound: `max_connections`.
    pub fn max(&self) -> usize {
        self.max
    }

    pub fn get(&self, id: &str) -> Option<Arc<Connection>> {
        lock(&self.slots).open.get(id).cloned()
    }

    /// Takes this very connection out (not one that replaced it under the same id).
    pub fn remove(&self, connection: &Arc<Connection>) -> bool {
        let mut slots = lock(&self.slots);
        let same = slots
            .open
            .get(&connection.id)
            .is_some_and(|c| Arc::ptr_eq(c, connection));
        if same {
            slots.open.remove(&connection.id);
        }
        same
    }

    pub fn take(&self, id: &str) -> Option<Arc<Connection>> {
        lock(&self.slots).open.remove(id)
    }

    /// Takes out every connection opened for `session`.
    pub fn take_owned_by(&self, session: &SessionId) -> Vec<Arc<Connection>> {
        self.take_where(|c| c.owner == *session)
    }

    /// Takes out the connections opened for `session` without requests waiting: a new one
    /// replaces them.
    pub fn take_idle_owned_by(&self, session: &SessionId) -> Vec<Arc<Connection>> {
        self.take_where(|c| c.owner == *session && c.idle_for().is_some())
    }

    /// Takes out every connection unused for `idle_timeout`, without requests waiting.
    pub fn take_idle(&self, idle_timeout: Duration) -> Vec<Arc<Connection>> {
        self.take_where(|c| c.idle_for().is_some_and(|idle| idle >= idle_timeout))
    }

    /// Takes out every connection.
    pub fn take_all(&self) -> Vec<Arc<Connection>> {
        self.take_where(|_| true)
    }

    fn take_where(&self, which: impl Fn(&Connection) -> bool) -> Vec<Arc<Connection>> {
        let mut slots = lock(&self.slots);
        let ids: Vec<String> = slots
            .open
            .values()
            .filter(|c| which(c))
            .map(|c| c.id.clone())
            .collect();
        ids.iter().filter_map(|id| slots.open.remove(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::protocol::jsonrpc::RequestId;

    fn connection(id: &str) -> Arc<Connection> {
        let endpoint = http::Uri::from_static("http://127.0.0.1:1/messages");
        Arc::new(Connection::new(id.into(), SessionId::generate(), endpoint))
    }

    fn open(table: &Table, id: &str) -> (Arc<Connection>, Option<Arc<Connection>>) {
        let (reservation, evicted) = table.reserve().expect("room");
        let connection = connection(id);
        reservation.fill(connection.clone());
        (connection, evicted)
    }

    #[test]
    fn at_the_bound_the_least_recently_used_idle_connection_makes_room() {
        let table = Table::new(2);
        let (first, _) = open(&table, "a");
        std::thread::sleep(Duration::from_millis(5));
        let (second, _) = open(&table, "b");
        std::thread::sleep(Duration::from_millis(5));
        first.touch();
        let (_, evicted) = open(&table, "c");
        assert_eq!(evicted.map(|c| c.id.clone()), Some("b".to_owned()));
        assert!(table.get("b").is_none() && table.get("a").is_some());
        drop(second);
    }

    #[test]
    fn at_the_bound_with_every_connection_busy_an_opening_is_refused() {
        let table = Table::new(2);
        let mut receivers = Vec::new();
        for id in ["a", "b"] {
            let (connection, _) = open(&table, id);
            let (tx, rx) = mpsc::channel(1);
            connection.register(RequestId::Number(1), None, tx).unwrap();
            receivers.push(rx);
        }
        assert!(table.reserve().is_err());
        receivers.pop();
        assert!(
            table.reserve().is_ok(),
            "a connection whose caller left is idle"
        );
    }

    #[test]
    fn openings_count_against_the_bound_until_given_back() {
        let table = Table::new(1);
        let (reservation, _) = table.reserve().unwrap();
        assert!(table.reserve().is_err());
        drop(reservation);
        assert!(table.reserve().is_ok());
    }

    #[test]
    fn idle_connections_and_a_sessions_connections_are_taken_out() {
        let table = Table::new(4);
        let (a, _) = open(&table, "a");
        open(&table, "b");
        std::thread::sleep(Duration::from_millis(20));
        let (c, _) = open(&table, "c");
        let idle: Vec<_> = table.take_idle(Duration::from_millis(10));
        assert_eq!(idle.len(), 2);
        assert!(table.get("c").is_some());
        assert_eq!(table.take_owned_by(&c.owner).len(), 1);
        assert!(!table.remove(&a));
    }
}

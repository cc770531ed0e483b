//! How many watches each client connection holds open, and the cap on them: a client that
//! opens watch after watch on one connection would otherwise hold a task, a buffer and a
//! subscription to every commit for each, without end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::Status;

/// Watches one connection may hold open by default.
pub const DEFAULT_MAX_WATCHES_PER_CONNECTION: usize = 100;

/// The open watches of every connection.
#[derive(Debug)]
pub(super) struct OpenWatches {
    per_connection: Mutex<HashMap<SocketAddr, usize>>,
    max: usize,
}

impl OpenWatches {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            per_connection: Mutex::default(),
            max: max.max(1),
        })
    }

    /// Takes a place for one more watch on the connection from `peer`, or refuses it when the
    /// connection holds its maximum. A request with no peer address (not over TCP) is not
    /// counted.
    pub(super) fn open(self: &Arc<Self>, peer: Option<SocketAddr>) -> Result<Slot, Status> {
        let Some(peer) = peer else {
            return Ok(Slot(None));
        };
        let mut open = self
            .per_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(peer).or_default();
        if *count >= self.max {
            return Err(Status::resource_exhausted(format!(
                "this connection already has {} watches open, the most one connection may \
                 hold (--max-watches-per-connection); close one first",
                self.max
            )));
        }
        *count += 1;
        Ok(Slot(Some((self.clone(), peer))))
    }
}

/// One open watch's place; given back when dropped (when the watch's stream ends).
#[derive(Debug)]
pub(super) struct Slot(Option<(Arc<OpenWatches>, SocketAddr)>);

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((watches, peer)) = self.0.take() else {
            return;
        };
        let mut open = watches
            .per_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_holds_at_most_its_maximum_and_gets_places_back() {
        let watches = OpenWatches::new(2);
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1000".parse().unwrap(),
            "127.0.0.1:1001".parse().unwrap(),
        );
        let first = watches.open(Some(a)).unwrap();
        let _second = watches.open(Some(a)).unwrap();
        let refused = watches.open(Some(a)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("--max-watches-per-connection"));
        let _other = watches
            .open(Some(b))
            .expect("another connection has its own count");
        drop(first);
        let _third = watches
            .open(Some(a))
            .expect("a closed watch gives its place back");
        let _unix = watches.open(None).expect("not counted");
    }
}

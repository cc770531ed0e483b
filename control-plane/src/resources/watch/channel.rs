//! The channel between a watch and its client, bounded by bytes as well as by events.
//!
//! Counting events alone let a client that reads slowly hold hundreds of large objects (a
//! Release of megabytes each) in the server's memory per watch. Each event takes permits for
//! its stored size from a per-watch byte budget before it is queued and gives them back when
//! the client takes it; an event larger than the whole budget takes all of it, so it still
//! goes through, alone.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::WatchEvent;
use crate::resources::Error;

/// Events queued for one client at most.
pub const WATCH_BUFFER_EVENTS: usize = 256;
/// Bytes of objects (as stored) queued for one client at most.
pub const WATCH_BUFFER_BYTES: usize = 4 * 1024 * 1024;

type Item = (Result<WatchEvent, Error>, Option<OwnedSemaphorePermit>);

/// What a watch sends: its events, in order, then an error if it failed.
pub struct WatchEvents {
    rx: mpsc::Receiver<Item>,
}

impl WatchEvents {
    /// The next event; `None` once the watch has ended.
    pub async fn recv(&mut self) -> Option<Result<WatchEvent, Error>> {
        self.rx.recv().await.map(|(event, _bytes)| event)
    }

    /// Whether nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl Stream for WatchEvents {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|(event, _bytes)| event))
    }
}

/// The watch's end of the channel.
pub(super) struct Sink {
    tx: mpsc::Sender<Item>,
    bytes: Arc<Semaphore>,
    budget: usize,
}

impl Sink {
    /// Queues `event`, which weighs `bytes`, once the client has room for it. False when the
    /// client has gone.
    pub(super) async fn send(&self, event: Result<WatchEvent, Error>, bytes: usize) -> bool {
        let permits = bytes.min(self.budget) as u32;
        let permit = if permits == 0 {
            None
        } else {
            tokio::select! {
                permit = self.bytes.clone().acquire_many_owned(permits) => permit.ok(),
                _ = self.tx.closed() => return false,
            }
        };
        self.tx.send((event, permit)).await.is_ok()
    }

    /// Resolves once the client has gone.
    pub(super) async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A channel holding at most `events` events and `bytes` bytes of them.
pub(super) fn channel(events: usize, bytes: usize) -> (Sink, WatchEvents) {
    let (tx, rx) = mpsc::channel(events);
    let budget = bytes.clamp(1, u32::MAX as usize);
    let sink = Sink {
        tx,
        bytes: Arc::new(Semaphore::new(budget)),
        budget,
    };
    (sink, WatchEvents { rx })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::WatchEventType;

    fn bookmark(revision: u64) -> Result<WatchEvent, Error> {
        Ok(WatchEvent {
            kind: WatchEventType::Bookmark,
            object: None,
            revision,
        })
    }

    #[tokio::test]
    async fn a_slow_client_holds_at_most_the_byte_budget() {
        let (sink, mut events) = channel(100, 1_000);
        for revision in 1..=2 {
            assert!(sink.send(bookmark(revision), 400).await);
        }
        // Three of 400 bytes would be 1,200: the third waits for the client.
        let third = tokio::spawn(async move {
            let sent = sink.send(bookmark(3), 400).await;
            (sink, sent)
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "the budget is full");
        assert_eq!(events.recv().await.unwrap().unwrap().revision, 1);
        let (sink, sent) = third.await.unwrap();
        assert!(sent);

        // One event larger than the whole budget still goes, once the queue is empty.
        for revision in 2..=3 {
            assert_eq!(events.recv().await.unwrap().unwrap().revision, revision);
        }
        assert!(sink.send(bookmark(4), 5_000).await);
        assert_eq!(events.recv().await.unwrap().unwrap().revision, 4);

        drop(events);
        assert!(!sink.send(bookmark(5), 10).await, "the client has gone");
    }
}

//! Watch: a stream of changes to objects, resumable from any revision the event log still
//! holds.
//!
//! A watch subscribes to live commits first, then replays the log from its start revision,
//! then follows live commits, skipping those the replay already covered. A watch from
//! revision 0 starts with a snapshot instead: the objects as they stood at one revision, each
//! an ADDED event carrying that revision (so resuming from any of them misses nothing), then a
//! bookmark at it, then the changes after it. A watcher that falls
//! behind the live channel goes back to the log; one that falls behind the log gets
//! `Compacted` and must list again.
//!
//! Durable before visible: a commit is readable (and in the live channel) before it is on
//! disk, so nothing goes out before the store says it is durable. A watcher that saw a change
//! a crash then took back would hold state the store forgot, and the revision would later be
//! reused for other content. Waiting costs nothing extra: the writer of the change waits for
//! the same flush before it answers, and the watch asks for one if nobody has.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use troupe_common::selector::LabelSelector;
use troupe_common::{Kind, Object};

use super::{Error, Resources, decode, decode_bytes, joined};
use crate::store::{Event, EventType, Revision, snapshot};

/// Events read from the log per step while catching up.
const CATCH_UP_BATCH: usize = 1024;
/// A bookmark is sent after this much quiet, so clients can resume close to the head.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    /// Kinds to watch; empty watches every kind.
    pub kinds: Vec<Kind>,
    /// Namespace to watch; empty watches every namespace.
    pub namespace: String,
    /// Objects must match this selector.
    pub selector: LabelSelector,
    /// Replay changes after this revision; 0 starts with the current objects.
    pub since: Revision,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    /// Created, or present when the watch started.
    Added,
    /// Changed.
    Modified,
    /// Deleted; the object is its last state.
    Deleted,
    /// Progress marker; no object.
    Bookmark,
}

/// One change delivered to a watcher.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// What happened.
    pub kind: WatchEventType,
    /// The object, except for bookmarks.
    pub object: Option<Object>,
    /// Revision of the change; for the ADDED events of a snapshot, the snapshot's revision
    /// (the object's own last change is its `resourceVersion`).
    pub revision: Revision,
}

impl WatchRequest {
    fn wants(&self, object: &Object) -> bool {
        let meta = object.meta();
        (self.namespace.is_empty() || meta.namespace == self.namespace)
            && self.selector.matches(&meta.labels)
    }

    fn wants_kind(&self, kind: Kind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }
}

use channel::Sink;
pub use channel::{WATCH_BUFFER_BYTES, WATCH_BUFFER_EVENTS, WatchEvents};

impl Resources {
    /// Starts a watch. Fails at once with [`Error::Compacted`] if `since` is older than the
    /// event log; later failures arrive in the stream.
    pub fn watch(self: &Arc<Self>, request: WatchRequest) -> Result<WatchEvents, Error> {
        self.start_watch(request, false)
    }

    /// Starts a watch like [`Resources::watch`] that also marks its progress through the
    /// commits it does not want: a bookmark follows every commit, live or replayed. A
    /// follower of a few kinds thus learns that every change up to a revision has reached it
    /// (what "wait until the index has seen revision R" needs), without decoding the rest.
    pub fn watch_with_progress(
        self: &Arc<Self>,
        request: WatchRequest,
    ) -> Result<WatchEvents, Error> {
        self.start_watch(request, true)
    }

    fn start_watch(
        self: &Arc<Self>,
        request: WatchRequest,
        progress: bool,
    ) -> Result<WatchEvents, Error> {
        let live = self.store.subscribe();
        let head = self.store.revision();
        if request.since > head {
            return Err(Error::invalid(
                "WatchRequest",
                "sinceRevision",
                format!(
                    "{} is ahead of the store, which is at revision {head}",
                    request.since
                ),
            ));
        }
        if request.since > 0 {
            // Surface a compacted start revision as the call's status, not mid-stream.
            self.store.events_after(request.since, 1)?;
        }
        let (tx, rx) = channel::channel(WATCH_BUFFER_EVENTS, WATCH_BUFFER_BYTES);
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.run_watch(request, progress, live, &tx).await {
                let _ = tx.send(Err(e), 0).await;
            }
        });
        Ok(rx)
    }

    async fn run_watch(
        &self,
        request: WatchRequest,
        progress: bool,
        mut live: broadcast::Receiver<Arc<[Event]>>,
        tx: &Sink,
    ) -> Result<(), Error> {
        let mut cursor = request.since;
        if cursor == 0 {
            cursor = self.send_snapshot(&request, tx).await?;
        }
        cursor = self.catch_up(&request, progress, cursor, tx).await?;
        let mut bookmarks = tokio::time::interval(BOOKMARK_EVERY);
        bookmarks.reset();
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(commit) => {
                        let Some(first) = commit.first() else { continue };
                        if first.revision <= cursor {
                            continue;
                        }
                        self.durable(first.revision).await?;
                        cursor = first.revision;
                        for event in commit.iter() {
                            if !self.send_event(&request, event, tx).await? {
                                return Ok(());
                            }
                        }
                        if progress && !send(tx, bookmark(cursor)).await {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        cursor = self.catch_up(&request, progress, cursor, tx).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = bookmarks.tick() => {
                    if !send(tx, bookmark(cursor)).await {
                        return Ok(());
                    }
                }
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    /// Sends the objects as they stood at one revision, each as ADDED at that revision, then a
    /// bookmark at it; returns the revision. Later changes follow from there, each once.
    async fn send_snapshot(&self, request: &WatchRequest, tx: &Sink) -> Result<Revision, Error> {
        let kinds: Vec<Kind> = if request.kinds.is_empty() {
            Kind::ALL.to_vec()
        } else {
            request.kinds.clone()
        };
        let store = self.store.clone();
        let namespace = (!request.namespace.is_empty()).then(|| request.namespace.clone());
        let (records, revision) =
            tokio::task::spawn_blocking(move || snapshot(&*store, &kinds, namespace.as_deref()))
                .await
                .map_err(joined)??;
        self.durable(revision).await?;
        for record in records {
            let object = decode(&record)?;
            if !request.selector.matches(&object.meta().labels) {
                continue;
            }
            let event = WatchEvent {
                kind: WatchEventType::Added,
                object: Some(object),
                revision,
            };
            if !tx.send(Ok(event), record.value.len()).await {
                return Ok(revision);
            }
        }
        send(tx, bookmark(revision)).await;
        Ok(revision)
    }

    /// Replays the log after `cursor`, with a bookmark after each batch when `progress` is
    /// asked for; returns the last revision replayed.
    async fn catch_up(
        &self,
        request: &WatchRequest,
        progress: bool,
        mut cursor: Revision,
        tx: &Sink,
    ) -> Result<Revision, Error> {
        loop {
            let events = self.store.events_after(cursor, CATCH_UP_BATCH)?;
            let Some(last) = events.last() else {
                return Ok(cursor);
            };
            self.durable(last.revision).await?;
            cursor = last.revision;
            for event in &events {
                if !self.send_event(request, event, tx).await? {
                    return Ok(cursor);
                }
            }
            if progress && !send(tx, bookmark(cursor)).await {
                return Ok(cursor);
            }
        }
    }

    /// Sends `event` if the watch wants it. False when the client has gone.
    async fn send_event(
        &self,
        request: &WatchRequest,
        event: &Event,
        tx: &Sink,
    ) -> Result<bool, Error> {
        if !request.wants_kind(event.key.kind) {
            return Ok(true);
        }
        let object = decode_bytes(&event.key, &event.value, event.revision)?;
        if !request.wants(&object) {
            return Ok(true);
        }
        let kind = match event.kind {
            EventType::Added => WatchEventType::Added,
            EventType::Modified => WatchEventType::Modified,
            EventType::Deleted => WatchEventType::Deleted,
        };
        let change = WatchEvent {
            kind,
            object: Some(object),
            revision: event.revision,
        };
        Ok(tx.send(Ok(change), event.value.len()).await)
    }
}

fn bookmark(revision: Revision) -> WatchEvent {
    WatchEvent {
        kind: WatchEventType::Bookmark,
        object: None,
        revision,
    }
}

/// Sends an event that holds no object.
async fn send(tx: &Sink, event: WatchEvent) -> bool {
    tx.send(Ok(event), 0).await
}

mod channel;
#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;

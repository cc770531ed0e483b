//! The control plane's store in the simulation: a [`MemoryStore`] for what the running
//! process sees, and a [`Disk`] for what survives it.
//!
//! Every commit is journaled on the disk at once, but counts as durable only once a
//! simulated flush covers it: a flush takes a random few milliseconds and covers every commit
//! made before it started (group commit, as in the sled store). A crash ([`SimStore::crash`])
//! fences the store (every later read or write of the dead process fails, and writers
//! waiting for a flush are told it failed) and drops from the journal what no flush covered.
//! The next process replays the journal into a fresh `MemoryStore`, commit by commit, so it
//! finds exactly what was durable, at the same revisions.
//!
//! Each flush also tells the [`Oracle`] which releases the store, on disk, now wants or not.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, broadcast, watch};
use troupe_common::{Kind, ObjectKey};
use troupe_control_plane::store::{
    Durability, Event, EventType, MemoryStore, Record, Retention, Revision, Store, StoreError, Txn,
};

use crate::oracle::Oracle;

/// What survives the control plane: the journal of commits and how far it is flushed.
#[derive(Default)]
pub struct Disk {
    journal: Mutex<BTreeMap<Revision, Vec<Event>>>,
    durable: Mutex<Revision>,
}

impl Disk {
    fn journal(&self) -> std::sync::MutexGuard<'_, BTreeMap<Revision, Vec<Event>>> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn durable(&self) -> Revision {
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One control-plane process's store over the [`Disk`].
pub struct SimStore {
    inner: MemoryStore,
    disk: Arc<Disk>,
    oracle: Arc<Oracle>,
    durable: watch::Sender<Durability>,
    flush: Notify,
    crashed: AtomicBool,
}

fn crashed() -> StoreError {
    StoreError::Engine("the control plane crashed (simulated)".into())
}

impl SimStore {
    /// Opens the store on `disk`: replays what was flushed, forgets the rest, and starts the
    /// flusher, whose flushes take up to `max_flush` each.
    pub fn open(disk: Arc<Disk>, oracle: Arc<Oracle>, max_flush: Duration, seed: u64) -> Arc<Self> {
        let inner = MemoryStore::with_retention(Retention::revisions(u64::MAX));
        let durable = disk.durable();
        {
            let mut journal = disk.journal();
            journal.retain(|revision, _| *revision <= durable);
            for (revision, events) in journal.iter() {
                let txn = events.iter().fold(Txn::default(), |txn, e| match e.kind {
                    EventType::Deleted => txn.delete(e.key.clone()),
                    _ => txn.put(e.key.clone(), e.value.clone()),
                });
                let replayed = inner.commit(txn).expect("the journal replays");
                assert_eq!(replayed, *revision, "the journal replays at its revisions");
            }
        }
        let store = Arc::new(Self {
            inner,
            durable: watch::channel(Durability {
                revision: durable,
                error: None,
            })
            .0,
            disk,
            oracle,
            flush: Notify::new(),
            crashed: AtomicBool::new(false),
        });
        tokio::spawn(
            store
                .clone()
                .flusher(max_flush, StdRng::seed_from_u64(seed)),
        );
        store
    }

    /// The process died: nothing it does from now on reaches the disk, and the commits no
    /// flush covered are lost.
    pub fn crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
        let durable = self.disk.durable();
        self.disk
            .journal()
            .retain(|revision, _| *revision <= durable);
        self.durable
            .send_modify(|d| d.error = Some("the control plane crashed (simulated)".into()));
        self.flush.notify_one();
    }

    fn is_crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Flushes when asked, each flush covering what was committed before it started.
    async fn flusher(self: Arc<Self>, max_flush: Duration, mut rng: StdRng) {
        loop {
            self.flush.notified().await;
            if self.is_crashed() {
                return;
            }
            let target = {
                let _journal = self.disk.journal();
                self.inner.revision()
            };
            let took = rng.random_range(Duration::ZERO..=max_flush);
            tokio::time::sleep(took).await;
            if self.is_crashed() {
                return;
            }
            let before = {
                let mut durable = self
                    .disk
                    .durable
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let before = *durable;
                *durable = target.max(before);
                before
            };
            if target > before {
                self.tell_oracle(before, target);
            }
            self.durable
                .send_modify(|d| d.revision = d.revision.max(target));
        }
    }

    /// Tells the oracle about the releases the commits in `(after, upto]` changed.
    fn tell_oracle(&self, after: Revision, upto: Revision) {
        let journal = self.disk.journal();
        for events in journal.range(after + 1..=upto).map(|(_, e)| e) {
            for event in events.iter().filter(|e| e.key.kind == Kind::Release) {
                let id = format!("{}/{}", event.key.namespace, event.key.name);
                let wanted = event.kind != EventType::Deleted && !terminating(&event.value);
                self.oracle.durable_change(&id, wanted);
            }
        }
    }
}

/// Whether an encoded Release waits for its prune.
fn terminating(value: &[u8]) -> bool {
    StoredRelease::decode(value)
        .ok()
        .and_then(|r| r.release?.metadata?.delete_time)
        .is_some()
}

/// Just enough of a stored `Resource` holding a Release to see its `deleteTime`; prost skips
/// the rest (the manifests above all) without decoding it.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredRelease {
    #[prost(message, optional, tag = "18")]
    release: Option<ReleaseHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReleaseHead {
    #[prost(message, optional, tag = "3")]
    metadata: Option<MetaHead>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetaHead {
    #[prost(message, optional, tag = "9")]
    delete_time: Option<Present>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Present {}

impl Store for SimStore {
    fn get(&self, key: &ObjectKey) -> Result<Option<Record>, StoreError> {
        if self.is_crashed() {
            return Err(crashed());
        }
        self.inner.get(key)
    }

    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        if self.is_crashed() {
            return Err(crashed());
        }
        self.inner.list(kind, namespace)
    }

    fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        if self.is_crashed() {
            return Err(crashed());
        }
        self.inner.list_page(kind, namespace, after, limit)
    }

    fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        if self.is_crashed() {
            return Err(crashed());
        }
        // Committed and journaled under the disk's lock, so a flush never covers a revision
        // the journal lacks. A commit that changed nothing returns a revision journaled
        // already.
        let mut journal = self.disk.journal();
        let revision = self.inner.commit(txn)?;
        if !journal.contains_key(&revision) && revision > self.disk.durable() {
            let events: Vec<Event> = self
                .inner
                .events_after(revision - 1, usize::MAX)?
                .into_iter()
                .filter(|e| e.revision == revision)
                .collect();
            journal.insert(revision, events);
        }
        Ok(revision)
    }

    fn revision(&self) -> Revision {
        self.inner.revision()
    }

    fn events_after(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError> {
        if self.is_crashed() {
            return Err(crashed());
        }
        self.inner.events_after(after, limit)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.inner.subscribe()
    }

    fn durability(&self) -> watch::Receiver<Durability> {
        self.durable.subscribe()
    }

    fn request_flush(&self) {
        if !self.is_crashed() {
            self.flush.notify_one();
        }
    }
}

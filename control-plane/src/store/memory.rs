//! [`MemoryStore`]: the [`Store`] contract in memory, for tests and throwaway servers. Every
//! commit is "durable" as soon as it is visible.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};
use troupe_common::{Kind, ObjectKey};

use super::ranges::RangeWrites;
use super::retention::{LogSize, event_bytes};
use super::{
    Committing, Durability, Event, EventType, LIVE_EVENTS, Op, Record, Retention, Revision, Store,
    StoreError, Txn, keys,
};

/// A [`Store`] held in memory.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<[Event]>>,
    durable: watch::Sender<Durability>,
    retention: Retention,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<Vec<u8>, Record>,
    events: VecDeque<Event>,
    revision: Revision,
    /// Events after this revision are all in `events`.
    compacted: Revision,
    /// What `events` weighs, commit by commit.
    size: LogSize,
    /// When each range of objects was last written.
    ranges: RangeWrites,
}

impl MemoryStore {
    /// An empty store keeping the default number of revisions in its event log.
    pub fn new() -> Self {
        Self::with_retention(Retention::default())
    }

    /// An empty store whose event log keeps what `retention` says.
    pub fn with_retention(retention: Retention) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            live: broadcast::channel(LIVE_EVENTS).0,
            durable: watch::channel(Durability::default()).0,
            retention,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves no partial commit behind (commits mutate only
        // after every check passed), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &ObjectKey) -> Result<Option<Record>, StoreError> {
        Ok(self.lock().objects.get(&keys::encode(key)).cloned())
    }

    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        let prefix = keys::prefix(kind, namespace);
        let inner = self.lock();
        let records = inner
            .objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, r)| r.clone())
            .collect();
        Ok((records, inner.revision))
    }

    fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        let (start, prefix) = keys::page_start(kind, namespace, after);
        let inner = self.lock();
        let records = inner
            .objects
            .range(start..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect();
        Ok((records, inner.revision))
    }

    fn commit_async(&self, txn: Txn) -> Result<Committing, Txn> {
        // Never waits: done here, before the future is even polled.
        Ok(Box::pin(std::future::ready(self.commit(txn))))
    }

    fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let mut inner = self.lock();
        for (key, expected) in &txn.checks {
            let found = inner
                .objects
                .get(&keys::encode(key))
                .map(|r| r.mod_revision);
            if !expected.holds(found) {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    found,
                });
            }
        }
        for range in &txn.unchanged {
            inner.ranges.check(range)?;
        }
        let revision = inner.revision + 1;
        let mut events = Vec::with_capacity(txn.ops.len());
        for op in txn.ops {
            let (key, value) = match op {
                Op::Put { key, value } => (key, value),
                // Kept whole: memory has no disk to spare the bulk from.
                Op::PutShared { key, head, shared } => (key, [head, shared].concat()),
                Op::Delete { key } => {
                    if let Some(old) = inner.objects.remove(&keys::encode(&key)) {
                        events.push(Event {
                            revision,
                            kind: EventType::Deleted,
                            key,
                            value: old.value,
                            create_revision: old.create_revision,
                        });
                    }
                    continue;
                }
            };
            let encoded = keys::encode(&key);
            let (kind, create_revision) = match inner.objects.get(&encoded) {
                Some(old) => (EventType::Modified, old.create_revision),
                None => (EventType::Added, revision),
            };
            inner.ranges.note(&key, revision);
            inner.objects.insert(
                encoded,
                Record {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: revision,
                },
            );
            events.push(Event {
                revision,
                kind,
                key,
                value,
                create_revision,
            });
        }
        if events.is_empty() {
            return Ok(inner.revision);
        }
        inner.revision = revision;
        for event in &events {
            inner.size.add(revision, event_bytes(event));
        }
        inner.events.extend(events.iter().cloned());
        let floor = inner.size.compact(&self.retention, revision);
        while inner.events.front().is_some_and(|e| e.revision <= floor) {
            inner.events.pop_front();
        }
        inner.compacted = inner.compacted.max(floor);
        // No receiver is not an error: nobody is watching.
        let _ = self.live.send(events.into());
        self.durable.send_replace(Durability {
            revision,
            error: None,
        });
        Ok(revision)
    }

    fn revision(&self) -> Revision {
        self.lock().revision
    }

    fn events_after(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        if after < inner.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: inner.compacted,
            });
        }
        let start = inner.events.partition_point(|e| e.revision <= after);
        super::take_whole_commits(inner.events.range(start..).cloned().map(Ok), limit)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.live.subscribe()
    }

    fn durability(&self) -> watch::Receiver<Durability> {
        self.durable.subscribe()
    }

    fn request_flush(&self) {}
}

//! [`SledStore`]: the [`Store`] contract on disk, in sled.
//!
//! Layout: one sled tree, partitioned by a prefix byte: `o` + encoded key → record envelope;
//! `e` + `(revision, index)` → event envelope; `t` and `r` + digest → a shared tail and the
//! count of envelopes that refer to it ([`tails`]); `m` + name → the compaction floor and the
//! format version. The current revision is the newest event's.
//!
//! Commits are built under a lock, so revisions are gap-free and preconditions race-free
//! (every write goes through that lock, so what the checks read cannot change before the
//! commit lands). The event log doubles as a write-ahead log: a commit of one change writes
//! its event, then its object, as two plain inserts (a sled batch costs several times more);
//! a commit of several changes, or of a shared tail, is one atomic batch. sled recovers a prefix of its writes, so
//! after a crash only the newest commit can be half-applied, and [`SledStore::open`] replays
//! it from its events.
//!
//! Durability: a dedicated flusher thread flushes whenever asked and publishes the revision it
//! covered. Commits that arrive while a flush runs are covered by the next one, so many
//! concurrent writers share each fsync.
//!
//! Envelopes start with a format byte ([`layout`]) so a later layout can still read this one.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};
use troupe_common::{Kind, ObjectKey};

use super::ranges::RangeWrites;
use super::retention::{LogSize, stored_bytes};
use super::{
    Durability, Event, EventType, LIVE_EVENTS, Record, Retention, Revision, Store, StoreError, Txn,
    keys,
};

mod layout;
mod stage;
mod tails;

use layout::{
    DB_FORMAT, DB_FORMATS, EVENT, OBJECT, RawEvent, corrupt, decode_event, decode_record,
    encode_event, encode_record, engine, event_key, object_key, read_u64,
};
use stage::{Staged, stage};
use tails::{Refs, resolve, tail_len};

const META_COMPACTED: &[u8] = b"mcompacted";
const META_FORMAT: &[u8] = b"mformat";
/// Compaction runs once every this many revisions, to keep its cost off most commits.
const COMPACT_EVERY: u64 = 256;
/// Reads of one record before a tail that keeps vanishing under it is taken for corruption.
const READ_ATTEMPTS: usize = 8;

/// A [`Store`] on disk.
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Held through each commit; guards when each range of objects was last written.
    commit_lock: Mutex<RangeWrites>,
    revision: Arc<AtomicU64>,
    compacted: AtomicU64,
    retention: Retention,
    /// What the event log weighs, commit by commit; changed under `commit_lock`.
    log_size: Mutex<LogSize>,
    live: broadcast::Sender<Arc<[Event]>>,
    durable: watch::Sender<Durability>,
    /// Taken on drop, which stops the flusher thread.
    flush_requests: Option<SyncSender<()>>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

/// Opens the database, waiting up to a second for the file lock: sled's background threads
/// release it shortly after the last handle of a previous open (in this process) is dropped.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match sled::Config::new().path(dir).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result.map_err(engine),
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, keeping the default event-log retention.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_retention(dir, Retention::default())
    }

    /// Opens (or creates) the store in `dir`; the event log keeps what `retention` says.
    pub fn open_with_retention(dir: &Path, retention: Retention) -> Result<Self, StoreError> {
        Self::open_as(dir, retention, 0)
    }

    /// Creates a store in `dir` to import another store's objects into (`troupe migrate
    /// --from-etcd`): `dir` must hold no store yet, and the store's revisions continue after
    /// `after` (the other store's last), so that none a client saw there comes again.
    pub fn open_for_import(dir: &Path, after: Revision) -> Result<Self, StoreError> {
        if dir.join("db").exists() {
            return Err(StoreError::Engine(format!(
                "{} holds a store already: import only into a data directory without one",
                dir.display()
            )));
        }
        Self::open_as(dir, Retention::default(), after)
    }

    /// Ends an import: the store's history starts with its last commit (a watch keeps one
    /// commit to start from, see [`snapshot`](crate::store::snapshot)), so a watch from a
    /// revision before it (one the other store gave) is told it was compacted and lists
    /// again. Returns the oldest revision a watch may resume from.
    pub fn finish_import(&self) -> Result<Revision, StoreError> {
        let floor = self.revision().saturating_sub(1);
        self.compact(floor)?;
        self.db.flush().map_err(engine)?;
        Ok(self.compacted.load(Ordering::SeqCst))
    }

    /// Opens the store in `dir`; one created now starts after revision `after`.
    fn open_as(dir: &Path, retention: Retention, after: Revision) -> Result<Self, StoreError> {
        let db = open_db(dir)?;
        let tree = db.open_tree("troupe").map_err(engine)?;
        match tree.get(META_FORMAT).map_err(engine)? {
            Some(v) if v.as_ref() == [DB_FORMAT] => {}
            None => {
                // The floor first: a store with a format but no floor starts at 0.
                tree.insert(META_COMPACTED, &after.to_be_bytes())
                    .map_err(engine)?;
                tree.insert(META_FORMAT, &[DB_FORMAT]).map_err(engine)?;
            }
            Some(v) if DB_FORMATS.contains(&v[0]) && v.len() == 1 => {
                // Every older envelope is still read as it is.
                tree.insert(META_FORMAT, &[DB_FORMAT]).map_err(engine)?;
            }
            Some(v) => {
                return Err(StoreError::Corrupt {
                    key: "meta/format".into(),
                    reason: format!(
                        "format {:?} is newer than this binary understands",
                        v.as_ref()
                    ),
                });
            }
        }
        let compacted = read_u64(&tree, META_COMPACTED)?;
        let revision = recover(&tree)?.unwrap_or(compacted);
        let log_size = measure_log(&tree)?;
        let revision = Arc::new(AtomicU64::new(revision));
        let durable = watch::channel(Durability {
            revision: revision.load(Ordering::SeqCst),
            error: None,
        })
        .0;
        let (flush_requests, flusher) =
            spawn_flusher(db.clone(), revision.clone(), durable.clone());
        Ok(Self {
            db,
            tree,
            commit_lock: Mutex::new(RangeWrites::new(revision.load(Ordering::SeqCst))),
            revision,
            compacted: AtomicU64::new(compacted),
            retention,
            log_size: Mutex::new(log_size),
            live: broadcast::channel(LIVE_EVENTS).0,
            durable,
            flush_requests: Some(flush_requests),
            flusher: Some(flusher),
        })
    }

    /// Counts the `bytes` of commit `revision` in the log's size and compacts the log when
    /// it is due: every [`COMPACT_EVERY`] revisions, or at once when over its byte budget.
    fn retain(&self, revision: Revision, bytes: u64) -> Result<(), StoreError> {
        let floor = {
            let mut size = self.log_size.lock().unwrap_or_else(|p| p.into_inner());
            size.add(revision, bytes);
            (revision.is_multiple_of(COMPACT_EVERY) || size.over(&self.retention))
                .then(|| size.compact(&self.retention, revision))
        };
        match floor {
            Some(floor) => self.compact(floor),
            None => Ok(()),
        }
    }

    /// Drops events at or below `floor` from the log.
    fn compact(&self, floor: Revision) -> Result<(), StoreError> {
        if floor <= self.compacted.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Raise the floor first: a reader must never see a gap below a floor it trusts.
        self.tree
            .insert(META_COMPACTED, &floor.to_be_bytes())
            .map_err(engine)?;
        self.compacted.store(floor, Ordering::SeqCst);
        let (start, end) = (event_key(0, 0), event_key(floor + 1, 0));
        let mut batch = sled::Batch::default();
        let mut refs = Refs::default();
        for item in self.tree.range(start.as_slice()..end.as_slice()) {
            let (key, value) = item.map_err(engine)?;
            refs.release(&decode_event(&key, &value)?.stored);
            batch.remove(key);
        }
        refs.write(&self.tree, &mut batch)?;
        self.tree.apply_batch(batch).map_err(engine)
    }

    /// The record `bytes` (read under `key`) stands for; `None` if its tail is gone: the
    /// record was replaced, and its tail compacted away, since it was read.
    fn resolve_record(&self, key: &ObjectKey, bytes: &[u8]) -> Result<Option<Record>, StoreError> {
        let raw = decode_record(bytes)?;
        Ok(resolve(&self.tree, raw.stored)?.map(|value| Record {
            key: key.clone(),
            value,
            create_revision: raw.create_revision,
            mod_revision: raw.mod_revision,
        }))
    }

    /// A record read in a scan, read again if it changed under the scan (`None`: deleted).
    fn scanned(&self, key: &[u8], bytes: &[u8]) -> Result<Option<Record>, StoreError> {
        let key = keys::decode(&key[1..]).ok_or_else(|| corrupt(key, "undecodable key"))?;
        match self.resolve_record(&key, bytes)? {
            Some(record) => Ok(Some(record)),
            None => self.get(&key),
        }
    }

    /// The event `bytes` (read under `log_key`) stands for; `None` if it was compacted away
    /// while read.
    fn event(&self, log_key: &[u8], bytes: &[u8]) -> Result<Option<Event>, StoreError> {
        let raw = decode_event(log_key, bytes)?;
        Ok(resolve(&self.tree, raw.stored)?.map(|value| Event {
            revision: raw.revision,
            kind: raw.kind,
            key: raw.key,
            value,
            create_revision: raw.create_revision,
        }))
    }
}

fn spawn_flusher(
    db: sled::Db,
    revision: Arc<AtomicU64>,
    durable: watch::Sender<Durability>,
) -> (SyncSender<()>, std::thread::JoinHandle<()>) {
    let (tx, rx) = sync_channel::<()>(1);
    let handle = std::thread::Builder::new()
        .name("troupe-store-flush".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Everything committed before this load is covered by the flush below.
                let target = revision.load(Ordering::SeqCst);
                match db.flush() {
                    Ok(_) => {
                        durable.send_modify(|d| {
                            d.revision = d.revision.max(target);
                            d.error = None;
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "store flush failed");
                        durable.send_modify(|d| d.error = Some(e.to_string()));
                    }
                }
            }
        })
        .expect("spawning the flusher thread");
    (tx, handle)
}

impl Store for SledStore {
    fn get(&self, key: &ObjectKey) -> Result<Option<Record>, StoreError> {
        let stored = object_key(key);
        for _ in 0..READ_ATTEMPTS {
            let Some(bytes) = self.tree.get(&stored).map_err(engine)? else {
                return Ok(None);
            };
            if let Some(record) = self.resolve_record(key, &bytes)? {
                return Ok(Some(record));
            }
        }
        Err(corrupt(&stored, "its shared tail is missing"))
    }

    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        let revision = self.revision.load(Ordering::SeqCst);
        let mut prefix = vec![OBJECT];
        prefix.extend(keys::prefix(kind, namespace));
        let mut records = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (k, v) = item.map_err(engine)?;
            records.extend(self.scanned(&k, &v)?);
        }
        Ok((records, revision))
    }

    fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        let revision = self.revision.load(Ordering::SeqCst);
        let (start, prefix) = keys::page_start(kind, namespace, after);
        let (start, prefix) = (
            [&[OBJECT], start.as_slice()].concat(),
            [&[OBJECT], prefix.as_slice()].concat(),
        );
        let mut records = Vec::new();
        for item in self.tree.range(start..) {
            let (k, v) = item.map_err(engine)?;
            if records.len() == limit || !k.starts_with(&prefix) {
                break;
            }
            records.extend(self.scanned(&k, &v)?);
        }
        Ok((records, revision))
    }

    fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let mut ranges = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        for range in &txn.unchanged {
            ranges.check(range)?;
        }
        let revision = self.revision.load(Ordering::SeqCst) + 1;
        let Staged {
            mut batch,
            refs,
            events,
        } = stage(&self.tree, txn, revision)?;
        if events.is_empty() {
            return Ok(revision - 1);
        }
        let published = events
            .iter()
            .map(|raw| {
                Ok(Event {
                    revision,
                    kind: raw.kind,
                    key: raw.key.clone(),
                    value: refs.value(&self.tree, &raw.stored)?,
                    create_revision: raw.create_revision,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Noted first: should a write below fail, later checks only err on the safe side.
        for event in events.iter().filter(|e| e.kind != EventType::Deleted) {
            ranges.note(&event.key, revision);
        }
        let mut bytes = 0;
        match events.as_slice() {
            [event] if refs.is_empty() => {
                self.tree
                    .insert(event_key(revision, 0), encode_event(event))
                    .map_err(engine)?;
                // The commit is in the log from here on: count it even if applying it fails
                // (the next open replays it).
                self.revision.store(revision, Ordering::SeqCst);
                apply_event(&self.tree, event)?;
                bytes += stored_bytes(&event.key, event.stored.len());
            }
            _ => {
                for (i, event) in events.iter().enumerate() {
                    batch.insert(event_key(revision, i as u32).to_vec(), encode_event(event));
                    bytes += stored_bytes(&event.key, event.stored.len());
                }
                // A tail stored for the first time weighs on the log once, with this commit.
                let fresh = refs.write(&self.tree, &mut batch)?;
                bytes += fresh.values().map(|&len| len as u64).sum::<u64>();
                self.tree.apply_batch(batch).map_err(engine)?;
                self.revision.store(revision, Ordering::SeqCst);
            }
        }
        self.retain(revision, bytes)?;
        // No receiver is not an error: nobody is watching.
        let _ = self.live.send(published.into());
        Ok(revision)
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::SeqCst)
    }

    fn events_after(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError> {
        let oldest = self.compacted.load(Ordering::SeqCst);
        if after < oldest {
            return Err(StoreError::Compacted {
                requested: after,
                oldest,
            });
        }
        let (start, end) = (event_key(after + 1, 0), [EVENT + 1]);
        let events = super::take_whole_commits(
            self.tree
                .range(start.as_slice()..end.as_slice())
                .map(|item| {
                    let (k, v) = item.map_err(engine)?;
                    // A tail gone under the read: its event was compacted meanwhile.
                    self.event(&k, &v)?.ok_or_else(|| StoreError::Compacted {
                        requested: after,
                        oldest: self.compacted.load(Ordering::SeqCst),
                    })
                }),
            limit,
        )?;
        // Compaction may have run while we read; a floor raised past `after` means a gap.
        let oldest = self.compacted.load(Ordering::SeqCst);
        if after < oldest {
            return Err(StoreError::Compacted {
                requested: after,
                oldest,
            });
        }
        Ok(events)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.live.subscribe()
    }

    fn durability(&self) -> watch::Receiver<Durability> {
        self.durable.subscribe()
    }

    fn request_flush(&self) {
        let sent = self.flush_requests.as_ref().map(|tx| tx.try_send(()));
        match sent {
            // Full: a flush is already pending, and it will read the revision after us.
            Some(Ok(()) | Err(TrySendError::Full(()))) => {}
            None | Some(Err(TrySendError::Disconnected(()))) => {
                self.durable
                    .send_modify(|d| d.error = Some("the flusher thread has stopped".into()));
            }
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Stop the flusher so it releases its handle on the database before we return.
        self.flush_requests.take();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
    }
}

/// Brings the objects up to date with the newest commit in the log and returns its revision
/// (`None` for an empty log). Replaying a commit that was fully applied changes nothing.
fn recover(tree: &sled::Tree) -> Result<Option<Revision>, StoreError> {
    let (start, end) = (event_key(0, 0), [EVENT + 1]);
    let Some(last) = tree.range(start.as_slice()..end.as_slice()).next_back() else {
        return Ok(None);
    };
    let (k, v) = last.map_err(engine)?;
    let revision = decode_event(&k, &v)?.revision;
    for item in tree.range(event_key(revision, 0).as_slice()..end.as_slice()) {
        let (k, v) = item.map_err(engine)?;
        apply_event(tree, &decode_event(&k, &v)?)?;
    }
    Ok(Some(revision))
}

/// What the event log weighs, commit by commit, read once at open. A tail weighs on the
/// first event that refers to it, as it did when it was stored.
fn measure_log(tree: &sled::Tree) -> Result<LogSize, StoreError> {
    let mut size = LogSize::default();
    let mut tails = std::collections::HashSet::new();
    let (start, end) = (event_key(0, 0), [EVENT + 1]);
    for item in tree.range(start.as_slice()..end.as_slice()) {
        let (k, v) = item.map_err(engine)?;
        let event = decode_event(&k, &v)?;
        let mut bytes = stored_bytes(&event.key, event.stored.len());
        if let Some(digest) = event.stored.digest()
            && tails.insert(*digest)
        {
            bytes += tail_len(tree, digest)? as u64;
        }
        size.add(event.revision, bytes);
    }
    Ok(size)
}

/// Makes the object an event describes match it.
fn apply_event(tree: &sled::Tree, event: &RawEvent) -> Result<(), StoreError> {
    let key = object_key(&event.key);
    match event.kind {
        EventType::Added | EventType::Modified => {
            let record = encode_record(event.create_revision, event.revision, &event.stored);
            tree.insert(key, record).map_err(engine)?;
        }
        EventType::Deleted => {
            tree.remove(key).map_err(engine)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

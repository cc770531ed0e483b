//! The store: objects keyed by kind, namespace and name, one global revision, and an event log.
//!
//! [`Store`] is the capability the rest of the control plane needs; [`SledStore`] keeps it on
//! disk, [`MemoryStore`] in memory and, with the `etcd` feature, `EtcdStore` in an etcd
//! cluster; one conformance suite (`conformance.rs`) runs against each. [`StoreLocation`] is
//! where a server's store lives, as `--store` names it. The store knows nothing about resource semantics: values are opaque bytes
//! (encoded objects), and integrity rules live in the `resources` layer above it.
//!
//! Every [`Txn`] commits atomically at the next revision; all its events carry that revision.
//! Preconditions are checked inside the commit, so concurrent writers cannot both win. A
//! commit is visible at once and durable once [`wait_durable`] returns: writers that commit
//! while a flush is running share the next flush (group commit).

#[cfg(feature = "etcd")]
mod etcd;
mod location;
mod memory;
mod ranges;
mod retention;
mod sled_store;
mod snapshot;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use troupe_common::{Kind, ObjectKey};

#[cfg(feature = "etcd")]
pub use etcd::{
    DEFAULT_LEASE, EtcdStore, Leader, LocalEtcd, LocalTls, Presence, SignIn,
    connect_client as connect_etcd, connect_options as etcd_connect_options,
};
pub use location::{
    ClientIdentity, DEFAULT_ETCD_PREFIX, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS, EtcdTls,
    EtcdUrl, EtcdUser, StoreLocation, TxnLimits,
};
pub use memory::MemoryStore;
pub use retention::{DEFAULT_EVENT_LOG_BYTES, DEFAULT_EVENT_RETENTION, Retention};
pub use sled_store::SledStore;
pub use snapshot::snapshot;

/// A store revision. Revision 0 is the empty store; each commit takes the next one.
pub type Revision = u64;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The object's key.
    pub key: ObjectKey,
    /// The encoded object.
    pub value: Vec<u8>,
    /// Revision that created the object.
    pub create_revision: Revision,
    /// Revision of the last write to the object.
    pub mod_revision: Revision,
}

/// What a transaction requires of one key at commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precondition {
    /// The key holds no object.
    Absent,
    /// The key holds an object, at any revision.
    Present,
    /// The key holds an object last written at exactly this revision.
    AtRevision(Revision),
}

impl Precondition {
    /// True when a key whose object is at `found` (`None`: no object) satisfies it.
    pub fn holds(self, found: Option<Revision>) -> bool {
        match self {
            Precondition::Absent => found.is_none(),
            Precondition::Present => found.is_some(),
            Precondition::AtRevision(rev) => found == Some(rev),
        }
    }
}

/// What a transaction requires of a range of objects at commit time: that none of them was
/// created or changed after `since` (a deletion does not count). A delete that found nothing
/// referring to what it deletes requires this of the kinds that could refer to it, so a
/// referrer written meanwhile (by another server, say) fails the delete instead of dangling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Unchanged {
    /// The objects' kind.
    pub kind: Kind,
    /// Their namespace; `None`: every namespace.
    pub namespace: Option<String>,
    /// The revision the range was read at.
    pub since: Revision,
}

/// One write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace the object at `key`.
    Put {
        /// Key to write.
        key: ObjectKey,
        /// Encoded object.
        value: Vec<u8>,
    },
    /// Create or replace the object at `key` with `head` followed by `shared`: readers see the
    /// two as one value. The store keeps each distinct `shared` once, however many records
    /// and events repeat it, so a write that changes only the head (a Release's status
    /// beside its manifests) does not write the bulk again.
    PutShared {
        /// Key to write.
        key: ObjectKey,
        /// The part of the encoded object that changes.
        head: Vec<u8>,
        /// The part that many writes repeat.
        shared: Vec<u8>,
    },
    /// Delete the object at `key` (a no-op if absent).
    Delete {
        /// Key to delete.
        key: ObjectKey,
    },
}

/// Writes that commit together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions checked atomically with the writes.
    pub checks: Vec<(ObjectKey, Precondition)>,
    /// Conditions on ranges of objects, checked atomically with the writes.
    pub unchanged: Vec<Unchanged>,
    /// The writes, applied in order.
    pub ops: Vec<Op>,
    /// Whether the writes may commit in several steps when the store cannot take them in one
    /// (etcd bounds a transaction): see [`Txn::divisible`].
    pub divisible: bool,
    /// The leadership the writes are made under, if they are a leader's: see
    /// [`Txn::fenced`].
    pub fence: Option<Fence>,
}

/// A leader's term, as a store checks it: the key the leader holds and the revision it was
/// created at. A store shared by several servers (etcd) commits a fenced transaction only
/// while that key is still the one created then, so a leader that lost its lease (a pause, a
/// partition) writes nothing once another may lead. A store of one server (sled, memory) has
/// one leader, its server, and ignores fences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leader's key, as the store writes it.
    pub key: Vec<u8>,
    /// The revision that created it: the term.
    pub term: i64,
}

impl Txn {
    /// Adds a precondition.
    pub fn check(mut self, key: ObjectKey, precondition: Precondition) -> Self {
        self.checks.push((key, precondition));
        self
    }

    /// Requires that no object of `kind` in `namespace` (every namespace if `None`) was
    /// created or changed after `since` (see [`Unchanged`]).
    pub fn unchanged_since(mut self, kind: Kind, namespace: Option<&str>, since: Revision) -> Self {
        let range = Unchanged {
            kind,
            namespace: namespace.map(str::to_string),
            since,
        };
        if !self.unchanged.contains(&range) {
            self.unchanged.push(range);
        }
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: ObjectKey, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put { key, value });
        self
    }

    /// Adds a put whose value is `head` followed by `shared` (see [`Op::PutShared`]).
    pub fn put_shared(mut self, key: ObjectKey, head: Vec<u8>, shared: Vec<u8>) -> Self {
        self.ops.push(Op::PutShared { key, head, shared });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: ObjectKey) -> Self {
        self.ops.push(Op::Delete { key });
        self
    }

    /// Lets a store whose transactions are bounded commit the writes in several steps, in
    /// order, when they do not fit in one: every check is verified before the first step,
    /// each step is atomic and re-checks the keys it writes, and each takes its own revision.
    /// The caller orders the writes so that every prefix of them leaves a consistent state (a
    /// cascade deletes what is owned before its owner). A store that can take the whole
    /// transaction commits it at once, as always; an indivisible one too large is refused
    /// with [`StoreError::TooLarge`].
    pub fn divisible(mut self) -> Self {
        self.divisible = true;
        self
    }

    /// The same transaction, committed only while `fence` holds; otherwise it fails with
    /// [`StoreError::Fenced`] and writes nothing.
    pub fn fenced(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was replaced.
    Modified,
    /// The object was deleted.
    Deleted,
}

/// One change, as recorded in the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Revision of the commit that made the change.
    pub revision: Revision,
    /// What happened.
    pub kind: EventType,
    /// The object's key.
    pub key: ObjectKey,
    /// The object after the change; for `Deleted`, its last value.
    pub value: Vec<u8>,
    /// Revision that created the object.
    pub create_revision: Revision,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A precondition did not hold at commit time.
    #[error("{key}: expected {expected:?}, found {}", found.map_or("no object".to_string(), |r| format!("revision {r}")))]
    Conflict {
        /// The key whose precondition failed.
        key: ObjectKey,
        /// The precondition.
        expected: Precondition,
        /// Revision found, if the key holds an object.
        found: Option<Revision>,
    },
    /// A range of objects required [`Unchanged`] was written after the revision it was read at.
    #[error("{} in {} changed after revision {}{}", range.kind, range.namespace.as_deref().map_or("every namespace".to_string(), |ns| format!("namespace {ns}")), range.since, written.as_ref().map_or(String::new(), |k| format!(" ({k} was written)")))]
    Changed {
        /// The range.
        range: Unchanged,
        /// An object written since, when the store can tell.
        written: Option<ObjectKey>,
    },
    /// The event log no longer holds the requested revisions.
    #[error(
        "revision {requested} has been compacted; the oldest revision that can be watched from is {oldest}"
    )]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision a watch can start after.
        oldest: Revision,
    },
    /// The last flush failed; writes since then are not known to be durable.
    #[error("flushing the store failed: {0}")]
    Flush(String),
    /// The underlying engine failed.
    #[error("storage engine: {0}")]
    Engine(String),
    /// The commit is larger than the store takes at once; the message says which limit and
    /// how to raise it.
    #[error("{0}")]
    TooLarge(String),
    /// The store cannot be reached now (its members down or without a leader, or no answer
    /// in time): worth trying again. A write that got no answer may have been made.
    #[error("{0}")]
    Unavailable(String),
    /// The store is out of space and refuses writes (deletes still go) until its operator
    /// frees some; the message says how.
    #[error("{0}")]
    NoSpace(String),
    /// A fenced transaction's leadership is over: another server may lead now.
    #[error("not committed: this server's leadership (term {term}) is over")]
    Fenced {
        /// The term the transaction was made in.
        term: i64,
    },
    /// Stored bytes could not be decoded.
    #[error("corrupt stored value under {key}: {reason}")]
    Corrupt {
        /// Where the value was stored.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How far writes are known to be on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durability {
    /// Every commit at or below this revision is durable.
    pub revision: Revision,
    /// Set when a flush failed; cleared by the next successful one.
    pub error: Option<String>,
}

/// A commit under way, from [`Store::commit_async`].
pub type Committing = futures::future::BoxFuture<'static, Result<Revision, StoreError>>;

/// A place to keep objects, with revisions and an event log.
pub trait Store: Send + Sync + 'static {
    /// Reads one object.
    fn get(&self, key: &ObjectKey) -> Result<Option<Record>, StoreError>;

    /// Reads every object of `kind`, in `namespace` (all namespaces if `None`), ordered by
    /// namespace and name, together with the revision the listing reflects.
    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Record>, Revision), StoreError>;

    /// Reads at most `limit` objects of `kind`, in `namespace` (all namespaces if `None`), the
    /// first ones ordered after `after` (from the start if `None`), ordered by namespace and
    /// name, together with the revision the page reflects. A page reads only the objects it
    /// returns, so paging through a kind costs the same per page however large the kind grows.
    fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<Record>, Revision), StoreError>;

    /// Commits `txn` atomically at the next revision and returns that revision (commits made at
    /// the same time may share one, as etcd's group commit does). The commit is visible to
    /// reads at once; use [`wait_durable`] before telling anyone it happened.
    fn commit(&self, txn: Txn) -> Result<Revision, StoreError>;

    /// [`Store::commit`] for an async caller, from a store whose commit blocks no thread: one
    /// that waits on the network (etcd) and not on a disk, or one that never waits (memory).
    /// Other stores give `txn` back, and the caller commits it from a blocking thread.
    fn commit_async(&self, txn: Txn) -> Result<Committing, Txn> {
        Err(txn)
    }

    /// The revision of the last commit.
    fn revision(&self) -> Revision;

    /// Events with revision greater than `after`, oldest first, at most `limit` of them (the
    /// last commit included is always complete). Fails with [`StoreError::Compacted`] if the
    /// log no longer reaches back to `after`.
    fn events_after(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// Live events from now on, one message per commit. A receiver that lags behind should
    /// resume from the log.
    fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>>;

    /// Follows durability; see [`wait_durable`].
    fn durability(&self) -> watch::Receiver<Durability>;

    /// Asks for the writes committed so far to be flushed to disk.
    fn request_flush(&self);
}

/// Waits until every commit up to `revision` is on disk.
pub async fn wait_durable(store: &dyn Store, revision: Revision) -> Result<(), StoreError> {
    let mut durability = store.durability();
    if durability.borrow().revision >= revision {
        return Ok(());
    }
    store.request_flush();
    let state = durability
        .wait_for(|d| d.revision >= revision || d.error.is_some())
        .await
        .map_err(|_| StoreError::Flush("the store is closed".into()))?;
    match &state.error {
        Some(error) if state.revision < revision => Err(StoreError::Flush(error.clone())),
        _ => Ok(()),
    }
}

/// Capacity of the live event channel, in commits; a watcher further behind resumes from the
/// log.
const LIVE_EVENTS: usize = 4096;

/// Storage-key encoding shared by the implementations: `[kind code][namespace]\0[name]`, so
/// objects of one kind, and of one namespace within a kind, are contiguous and ordered.
pub(crate) mod keys {
    use troupe_common::{Kind, ObjectKey};

    /// Encodes a key.
    pub fn encode(key: &ObjectKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + key.namespace.len() + key.name.len());
        out.push(key.kind.code());
        out.extend_from_slice(key.namespace.as_bytes());
        out.push(0);
        out.extend_from_slice(key.name.as_bytes());
        out
    }

    /// The prefix of every key of `kind` (in `namespace`, if given).
    pub fn prefix(kind: Kind, namespace: Option<&str>) -> Vec<u8> {
        let mut out = vec![kind.code()];
        if let Some(ns) = namespace {
            out.extend_from_slice(ns.as_bytes());
            out.push(0);
        }
        out
    }

    /// Where a page of `kind` (in `namespace`) after `after` starts, and the prefix every key of
    /// the page has: the page ends at the first key without it.
    pub fn page_start(
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
    ) -> (Vec<u8>, Vec<u8>) {
        let prefix = prefix(kind, namespace);
        let start = match after.map(encode) {
            // The first key after `after`: no name holds a NUL, so none sorts between.
            Some(mut after) if after >= prefix => {
                after.push(0);
                after
            }
            _ => prefix.clone(),
        };
        (start, prefix)
    }

    /// Decodes a key written by [`encode`].
    pub fn decode(bytes: &[u8]) -> Option<ObjectKey> {
        let (&code, rest) = bytes.split_first()?;
        let kind = Kind::from_code(code)?;
        let sep = rest.iter().position(|&b| b == 0)?;
        let namespace = std::str::from_utf8(&rest[..sep]).ok()?;
        let name = std::str::from_utf8(&rest[sep + 1..]).ok()?;
        Some(ObjectKey::new(kind, namespace, name))
    }
}

/// Takes events in order, at least `limit` of them when there are that many, but never stops
/// in the middle of a commit, so a reader resuming after the last revision it saw misses
/// nothing.
pub(crate) fn take_whole_commits(
    events: impl Iterator<Item = Result<Event, StoreError>>,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let mut out: Vec<Event> = Vec::new();
    for event in events {
        let event = event?;
        if out.len() >= limit
            && out
                .last()
                .is_some_and(|last| last.revision != event.revision)
        {
            break;
        }
        out.push(event);
    }
    Ok(out)
}

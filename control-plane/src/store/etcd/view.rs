//! The view: every object of the store, in memory, as of the tail's head. It is loaded with
//! one listing at the revision the tail starts after, then kept by the tail, commit by commit
//! (under the same lock as the cache of events), so reads, lists and the event log always
//! agree on one revision.
//!
//! Why a copy: the resource layer reads several objects for every write (the object, its
//! namespace, project, type and traits), one after another; from etcd each is a round trip,
//! from here each is a map lookup. What it costs: memory for every object (what a sled
//! store's cache would hold), and reads on one replica may trail a commit made through
//! another by the time its watch takes to deliver it (milliseconds). A replica always reads
//! its own commits: a commit returns once the tail has taken it.

use std::collections::{BTreeMap, HashMap};

use troupe_common::{Kind, ObjectKey};

use super::tail::NOT_CARRIED;
use super::tails::{Digest, TailOf};
use crate::store::{Event, EventType, Precondition, Record, Revision, keys};

/// Every object, by its key's shared encoding (so kinds and namespaces are ranges).
#[derive(Default)]
pub(super) struct View {
    objects: BTreeMap<Vec<u8>, Record>,
    /// The tails of the objects whose values are stored apart from them ([`tails`]), by the
    /// same keys.
    ///
    /// [`tails`]: super::tails
    tails: HashMap<Vec<u8>, TailOf>,
}

impl View {
    /// A view holding `records`, each with its tail if its value has one.
    pub(super) fn new(records: Vec<(Record, Option<TailOf>)>) -> Self {
        let mut view = Self::default();
        for (record, tail) in records {
            let key = keys::encode(&record.key);
            if let Some(tail) = tail {
                view.tails.insert(key.clone(), tail);
            }
            view.objects.insert(key, record);
        }
        view
    }

    /// Applies one commit's events, and what they left as each written object's tail.
    pub(super) fn apply(&mut self, events: &[Event], tails: &[(ObjectKey, Option<TailOf>)]) {
        for (key, tail) in tails {
            let key = keys::encode(key);
            match tail {
                Some(tail) => self.tails.insert(key, *tail),
                None => self.tails.remove(&key),
            };
        }
        for event in events {
            let key = keys::encode(&event.key);
            match event.kind {
                EventType::Deleted => {
                    self.objects.remove(&key);
                }
                EventType::Added | EventType::Modified => {
                    let record = Record {
                        key: event.key.clone(),
                        value: event.value.clone(),
                        create_revision: event.create_revision,
                        mod_revision: event.revision,
                    };
                    self.objects.insert(key, record);
                }
            }
        }
    }

    /// Fills in the last value and create revision of the deletions among `events` (the
    /// next commit) that their etcd events did not carry ([`NOT_CARRIED`]): the objects as
    /// the view holds them. A deletion of an object the view does not hold cannot be told,
    /// and is dropped, with an error.
    pub(super) fn fill_deleted(&self, events: &mut Vec<Event>) {
        events.retain_mut(|event| {
            if event.kind != EventType::Deleted || event.create_revision != NOT_CARRIED {
                return true;
            }
            match self.objects.get(&keys::encode(&event.key)) {
                Some(record) => {
                    event.value = record.value.clone();
                    event.create_revision = record.create_revision;
                    true
                }
                None => {
                    tracing::error!(key = %event.key, revision = event.revision, "etcd store: a deletion of an object the view does not hold; skipping it");
                    false
                }
            }
        });
    }

    /// The tail of the object at `key` if its digest is `want`: the end of its value.
    pub(super) fn tail(&self, key: &ObjectKey, want: &Digest) -> Option<Vec<u8>> {
        let (record, tail) = self.held(key)?;
        if tail.digest != *want {
            return None;
        }
        tail_of(record, tail).map(<[u8]>::to_vec)
    }

    /// The digest and the bytes of the tail of the object at `key`, if the view holds it at
    /// `revision` and its value has a tail.
    pub(super) fn tail_at(&self, key: &ObjectKey, revision: Revision) -> Option<(Digest, &[u8])> {
        let (record, tail) = self.held(key)?;
        if record.mod_revision != revision {
            return None;
        }
        Some((tail.digest, tail_of(record, tail)?))
    }

    /// The object at `key` and what the view keeps of its tail, if its value has one.
    fn held(&self, key: &ObjectKey) -> Option<(&Record, &TailOf)> {
        let encoded = keys::encode(key);
        Some((self.objects.get(&encoded)?, self.tails.get(&encoded)?))
    }

    /// Whether the object at `key` may have a tail in etcd when a commit that checks it
    /// with `check` lands, so that a write of it must delete the tail. Exact when the commit
    /// checks the revision the view holds the object at, or checks it absent; otherwise the
    /// view's word, which may trail another replica's commit (a tail that outlives its
    /// object so is deleted at the next open: [`read`](super::read)). Objects never written
    /// shared, and those created, take no delete of a tail.
    pub(super) fn may_have_tail(&self, key: &ObjectKey, check: Option<Precondition>) -> bool {
        let encoded = keys::encode(key);
        let held = self.tails.contains_key(&encoded);
        match check {
            // A tail goes only with its object.
            Some(Precondition::Absent) => false,
            Some(Precondition::AtRevision(revision))
                if self.objects.get(&encoded).map(|r| r.mod_revision) != Some(revision) =>
            {
                // The view trails (or leads) the check: it cannot tell.
                true
            }
            _ => held,
        }
    }

    /// The object at `key`.
    pub(super) fn get(&self, key: &ObjectKey) -> Option<Record> {
        self.objects.get(&keys::encode(key)).cloned()
    }

    /// Every object of `kind` (in `namespace`), in key order.
    pub(super) fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Record> {
        let prefix = keys::prefix(kind, namespace);
        self.objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// At most `limit` objects of `kind` (in `namespace`) after `after`, in key order.
    pub(super) fn page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Vec<Record> {
        let (start, prefix) = keys::page_start(kind, namespace, after);
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// The end of `record`'s value that `tail` says is its tail.
fn tail_of<'a>(record: &'a Record, tail: &TailOf) -> Option<&'a [u8]> {
    let value = &record.value;
    value.get(value.len().checked_sub(tail.len)?..)
}

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

use std::collections::BTreeMap;

use troupe_common::{Kind, ObjectKey};

use super::tail::NOT_CARRIED;
use crate::store::{Event, EventType, Record, keys};

/// Every object, by its key's shared encoding (so kinds and namespaces are ranges).
#[derive(Default)]
pub(super) struct View {
    objects: BTreeMap<Vec<u8>, Record>,
}

impl View {
    /// A view holding `records`.
    pub(super) fn new(records: Vec<Record>) -> Self {
        Self {
            objects: records
                .into_iter()
                .map(|r| (keys::encode(&r.key), r))
                .collect(),
        }
    }

    /// Applies one commit's events.
    pub(super) fn apply(&mut self, events: &[Event]) {
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

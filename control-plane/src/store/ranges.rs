//! When each range of objects was last written, for the stores that check [`Unchanged`]
//! themselves (sled, memory): the revision of the last put to each kind and to each kind in
//! each namespace, since the store was opened. Updated under the store's commit lock, so a
//! check and the commit it guards see the same state; a check costs two map lookups however
//! many objects the range holds.

use std::collections::HashMap;

use troupe_common::{Kind, ObjectKey};

use super::{Revision, StoreError, Unchanged};

/// The last write to each range since `floor`.
#[derive(Debug, Default)]
pub(super) struct RangeWrites {
    /// The revision the store opened at: a range not written since may have been written at
    /// any revision up to it.
    floor: Revision,
    kinds: HashMap<Kind, (Revision, ObjectKey)>,
    namespaces: HashMap<Kind, HashMap<String, (Revision, ObjectKey)>>,
}

impl RangeWrites {
    /// Ranges of a store opened at `floor`.
    pub(super) fn new(floor: Revision) -> Self {
        Self {
            floor,
            ..Self::default()
        }
    }

    /// Notes a put of `key` at `revision`.
    pub(super) fn note(&mut self, key: &ObjectKey, revision: Revision) {
        let last = (revision, key.clone());
        self.kinds.insert(key.kind, last.clone());
        let namespaces = self.namespaces.entry(key.kind).or_default();
        match namespaces.get_mut(key.namespace.as_str()) {
            Some(entry) => *entry = last,
            None => {
                namespaces.insert(key.namespace.clone(), last);
            }
        }
    }

    /// Whether `range` holds: nothing in it was written after its revision.
    pub(super) fn check(&self, range: &Unchanged) -> Result<(), StoreError> {
        let last = match &range.namespace {
            None => self.kinds.get(&range.kind),
            Some(ns) => self
                .namespaces
                .get(&range.kind)
                .and_then(|namespaces| namespaces.get(ns.as_str())),
        };
        let (revision, written) = match last {
            Some((revision, key)) => (*revision, Some(key.clone())),
            None => (self.floor, None),
        };
        if revision <= range.since {
            return Ok(());
        }
        Err(StoreError::Changed {
            range: range.clone(),
            written,
        })
    }
}

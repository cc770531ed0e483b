//! One transaction staged under the commit lock: its checks, read against the tree and the
//! transaction's own earlier ops, and its writes as a batch of records, the changes to the
//! counts of shared tails, and the events it logs.

use std::collections::HashMap;

use super::layout::{RawEvent, Stored, decode_record, encode_record, engine, object_key};
use super::tails::Refs;
use crate::store::{EventType, Op, Revision, StoreError, Txn};

/// What a transaction writes, not yet written.
pub(super) struct Staged {
    /// The records it writes and deletes.
    pub(super) batch: sled::Batch,
    /// How the counts of shared tails change.
    pub(super) refs: Refs,
    /// Its events, in op order; none if it changes nothing.
    pub(super) events: Vec<RawEvent>,
}

/// What the transaction has done to each key so far: `None` once deleted, else the create
/// revision and value. Later ops see earlier ones; the tree sees none until the batch.
struct Touched<'a> {
    tree: &'a sled::Tree,
    revision: Revision,
    keys: HashMap<Vec<u8>, Option<(Revision, Stored)>>,
}

impl Touched<'_> {
    /// The create revision, mod revision and value `key` holds at this point.
    fn current(&self, key: &[u8]) -> Result<Option<(Revision, Revision, Stored)>, StoreError> {
        if let Some(state) = self.keys.get(key) {
            return Ok(state
                .clone()
                .map(|(create, stored)| (create, self.revision, stored)));
        }
        match self.tree.get(key).map_err(engine)? {
            None => Ok(None),
            Some(bytes) => {
                let raw = decode_record(&bytes)?;
                Ok(Some((raw.create_revision, raw.mod_revision, raw.stored)))
            }
        }
    }
}

/// Checks `txn`'s preconditions and stages its ops as commit `revision`.
pub(super) fn stage(tree: &sled::Tree, txn: Txn, revision: Revision) -> Result<Staged, StoreError> {
    let mut touched = Touched {
        tree,
        revision,
        keys: HashMap::new(),
    };
    for (key, expected) in &txn.checks {
        let found = touched.current(&object_key(key))?.map(|(_, m, _)| m);
        if !expected.holds(found) {
            return Err(StoreError::Conflict {
                key: key.clone(),
                expected: *expected,
                found,
            });
        }
    }
    let mut staged = Staged {
        batch: sled::Batch::default(),
        refs: Refs::default(),
        events: Vec::with_capacity(txn.ops.len()),
    };
    for op in txn.ops {
        let (key, stored) = match op {
            Op::Put { key, value } => (key, Stored::Inline(value)),
            Op::PutShared { key, head, shared } => {
                let digest = staged.refs.provide(shared);
                (key, Stored::Shared { digest, head })
            }
            Op::Delete { key } => {
                let stored_key = object_key(&key);
                if let Some((create_revision, _, stored)) = touched.current(&stored_key)? {
                    staged.batch.remove(stored_key.clone());
                    touched.keys.insert(stored_key, None);
                    // The record's reference to its tail passes to the event.
                    staged.events.push(RawEvent {
                        revision,
                        kind: EventType::Deleted,
                        key,
                        create_revision,
                        stored,
                    });
                }
                continue;
            }
        };
        let stored_key = object_key(&key);
        let (kind, create_revision) = match touched.current(&stored_key)? {
            Some((create, _, old)) => {
                staged.refs.release(&old);
                (EventType::Modified, create)
            }
            None => (EventType::Added, revision),
        };
        // The record and its event.
        staged.refs.hold(&stored);
        staged.refs.hold(&stored);
        staged.batch.insert(
            stored_key.clone(),
            encode_record(create_revision, revision, &stored),
        );
        touched
            .keys
            .insert(stored_key, Some((create_revision, stored.clone())));
        staged.events.push(RawEvent {
            revision,
            kind,
            key,
            create_revision,
            stored,
        });
    }
    Ok(staged)
}

//! Shared tails: the bulk that many writes of one object repeat, stored once.
//!
//! A [`Op::PutShared`](super::super::Op::PutShared) value is a head and a tail. The tail is
//! kept under `t` + its SHA-256 digest, with a count of the records and events that refer to
//! it under `r` + the digest; envelopes hold the head and the digest. A Release's status
//! write so writes its small head, an event of the same size and a count, never its
//! manifests again. A tail goes when its count reaches zero: the record moved on to other
//! content (or was deleted) and compaction dropped the last event that showed it.
//!
//! Counts change only under the commit lock (commits and compaction), in the same batch as
//! the envelopes that refer to them. Readers take no lock: a reader that finds a tail gone
//! raced a commit that replaced the record and a compaction that dropped the older events,
//! and reads again.

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};

use super::layout::{Stored, corrupt, engine, read_u64};
use crate::store::StoreError;

/// Length of a tail's digest.
pub(super) const DIGEST_BYTES: usize = 32;
/// A tail's digest.
pub(super) type Digest = [u8; DIGEST_BYTES];
/// Prefix of tail keys.
const TAIL: u8 = b't';
/// Prefix of reference counts.
const REFS: u8 = b'r';

fn key(prefix: u8, digest: &Digest) -> [u8; DIGEST_BYTES + 1] {
    let mut out = [prefix; DIGEST_BYTES + 1];
    out[1..].copy_from_slice(digest);
    out
}

/// The tail stored under `digest`, if it is still there.
fn read_tail(tree: &sled::Tree, digest: &Digest) -> Result<Option<sled::IVec>, StoreError> {
    tree.get(key(TAIL, digest)).map_err(engine)
}

/// The value `stored` stands for; `None` when its tail is gone (see the module docs).
pub(super) fn resolve(tree: &sled::Tree, stored: Stored) -> Result<Option<Vec<u8>>, StoreError> {
    match stored {
        Stored::Inline(value) => Ok(Some(value)),
        Stored::Shared { digest, mut head } => Ok(read_tail(tree, &digest)?.map(|tail| {
            head.extend_from_slice(&tail);
            head
        })),
    }
}

/// Bytes of the tail under `digest` (0 if it is gone).
pub(super) fn tail_len(tree: &sled::Tree, digest: &Digest) -> Result<usize, StoreError> {
    Ok(read_tail(tree, digest)?.map_or(0, |t| t.len()))
}

/// The reference changes of one commit or compaction, written with its batch.
#[derive(Default)]
pub(super) struct Refs {
    deltas: HashMap<Digest, i64>,
    /// Tails this commit brings, by digest.
    provided: HashMap<Digest, Vec<u8>>,
}

impl Refs {
    /// Takes a tail a put brings; returns its digest.
    pub(super) fn provide(&mut self, tail: Vec<u8>) -> Digest {
        let digest: Digest = Sha256::digest(&tail).into();
        self.provided.entry(digest).or_insert(tail);
        digest
    }

    /// One more envelope refers to `stored`'s tail.
    pub(super) fn hold(&mut self, stored: &Stored) {
        if let Some(digest) = stored.digest() {
            *self.deltas.entry(*digest).or_default() += 1;
        }
    }

    /// One envelope fewer refers to `stored`'s tail.
    pub(super) fn release(&mut self, stored: &Stored) {
        if let Some(digest) = stored.digest() {
            *self.deltas.entry(*digest).or_default() -= 1;
        }
    }

    /// True when nothing changes.
    pub(super) fn is_empty(&self) -> bool {
        self.deltas.values().all(|&d| d == 0)
    }

    /// The value `stored` stands for, its tail from this commit or from the tree.
    pub(super) fn value(&self, tree: &sled::Tree, stored: &Stored) -> Result<Vec<u8>, StoreError> {
        if let Stored::Shared { digest, head } = stored
            && let Some(tail) = self.provided.get(digest)
        {
            return Ok([head.as_slice(), tail].concat());
        }
        resolve(tree, stored.clone())?
            .ok_or_else(|| corrupt(&key(TAIL, stored.digest().expect("shared")), "tail missing"))
    }

    /// Adds the new counts to `batch`, with the tails stored for the first time and the
    /// removal of tails nothing refers to any more. Returns the bytes of each tail this batch
    /// stores for the first time.
    pub(super) fn write(
        self,
        tree: &sled::Tree,
        batch: &mut sled::Batch,
    ) -> Result<HashMap<Digest, usize>, StoreError> {
        let mut fresh = HashMap::new();
        for (digest, delta) in self.deltas {
            if delta == 0 {
                continue;
            }
            let refs = key(REFS, &digest);
            let count = read_u64(tree, &refs)?;
            let now = i64::try_from(count)
                .ok()
                .and_then(|c| c.checked_add(delta))
                .ok_or_else(|| corrupt(&refs, "reference count out of range"))?;
            if now <= 0 {
                batch.remove(refs.as_slice());
                batch.remove(key(TAIL, &digest).as_slice());
                continue;
            }
            batch.insert(refs.as_slice(), &(now as u64).to_be_bytes());
            if count == 0 {
                let tail = self
                    .provided
                    .get(&digest)
                    .ok_or_else(|| corrupt(&refs, "a reference to a tail never stored"))?;
                batch.insert(key(TAIL, &digest).as_slice(), tail.as_slice());
                fresh.insert(digest, tail.len());
            }
        }
        Ok(fresh)
    }
}

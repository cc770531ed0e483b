//! How the etcd store lays keys and values out under its prefix, and how etcd's revisions map
//! to the store's.
//!
//! Keys: `PREFIX/o/` followed by the shared key encoding (`store::keys`, so a kind and a
//! namespace are each one contiguous range, in order) for objects, `PREFIX/t/` and the same
//! encoding for the shared tails of objects written with
//! [`Op::PutShared`](crate::store::Op::PutShared) ([`tails`](super::tails)), and
//! `PREFIX/store` for the marker every open writes. Values are envelopes that start with a
//! format byte: a whole value, or a head with the digest of the tail beside it.
//!
//! Revisions are etcd's, less the revision that created the marker (the base): an empty store
//! is at 0 and its first commit is 1 whatever else the cluster holds, and every replica reads
//! the same base, so they agree on every revision. Other users of the cluster take revisions
//! too; the store's then have gaps, which nothing relies on.

use etcd_client::KeyValue;
use troupe_common::{Kind, ObjectKey};

use super::marker::Marker;
use super::tails::{DIGEST_BYTES, Digest};
use crate::store::{Record, Revision, StoreError, keys};

/// Envelope holding the whole value after its format byte.
const INLINE: u8 = 1;
/// Envelope holding the digest of the object's tail, then the head of its value.
const SHARED: u8 = 2;

/// The keys of one store and the base of its revisions.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// `PREFIX/`: every key of the store starts with it.
    root: Vec<u8>,
    /// `PREFIX/o/`: every object key starts with it.
    objects: Vec<u8>,
    /// `PREFIX/t/`: every tail key starts with it.
    tails: Vec<u8>,
    /// The etcd revision that is the store's revision 0.
    base: i64,
    /// What the store's marker says.
    marker: Marker,
}

impl Layout {
    /// The layout under `prefix` (`/troupe`), before its base is known.
    pub(super) fn new(prefix: &str) -> Self {
        let root = format!("{}/", prefix.trim_end_matches('/')).into_bytes();
        let objects = [root.as_slice(), b"o/"].concat();
        let tails = [root.as_slice(), b"t/"].concat();
        Self {
            root,
            objects,
            tails,
            base: 0,
            marker: Marker::default(),
        }
    }

    /// The same layout with revisions counted from etcd revision `base`, as `marker` says.
    pub(super) fn with_base(mut self, base: i64, marker: Marker) -> Self {
        self.base = base;
        self.marker = marker;
        self
    }

    /// What the store's marker says.
    pub(super) fn marker_value(&self) -> Marker {
        self.marker
    }

    /// `PREFIX/`, which every key of the store starts with.
    pub(super) fn root(&self) -> &[u8] {
        &self.root
    }

    /// The marker's key.
    pub(super) fn marker(&self) -> Vec<u8> {
        [self.root.as_slice(), b"store"].concat()
    }

    /// The etcd key of an object.
    pub(super) fn object(&self, key: &ObjectKey) -> Vec<u8> {
        [self.objects.as_slice(), &keys::encode(key)].concat()
    }

    /// The etcd key of the shared tail of an object ([`tails`](super::tails)).
    pub(super) fn tail(&self, key: &ObjectKey) -> Vec<u8> {
        [self.tails.as_slice(), &keys::encode(key)].concat()
    }

    /// `PREFIX/t/`, which every tail key starts with.
    pub(super) fn tails(&self) -> &[u8] {
        &self.tails
    }

    /// The object whose tail an etcd key holds; `None` for the store's other keys.
    pub(super) fn decode_tail_key(&self, key: &[u8]) -> Result<Option<ObjectKey>, StoreError> {
        match key.strip_prefix(self.tails.as_slice()) {
            None => Ok(None),
            Some(rest) => keys::decode(rest)
                .map(Some)
                .ok_or_else(|| corrupt(key, "undecodable tail key")),
        }
    }

    /// The etcd range `[start, end)` of every object of `kind` (in `namespace`, if given).
    pub(super) fn range(&self, kind: Kind, namespace: Option<&str>) -> (Vec<u8>, Vec<u8>) {
        let start = [self.objects.as_slice(), &keys::prefix(kind, namespace)].concat();
        let end = prefix_end(&start);
        (start, end)
    }

    /// `PREFIX/o/`, which every object key starts with.
    pub(super) fn objects(&self) -> &[u8] {
        &self.objects
    }

    /// The object an etcd key names; `None` for the store's other keys.
    pub(super) fn decode_key(&self, key: &[u8]) -> Result<Option<ObjectKey>, StoreError> {
        match key.strip_prefix(self.objects.as_slice()) {
            None => Ok(None),
            Some(rest) => keys::decode(rest)
                .map(Some)
                .ok_or_else(|| corrupt(key, "undecodable key")),
        }
    }

    /// The store revision of etcd revision `revision` (0 for one before the base).
    pub(super) fn to_store(&self, revision: i64) -> Revision {
        u64::try_from(revision - self.base).unwrap_or(0)
    }

    /// The etcd revision of store revision `revision`. (The base is below zero for a store
    /// whose revisions go on from another's: `troupe migrate`.)
    pub(super) fn to_etcd(&self, revision: Revision) -> i64 {
        i64::try_from(revision)
            .unwrap_or(i64::MAX)
            .saturating_add(self.base)
    }

    /// The record an object's key-value holds, and the digest of its tail if its value is
    /// stored apart from it: the record's value is then the head alone.
    pub(super) fn record(&self, kv: &KeyValue) -> Result<(Record, Option<Digest>), StoreError> {
        let key = self
            .decode_key(kv.key())?
            .ok_or_else(|| corrupt(kv.key(), "not an object key"))?;
        let (value, digest) = decode_stored(kv.key(), kv.value())?;
        let record = Record {
            key,
            value,
            create_revision: self.to_store(kv.create_revision()),
            mod_revision: self.to_store(kv.mod_revision()),
        };
        Ok((record, digest))
    }
}

/// etcd's end of the range of every key starting with `prefix`: the prefix with its last byte
/// below 0xff incremented (what `WithPrefix` computes).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// The envelope of `value`.
pub(super) fn encode_value(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + value.len());
    out.push(INLINE);
    out.extend_from_slice(value);
    out
}

/// The envelope of a value stored as `head` and the tail whose digest is `digest`.
pub(super) fn encode_shared(head: &[u8], digest: &Digest) -> Vec<u8> {
    [&[SHARED][..], digest, head].concat()
}

/// The value an envelope stored under `key` holds, whole (a tail's, say).
pub(super) fn decode_value(key: &[u8], bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    match decode_stored(key, bytes)? {
        (value, None) => Ok(value),
        (_, Some(_)) => Err(corrupt(key, "a head where a whole value belongs")),
    }
}

/// What an envelope stored under `key` holds: the whole value, or the head and the digest of
/// the tail that follows it.
pub(super) fn decode_stored(
    key: &[u8],
    bytes: &[u8],
) -> Result<(Vec<u8>, Option<Digest>), StoreError> {
    match bytes.split_first() {
        Some((&INLINE, value)) => Ok((value.to_vec(), None)),
        Some((&SHARED, rest)) if rest.len() >= DIGEST_BYTES => {
            let (digest, head) = rest.split_at(DIGEST_BYTES);
            let digest = digest.try_into().expect("split at the digest's length");
            Ok((head.to_vec(), Some(digest)))
        }
        _ => Err(corrupt(key, "unknown value envelope")),
    }
}

pub(super) fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use troupe_common::Kind;

    use super::*;

    #[test]
    fn keys_sit_under_the_prefix_and_ranges_end_where_their_prefix_does() {
        let layout = Layout::new("/teams/a/").with_base(10, Marker::default());
        let key = ObjectKey::new(Kind::Component, "acme", "api");
        let etcd_key = layout.object(&key);
        assert!(etcd_key.starts_with(b"/teams/a/o/"));
        assert_eq!(layout.decode_key(&etcd_key).unwrap(), Some(key.clone()));
        assert_eq!(layout.decode_key(&layout.marker()).unwrap(), None);
        assert!(etcd_key.starts_with(layout.objects()));
        assert!(!layout.marker().starts_with(layout.objects()));
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!((layout.to_store(10), layout.to_store(13)), (0, 3));
        assert_eq!(layout.to_store(4), 0, "before the base");
        assert_eq!(layout.to_etcd(3), 13);
        let value = encode_value(b"v");
        assert_eq!(decode_value(b"k", &value).unwrap(), b"v");
        let digest = [7; DIGEST_BYTES];
        let shared = encode_shared(b"head", &digest);
        assert_eq!(
            decode_stored(b"k", &shared).unwrap(),
            (b"head".to_vec(), Some(digest))
        );
        assert!(decode_value(b"k", &shared).is_err(), "a head is not whole");
        let tail = layout.tail(&key);
        assert!(tail.starts_with(layout.tails()) && !tail.starts_with(layout.objects()));
        assert_eq!(layout.decode_tail_key(&tail).unwrap(), Some(key.clone()));
        assert_eq!(layout.decode_key(&tail).unwrap(), None);
        assert!(
            decode_value(b"k", b"\x07v").is_err(),
            "a format from the future"
        );
    }
}

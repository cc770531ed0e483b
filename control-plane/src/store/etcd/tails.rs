//! Shared tails: the bulk that many writes of one object repeat (a Release's manifests beside
//! its status), written to etcd once rather than with every write.
//!
//! A value written with [`Op::PutShared`](crate::store::Op::PutShared) is two etcd keys: the
//! object's own holds the head and the SHA-256 digest of the tail, and the object's tail key
//! (`PREFIX/t/…`, [`Layout::tail`]) holds the tail. A write that brings the tail the object
//! already has (a status write) puts the head alone: a small value in etcd's log, in its
//! history and in every replica's watch, where the whole Release went before. It does so only
//! when the commit checks the object's revision and the view holds the object at that
//! revision with that tail; the check then vouches for the tail key too, which changes only
//! with its object. Every other write of an object that has, or may have, a tail puts the
//! tail or deletes it in the same transaction. So at every revision an object's tail key holds
//! the tail of its value, and a read of etcd's history at any revision finds it there.
//!
//! Reading: the watch ([`tail`](super::tail)) and history reads ([`history`](super::history))
//! find a head's tail among the same revision's writes, or as the object had it before (the
//! view, or an earlier event of the same read), or else read the tail key at that revision.
//! Loading the view reads the tail keys beside the objects, at the same revision.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, GetOptions, TxnOp};
use sha2::{Digest as _, Sha256};
use troupe_common::ObjectKey;

use super::Shared;
use super::bridge::timed;
use super::layout::{Layout, corrupt, decode_stored, decode_value};
use crate::store::retention::stored_bytes;
use crate::store::{Event, EventType, Revision, StoreError};

/// Length of a tail's digest.
pub(super) const DIGEST_BYTES: usize = 32;
/// A tail's digest.
pub(super) type Digest = [u8; DIGEST_BYTES];

/// The digest of `tail`.
pub(super) fn digest(tail: &[u8]) -> Digest {
    Sha256::digest(tail).into()
}

/// What the view keeps of an object's tail: its digest, and its length (the object's value
/// ends with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TailOf {
    pub(super) digest: Digest,
    pub(super) len: usize,
}

/// One etcd event under the store's prefix, decoded.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// An object's event. Where its value (or, for a deletion, its last value) is stored
    /// apart from its tail, the event holds the head and `digest` names the tail.
    Object {
        event: Event,
        digest: Option<Digest>,
    },
    /// A write of an object's tail: the new tail, or `None` for a delete, and the tail before
    /// when the event carries it (history reads ask for previous values).
    Tail {
        key: ObjectKey,
        value: Option<Vec<u8>>,
        prev: Option<Vec<u8>>,
    },
}

/// The change one etcd event is; `None` for keys that are neither objects nor tails (the
/// marker, the server's own state). A deletion takes the deleted value from the event's
/// previous key-value if it carries one, or is left for the view to fill
/// ([`NOT_CARRIED`](super::tail::NOT_CARRIED)).
pub(super) fn to_change(
    layout: &Layout,
    event: &etcd_client::Event,
) -> Result<Option<Change>, StoreError> {
    let kv = event
        .kv()
        .ok_or_else(|| corrupt(b"?", "an etcd event without its key"))?;
    let put = event.event_type() == etcd_client::EventType::Put;
    if let Some(key) = layout.decode_tail_key(kv.key())? {
        let prev = event.prev_kv().map(|p| decode_value(kv.key(), p.value()));
        return Ok(Some(Change::Tail {
            key,
            value: put
                .then(|| decode_value(kv.key(), kv.value()))
                .transpose()?,
            prev: prev.transpose()?,
        }));
    }
    let Some(key) = layout.decode_key(kv.key())? else {
        return Ok(None);
    };
    let revision = layout.to_store(kv.mod_revision());
    let stored = |bytes: &[u8], created: i64| -> Result<_, StoreError> {
        let (value, digest) = decode_stored(kv.key(), bytes)?;
        Ok((value, digest, layout.to_store(created)))
    };
    let (kind, (value, digest, create_revision)) = match (put, event.prev_kv()) {
        (true, _) if kv.version() == 1 => {
            (EventType::Added, stored(kv.value(), kv.create_revision())?)
        }
        (true, _) => (
            EventType::Modified,
            stored(kv.value(), kv.create_revision())?,
        ),
        (false, Some(prev)) => (
            EventType::Deleted,
            stored(prev.value(), prev.create_revision())?,
        ),
        (false, None) => (
            EventType::Deleted,
            (Vec::new(), None, super::tail::NOT_CARRIED),
        ),
    };
    Ok(Some(Change::Object {
        event: Event {
            revision,
            kind,
            key,
            value,
            create_revision,
        },
        digest,
    }))
}

/// A tail to read from etcd: the object's, as it stood at a store revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Missing {
    pub(super) key: ObjectKey,
    pub(super) at: Revision,
}

/// One commit's events with every value whole, what each object it wrote has as its tail now
/// (`None`: no tail), and what the commit weighs in etcd's history (a status write's head,
/// not the manifests it goes with).
#[derive(Debug, Default)]
pub(super) struct Resolved {
    pub(super) events: Vec<Event>,
    pub(super) tails: Vec<(ObjectKey, Option<TailOf>)>,
    pub(super) stored: u64,
}

/// A tail a commit writes: the new one (`None`: deleted) and the one before, if carried.
type TailWritten<'a> = (Option<&'a Vec<u8>>, Option<&'a Vec<u8>>);

/// Makes whole the values of one commit's `changes`, taking each tail from the commit's own
/// tail writes, or else from `known` (the tail the object had, if its digest is the one
/// named). Events whose tail neither has are left out, and come back as what to read.
pub(super) fn resolve(
    changes: &[Change],
    known: impl Fn(&ObjectKey, &Digest) -> Option<Vec<u8>>,
) -> (Resolved, Vec<Missing>) {
    // Each tail the commit writes: the new one and, where carried, the one before.
    let written: HashMap<&ObjectKey, TailWritten<'_>> = changes
        .iter()
        .filter_map(|change| match change {
            Change::Tail { key, value, prev } => Some((key, (value.as_ref(), prev.as_ref()))),
            Change::Object { .. } => None,
        })
        .collect();
    let mut out = Resolved {
        stored: changes.iter().map(stored).sum(),
        ..Resolved::default()
    };
    let mut missing = Vec::new();
    for change in changes {
        let Change::Object { event, digest } = change else {
            continue;
        };
        let deleted = event.kind == EventType::Deleted;
        let Some(digest) = digest else {
            out.tails.push((event.key.clone(), None));
            out.events.push(event.clone());
            continue;
        };
        let own = written
            .get(&event.key)
            .and_then(|(value, prev)| if deleted { *prev } else { *value });
        let tail = own.cloned().or_else(|| known(&event.key, digest));
        let Some(tail) = tail else {
            let at = if deleted {
                event.revision - 1
            } else {
                event.revision
            };
            missing.push(Missing {
                key: event.key.clone(),
                at,
            });
            continue;
        };
        let len = tail.len();
        let mut event = event.clone();
        event.value.extend_from_slice(&tail);
        let tail = (!deleted).then_some(TailOf {
            digest: *digest,
            len,
        });
        out.tails.push((event.key.clone(), tail));
        out.events.push(event);
    }
    (out, missing)
}

/// What `change` adds to etcd's history: a value written (a deletion's is gone).
fn stored(change: &Change) -> u64 {
    match change {
        Change::Object { event, .. } if event.kind == EventType::Deleted => {
            stored_bytes(&event.key, 0)
        }
        Change::Object { event, .. } => stored_bytes(&event.key, event.value.len()),
        Change::Tail { key, value, .. } => stored_bytes(key, value.as_ref().map_or(0, Vec::len)),
    }
}

/// Reads each tail of `missing` from etcd at its revision; a tail that is not there is left
/// out (its events are then skipped, and said so).
pub(super) async fn fetch(
    shared: &Shared,
    missing: &[Missing],
) -> Result<HashMap<ObjectKey, Vec<u8>>, StoreError> {
    let mut out = HashMap::new();
    for Missing { key, at } in missing {
        let etcd_key = shared.layout.tail(key);
        let options = GetOptions::new().with_revision(shared.layout.to_etcd(*at));
        // A read: held by a member that stalls, it gets a copy.
        let response = super::resend::hedged(|| {
            let mut kv = shared.kv();
            let (etcd_key, options) = (etcd_key.clone(), options.clone());
            async move {
                let read = kv.get(etcd_key, Some(options));
                timed(&shared.members, "reading an object's tail", read).await
            }
        })
        .await?;
        if let Some(found) = response.kvs().first() {
            out.insert(key.clone(), decode_value(&etcd_key, found.value())?);
        }
    }
    Ok(out)
}

/// A tail whose object's value does not refer to it: left by a write that could not tell the
/// object had a tail (one that checked nothing, racing another replica's shared write).
#[derive(Debug)]
pub(super) struct Orphan {
    pub(super) key: ObjectKey,
    /// The etcd revision the tail was written at.
    pub(super) tail_revision: i64,
    /// The object's revision, if it was there (with a whole value).
    pub(super) object_revision: Option<Revision>,
}

/// Deletes each of `orphans` unless it or its object changed since it was found.
pub(super) async fn sweep(shared: std::sync::Arc<Shared>, orphans: Vec<Orphan>) {
    let layout = &shared.layout;
    for orphan in &orphans {
        let object = layout.object(&orphan.key);
        let object_unchanged = match orphan.object_revision {
            Some(r) => Compare::mod_revision(object, CompareOp::Equal, layout.to_etcd(r)),
            None => Compare::version(object, CompareOp::Equal, 0),
        };
        let tail = layout.tail(&orphan.key);
        let txn = etcd_client::Txn::new()
            .when([
                Compare::mod_revision(tail.clone(), CompareOp::Equal, orphan.tail_revision),
                object_unchanged,
            ])
            .and_then([TxnOp::delete(tail, None)]);
        match shared.txn("deleting a tail no object refers to", txn).await {
            Ok(_) => {
                tracing::info!(key = %orphan.key, "etcd store: deleted a tail no object refers to")
            }
            Err(error) => {
                tracing::warn!(key = %orphan.key, %error, "etcd store: deleting a tail no object refers to failed")
            }
        }
    }
}

/// The tail `fetched` holds for `key`, if its digest is `want`.
pub(super) fn matching(
    fetched: &HashMap<ObjectKey, Vec<u8>>,
    key: &ObjectKey,
    want: &Digest,
) -> Option<Vec<u8>> {
    fetched
        .get(key)
        .filter(|tail| digest(tail) == *want)
        .cloned()
}

/// Says that the events of `missing` were skipped: their tails are not in etcd.
pub(super) fn skipped(missing: &[Missing]) {
    for Missing { key, at } in missing {
        tracing::error!(%key, revision = at, "etcd store: an object's tail is missing from etcd; skipping its event");
    }
}

#[cfg(test)]
mod tests {
    use troupe_common::Kind;

    use super::*;

    fn mk_key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Release, "acme", name)
    }

    fn mk_put(name: &str, revision: Revision, head: &[u8], tail: &[u8]) -> Change {
        Change::Object {
            event: Event {
                revision,
                kind: EventType::Modified,
                key: mk_key(name),
                value: head.to_vec(),
                create_revision: 1,
            },
            digest: Some(digest(tail)),
        }
    }

    #[test]
    fn a_head_takes_its_tail_from_its_commit_else_from_what_is_known_else_asks_for_it() {
        let written = Change::Tail {
            key: mk_key("a"),
            value: Some(b"-manifests".to_vec()),
            prev: None,
        };
        let changes = [
            mk_put("a", 5, b"status", b"-manifests"),
            written,
            mk_put("b", 5, b"status", b"-known"),
            mk_put("c", 5, b"status", b"-unknown"),
        ];
        let known = |key: &ObjectKey, want: &Digest| {
            (key.name == "b" && *want == digest(b"-known")).then(|| b"-known".to_vec())
        };
        let (resolved, missing) = resolve(&changes, known);
        let values: Vec<_> = resolved.events.iter().map(|e| e.value.clone()).collect();
        assert_eq!(
            values,
            [b"status-manifests".to_vec(), b"status-known".to_vec()]
        );
        assert_eq!(
            resolved.tails[0],
            (
                mk_key("a"),
                Some(TailOf {
                    digest: digest(b"-manifests"),
                    len: 10
                })
            )
        );
        assert_eq!(
            missing,
            [Missing {
                key: mk_key("c"),
                at: 5
            }]
        );
    }

    #[test]
    fn a_deletion_takes_the_tail_its_value_had() {
        let deleted = Change::Object {
            event: Event {
                revision: 9,
                kind: EventType::Deleted,
                key: mk_key("a"),
                value: b"status".to_vec(),
                create_revision: 1,
            },
            digest: Some(digest(b"-old")),
        };
        let tail = Change::Tail {
            key: mk_key("a"),
            value: None,
            prev: Some(b"-old".to_vec()),
        };
        let (resolved, missing) = resolve(&[deleted.clone(), tail], |_, _| None);
        assert!(missing.is_empty());
        assert_eq!(resolved.events[0].value, b"status-old");
        assert_eq!(resolved.tails[0], (mk_key("a"), None));
        let (_, missing) = resolve(&[deleted], |_, _| None);
        assert_eq!(
            missing,
            [Missing {
                key: mk_key("a"),
                at: 8
            }],
            "read as it was just before"
        );
    }
}

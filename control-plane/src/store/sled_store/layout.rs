//! How the sled store lays bytes out: key prefixes and the versioned envelopes of records and
//! events. Every envelope starts with a format byte that says how it holds its value: whole
//! ([`INLINE`]), or as a head and the digest of a shared tail ([`SHARED`], see `tails.rs`).
//! A later layout can still read these.

use troupe_common::ObjectKey;

use super::super::{EventType, Revision, StoreError, keys};
use super::tails::{DIGEST_BYTES, Digest};

/// The database's format: envelopes of both kinds below.
pub(super) const DB_FORMAT: u8 = 2;
/// Formats a database may have been written in, oldest first; opening one upgrades it.
pub(super) const DB_FORMATS: [u8; 2] = [INLINE, DB_FORMAT];
/// Envelope holding its whole value.
pub(super) const INLINE: u8 = 1;
/// Envelope holding a head and the digest of a shared tail.
pub(super) const SHARED: u8 = 2;
/// Prefix of object keys.
pub(super) const OBJECT: u8 = b'o';
/// Prefix of event-log keys.
pub(super) const EVENT: u8 = b'e';

pub(super) fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

pub(super) fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

pub(super) fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    match tree.get(key).map_err(engine)? {
        None => Ok(0),
        Some(v) => Ok(u64::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| corrupt(key, "not a u64"))?,
        )),
    }
}

pub(super) fn object_key(key: &ObjectKey) -> Vec<u8> {
    let mut out = vec![OBJECT];
    out.extend(keys::encode(key));
    out
}

pub(super) fn event_key(revision: Revision, index: u32) -> [u8; 13] {
    let mut out = [EVENT; 13];
    out[1..9].copy_from_slice(&revision.to_be_bytes());
    out[9..].copy_from_slice(&index.to_be_bytes());
    out
}

/// A value as an envelope holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stored {
    /// The whole value.
    Inline(Vec<u8>),
    /// The value is `head` followed by the tail stored under `digest`.
    Shared {
        /// The tail's digest.
        digest: Digest,
        /// What comes before the tail.
        head: Vec<u8>,
    },
}

impl Stored {
    /// The tail this value refers to, if any.
    pub(super) fn digest(&self) -> Option<&Digest> {
        match self {
            Stored::Inline(_) => None,
            Stored::Shared { digest, .. } => Some(digest),
        }
    }

    /// Bytes the envelope spends on the value.
    pub(super) fn len(&self) -> usize {
        match self {
            Stored::Inline(value) => value.len(),
            Stored::Shared { head, .. } => DIGEST_BYTES + head.len(),
        }
    }

    fn format(&self) -> u8 {
        match self {
            Stored::Inline(_) => INLINE,
            Stored::Shared { .. } => SHARED,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Stored::Inline(value) => out.extend_from_slice(value),
            Stored::Shared { digest, head } => {
                out.extend_from_slice(digest);
                out.extend_from_slice(head);
            }
        }
    }

    fn read(format: u8, bytes: &[u8]) -> Option<Stored> {
        match format {
            INLINE => Some(Stored::Inline(bytes.to_vec())),
            SHARED if bytes.len() >= DIGEST_BYTES => Some(Stored::Shared {
                digest: bytes[..DIGEST_BYTES].try_into().expect("digest length"),
                head: bytes[DIGEST_BYTES..].to_vec(),
            }),
            _ => None,
        }
    }
}

/// A record as its envelope holds it.
#[derive(Debug)]
pub(super) struct RawRecord {
    pub(super) create_revision: Revision,
    pub(super) mod_revision: Revision,
    pub(super) stored: Stored,
}

/// Record envelope: `[format][create_revision: u64 BE][mod_revision: u64 BE][value]`.
pub(super) fn encode_record(
    create_revision: Revision,
    mod_revision: Revision,
    stored: &Stored,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + stored.len());
    out.push(stored.format());
    out.extend_from_slice(&create_revision.to_be_bytes());
    out.extend_from_slice(&mod_revision.to_be_bytes());
    stored.write(&mut out);
    out
}

pub(super) fn decode_record(bytes: &[u8]) -> Result<RawRecord, StoreError> {
    let bad = || corrupt(bytes, "unknown record envelope");
    if bytes.len() < 17 {
        return Err(bad());
    }
    Ok(RawRecord {
        create_revision: u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes")),
        mod_revision: u64::from_be_bytes(bytes[9..17].try_into().expect("8 bytes")),
        stored: Stored::read(bytes[0], &bytes[17..]).ok_or_else(bad)?,
    })
}

/// An event as its envelope holds it.
#[derive(Debug)]
pub(super) struct RawEvent {
    pub(super) revision: Revision,
    pub(super) kind: EventType,
    pub(super) key: ObjectKey,
    pub(super) create_revision: Revision,
    pub(super) stored: Stored,
}

/// Event envelope: `[format][type][create_revision: u64 BE][key len: u32 BE][key][value]`.
pub(super) fn encode_event(event: &RawEvent) -> Vec<u8> {
    let key = keys::encode(&event.key);
    let mut out = Vec::with_capacity(14 + key.len() + event.stored.len());
    out.push(event.stored.format());
    out.push(match event.kind {
        EventType::Added => 1,
        EventType::Modified => 2,
        EventType::Deleted => 3,
    });
    out.extend_from_slice(&event.create_revision.to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(&key);
    event.stored.write(&mut out);
    out
}

pub(super) fn decode_event(log_key: &[u8], bytes: &[u8]) -> Result<RawEvent, StoreError> {
    let bad = || corrupt(log_key, "unknown event envelope");
    if log_key.len() != 13 || bytes.len() < 14 {
        return Err(bad());
    }
    let revision = u64::from_be_bytes(log_key[1..9].try_into().expect("8 bytes"));
    let kind = match bytes[1] {
        1 => EventType::Added,
        2 => EventType::Modified,
        3 => EventType::Deleted,
        _ => return Err(bad()),
    };
    let create_revision = u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes"));
    let key_len = u32::from_be_bytes(bytes[10..14].try_into().expect("4 bytes")) as usize;
    let key_bytes = bytes.get(14..14 + key_len).ok_or_else(bad)?;
    let key = keys::decode(key_bytes).ok_or_else(bad)?;
    Ok(RawEvent {
        revision,
        kind,
        key,
        create_revision,
        stored: Stored::read(bytes[0], &bytes[14 + key_len..]).ok_or_else(bad)?,
    })
}

//! How the sled store lays bytes out: key prefixes and the versioned envelopes of records and
//! events. Every envelope starts with [`FORMAT`], so a later layout can still read this one.

use troupe_common::ObjectKey;

use super::super::{Event, EventType, Record, Revision, StoreError, keys};

/// Version of the envelope format written by this code.
pub(super) const FORMAT: u8 = 1;
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

/// Record envelope: `[FORMAT][create_revision: u64 BE][mod_revision: u64 BE][value]`.
pub(super) fn encode_record(
    create_revision: Revision,
    mod_revision: Revision,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + value.len());
    out.push(FORMAT);
    out.extend_from_slice(&create_revision.to_be_bytes());
    out.extend_from_slice(&mod_revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

pub(super) fn record_revisions(bytes: &[u8]) -> Result<(Revision, Revision), StoreError> {
    if bytes.len() < 17 || bytes[0] != FORMAT {
        return Err(corrupt(bytes, "unknown record envelope"));
    }
    let create = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
    let modified = u64::from_be_bytes(bytes[9..17].try_into().expect("8 bytes"));
    Ok((create, modified))
}

pub(super) fn decode_record(key: ObjectKey, bytes: &[u8]) -> Result<Record, StoreError> {
    let (create_revision, mod_revision) = record_revisions(bytes)?;
    Ok(Record {
        key,
        value: bytes[17..].to_vec(),
        create_revision,
        mod_revision,
    })
}

/// Event envelope: `[FORMAT][type][create_revision: u64 BE][key len: u32 BE][key][value]`.
pub(super) fn encode_event(event: &Event) -> Vec<u8> {
    let key = keys::encode(&event.key);
    let mut out = Vec::with_capacity(14 + key.len() + event.value.len());
    out.push(FORMAT);
    out.push(match event.kind {
        EventType::Added => 1,
        EventType::Modified => 2,
        EventType::Deleted => 3,
    });
    out.extend_from_slice(&event.create_revision.to_be_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(&key);
    out.extend_from_slice(&event.value);
    out
}

pub(super) fn decode_event(log_key: &[u8], bytes: &[u8]) -> Result<Event, StoreError> {
    let bad = || corrupt(log_key, "unknown event envelope");
    if log_key.len() != 13 || bytes.len() < 14 || bytes[0] != FORMAT {
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
    Ok(Event {
        revision,
        kind,
        key,
        value: bytes[14 + key_len..].to_vec(),
        create_revision,
    })
}

//! A consistent listing: the objects of some kinds as they stood at one revision, from any
//! [`Store`], including one whose scans are not snapshots (a sled scan sees commits that land
//! while it runs, some keys before and some after).
//!
//! The scan runs between two reads of the event log. A key no commit touched after the first
//! read was scanned as it still is; a touched key takes the value of its last event. So the
//! scan with the log replayed over it is the state at the log's last revision, and every
//! commit the scan could have seen is in that log: a commit's events are written no later
//! than its objects.

use std::collections::BTreeMap;

use troupe_common::{Kind, ObjectKey};

use super::{EventType, Record, Revision, Store, StoreError};

/// Attempts before a snapshot gives up on an event log compacted under it.
const ATTEMPTS: usize = 3;

/// Every object of `kinds` in `namespace` (all namespaces if `None`) as it stood at the
/// returned revision, ordered by kind, namespace and name.
pub fn snapshot(
    store: &dyn Store,
    kinds: &[Kind],
    namespace: Option<&str>,
) -> Result<(Vec<Record>, Revision), StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        // One before the head: the newest commit may still be writing its objects while the
        // head already counts it (sled logs the event, then the object).
        let before = store.revision().saturating_sub(1);
        let mut objects: BTreeMap<ObjectKey, Record> = BTreeMap::new();
        for &kind in kinds {
            for record in store.list(kind, namespace)?.0 {
                objects.insert(record.key.clone(), record);
            }
        }
        let events = match store.events_after(before, usize::MAX) {
            Ok(events) => events,
            Err(StoreError::Compacted { .. }) if attempt < ATTEMPTS => continue,
            Err(e) => return Err(e),
        };
        let revision = events.last().map_or(before, |e| e.revision).max(before);
        for event in events {
            let wanted = kinds.contains(&event.key.kind)
                && namespace.is_none_or(|ns| ns == event.key.namespace);
            if !wanted {
                continue;
            }
            match event.kind {
                EventType::Deleted => {
                    objects.remove(&event.key);
                }
                EventType::Added | EventType::Modified => {
                    let record = Record {
                        key: event.key.clone(),
                        value: event.value,
                        create_revision: event.create_revision,
                        mod_revision: event.revision,
                    };
                    objects.insert(event.key, record);
                }
            }
        }
        return Ok((objects.into_values().collect(), revision));
    }
}

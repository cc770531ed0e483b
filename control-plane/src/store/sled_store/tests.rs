//! What only the sled store does: replaying a half-applied commit, and keeping shared tails
//! once and only while something refers to them.

use super::layout::Stored;
use super::*;
use crate::store::Txn;

/// A crash between a one-change commit's event and its object write leaves only the
/// event; opening the store replays it.
#[test]
fn open_replays_a_half_applied_commit() {
    let dir = tempfile::tempdir().unwrap();
    let key = ObjectKey::new(Kind::Component, "acme", "api");
    {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .commit(Txn::default().put(key.clone(), b"v1".to_vec()))
            .unwrap();
        // What the log holds after a crash right after the event insert of revision 2.
        let event = RawEvent {
            revision: 2,
            kind: EventType::Modified,
            key: key.clone(),
            create_revision: 1,
            stored: Stored::Inline(b"v2".to_vec()),
        };
        store
            .tree
            .insert(event_key(2, 0), encode_event(&event))
            .unwrap();
        store.db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.revision(), 2);
    let record = store.get(&key).unwrap().unwrap();
    assert_eq!(
        (
            record.value.as_slice(),
            record.create_revision,
            record.mod_revision
        ),
        (&b"v2"[..], 1, 2)
    );
    assert_eq!(store.commit(Txn::default().delete(key.clone())).unwrap(), 3);
}

fn tails(store: &SledStore) -> usize {
    store.tree.scan_prefix(b"t").count()
}

fn put_shared(store: &SledStore, key: &ObjectKey, head: &str, tail: &[u8]) -> Revision {
    store
        .commit(Txn::default().put_shared(key.clone(), head.as_bytes().to_vec(), tail.to_vec()))
        .unwrap()
}

/// A tail stays while a record or a logged event shows it, and goes with the last of them.
#[test]
fn a_tail_goes_when_nothing_refers_to_it() {
    let dir = tempfile::tempdir().unwrap();
    // Over budget at every commit: the log keeps only the newest one.
    let retention = Retention {
        revisions: 100_000,
        bytes: 1,
    };
    let store = SledStore::open_with_retention(dir.path(), retention).unwrap();
    let (a, b) = (
        ObjectKey::new(Kind::Release, "acme", "a"),
        ObjectKey::new(Kind::Release, "acme", "b"),
    );
    put_shared(&store, &a, "1", b"first");
    put_shared(&store, &b, "1", b"first");
    assert_eq!(tails(&store), 1, "one tail however many records show it");
    put_shared(&store, &a, "2", b"second");
    assert_eq!(tails(&store), 2, "b still shows the first");
    store.commit(Txn::default().delete(b.clone())).unwrap();
    assert_eq!(
        tails(&store),
        2,
        "b's deletion, still in the log, shows the first"
    );
    store
        .commit(Txn::default().put(b.clone(), b"plain".to_vec()))
        .unwrap();
    assert_eq!(tails(&store), 1, "the deletion was compacted away");
    assert_eq!(store.get(&a).unwrap().unwrap().value, b"2second");
    store.commit(Txn::default().delete(a.clone())).unwrap();
    store
        .commit(Txn::default().put(b.clone(), b"plain again".to_vec()))
        .unwrap();
    assert_eq!(tails(&store), 0);
    assert_eq!(store.tree.scan_prefix(b"r").count(), 0, "no counts left");
}

/// Writes that repeat a large tail weigh their heads on the log, so a burst of them keeps
/// the history a watch resumes from; the values read back whole, also after a restart.
#[test]
fn writes_repeating_a_tail_keep_the_log_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        revisions: 100_000,
        bytes: 1024 * 1024,
    };
    let key = ObjectKey::new(Kind::Release, "acme", "web");
    let tail = vec![7u8; 512 * 1024];
    let first = {
        let store = SledStore::open_with_retention(dir.path(), retention).unwrap();
        let first = put_shared(&store, &key, "status 0", &tail);
        for i in 1..=200 {
            put_shared(&store, &key, &format!("status {i}"), &tail);
        }
        first
    };
    let store = SledStore::open_with_retention(dir.path(), retention).unwrap();
    put_shared(&store, &key, "status 201", &tail);
    let events = store.events_after(first, usize::MAX).unwrap();
    assert_eq!(
        events.len(),
        201,
        "every write since the first is in the log"
    );
    for (i, event) in events.iter().enumerate() {
        let head = format!("status {}", i + 1);
        assert_eq!(&event.value[..head.len()], head.as_bytes());
        assert_eq!(&event.value[head.len()..], tail.as_slice());
    }
    let record = store.get(&key).unwrap().unwrap();
    assert_eq!(record.value, [b"status 201".as_slice(), &tail].concat());
    assert_eq!(tails(&store), 1);
}

/// A store made for an import goes on after the other store's revision, and once the import
/// ends a watch resumes from the revision a list gives, not from one before it.
#[test]
fn an_imported_store_goes_on_after_the_revision_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let key = ObjectKey::new(Kind::Component, "acme", "api");
    {
        let store = SledStore::open_for_import(dir.path(), 40).unwrap();
        assert_eq!(store.revision(), 40);
        for (n, name) in ["api", "web"].into_iter().enumerate() {
            let key = ObjectKey::new(Kind::Component, "acme", name);
            let put = Txn::default().put(key, b"v1".to_vec());
            assert_eq!(store.commit(put).unwrap(), 41 + n as Revision);
        }
        assert_eq!(store.finish_import().unwrap(), 41);
    }
    let store = SledStore::open(dir.path()).unwrap();
    let (records, revision) = store.list(Kind::Component, None).unwrap();
    assert_eq!((records.len(), revision), (2, 42));
    assert!(store.events_after(revision, 10).unwrap().is_empty());
    // What a watch from scratch reads: every object, at the head.
    let (records, at) = crate::store::snapshot(&store, &[Kind::Component], None).unwrap();
    assert_eq!((records.len(), at), (2, 42));
    assert!(matches!(
        store.events_after(40, 10),
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(store.commit(Txn::default().delete(key)).unwrap(), 43);
    assert!(SledStore::open_for_import(dir.path(), 1).is_err());
}

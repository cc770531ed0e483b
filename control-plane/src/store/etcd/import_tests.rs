//! An import (`troupe migrate`) on a real etcd: revisions go on after the other store's, no
//! server opens the store before the import is done, history from before it is compacted,
//! and only an empty prefix takes one.

use super::tests::{mk_etcd, mk_store};
use super::*;
use crate::store::{StoreLocation, Txn};
use troupe_common::{Kind, ObjectKey};

fn mk_url(etcd: &LocalEtcd, prefix: &str) -> EtcdUrl {
    match etcd.url(prefix).parse::<StoreLocation>().unwrap() {
        StoreLocation::Etcd(url) => url,
        other => panic!("{other:?}"),
    }
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Component, "acme", name)
}

#[test]
fn an_import_goes_on_after_the_old_revisions_and_is_opened_only_once_done() {
    let etcd = mk_etcd();
    let url = mk_url(&etcd, "moved");
    let import = EtcdStore::open_for_import(&url, 500).unwrap();
    let txn = ["a", "b", "c"]
        .iter()
        .fold(Txn::default().divisible(), |t, n| {
            t.put(key(n), n.as_bytes().to_vec())
        });
    let copied = import.commit(txn).unwrap();
    assert!(
        copied > 500,
        "revision {copied} is not after the old store's"
    );

    // Not before the import is done, by a server or by another import.
    let early = EtcdStore::open(&url)
        .err()
        .expect("opened during the import");
    assert!(early.to_string().contains("being imported"), "{early}");
    let again = EtcdStore::open_for_import(&url, 500)
        .err()
        .expect("imported twice");
    assert!(again.to_string().contains("already holds keys"), "{again}");

    import.finish_import().unwrap();
    drop(import);
    let store = EtcdStore::open(&url).unwrap();
    let record = store.get(&key("b")).unwrap().unwrap();
    assert_eq!(record.value, b"b");
    assert!(record.mod_revision > 500 && record.mod_revision <= copied);
    // History from before the import is gone, from its end on it is there.
    match store.events_after(500, 10) {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (500, copied));
        }
        other => panic!("history from before the import: {other:?}"),
    }
    assert_eq!(store.events_after(copied, 10).unwrap(), Vec::new());
    let next = store
        .commit(Txn::default().put(key("d"), b"d".to_vec()))
        .unwrap();
    assert!(next > copied);
    let events = store.events_after(copied, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].revision, events[0].key.name.as_str()),
        (next, "d")
    );

    // Opened again, the same revisions.
    drop(store);
    let store = EtcdStore::open(&url).unwrap();
    assert_eq!(
        store.get(&key("b")).unwrap().unwrap().mod_revision,
        record.mod_revision
    );
    assert!(store.revision() > next);
}

#[test]
fn an_import_is_refused_into_a_prefix_that_holds_anything() {
    let etcd = mk_etcd();
    let existing = mk_store(&etcd, "taken");
    existing
        .commit(Txn::default().put(key("a"), b"a".to_vec()))
        .unwrap();
    drop(existing);
    let refused = EtcdStore::open_for_import(&mk_url(&etcd, "taken"), 7)
        .err()
        .expect("imported over a store");
    assert!(
        refused.to_string().contains("already holds keys"),
        "{refused}"
    );
}

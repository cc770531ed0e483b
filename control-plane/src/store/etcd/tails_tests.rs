//! Shared tails on a real etcd: a Release's status writes put its head alone, and every
//! reader (the writer, a replica watching, a replica opening, a read of etcd's history) gets
//! the whole value.

use etcd_client::GetOptions;
use troupe_common::{Kind, ObjectKey};

use super::tests::{mk_etcd, mk_store, next_commit};
use super::*;
use crate::store::{EventType, Precondition, Txn};

fn mk_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Release, "acme", name)
}

/// The raw etcd key-value at `key` (`None` if absent).
fn raw(store: &EtcdStore, key: Vec<u8>) -> Option<(usize, i64)> {
    let response = store
        .call("reading a raw key", move |mut client| {
            let key = key.clone();
            async move { client.get(key, None::<GetOptions>).await }
        })
        .unwrap();
    response
        .kvs()
        .first()
        .map(|kv| (kv.value().len(), kv.version()))
}

/// Writes `head` and `manifests` to `key`, checking it is at `revision` (absent for 0).
fn status_write(
    store: &EtcdStore,
    key: &ObjectKey,
    revision: Revision,
    head: &str,
    manifests: &[u8],
) -> Revision {
    let check = match revision {
        0 => Precondition::Absent,
        r => Precondition::AtRevision(r),
    };
    let txn = Txn::default().check(key.clone(), check).put_shared(
        key.clone(),
        head.as_bytes().to_vec(),
        manifests.to_vec(),
    );
    store.commit(txn).unwrap()
}

#[test]
fn status_writes_put_the_head_alone_and_every_reader_gets_the_whole_value() {
    let etcd = mk_etcd();
    let store = mk_store(&etcd, "tails");
    let key = mk_key("api");
    let manifests = vec![b'm'; 64 * 1024];
    let whole = |head: &str| [head.as_bytes(), &manifests].concat();
    let mut revision = status_write(&store, &key, 0, "status 0", &manifests);
    for i in 1..=20 {
        revision = status_write(&store, &key, revision, &format!("status {i}"), &manifests);
    }
    assert_eq!(store.get(&key).unwrap().unwrap().value, whole("status 20"));
    let layout = &store.shared.layout;
    let (head_bytes, _) = raw(&store, layout.object(&key)).unwrap();
    assert!(
        head_bytes < 100,
        "the Release's own key holds {head_bytes} bytes: its manifests went with the status"
    );
    assert_eq!(
        raw(&store, layout.tail(&key)).map(|(_, version)| version),
        Some(1),
        "the manifests were written more than once"
    );

    // A replica that opens now loads it whole; one that watches gets whole events.
    let replica = mk_store(&etcd, "tails");
    assert_eq!(
        replica.get(&key).unwrap().unwrap().value,
        whole("status 20")
    );
    let mut watching = replica.subscribe();
    revision = status_write(&store, &key, revision, "status 21", &manifests);
    let commit = next_commit(&mut watching);
    assert_eq!(commit[0].value, whole("status 21"));
    assert_eq!(
        replica.get(&key).unwrap().unwrap().value,
        whole("status 21")
    );

    // New manifests go again; a whole value and a delete take the tail key along.
    let other = vec![b'n'; 1000];
    revision = status_write(&store, &key, revision, "status 22", &other);
    assert_eq!(raw(&store, layout.tail(&key)).unwrap(), (1001, 2));
    assert_eq!(
        next_commit(&mut watching)[0].value,
        [b"status 22".as_slice(), &other].concat()
    );
    let txn = Txn::default()
        .check(key.clone(), Precondition::AtRevision(revision))
        .put(key.clone(), b"plain".to_vec());
    let plain = store.commit(txn).unwrap();
    assert_eq!(raw(&store, layout.tail(&key)), None);
    assert_eq!(next_commit(&mut watching)[0].value, b"plain");
    // A write that checks nothing cannot trust the view: it writes the tail.
    let blind = Txn::default().put_shared(key.clone(), b"blind".to_vec(), other.clone());
    store.commit(blind).unwrap();
    assert_eq!(raw(&store, layout.tail(&key)).unwrap().1, 1);
    store.commit(Txn::default().delete(key.clone())).unwrap();
    assert_eq!(raw(&store, layout.tail(&key)), None);
    assert!(plain > revision);

    // Read back from etcd's history (older than the replica's cache): every value whole,
    // the deletion's too.
    let events = replica.events_after(0, 100).unwrap();
    let values: Vec<_> = events
        .iter()
        .map(|e| (e.kind, e.value.len(), e.value.starts_with(b"status")))
        .collect();
    assert_eq!(values.len(), 26);
    assert_eq!(values[0], (EventType::Added, whole("status 0").len(), true));
    assert_eq!(events[20].value, whole("status 20"));
    assert_eq!(events[22].value, [b"status 22".as_slice(), &other].concat());
    assert_eq!(events[23].value, b"plain");
    assert_eq!(events[24].value, [b"blind".as_slice(), &other].concat());
    assert_eq!(
        (events[25].kind, events[25].value.clone()),
        (EventType::Deleted, [b"blind".as_slice(), &other].concat())
    );
    // A read that starts after the manifests were written reads them at its revision.
    let later = replica.events_after(events[5].revision, 2).unwrap();
    assert_eq!(later[0].value, whole("status 6"));
}

#[test]
fn a_tail_no_object_refers_to_is_deleted_when_a_store_opens() {
    let etcd = mk_etcd();
    let store = mk_store(&etcd, "orphans");
    let (whole, gone) = (mk_key("whole"), mk_key("gone"));
    store
        .commit(Txn::default().put(whole.clone(), b"plain".to_vec()))
        .unwrap();
    // Left by writes that raced another replica's (made here by hand).
    for key in [&whole, &gone] {
        let tail = store.shared.layout.tail(key);
        store
            .call("leaving a tail", move |mut client| {
                let tail = tail.clone();
                async move { client.put(tail, layout::encode_value(b"-old"), None).await }
            })
            .unwrap();
    }

    let reopened = mk_store(&etcd, "orphans");
    let layout = &reopened.shared.layout;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while raw(&reopened, layout.tail(&whole)).is_some()
        || raw(&reopened, layout.tail(&gone)).is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the tails are still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(reopened.get(&whole).unwrap().unwrap().value, b"plain");
    assert!(reopened.get(&gone).unwrap().is_none());
}

#[test]
fn etcd_history_is_weighed_by_what_it_stores_so_status_writes_keep_it_long() {
    let etcd = mk_etcd();
    let url = match etcd.url("weighed").parse().unwrap() {
        crate::store::StoreLocation::Etcd(url) => url,
        other => panic!("{other:?}"),
    };
    // A MiB of history: 300 status writes of Releases with 64 KiB of manifests would weigh
    // 19 MiB counted whole, and 30 KiB as etcd stores them.
    let retention = crate::store::Retention {
        revisions: 100_000,
        bytes: 1 << 20,
    };
    let store = EtcdStore::open_with_retention(&url, retention).unwrap();
    let key = mk_key("api");
    let manifests = vec![b'm'; 64 * 1024];
    let mut revision = status_write(&store, &key, 0, "status 0", &manifests);
    for i in 1..300 {
        revision = status_write(&store, &key, revision, &format!("status {i}"), &manifests);
    }
    let replica = mk_store(&etcd, "weighed");
    let events = replica.events_after(0, 10).unwrap();
    assert_eq!(
        events[0].value,
        [b"status 0".as_slice(), &manifests].concat()
    );
}

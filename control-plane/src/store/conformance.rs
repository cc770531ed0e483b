//! One conformance suite for every [`Store`] implementation: each case is a function over
//! `&dyn Store`, instantiated below for [`MemoryStore`] and [`SledStore`], and in
//! `conformance/etcd.rs` for the etcd store (feature `etcd`).

use std::sync::Arc;

use troupe_common::{Kind, ObjectKey};

use super::*;

fn mk_key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind, ns, name)
}

fn put(store: &dyn Store, key: &ObjectKey, value: &str) -> Revision {
    store
        .commit(Txn::default().put(key.clone(), value.as_bytes().to_vec()))
        .unwrap()
}

/// Every event in the log as "revision type name value".
fn log_summary(store: &dyn Store) -> Vec<String> {
    let events = store.events_after(0, 100).unwrap();
    events
        .into_iter()
        .map(|e| {
            let value = String::from_utf8_lossy(&e.value);
            format!("{} {:?} {} {value}", e.revision, e.kind, e.key.name)
        })
        .collect()
}

fn names(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{}/{}", r.key.namespace, r.key.name))
        .collect()
}

pub fn get_put_list(store: &dyn Store) {
    let a = mk_key(Kind::Component, "acme", "api");
    let b = mk_key(Kind::Component, "acme", "web");
    let c = mk_key(Kind::Component, "beta", "api");
    let other_kind = mk_key(Kind::Project, "acme", "shop");
    assert_eq!(store.get(&a).unwrap(), None);
    assert_eq!(put(store, &b, "b"), 1);
    assert_eq!(put(store, &a, "a1"), 2);
    assert_eq!(put(store, &c, "c"), 3);
    assert_eq!(put(store, &other_kind, "p"), 4);
    assert_eq!(put(store, &a, "a2"), 5);
    let got = store.get(&a).unwrap().unwrap();
    assert_eq!(got.value, b"a2");
    assert_eq!((got.create_revision, got.mod_revision), (2, 5));

    let (all, rev) = store.list(Kind::Component, None).unwrap();
    assert_eq!(names(&all), ["acme/api", "acme/web", "beta/api"]);
    assert_eq!(rev, 5);
    let (acme, _) = store.list(Kind::Component, Some("acme")).unwrap();
    assert_eq!(names(&acme), ["acme/api", "acme/web"]);
    let (none, _) = store.list(Kind::Component, Some("acm")).unwrap();
    assert!(
        none.is_empty(),
        "a namespace prefix must not match a longer namespace"
    );
    assert_eq!(store.revision(), 5);
}

pub fn pages(store: &dyn Store) {
    for (ns, name) in [
        ("acme", "a"),
        ("acme", "b"),
        ("acme", "c"),
        ("acmex", "a"),
        ("beta", "a"),
    ] {
        put(store, &mk_key(Kind::Component, ns, name), name);
    }
    put(store, &mk_key(Kind::Project, "acme", "a"), "p");
    put(store, &mk_key(Kind::ComponentType, "", "z"), "t");
    let page = |ns: Option<&str>, after: Option<(&str, &str)>, limit| {
        let after = after.map(|(ns, name)| mk_key(Kind::Component, ns, name));
        let (records, revision) = store
            .list_page(Kind::Component, ns, after.as_ref(), limit)
            .unwrap();
        assert_eq!(revision, 7);
        names(&records)
    };
    assert_eq!(page(None, None, 2), ["acme/a", "acme/b"]);
    assert_eq!(page(None, Some(("acme", "b")), 2), ["acme/c", "acmex/a"]);
    assert_eq!(page(None, Some(("acmex", "a")), 2), ["beta/a"]);
    assert!(
        page(None, Some(("beta", "a")), 2).is_empty(),
        "no other kind"
    );
    assert_eq!(
        page(Some("acme"), Some(("acme", "a")), 5),
        ["acme/b", "acme/c"]
    );
    assert!(
        page(Some("acme"), Some(("acme", "c")), 5).is_empty(),
        "no other namespace"
    );
    // A key that is not stored (deleted since the last page) still places the page.
    assert_eq!(page(None, Some(("acme", "bb")), 1), ["acme/c"]);
    // A key before the namespace starts at the namespace.
    assert_eq!(page(Some("acmex"), Some(("acme", "z")), 5), ["acmex/a"]);
    assert!(page(None, None, 0).is_empty());
}

pub fn transactions_are_atomic(store: &dyn Store) {
    let a = mk_key(Kind::Component, "acme", "a");
    let b = mk_key(Kind::Component, "acme", "b");
    let rev = store
        .commit(
            Txn::default()
                .put(a.clone(), b"1".to_vec())
                .put(b.clone(), b"1".to_vec()),
        )
        .unwrap();
    assert_eq!(rev, 1, "one revision per transaction");
    assert_eq!(store.get(&b).unwrap().unwrap().mod_revision, 1);

    // A failed check leaves nothing written, not even the ops before it in the list.
    let err = store
        .commit(
            Txn::default()
                .check(a.clone(), Precondition::AtRevision(7))
                .delete(b.clone())
                .put(a.clone(), b"2".to_vec()),
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { found: Some(1), .. }),
        "{err:?}"
    );
    assert!(store.get(&b).unwrap().is_some());
    assert_eq!(store.get(&a).unwrap().unwrap().value, b"1");
    assert_eq!(store.revision(), 1);

    // A transaction that changes nothing takes no revision.
    let gone = mk_key(Kind::Component, "acme", "never");
    assert_eq!(store.commit(Txn::default().delete(gone)).unwrap(), 1);
    assert_eq!(store.revision(), 1);
}

pub fn preconditions(store: &dyn Store) {
    let a = mk_key(Kind::Project, "acme", "shop");
    let absent = Txn::default()
        .check(a.clone(), Precondition::Absent)
        .put(a.clone(), b"x".to_vec());
    assert_eq!(store.commit(absent.clone()).unwrap(), 1);
    assert!(matches!(
        store.commit(absent).unwrap_err(),
        StoreError::Conflict {
            expected: Precondition::Absent,
            found: Some(1),
            ..
        }
    ));
    let at1 = Txn::default()
        .check(a.clone(), Precondition::AtRevision(1))
        .put(a.clone(), b"y".to_vec());
    assert_eq!(store.commit(at1.clone()).unwrap(), 2);
    assert!(
        store.commit(at1).is_err(),
        "a stale revision must be refused"
    );
    let missing = mk_key(Kind::Project, "acme", "nope");
    assert!(matches!(
        store
            .commit(
                Txn::default()
                    .check(missing, Precondition::Present)
                    .put(a.clone(), b"z".to_vec())
            )
            .unwrap_err(),
        StoreError::Conflict { found: None, .. }
    ));
    assert_eq!(store.get(&a).unwrap().unwrap().value, b"y");
}

/// A range required unchanged since a revision fails the commit once an object of it is
/// created or changed after that revision, naming the range; a deletion, another namespace
/// (even one whose name starts the same) or another kind do not count.
pub fn unchanged_ranges(store: &dyn Store) {
    let a = mk_key(Kind::Component, "acme", "a");
    let c = mk_key(Kind::Component, "acme", "c");
    let beta = mk_key(Kind::Component, "beta", "b");
    let acm = mk_key(Kind::Component, "acm", "x");
    let shop = mk_key(Kind::Project, "acme", "shop");
    put(store, &a, "a");
    let read_at = put(store, &beta, "b");
    let guarded = |kind, ns: Option<&str>, since, value: &str| {
        Txn::default()
            .unchanged_since(kind, ns, since)
            .put(shop.clone(), value.as_bytes().to_vec())
    };
    let first = store
        .commit(guarded(Kind::Component, Some("acme"), read_at, "1"))
        .unwrap();
    put(store, &acm, "x");
    // Neither another kind (the Project just written) nor a namespace named alike counts.
    store
        .commit(guarded(Kind::Component, Some("acme"), read_at, "2"))
        .unwrap();
    put(store, &c, "c");
    for ns in [Some("acme"), None] {
        match store.commit(guarded(Kind::Component, ns, first, "3")) {
            Err(StoreError::Changed { range, written }) => {
                assert_eq!(
                    (range.kind, range.namespace.as_deref()),
                    (Kind::Component, ns)
                );
                // Every namespace takes in the "acm" one too.
                let since = [Some(&c), ns.is_none().then_some(&acm)];
                assert!(
                    written.is_none() || since.contains(&written.as_ref()),
                    "{written:?} was not written in the range after revision {first}"
                );
            }
            other => panic!("{ns:?}: {other:?}"),
        }
    }
    assert_eq!(store.get(&shop).unwrap().unwrap().value, b"2");
    store
        .commit(guarded(Kind::Component, Some("beta"), first, "4"))
        .unwrap();
    // A deletion is no write to guard against.
    let deleted = store.commit(Txn::default().delete(c.clone())).unwrap();
    let last = store.get(&shop).unwrap().unwrap().mod_revision;
    assert!(deleted > last);
    store
        .commit(guarded(Kind::Component, Some("acme"), last, "5"))
        .unwrap();
    assert_eq!(store.get(&shop).unwrap().unwrap().value, b"5");
}

/// Many writers increment one counter with compare-and-swap; no increment may be lost.
pub fn concurrent_writers_with_preconditions(store: Arc<dyn Store>) {
    let key = mk_key(Kind::Component, "acme", "counter");
    put(&*store, &key, "0");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            std::thread::spawn(move || {
                let mut wins = 0;
                let mut conflicts = 0;
                while wins < 25 {
                    let current = store.get(&key).unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&current.value)
                        .unwrap()
                        .parse()
                        .unwrap();
                    let txn = Txn::default()
                        .check(key.clone(), Precondition::AtRevision(current.mod_revision))
                        .put(key.clone(), (n + 1).to_string().into_bytes());
                    match store.commit(txn) {
                        Ok(_) => wins += 1,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let last = store.get(&key).unwrap().unwrap();
    assert_eq!(last.value, b"200", "8 writers x 25 successful increments");
    assert_eq!(store.revision(), 201);
}

pub fn event_log(store: &dyn Store) {
    let a = mk_key(Kind::Component, "acme", "a");
    let b = mk_key(Kind::Component, "acme", "b");
    put(store, &a, "1");
    store
        .commit(
            Txn::default()
                .put(a.clone(), b"2".to_vec())
                .put(b.clone(), b"1".to_vec()),
        )
        .unwrap();
    store.commit(Txn::default().delete(a.clone())).unwrap();
    assert_eq!(
        log_summary(store),
        [
            "1 Added a 1",
            "2 Modified a 2",
            "2 Added b 1",
            "3 Deleted a 2",
        ]
    );
    // A limit never splits a commit.
    let first = store.events_after(0, 2).unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(store.events_after(2, 100).unwrap().len(), 1);
    assert!(store.events_after(3, 100).unwrap().is_empty());
}

/// A value written as a head and a shared part reads back whole, in records and events,
/// however many writes share the part, and whatever replaces it.
pub fn shared_values(store: &dyn Store) {
    let a = mk_key(Kind::Release, "acme", "a");
    let b = mk_key(Kind::Release, "acme", "b");
    let shared = |k: &ObjectKey, head: &str, tail: &str| {
        Txn::default().put_shared(k.clone(), head.into(), tail.into())
    };
    store.commit(shared(&a, "1", "-big")).unwrap();
    store.commit(shared(&a, "2", "-big")).unwrap();
    store.commit(shared(&b, "1", "-big")).unwrap();
    store
        .commit(shared(&a, "3", "-other").delete(b.clone()))
        .unwrap();
    store
        .commit(Txn::default().put(a.clone(), b"plain".to_vec()))
        .unwrap();
    assert_eq!(
        log_summary(store),
        [
            "1 Added a 1-big",
            "2 Modified a 2-big",
            "3 Added b 1-big",
            "4 Modified a 3-other",
            "4 Deleted b 1-big",
            "5 Modified a plain",
        ]
    );
    store.commit(shared(&b, "4", "-big")).unwrap();
    let (listed, _) = store.list(Kind::Release, Some("acme")).unwrap();
    let values: Vec<_> = listed.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values, [b"plain".to_vec(), b"4-big".to_vec()]);
    let (page, _) = store.list_page(Kind::Release, None, Some(&a), 10).unwrap();
    assert_eq!(page[0].value, b"4-big");
}

pub fn live_events(store: &dyn Store) {
    let mut rx = store.subscribe();
    let a = mk_key(Kind::Component, "acme", "a");
    put(store, &a, "1");
    let commit = rx.try_recv().unwrap();
    assert_eq!((commit[0].revision, commit[0].kind), (1, EventType::Added));
    let b = mk_key(Kind::Component, "acme", "b");
    store
        .commit(
            Txn::default()
                .put(a.clone(), b"2".to_vec())
                .put(b, b"1".to_vec()),
        )
        .unwrap();
    let commit = rx.try_recv().unwrap();
    assert_eq!(commit.len(), 2, "one message per commit");
}

pub fn compaction(store: &dyn Store, retention: u64) {
    let a = mk_key(Kind::Component, "acme", "a");
    let total = retention * 4;
    for i in 0..total {
        put(store, &a, &i.to_string());
    }
    match store.events_after(0, 10).unwrap_err() {
        StoreError::Compacted {
            requested: 0,
            oldest,
        } => {
            assert!(oldest > 0 && oldest <= total - retention, "oldest {oldest}")
        }
        e => panic!("expected Compacted, got {e:?}"),
    }
    let recent = store.events_after(total - retention, 1000).unwrap();
    assert_eq!(
        recent.len() as u64,
        retention,
        "the last `retention` revisions stay"
    );
}

/// The byte budget the stores under test keep their logs within.
pub const LOG_BYTES: u64 = 50_000;

/// A log of large values keeps within its byte budget, newest commits first.
pub fn compaction_by_bytes(store: &dyn Store) {
    let a = mk_key(Kind::Component, "acme", "a");
    let value = "x".repeat(1_000);
    for _ in 0..500 {
        put(store, &a, &value);
    }
    let head = store.revision();
    assert!(
        matches!(store.events_after(0, 10), Err(StoreError::Compacted { .. })),
        "500 commits of 1 kB do not fit in 50 kB"
    );
    // Within the budget, and at least nine tenths of it (less one commit) kept.
    let mut kept = None;
    for after in (0..head).rev() {
        match store.events_after(after, usize::MAX) {
            Ok(events) => kept = Some(events),
            Err(_) => break,
        }
    }
    let kept = kept.expect("the newest commits stay");
    let bytes: usize = kept.iter().map(|e| e.value.len()).sum();
    assert!(bytes as u64 <= LOG_BYTES, "{bytes} bytes kept");
    assert!(kept.len() >= 40, "only {} commits kept", kept.len());
    assert_eq!(kept.last().unwrap().revision, head);
}

pub async fn durability(store: &dyn Store) {
    let a = mk_key(Kind::Component, "acme", "a");
    let rev = put(store, &a, "1");
    wait_durable(store, rev).await.unwrap();
    assert!(store.durability().borrow().revision >= rev);
}

#[cfg(feature = "etcd")]
mod etcd;

mod memory {
    use super::*;

    fn mk() -> MemoryStore {
        MemoryStore::new()
    }

    #[test]
    fn get_put_list() {
        super::get_put_list(&mk());
    }
    #[test]
    fn pages() {
        super::pages(&mk());
    }
    #[test]
    fn transactions_are_atomic() {
        super::transactions_are_atomic(&mk());
    }
    #[test]
    fn preconditions() {
        super::preconditions(&mk());
    }
    #[test]
    fn unchanged_ranges() {
        super::unchanged_ranges(&mk());
    }
    #[test]
    fn concurrent_writers_with_preconditions() {
        super::concurrent_writers_with_preconditions(Arc::new(mk()));
    }
    #[test]
    fn event_log() {
        super::event_log(&mk());
    }
    #[test]
    fn live_events() {
        super::live_events(&mk());
    }
    #[test]
    fn shared_values() {
        super::shared_values(&mk());
    }
    #[test]
    fn compaction() {
        super::compaction(
            &MemoryStore::with_retention(crate::store::Retention::revisions(300)),
            300,
        );
    }
    #[test]
    fn compaction_by_bytes() {
        let retention = crate::store::Retention {
            revisions: 100_000,
            bytes: LOG_BYTES,
        };
        super::compaction_by_bytes(&MemoryStore::with_retention(retention));
    }
    #[tokio::test]
    async fn durability() {
        super::durability(&mk()).await;
    }
}

mod sled {
    use super::*;

    fn mk() -> (SledStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (SledStore::open(dir.path()).unwrap(), dir)
    }

    #[test]
    fn get_put_list() {
        super::get_put_list(&mk().0);
    }
    #[test]
    fn pages() {
        super::pages(&mk().0);
    }
    #[test]
    fn transactions_are_atomic() {
        super::transactions_are_atomic(&mk().0);
    }
    #[test]
    fn preconditions() {
        super::preconditions(&mk().0);
    }
    #[test]
    fn unchanged_ranges() {
        super::unchanged_ranges(&mk().0);
    }
    #[test]
    fn concurrent_writers_with_preconditions() {
        let (store, _dir) = mk();
        super::concurrent_writers_with_preconditions(Arc::new(store));
    }
    #[test]
    fn event_log() {
        super::event_log(&mk().0);
    }
    #[test]
    fn live_events() {
        super::live_events(&mk().0);
    }
    #[test]
    fn shared_values() {
        super::shared_values(&mk().0);
    }
    #[test]
    fn compaction() {
        let dir = tempfile::tempdir().unwrap();
        // Sled compacts every 256 revisions, so the floor trails by up to that many.
        super::compaction(
            &SledStore::open_with_retention(dir.path(), crate::store::Retention::revisions(300))
                .unwrap(),
            300,
        );
    }
    #[test]
    fn compaction_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let retention = crate::store::Retention {
            revisions: 100_000,
            bytes: LOG_BYTES,
        };
        super::compaction_by_bytes(&SledStore::open_with_retention(dir.path(), retention).unwrap());
        // Reopened, the store knows what its log weighs and keeps within the budget.
        let store = SledStore::open_with_retention(dir.path(), retention).unwrap();
        super::compaction_by_bytes(&store);
    }
    #[tokio::test]
    async fn durability() {
        super::durability(&mk().0).await;
    }

    /// Objects, the revision counter and the event log survive a restart, so a watch can
    /// resume across it.
    #[tokio::test]
    async fn survives_restart_and_watch_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let a = mk_key(Kind::Component, "acme", "a");
        {
            let store = SledStore::open(dir.path()).unwrap();
            put(&store, &a, "1");
            let rev = put(&store, &a, "2");
            wait_durable(&store, rev).await.unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.revision(), 2);
        assert_eq!(store.get(&a).unwrap().unwrap().value, b"2");
        assert_eq!(
            put(&store, &a, "3"),
            3,
            "revisions continue after a restart"
        );
        let resumed = store.events_after(1, 10).unwrap();
        let revs: Vec<_> = resumed
            .iter()
            .map(|e| (e.revision, e.value.clone()))
            .collect();
        assert_eq!(revs, [(2, b"2".to_vec()), (3, b"3".to_vec())]);
    }
}

//! What only the etcd store does, each test on a real etcd of its own: several stores on one
//! cluster, a watch that resumes across an etcd restart and a store's reopening, compaction
//! done by someone else, commits beyond etcd's transaction limits, and a cluster that does
//! not answer. (A project cascade of thousands of objects through a real server is in
//! `tests/tests/etcd.rs`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_common::{Kind, ObjectKey};

use super::*;
use crate::store::{EventType, Precondition, StoreLocation};

pub(super) fn mk_etcd() -> LocalEtcd {
    LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"))
}

fn mk_url(text: &str) -> EtcdUrl {
    match text.parse::<StoreLocation>().unwrap() {
        StoreLocation::Etcd(url) => url,
        other => panic!("{other:?}"),
    }
}

/// The store URL of `prefix` on every member of `cluster`.
pub(super) fn mk_cluster_url(cluster: &[LocalEtcd], prefix: &str) -> EtcdUrl {
    mk_url(&LocalEtcd::cluster_url(cluster, prefix))
}

/// A member of `cluster` that leads it (or, with `leads` false, one that does not).
pub(super) fn member(cluster: &[LocalEtcd], leads: bool) -> usize {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    (0..cluster.len())
        .find(|&i| runtime.block_on(cluster[i].is_leader()).unwrap() == leads)
        .expect("such a member")
}

pub(super) fn mk_store(etcd: &LocalEtcd, prefix: &str) -> EtcdStore {
    EtcdStore::open(&mk_url(&etcd.url(prefix))).unwrap()
}

fn mk_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Component, "acme", name)
}

/// Writes `value` at `name` as the server does: checked against what the store holds, so
/// that it may be sent again when a member fails under it.
fn put(store: &dyn Store, name: &str, value: &str) -> Revision {
    let key = mk_key(name);
    let held = store.get(&key).unwrap();
    let check = held.map_or(Precondition::Absent, |r| {
        Precondition::AtRevision(r.mod_revision)
    });
    store
        .commit(
            Txn::default()
                .check(key.clone(), check)
                .put(key, value.as_bytes().to_vec()),
        )
        .unwrap()
}

/// The next commit `rx` receives, waiting up to ten seconds.
pub(super) fn next_commit(rx: &mut broadcast::Receiver<Arc<[Event]>>) -> Arc<[Event]> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_recv() {
            Ok(commit) => return commit,
            Err(broadcast::error::TryRecvError::Empty) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no commit within 10 s: {e:?}"),
        }
    }
}

fn summary(events: &[Event]) -> Vec<(Revision, EventType, String)> {
    events
        .iter()
        .map(|e| (e.revision, e.kind, e.key.name.clone()))
        .collect()
}

#[test]
fn a_commit_through_one_store_reaches_another_on_the_same_cluster_and_prefix_only() {
    let etcd = mk_etcd();
    let (a, b) = (mk_store(&etcd, "shared"), mk_store(&etcd, "shared"));
    let elsewhere = mk_store(&etcd, "elsewhere");
    let mut seen_by_b = b.subscribe();
    let mut seen_elsewhere = elsewhere.subscribe();

    let revision = put(&a, "api", "1");
    let commit = next_commit(&mut seen_by_b);
    assert_eq!(
        summary(&commit),
        [(revision, EventType::Added, "api".into())]
    );
    assert_eq!(commit[0].value, b"1");
    assert_eq!(
        b.get(&mk_key("api")).unwrap().unwrap().mod_revision,
        revision
    );
    assert_eq!(
        b.revision(),
        revision,
        "both stores count the same revisions"
    );
    assert_eq!(summary(&b.events_after(revision - 1, 10).unwrap()).len(), 1);

    // And back: b's delete reaches a, with the value it deleted.
    let mut seen_by_a = a.subscribe();
    let deleted = b.commit(Txn::default().delete(mk_key("api"))).unwrap();
    let commit = next_commit(&mut seen_by_a);
    assert_eq!(
        summary(&commit),
        [(deleted, EventType::Deleted, "api".into())]
    );
    assert_eq!(commit[0].value, b"1");

    // A store under another prefix saw neither.
    put(&elsewhere, "web", "x");
    let own = next_commit(&mut seen_elsewhere);
    assert_eq!(
        summary(&own)[0].2,
        "web",
        "its own commit comes first and alone"
    );
    assert!(elsewhere.get(&mk_key("api")).unwrap().is_none());
    assert!(a.list(Kind::Component, None).unwrap().0.is_empty());
}

#[test]
fn a_watch_resumes_from_a_revision_across_an_etcd_restart_and_a_reopened_store() {
    let mut etcd = mk_etcd();
    let store = mk_store(&etcd, "resume");
    let mut live = store.subscribe();
    let first = put(&store, "a", "1");
    put(&store, "a", "2");
    next_commit(&mut live);
    next_commit(&mut live);

    // etcd goes away and comes back: the store's client and watch reconnect on their own.
    etcd.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let third = loop {
        match store.commit(Txn::default().put(mk_key("a"), b"3".to_vec())) {
            Ok(revision) => break revision,
            Err(e) if Instant::now() < deadline => eprintln!("retrying after: {e}"),
            Err(e) => panic!("no commit after etcd's restart: {e}"),
        }
    };
    let commit = next_commit(&mut live);
    assert_eq!(summary(&commit), [(third, EventType::Modified, "a".into())]);
    let values: Vec<_> = store
        .events_after(first, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.value)
        .collect();
    assert_eq!(values, [b"2".to_vec(), b"3".to_vec()]);
    drop(store);

    // A store opened again (a restarted server) resumes from etcd's history.
    let reopened = mk_store(&etcd, "resume");
    assert!(reopened.revision() > third);
    let resumed = reopened.events_after(first, 10).unwrap();
    let values: Vec<_> = resumed
        .iter()
        .map(|e| (e.revision, e.value.clone()))
        .collect();
    assert_eq!(values[0].1, b"2");
    assert_eq!(values[1], (third, b"3".to_vec()));
    assert_eq!(values.len(), 2, "nothing else happened to objects");
    assert_eq!(reopened.events_after(third, 10).unwrap(), []);
    let fourth = put(&reopened, "a", "4");
    assert!(fourth > third);
    assert_eq!(
        reopened.get(&mk_key("a")).unwrap().unwrap().create_revision,
        first
    );
}

#[test]
fn history_etcd_compacted_is_compacted_naming_the_oldest_revision_left() {
    let etcd = mk_etcd();
    let store = mk_store(&etcd, "compacted");
    let revisions: Vec<Revision> = (1..=10).map(|i| put(&store, "a", &i.to_string())).collect();
    // The operator (or another user of the cluster) compacts etcd up to the sixth commit.
    let sixth = revisions[5];
    let at = store.shared.layout.to_etcd(sixth);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
            .await
            .unwrap();
        client.compact(at, None).await.unwrap();
    });
    drop(store);

    let reopened = mk_store(&etcd, "compacted");
    match reopened.events_after(revisions[1], 10) {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (revisions[1], sixth - 1));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let kept = reopened.events_after(sixth - 1, 100).unwrap();
    assert_eq!(kept.len(), 5, "the sixth commit onwards stays");
    assert_eq!(kept[0].revision, sixth);
}

#[test]
fn commits_beyond_etcd_limits_split_when_divisible_and_are_refused_clearly_when_not() {
    let etcd = mk_etcd();
    let store = mk_store(&etcd, "limits");
    let names: Vec<String> = (0..1000).map(|i| format!("c{i:04}")).collect();

    let mut indivisible = Txn::default();
    for name in &names[..200] {
        indivisible = indivisible.put(mk_key(name), b"x".to_vec());
    }
    let err = store.commit(indivisible).unwrap_err();
    assert!(matches!(err, StoreError::TooLarge(_)), "{err:?}");
    assert!(err.to_string().contains("--max-txn-ops"), "{err}");
    assert_eq!(store.revision(), 0, "nothing written");

    // A divisible one commits in steps of at most 128 writes, in order.
    let before = store.revision();
    let mut txn = Txn::default().divisible();
    for name in &names {
        txn = txn.put(mk_key(name), name.as_bytes().to_vec());
    }
    let last = store.commit(txn).unwrap();
    let (listed, _) = store.list(Kind::Component, None).unwrap();
    assert_eq!(listed.len(), 1000);
    let events = store.events_after(before, usize::MAX).unwrap();
    assert_eq!(events.len(), 1000);
    assert_eq!(events.last().unwrap().revision, last);
    let commits = events
        .windows(2)
        .filter(|w| w[0].revision != w[1].revision)
        .count()
        + 1;
    assert_eq!(commits, 8, "1000 writes in steps of 128");
    let order: Vec<_> = events.iter().map(|e| e.key.name.clone()).collect();
    assert_eq!(order, names);

    // A stale check anywhere in a divisible commit is found before anything is written.
    let mut cascade = Txn::default().divisible();
    for record in &listed {
        let check = if record.key.name == "c0999" {
            Precondition::AtRevision(record.mod_revision - 1)
        } else {
            Precondition::AtRevision(record.mod_revision)
        };
        cascade = cascade
            .check(record.key.clone(), check)
            .delete(record.key.clone());
    }
    let err = store.commit(cascade.clone()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { key, .. } if key.name == "c0999"),
        "{err:?}"
    );
    assert_eq!(store.list(Kind::Component, None).unwrap().0.len(), 1000);

    // One object larger than a request is refused, naming it and the flag.
    let huge = Txn::default()
        .divisible()
        .put(mk_key("huge"), vec![7; 2 * 1024 * 1024]);
    let err = store.commit(huge).unwrap_err();
    assert!(
        err.to_string().contains("acme/huge") || err.to_string().contains("huge"),
        "{err}"
    );
    assert!(err.to_string().contains("--max-request-bytes"), "{err}");

    // A store URL promising more than etcd allows gets etcd's refusal, told as such.
    let optimistic = mk_url(&format!("{}?max-txn-ops=1000", etcd.url("limits")));
    let optimistic = EtcdStore::open(&optimistic).unwrap();
    let mut txn = Txn::default();
    for name in &names[..200] {
        txn = txn.delete(mk_key(name));
    }
    let err = optimistic.commit(txn).unwrap_err();
    assert!(err.to_string().contains("--max-txn-ops is lower"), "{err}");
}

#[test]
fn an_etcd_that_refuses_or_does_not_answer_fails_the_open_naming_it() {
    // Nothing listens on the first port; the second accepts connections and says nothing.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (port, says) in [(refused, "refused"), (silent_port, "no answer within")] {
        let url = mk_url(&format!("etcd://127.0.0.1:{port}/troupe"));
        let started = Instant::now();
        let err = EtcdStore::open(&url).err().expect("no etcd there");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        let message = err.to_string();
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        assert!(message.contains(says), "{message}");
    }
}

/// Revokes every lease of the cluster behind the stores' backs, as their expiry would.
async fn expire_leases(etcd: &LocalEtcd) {
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let leases = raw.leases().await.unwrap();
    for lease in leases.leases() {
        raw.lease_revoke(lease.id()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_gone_writes_nothing_and_another_leads() {
    let etcd = mk_etcd();
    let (a, b) = (mk_store(&etcd, "t"), Arc::new(mk_store(&etcd, "t")));
    let lease = Duration::from_secs(3);
    let first = a.campaign("server-a", lease).await.unwrap();
    let fenced = |value: &str, leader: &Leader| {
        Txn::default()
            .put(mk_key("api"), value.as_bytes().to_vec())
            .fenced(leader.fence().clone())
    };
    a.commit(fenced("by a", &first)).unwrap();
    let second = {
        let b = b.clone();
        tokio::spawn(async move { b.campaign("server-b", lease).await.unwrap() })
    };
    // While a leads, b does not; a's leadership holds past several renewals.
    let renewed_past = tokio::time::timeout(lease * 2, async {
        let mut lost = first.lost();
        lost.wait_for(|l| *l).await.ok();
    })
    .await;
    assert!(renewed_past.is_err(), "a still leads after two leases");
    assert!(!second.is_finished(), "b waits while a leads");

    // A partition: a's lease runs out while a runs on, not knowing yet.
    expire_leases(&etcd).await;
    let refused = a.commit(fenced("by a, too late", &first)).unwrap_err();
    assert!(
        matches!(refused, StoreError::Fenced { term } if term == first.fence().term),
        "{refused}"
    );
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("b leads within its retry")
        .unwrap();
    assert!(second.fence().term > first.fence().term);
    b.commit(fenced("by b", &second)).unwrap();
    // a learns it too, within two thirds of its lease.
    let mut lost = first.lost();
    tokio::time::timeout(lease, lost.wait_for(|l| *l))
        .await
        .expect("a notices its loss")
        .unwrap();
    assert!(matches!(
        a.commit(fenced("by a, still", &first)),
        Err(StoreError::Fenced { .. })
    ));
    let stored = b.get(&mk_key("api")).unwrap().unwrap();
    assert_eq!(
        stored.value, b"by b",
        "nothing a wrote after its loss is there"
    );
    // Unfenced writes (an agent's status, a user's apply) go on from any server.
    put(&a, "web", "from a");
    // A server fences all its commits while it believes it leads: then even a plain write
    // of a former leader commits nothing, until it stops fencing.
    a.fence_commits(Some(first.fence().clone()));
    let plain = Txn::default().put(mk_key("web"), b"by a, fenced".to_vec());
    assert!(matches!(
        a.commit(plain.clone()),
        Err(StoreError::Fenced { .. })
    ));
    b.fence_commits(Some(second.fence().clone()));
    b.commit(Txn::default().put(mk_key("web"), b"by b".to_vec()))
        .unwrap();
    a.fence_commits(None);
    a.commit(plain).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_announced_are_listed_until_their_lease_goes_and_come_back_when_they_do() {
    let etcd = mk_etcd();
    let (a, b) = (mk_store(&etcd, "p"), mk_store(&etcd, "p"));
    let lease = Duration::from_secs(2);
    let on_a = a.announce("a:1", "api a", lease).await.unwrap();
    let on_b = b.announce("b:1", "api b", lease).await.unwrap();
    let names = |servers: std::collections::BTreeMap<String, String>| {
        servers.into_iter().collect::<Vec<_>>()
    };
    assert_eq!(
        names(a.servers().await.unwrap()),
        [
            ("a:1".into(), "api a".into()),
            ("b:1".into(), "api b".into())
        ]
    );
    // Renewed past its lease.
    tokio::time::sleep(lease * 2).await;
    assert_eq!(a.servers().await.unwrap().len(), 2);
    // Withdrawn: gone at once. Dropped (a crash): gone with its lease.
    on_b.withdraw().await.unwrap();
    assert_eq!(a.servers().await.unwrap().len(), 1);
    drop(on_a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !a.servers().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A server whose lease was lost while it ran on (a partition) announces itself again.
    let again = b.announce("b:1", "api b", lease).await.unwrap();
    expire_leases(&etcd).await;
    assert!(b.servers().await.unwrap().is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.servers().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b did not announce itself again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(again);
}

/// What a member started with [`LocalEtcd::start_with_quota`] holds, in these tests.
const SMALL_QUOTA: u64 = 2 * 1024 * 1024;

/// A move out (`troupe migrate --from-etcd`) fails naming a server announced on the store;
/// once none is, it marks the store, and a server that opened it before then and announces
/// itself after is refused, so the move cannot miss it; no server opens the store again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moved_out_is_served_by_no_server_announced_or_not() {
    let etcd = mk_etcd();
    let (url, lease) = (mk_url(&etcd.url("m")), Duration::from_secs(5));
    let running = mk_store(&etcd, "m");
    let presence = running.announce("a:1", "api a", lease).await.unwrap();
    let export = EtcdStore::open_for_export(&url).unwrap();
    let refused = export.move_out().unwrap_err().to_string();
    assert!(
        refused.contains("servers still run on the store: a:1"),
        "{refused}"
    );
    presence.withdraw().await.unwrap();

    let starting = mk_store(&etcd, "m");
    export.move_out().unwrap();
    let late = starting.announce("b:1", "api b", lease).await;
    let late = late.err().expect("refused").to_string();
    assert!(late.contains("moved out"), "{late}");
    let reopened = EtcdStore::open(&url).err().expect("refused").to_string();
    assert!(
        reopened.contains("was moved into a data directory"),
        "{reopened}"
    );
    // Moved out already: nothing more to do (an export run again after it stopped).
    EtcdStore::open_for_export(&url)
        .unwrap()
        .move_out()
        .unwrap();
}

#[test]
fn an_etcd_out_of_space_refuses_writes_clearly_keeps_reads_and_deletes_and_takes_writes_once_freed()
{
    let etcd = LocalEtcd::start_with_quota(SMALL_QUOTA).unwrap_or_else(|e| panic!("{e:#}"));
    let store = mk_store(&etcd, "full");
    let big = vec![b'x'; 64 * 1024];
    let mut written = Vec::new();
    let error = loop {
        let key = mk_key(&format!("c{}", written.len()));
        match store.commit(Txn::default().put(key.clone(), big.clone())) {
            Ok(_) => written.push(key),
            Err(e) => break e,
        }
        assert!(written.len() < 1000, "etcd never ran out of space");
    };
    let StoreError::NoSpace(message) = &error else {
        panic!("not NoSpace: {error:?}")
    };
    for part in [
        etcd.endpoint().as_str(),
        "out of space",
        "--quota-backend-bytes",
        "etcdctl compact",
        "etcdctl defrag",
        "etcdctl alarm disarm",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    // Every write is refused now, even a small one; reads answer and deletes go.
    let small = store.commit(Txn::default().put(mk_key("small"), b"1".to_vec()));
    assert!(matches!(small, Err(StoreError::NoSpace(_))), "{small:?}");
    assert!(store.get(&written[0]).unwrap().is_some());
    let deletes = written
        .iter()
        .fold(Txn::default(), |txn, key| txn.delete(key.clone()));
    let deleted = store.commit(deletes).unwrap();
    assert!(store.get(&written[0]).unwrap().is_none());

    // What the message says an operator does: compact, defragment, disarm.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(etcd.free_space()).unwrap();
    // The same store, never reopened, writes again, and reads its write.
    let revision = put(&store, "after", "1");
    assert!(revision > deleted);
    let record = store.get(&mk_key("after")).unwrap().unwrap();
    assert_eq!(
        (record.value.as_slice(), record.mod_revision),
        (&b"1"[..], revision)
    );
}

#[test]
fn a_store_on_three_members_commits_and_follows_through_the_two_left_when_one_is_down() {
    let mut cluster = LocalEtcd::start_cluster(3).unwrap_or_else(|e| panic!("{e:#}"));
    let url = mk_cluster_url(&cluster, "three");
    let (a, b) = (
        EtcdStore::open(&url).unwrap(),
        EtcdStore::open(&url).unwrap(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A member that does not lead: the cluster keeps its leader, so no call waits for an
    // election, and every one must go through.
    let follower = member(&cluster, false);
    cluster[follower].kill();
    let mut seen_by_b = b.subscribe();
    for i in 0..30 {
        let revision = put(&a, &format!("c{i}"), "1");
        let commit = next_commit(&mut seen_by_b);
        assert_eq!(commit[0].revision, revision);
        assert!(b.get(&mk_key(&format!("c{i}"))).unwrap().is_some());
    }
    // Back, it is called again: with another member down, the two left still serve.
    cluster[follower]
        .restart()
        .unwrap_or_else(|e| panic!("{e:#}"));
    let other = (0..cluster.len())
        .find(|&i| i != follower && !runtime.block_on(cluster[i].is_leader()).unwrap())
        .expect("another follower");
    cluster[other].kill();
    for i in 30..40 {
        let revision = put(&a, &format!("c{i}"), "1");
        assert_eq!(next_commit(&mut seen_by_b)[0].revision, revision);
    }
    assert_eq!(b.list(Kind::Component, None).unwrap().0.len(), 40);
}

//! A member that takes connections and answers nothing (stalled on its disk, or paused):
//! taken out of the store's set once a check finds it silent, after which no call and no
//! watch waits on it.

use std::time::{Duration, Instant};

use troupe_common::{Kind, ObjectKey};

use super::tests::{member, mk_cluster_url, mk_store, next_commit};
use super::*;
use crate::store::{StoreError, Txn};

fn mk_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Component, "acme", name)
}

#[test]
fn a_member_that_answers_nothing_is_taken_out_and_holds_up_no_call_or_watch() {
    let cluster = LocalEtcd::start_cluster(3).unwrap_or_else(|e| panic!("{e:#}"));
    let url = mk_cluster_url(&cluster, "hung");
    let (a, b) = (
        EtcdStore::open(&url).unwrap(),
        EtcdStore::open(&url).unwrap(),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let follower = member(&cluster, false);
    let endpoint = cluster[follower].endpoint();
    cluster[follower].freeze();

    // Seen as not serving at once, by both stores.
    for store in [&a, &b] {
        let members = runtime.block_on(store.reachable_members());
        let silent: Vec<_> = members.iter().filter(|(_, up)| !up).collect();
        assert_eq!(silent, [&(endpoint.clone(), false)], "{members:?}");
    }
    // Once their periodic check took it out (within a second or two), every write lands at
    // once and reaches the other store's watch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while [&a, &b]
        .iter()
        .any(|s| *s.shared.sign_in.removals().borrow() == 0)
    {
        assert!(Instant::now() < deadline, "the member is still called");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut seen_by_b = b.subscribe();
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let t = Instant::now();
        let revision = a
            .commit(Txn::default().put(mk_key(&format!("c{i}")), b"1".to_vec()))
            .unwrap_or_else(|e| panic!("write {i} failed after {:?}: {e}", t.elapsed()));
        assert_eq!(next_commit(&mut seen_by_b)[0].revision, revision);
        slowest = slowest.max(t.elapsed());
    }
    assert!(slowest < Duration::from_secs(2), "a write took {slowest:?}");
    cluster[follower].thaw();
}

/// The slowest call each of four threads made, each calling `call` over and over until
/// `store` took a member out of its set and 2 s passed: while the member is in, the client
/// spreads their calls over every member, the stalled one too.
fn slowest_until_taken_out(
    store: &std::sync::Arc<EtcdStore>,
    call: impl Fn() + Send + Sync + 'static,
) -> Vec<Duration> {
    let call = std::sync::Arc::new(call);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (store, call) = (store.clone(), call.clone());
            std::thread::spawn(move || {
                let (started, mut slowest) = (Instant::now(), Duration::ZERO);
                while *store.shared.sign_in.removals().borrow() == 0
                    || started.elapsed() < Duration::from_secs(2)
                {
                    let t = Instant::now();
                    call();
                    slowest = slowest.max(t.elapsed());
                }
                slowest
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn a_read_sent_to_a_member_as_it_stalls_is_answered_by_another() {
    let cluster = LocalEtcd::start_cluster(3).unwrap_or_else(|e| panic!("{e:#}"));
    let store =
        std::sync::Arc::new(EtcdStore::open(&mk_cluster_url(&cluster, "hung-read")).unwrap());
    let key = b"/hung-read-probe".to_vec();
    let put = key.clone();
    store
        .call("writing the probe", move |mut c| {
            let put = put.clone();
            async move { c.put(put, b"1".to_vec(), None).await }
        })
        .unwrap();
    let follower = member(&cluster, false);
    cluster[follower].freeze();

    let reader = store.clone();
    let slowest = slowest_until_taken_out(&store, move || {
        let (t, key) = (Instant::now(), key.clone());
        let answer = reader.read("reading the probe", move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        });
        let answer =
            answer.unwrap_or_else(|e| panic!("a read failed after {:?}: {e}", t.elapsed()));
        assert_eq!(answer.kvs()[0].value(), b"1");
    });
    cluster[follower].thaw();
    // A read held by the stalled member waited for its copy (2 s), not for a call's limit.
    assert!(
        slowest.iter().any(|s| *s >= Duration::from_secs(1)),
        "no read reached the stalled member: {slowest:?}"
    );
}

#[test]
fn a_read_from_history_sent_to_a_member_as_it_stalls_starts_over_on_another() {
    let cluster = LocalEtcd::start_cluster(3).unwrap_or_else(|e| panic!("{e:#}"));
    let url = mk_cluster_url(&cluster, "hung-history");
    let writer = EtcdStore::open(&url).unwrap();
    let before = writer.revision();
    for i in 0..5 {
        writer
            .commit(Txn::default().put(mk_key(&format!("c{i}")), b"1".to_vec()))
            .unwrap();
    }
    // Opened after the writes, it holds none of them in its cache: it reads them from
    // etcd's history, a watch from the past, on whichever member takes it.
    let reader = std::sync::Arc::new(EtcdStore::open(&url).unwrap());
    let follower = member(&cluster, false);
    cluster[follower].freeze();

    let slowest = slowest_until_taken_out(&reader.clone(), move || {
        let t = Instant::now();
        let events = reader
            .events_after(before, 100)
            .unwrap_or_else(|e| panic!("a read failed after {:?}: {e}", t.elapsed()));
        let names: Vec<_> = events.iter().map(|e| e.key.name.as_str()).collect();
        assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    });
    cluster[follower].thaw();
    // A read held by the stalled member started over after its silence (2 s), not after a
    // call's limit.
    assert!(
        slowest.iter().any(|s| *s >= Duration::from_secs(1)),
        "no read reached the stalled member: {slowest:?}"
    );
}

/// A commit that checks no key it writes could land twice if sent again: one held by a member
/// as it stalls, then sent to another, could land there and then once more when the member
/// resumes, over whatever was written in between. Such a commit is sent once: with no answer
/// within a call's time, it fails saying its outcome is unknown.
#[test]
fn a_commit_that_could_land_twice_is_not_sent_again_when_its_member_stalls() {
    let cluster = LocalEtcd::start_cluster(3).unwrap_or_else(|e| panic!("{e:#}"));
    let follower = member(&cluster, false);
    // A store that calls the member that stalls, and only it.
    let store = mk_store(&cluster[follower], "hung-once");
    let put = |name: &str| Txn::default().put(mk_key(name), b"1".to_vec());
    store.commit(put("before")).unwrap();
    cluster[follower].freeze();

    let t = Instant::now();
    let refused = store.commit(put("during"));
    let took = t.elapsed();
    cluster[follower].thaw();
    match refused {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("outcome is unknown"), "{message}");
            assert!(message.contains("not sent again"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // After one call's time (10 s), not after sending again for 15 s.
    assert!(took < Duration::from_secs(13), "took {took:?}");
}

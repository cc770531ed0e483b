//! A member that takes connections and answers nothing (stalled on its disk, or paused):
//! taken out of the store's set once a check finds it silent, after which no call and no
//! watch waits on it.

use std::time::{Duration, Instant};

use troupe_common::{Kind, ObjectKey};

use super::tests::{member, mk_cluster_url, next_commit};
use super::*;
use crate::store::Txn;

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

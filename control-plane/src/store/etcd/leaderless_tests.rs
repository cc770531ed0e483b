//! A cluster that has no leader for a while (an election, a majority of members down): the
//! store's calls wait for one rather than fail, since etcd refuses them before proposing
//! anything (the client asks for a leader with every call), and land once there is one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_common::{Kind, ObjectKey};

use super::tests::{member, mk_cluster_url};
use super::*;
use crate::store::{Precondition, Txn};

fn mk_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Component, "acme", name)
}

/// Polls `member` until it says it has no leader.
fn until_leaderless(member: &LocalEtcd) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    runtime.block_on(async {
        let options = etcd_client::ConnectOptions::new().with_require_leader(true);
        let mut client = etcd_client::Client::connect([member.endpoint()], Some(options))
            .await
            .unwrap();
        loop {
            match client.get("probe", None).await {
                Err(e) if e.to_string().contains("no leader") => return,
                _ => assert!(Instant::now() < deadline, "the member still has a leader"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn a_write_while_etcd_has_no_leader_waits_for_one_and_lands() {
    let mut cluster = LocalEtcd::start_cluster(3).unwrap_or_else(|e| panic!("{e:#}"));
    let url = mk_cluster_url(&cluster, "leaderless");
    let store = Arc::new(EtcdStore::open(&url).unwrap());
    store
        .commit(Txn::default().put(mk_key("before"), b"1".to_vec()))
        .unwrap();

    // Two of three down: the one left has no leader, and says so.
    cluster[1].kill();
    cluster[2].kill();
    until_leaderless(&cluster[0]);
    let writing = {
        let store = store.clone();
        std::thread::spawn(move || {
            let key = mk_key("during");
            let create = Txn::default().check(key.clone(), Precondition::Absent);
            store.commit(create.put(key, b"1".to_vec()))
        })
    };
    // A member back: a majority again, which elects a leader.
    cluster[1].restart().unwrap_or_else(|e| panic!("{e:#}"));
    let revision = writing
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the write made without a leader failed: {e}"));
    let record = store.get(&mk_key("during")).unwrap().expect("written");
    assert_eq!(record.mod_revision, revision);
}

#[test]
fn writes_across_a_stall_of_etcd_s_leader_all_land_once() {
    let cluster = LocalEtcd::start_cluster(3).unwrap_or_else(|e| panic!("{e:#}"));
    let url = mk_cluster_url(&cluster, "failover");
    let store = Arc::new(EtcdStore::open(&url).unwrap());
    let leader = member(&cluster, true);
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Each object created (checked absent), then changed (checked at its revision), as an
    // Apply does: a write that lands twice would fail its checks.
    let writing = {
        let (store, written) = (store.clone(), written.clone());
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            for i in 0..150 {
                let key = mk_key(&format!("c{i}"));
                let t = Instant::now();
                let created = store
                    .commit(
                        Txn::default()
                            .check(key.clone(), crate::store::Precondition::Absent)
                            .put(key.clone(), b"1".to_vec()),
                    )
                    .map_err(|e| format!("creating {key}: {e}"))?;
                store
                    .commit(
                        Txn::default()
                            .check(key.clone(), crate::store::Precondition::AtRevision(created))
                            .put(key.clone(), b"2".to_vec()),
                    )
                    .map_err(|e| format!("changing {key}: {e}"))?;
                slowest = slowest.max(t.elapsed());
                written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok::<_, String>(slowest)
        })
    };
    while written.load(std::sync::atomic::Ordering::SeqCst) < 30 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The leader stalls (SIGSTOP: as on a disk that stopped answering): a write sent to it
    // gets no answer, the others elect another.
    cluster[leader].freeze();
    let slowest = writing.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    cluster[leader].thaw();
    let (records, _) = store.list(Kind::Component, None).unwrap();
    assert_eq!(records.len(), 150);
    assert!(records.iter().all(|r| r.value == b"2"));
    // An election takes a second or two here: no write waited for a call's time limit.
    assert!(slowest < Duration::from_secs(7), "a write took {slowest:?}");
}

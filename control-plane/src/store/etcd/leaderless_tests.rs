//! A cluster that has no leader for a while (an election, a majority of members down): the
//! store's calls wait for one rather than fail, since etcd refuses them before proposing
//! anything (the client asks for a leader with every call), and land once there is one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_common::{Kind, ObjectKey};

use super::*;
use crate::store::{StoreLocation, Txn};

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
    let url = match LocalEtcd::cluster_url(&cluster, "leaderless")
        .parse()
        .unwrap()
    {
        StoreLocation::Etcd(url) => url,
        other => panic!("{other:?}"),
    };
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
            store.commit(Txn::default().put(mk_key("during"), b"1".to_vec()))
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

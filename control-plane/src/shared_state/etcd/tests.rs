//! The shared state on a real etcd: two servers' stores on one prefix agree on a value made
//! once, see each other's writes through the watch, and commit only on the revisions they
//! read; a checked write held by a member that stalls is sent again and lands once.

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::store::{LocalEtcd, StoreLocation};

fn mk_etcd() -> LocalEtcd {
    LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"))
}

fn mk_state(etcd: &LocalEtcd, prefix: &str) -> EtcdState {
    let StoreLocation::Etcd(url) = etcd.url(prefix).parse::<StoreLocation>().unwrap() else {
        panic!("not an etcd URL")
    };
    EtcdState::new(Arc::new(EtcdStore::open(&url).unwrap()))
}

/// Polls `check` for up to ten seconds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn replicas_making_a_value_at_once_all_get_the_winners() {
    let etcd = mk_etcd();
    let states: Vec<EtcdState> = (0..4).map(|_| mk_state(&etcd, "race")).collect();
    let start = Arc::new(Barrier::new(states.len()));
    let threads: Vec<_> = states
        .into_iter()
        .enumerate()
        .map(|(i, state)| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                state
                    .create_once("pki/ca", || Ok(format!("ca of replica {i}").into_bytes()))
                    .unwrap()
            })
        })
        .collect();
    let values: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
    // A later start reads it and makes nothing.
    let later = mk_state(&etcd, "race");
    let again = later
        .create_once("pki/ca", || panic!("made a second CA"))
        .unwrap();
    assert_eq!(again, values[0]);
    // Another prefix is another cluster's state.
    let other = mk_state(&etcd, "other");
    assert_eq!(
        other
            .create_once("pki/ca", || Ok(b"mine".to_vec()))
            .unwrap(),
        b"mine"
    );
}

#[test]
fn a_replica_following_a_directory_sees_another_replicas_writes_and_only_those() {
    let etcd = mk_etcd();
    let (a, b) = (mk_state(&etcd, "shared"), mk_state(&etcd, "shared"));
    b.put("tokens/old", b"before".to_vec()).unwrap();
    let (items, revision) = a.list("tokens/").unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].key.as_str(), items[0].value.as_slice()),
        ("tokens/old", &b"before"[..])
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    a.follow("tokens/", revision, move |change| {
        sink.lock().unwrap().push(change)
    });

    b.put("tokens/new", b"1".to_vec()).unwrap();
    b.put("other/x", b"not followed".to_vec()).unwrap();
    assert!(
        b.commit(&[], vec![Write::Delete("tokens/old".into())])
            .unwrap()
    );
    eventually("both changes", || seen.lock().unwrap().len() >= 2);
    let seen = seen.lock().unwrap().clone();
    assert!(
        matches!(&seen[0], Change::Put(item) if item.key == "tokens/new" && item.value == b"1"),
        "{seen:?}"
    );
    assert_eq!(seen[1], Change::Delete("tokens/old".into()));
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn a_commit_happens_only_on_the_revisions_it_read() {
    let etcd = mk_etcd();
    let (a, b) = (mk_state(&etcd, "cas"), mk_state(&etcd, "cas"));
    let put = |key: &str| Write::Put(key.to_string(), b"v".to_vec());
    assert!(a.commit(&[("names/ci", 0)], vec![put("names/ci")]).unwrap());
    assert!(
        !b.commit(&[("names/ci", 0)], vec![put("names/ci"), put("tokens/x")])
            .unwrap(),
        "created twice"
    );
    assert_eq!(a.get("tokens/x").unwrap(), None, "half a refused commit");
    let read = b.get("names/ci").unwrap().unwrap();
    assert!(
        b.commit(&[("names/ci", read.mod_revision)], vec![put("names/ci")])
            .unwrap()
    );
    assert!(
        !a.commit(&[("names/ci", read.mod_revision)], vec![put("names/ci")])
            .unwrap()
    );
}

#[test]
fn a_write_sent_again_is_told_it_landed_only_if_every_key_holds_what_it_wrote() {
    let etcd = mk_etcd();
    let state = mk_state(&etcd, "landed");
    let put = |key: &str, value: &str| Write::Put(key.into(), value.as_bytes().to_vec());
    let revision = state
        .commit_at(&[("a", 0), ("b", 0)], vec![put("a", "1"), put("b", "1")])
        .unwrap()
        .unwrap();
    // What it wrote is there, at one revision: it landed, there.
    let written = [put("a", "1"), put("b", "1"), Write::Delete("gone".into())];
    assert_eq!(state.landed(&written).unwrap(), Some(revision));
    assert!(
        state
            .landed(&[Write::DeleteDir("none/".into())])
            .unwrap()
            .is_some()
    );
    // A value another write changed since, or two keys at different revisions, or a key it
    // deleted that is there, or a directory it deleted that holds a key: not its landing.
    state.commit(&[], vec![put("b", "2")]).unwrap();
    assert_eq!(state.landed(&[put("a", "1"), put("b", "1")]).unwrap(), None);
    state.commit(&[], vec![put("b", "1")]).unwrap();
    assert_eq!(state.landed(&[put("a", "1"), put("b", "1")]).unwrap(), None);
    assert_eq!(state.landed(&[Write::Delete("a".into())]).unwrap(), None);
    state.commit(&[], vec![put("dir/x", "1")]).unwrap();
    assert_eq!(
        state.landed(&[Write::DeleteDir("dir/".into())]).unwrap(),
        None
    );
}

#[test]
fn a_write_that_checks_what_it_writes_is_sent_again_when_its_member_stalls() {
    let cluster = LocalEtcd::start_cluster(3).unwrap_or_else(|e| panic!("{e:#}"));
    let StoreLocation::Etcd(url) = LocalEtcd::cluster_url(&cluster, "hung-state")
        .parse::<StoreLocation>()
        .unwrap()
    else {
        panic!("not an etcd URL")
    };
    let store = Arc::new(EtcdStore::open(&url).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let follower = (0..cluster.len())
        .find(|&i| !runtime.block_on(cluster[i].is_leader()).unwrap())
        .expect("a member that does not lead");
    cluster[follower].freeze();

    // Writers change a key each, every write checking the revision the last one left (as a
    // token revoked or a batch of build log does), for longer than the store takes to leave
    // the member out (a second or two).
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let state = EtcdState::new(store.clone());
            std::thread::spawn(move || {
                let key = format!("counters/{w}");
                let (started, mut slowest) = (Instant::now(), Duration::ZERO);
                let (mut revision, mut count) = (0, 0);
                while started.elapsed() < Duration::from_secs(4) {
                    let t = Instant::now();
                    count += 1;
                    let write = vec![Write::Put(key.clone(), count.to_string().into_bytes())];
                    revision = state
                        .commit_at(&[(key.as_str(), revision)], write)
                        .unwrap_or_else(|e| {
                            panic!("write {count} failed after {:?}: {e}", t.elapsed())
                        })
                        .unwrap_or_else(|| {
                            panic!("write {count}: its check failed, yet nobody else writes {key}")
                        });
                    slowest = slowest.max(t.elapsed());
                }
                let stored = state.get(&key).unwrap().unwrap();
                let value = count.to_string().into_bytes();
                assert_eq!((stored.value, stored.mod_revision), (value, revision));
                slowest
            })
        })
        .collect();
    let slowest: Vec<Duration> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    cluster[follower].thaw();
    // A write held by the stalled member was sent again after 2 s, not failed after 10.
    assert!(
        slowest.iter().any(|s| *s >= Duration::from_secs(1)),
        "no write reached the stalled member: {slowest:?}"
    );
}

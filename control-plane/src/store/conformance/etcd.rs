//! The conformance suite against the etcd store, each case on a real etcd of its own (started
//! on free ports by [`LocalEtcd`]; a missing etcd fails the case, saying how to install it).

use super::*;
use crate::store::{EtcdStore, LocalEtcd, Retention, StoreLocation};

/// A store on a fresh etcd with `retention`; the etcd goes when the pair is dropped, after the
/// store.
fn mk_with(retention: Retention) -> (EtcdStore, LocalEtcd) {
    let etcd = LocalEtcd::start().unwrap_or_else(|e| panic!("{e:#}"));
    let StoreLocation::Etcd(url) = etcd.url("conformance").parse().unwrap() else {
        unreachable!("an etcd URL")
    };
    let store = EtcdStore::open_with_retention(&url, retention).unwrap();
    (store, etcd)
}

fn mk() -> (EtcdStore, LocalEtcd) {
    mk_with(Retention::default())
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
    let (store, _etcd) = mk();
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
    // The store compacts etcd every 256 revisions, so the floor trails by up to that many.
    super::compaction(&mk_with(Retention::revisions(300)).0, 300);
}
#[test]
fn compaction_by_bytes() {
    let retention = Retention {
        revisions: 100_000,
        bytes: LOG_BYTES,
    };
    super::compaction_by_bytes(&mk_with(retention).0);
}
#[tokio::test]
async fn durability() {
    super::durability(&mk().0).await;
}

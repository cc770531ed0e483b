//! Opening the store a server's configuration names.

use std::sync::Arc;

use anyhow::Context;

use super::ServerConfig;
use super::leadership::Election;
use crate::store::{MemoryStore, SledStore, Store, StoreLocation};

/// The store `config.store` names: sled in the data directory (created if missing), an
/// in-memory store without one, or etcd; and how this server comes to lead on it.
pub(super) fn store(config: &ServerConfig) -> anyhow::Result<(Arc<dyn Store>, Election)> {
    let retention = config.retention;
    let store: Arc<dyn Store> = match (&config.store, config.data_dir.as_deref()) {
        (StoreLocation::Etcd(url), _) => return open_etcd(url, config),
        (StoreLocation::DataDir, Some(dir)) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
            Arc::new(
                SledStore::open_with_retention(dir, retention)
                    .with_context(|| format!("opening the store in {}", dir.display()))?,
            )
        }
        (StoreLocation::DataDir, None) => Arc::new(MemoryStore::with_retention(retention)),
    };
    Ok((store, Election::Alone))
}

#[cfg(feature = "etcd")]
fn open_etcd(
    url: &crate::store::EtcdUrl,
    config: &ServerConfig,
) -> anyhow::Result<(Arc<dyn Store>, Election)> {
    let store = crate::store::EtcdStore::open_with_retention(url, config.retention)
        .with_context(|| format!("opening the store at {url}"))?;
    let store = Arc::new(store);
    let election = Election::Etcd {
        store: store.clone(),
        lease: config.leader_lease,
    };
    Ok((store, election))
}

#[cfg(not(feature = "etcd"))]
fn open_etcd(
    url: &crate::store::EtcdUrl,
    _: &ServerConfig,
) -> anyhow::Result<(Arc<dyn Store>, Election)> {
    anyhow::bail!(
        "--store {url}: this troupe was built without etcd support; build it with \
         `cargo build --features troupe-control-plane/etcd` (needs protoc: Debian \
         protobuf-compiler and libprotobuf-dev)"
    )
}

/// This machine's host name, for the name a server goes by.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "troupe".into())
}

//! Opening the store a server's configuration names.

use std::sync::Arc;

use anyhow::Context;

use super::ServerConfig;
use super::leadership::Election;
use crate::shared_state::StateHome;
use crate::store::{MemoryStore, SledStore, Store, StoreLocation};

/// The store `config.store` names: sled in the data directory (created if missing), an
/// in-memory store without one, or etcd; how this server comes to lead on it; and where the
/// server's own state lives (in etcd too, with etcd).
pub(super) fn store(
    config: &ServerConfig,
) -> anyhow::Result<(Arc<dyn Store>, Election, StateHome)> {
    let retention = config.retention;
    let local = StateHome::Local(config.data_dir.clone());
    let store: Arc<dyn Store> = match (&config.store, config.data_dir.as_deref()) {
        (StoreLocation::Etcd(url), _) => return open_etcd(url, config),
        (StoreLocation::DataDir, Some(dir)) => {
            let moved = dir.join(super::MIGRATED_FILE);
            if let Ok(to) = std::fs::read_to_string(&moved) {
                anyhow::bail!(
                    "the store in {} was {}: start with --store naming that store (or delete \
                     {} to serve the objects left here, which the servers there no longer share)",
                    dir.display(),
                    to.trim(),
                    moved.display()
                );
            }
            let importing = dir.join(super::IMPORTING_FILE);
            if importing.exists() {
                anyhow::bail!(
                    "the store in {} is being moved into it by `troupe migrate --from-etcd`, \
                     or that move stopped part way: wait for it to finish, or run it again \
                     (it says what to delete first)",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
            Arc::new(
                SledStore::open_with_retention(dir, retention)
                    .with_context(|| format!("opening the store in {}", dir.display()))?,
            )
        }
        (StoreLocation::DataDir, None) => Arc::new(MemoryStore::with_retention(retention)),
    };
    Ok((store, Election::Alone, local))
}

#[cfg(feature = "etcd")]
fn open_etcd(
    url: &crate::store::EtcdUrl,
    config: &ServerConfig,
) -> anyhow::Result<(Arc<dyn Store>, Election, StateHome)> {
    let store = crate::store::EtcdStore::open_with_retention(url, config.retention)
        .with_context(|| format!("opening the store at {url}"))?;
    let store = Arc::new(store);
    // Copies of the shared state (ca.crt, admin.token) go there.
    if let Some(dir) = &config.data_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
    }
    let home = StateHome::Etcd {
        state: crate::shared_state::EtcdState::new(store.clone()),
        data_dir: config.data_dir.clone(),
    };
    let election = Election::Etcd {
        store: store.clone(),
        lease: config.leader_lease,
    };
    Ok((store, election, home))
}

#[cfg(not(feature = "etcd"))]
fn open_etcd(
    url: &crate::store::EtcdUrl,
    _: &ServerConfig,
) -> anyhow::Result<(Arc<dyn Store>, Election, StateHome)> {
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

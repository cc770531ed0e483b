//! The control plane in the simulation: the real resource layer and agent hub over a
//! [`SimStore`], started, crashed and started again over the same [`Disk`].
//!
//! A crash stops the process at once as far as anyone can tell: the network refuses
//! connections and cuts the open ones, the store is fenced (nothing the dead process still
//! runs reaches the disk), and its sessions are told to stop. What was not flushed is lost;
//! the next process starts from what was.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use troupe_control_plane::agents::{Hub, HubConfig};
use troupe_control_plane::resources::{Origin, Resources};

use crate::content::PLATFORM;
use crate::net::Network;
use crate::oracle::Oracle;
use crate::store::{Disk, SimStore};

struct Process {
    store: Arc<SimStore>,
    resources: Arc<Resources>,
    stopping: watch::Sender<bool>,
}

/// The control plane's machine: its disk, and the process running on it, if any.
pub struct ControlPlane {
    disk: Arc<Disk>,
    config: HubConfig,
    max_flush: Duration,
    seed: u64,
    starts: Mutex<u64>,
    process: Mutex<Option<Process>>,
    net: Arc<Network>,
    oracle: Arc<Oracle>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ControlPlane {
    /// A machine with an empty disk and nothing running.
    pub fn new(
        config: HubConfig,
        max_flush: Duration,
        seed: u64,
        net: Arc<Network>,
        oracle: Arc<Oracle>,
    ) -> Self {
        Self {
            disk: Arc::default(),
            config,
            max_flush,
            seed,
            starts: Mutex::new(0),
            process: Mutex::default(),
            net,
            oracle,
        }
    }

    /// Whether a process runs.
    pub fn is_up(&self) -> bool {
        lock(&self.process).is_some()
    }

    /// The running process's resource layer, if one runs.
    pub fn resources(&self) -> Option<Arc<Resources>> {
        lock(&self.process).as_ref().map(|p| p.resources.clone())
    }

    /// Starts a process over the disk, unless one runs: store, resource layer, hub; on the
    /// first start, the platform objects releases need. It accepts agents once its hub runs.
    pub async fn start(&self) {
        if self.is_up() {
            return;
        }
        let start = {
            let mut starts = lock(&self.starts);
            *starts += 1;
            *starts
        };
        let seed = self.seed.wrapping_add(start);
        let store = SimStore::open(self.disk.clone(), self.oracle.clone(), self.max_flush, seed);
        let resources = Arc::new(Resources::new(store.clone()));
        let (stopping, stopping_rx) = watch::channel(false);
        let hub = Hub::start(resources.clone(), &self.config, stopping_rx);
        if start == 1 {
            for object in troupe_common::document::from_yaml(PLATFORM).expect("the platform parses")
            {
                resources
                    .apply(object, Origin::User, false)
                    .await
                    .expect("the platform applies");
            }
        }
        self.oracle
            .trace(format!("control plane: process {start} up"));
        *lock(&self.process) = Some(Process {
            store,
            resources,
            stopping,
        });
        self.net.serve(Some(hub));
    }

    /// Kills the running process, if any.
    pub fn crash(&self) {
        let Some(process) = lock(&self.process).take() else {
            return;
        };
        self.oracle.trace("control plane: crash");
        self.net.serve(None);
        process.store.crash();
        self.net.cut_all(None);
        let _ = process.stopping.send(true);
    }
}

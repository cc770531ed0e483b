//! Which server runs the controllers. On a store of one server (sled, memory) it always does.
//! On etcd, the servers sharing the store elect one ([`crate::store::EtcdStore::campaign`]):
//! the leader runs the binding, deploy and promotion controllers, and every commit it makes
//! carries its term ([`Term`]), so once its lease is gone (a crash, a pause, a partition) it
//! writes nothing and another server takes over within the lease.
//!
//! A leader's controllers run on a runtime of their own. When the leadership is lost, that
//! runtime is shut down, every controller task and the writes they were making with it,
//! before the term is cleared; the server then campaigns again, and a new term starts its
//! controllers from a fresh listing of the store, as a restarted server would.

use std::sync::Arc;
#[cfg(feature = "etcd")]
use std::time::Duration;

use tokio::sync::watch;

use crate::controllers::binding::BindingController;
use crate::controllers::deploy::DeployController;
use crate::controllers::promotion::PromotionController;
use crate::metrics::Metrics;
use crate::promotions::Promotions;
use crate::releases::Releases;
use crate::resources::Resources;
#[cfg(feature = "etcd")]
use crate::store::EtcdStore;
use crate::store::Term;

/// What the controllers work on.
pub(super) struct Controllers {
    pub resources: Arc<Resources>,
    pub releases: Arc<Releases>,
    pub promotions: Arc<Promotions>,
    pub metrics: Arc<Metrics>,
}

impl Controllers {
    /// Starts the controllers on the current runtime; they run as long as it does.
    fn spawn(&self) {
        let binding = BindingController::new(self.resources.clone(), self.releases.clone());
        self.metrics.watch_queue("binding", binding.queue());
        tokio::spawn(binding.run());
        let deploy = DeployController::new(self.resources.clone(), self.releases.clone());
        self.metrics.watch_queue("deploy", deploy.queue());
        tokio::spawn(deploy.run());
        let promotion = PromotionController::new(self.resources.clone(), self.promotions.clone());
        self.metrics.watch_queue("promotion", promotion.queue());
        tokio::spawn(promotion.run());
    }
}

/// How this server comes to run the controllers.
pub(super) enum Election {
    /// It is the only server on its store: it always leads.
    Alone,
    /// It shares an etcd store with other servers.
    #[cfg(feature = "etcd")]
    Etcd {
        /// The store, which holds the election.
        store: Arc<EtcdStore>,
        /// How long a leader that stops renewing keeps the leadership.
        lease: Duration,
    },
}

/// Runs the controllers whenever this server leads, as `identity`, until `stopping` turns
/// true; a leader that stops resigns, so another takes over at once.
pub(super) async fn lead(
    election: Election,
    identity: String,
    controllers: Controllers,
    term: Arc<Term>,
    stopping: watch::Receiver<bool>,
) {
    match election {
        Election::Alone => {
            let _ = (identity, term, stopping);
            controllers.metrics.set_leader(true);
            controllers.spawn();
        }
        #[cfg(feature = "etcd")]
        Election::Etcd { store, lease } => {
            campaign(&store, lease, &identity, &controllers, &term, stopping).await
        }
    }
}

#[cfg(feature = "etcd")]
async fn campaign(
    store: &EtcdStore,
    lease: Duration,
    identity: &str,
    controllers: &Controllers,
    term: &Term,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let leader = tokio::select! {
            leader = store.campaign(identity, lease) => leader,
            _ = stopping.wait_for(|s| *s) => return,
        };
        let leader = match leader {
            Ok(leader) => leader,
            Err(e) => {
                tracing::warn!(error = %e, "could not campaign for the leadership; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        term.set(Some(leader.fence().clone()));
        controllers.metrics.set_leader(true);
        let runtime = match controller_runtime() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "could not start the controllers' runtime; resigning");
                term.set(None);
                let _ = leader.resign().await;
                continue;
            }
        };
        {
            let _entered = runtime.enter();
            controllers.spawn();
        }
        let mut lost = leader.lost();
        let stop = tokio::select! {
            _ = lost.wait_for(|l| *l) => false,
            _ = stopping.wait_for(|s| *s) => true,
        };
        // Nothing the controllers were writing may commit unfenced: their runtime (and its
        // blocking writes) ends before the term is cleared.
        let _ = tokio::task::spawn_blocking(move || runtime.shutdown_timeout(SHUTDOWN)).await;
        term.set(None);
        controllers.metrics.set_leader(false);
        if stop {
            if let Err(e) = leader.resign().await {
                tracing::warn!(error = %e, "could not give the leadership up; it ends with its lease");
            }
            return;
        }
        tracing::warn!(%identity, "no longer leading: controllers stopped; campaigning again");
    }
}

/// How long the controllers' writes in flight get to finish when the leadership ends.
#[cfg(feature = "etcd")]
const SHUTDOWN: Duration = Duration::from_secs(10);

/// A runtime for one term's controllers.
#[cfg(feature = "etcd")]
fn controller_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("troupe-controllers")
        .enable_all()
        .build()
}

//! Which server runs the controllers. On a store of one server (sled, memory) it always does.
//! On etcd, the servers sharing the store elect one ([`crate::store::EtcdStore::campaign`]):
//! the leader runs the binding, deploy and promotion controllers, and every commit it makes
//! carries its term ([`EtcdStore::fence_commits`]), so once its lease is gone (a crash, a pause, a partition) it
//! writes nothing and another server takes over within the lease.
//!
//! Every server on etcd also announces itself under a lease of its own
//! ([`crate::store::Presence`]) before it serves agents, and names itself in the status of the
//! data planes whose sessions it holds; the leader watches the announcements and marks
//! disconnected the data planes of a server that is gone.
//!
//! A leader's controllers run on a runtime of their own. When the leadership is lost, that
//! runtime is shut down, every controller task and the writes they were making with it,
//! before the term is cleared; the server then campaigns again, and a new term starts its
//! controllers from a fresh listing of the store, as a restarted server would.

use std::net::SocketAddr;
use std::sync::Arc;
#[cfg(feature = "etcd")]
use std::time::Duration;

use tokio::sync::watch;
use troupe_common::pb::v1alpha1 as pb;

use crate::api::servers::Roster;
use crate::controllers::binding::BindingController;
use crate::controllers::deploy::DeployController;
use crate::controllers::promotion::PromotionController;
use crate::metrics::Metrics;
use crate::promotions::Promotions;
use crate::releases::Releases;
use crate::resources::Resources;
#[cfg(feature = "etcd")]
use crate::store::EtcdStore;

use super::ServerConfig;

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

/// This server among the servers of its store.
pub(super) struct Replica {
    /// The name it goes by.
    pub name: String,
    /// Where it is reached, for whoever lists the servers.
    pub about: String,
}

impl Replica {
    /// This server as `config` names it (`HOSTNAME:API_PORT` unless `--replica` is given),
    /// reached at `api` and `agents`.
    pub(super) fn named(config: &ServerConfig, api: SocketAddr, agents: SocketAddr) -> Self {
        Self {
            name: config
                .replica
                .clone()
                .unwrap_or_else(|| format!("{}:{}", super::open::hostname(), api.port())),
            about: format!("api {api}, agents {agents}"),
        }
    }

    /// This server, alone on its store: the leader.
    fn info(&self) -> pb::ServerInfo {
        pb::ServerInfo {
            name: self.name.clone(),
            endpoints: self.about.clone(),
            leader: true,
            answering: true,
        }
    }
}

impl Election {
    /// Announces `replica` among the servers of a shared store, before it serves anyone.
    pub(super) async fn announce(&self, replica: &Replica) -> anyhow::Result<Option<Presence>> {
        match self {
            Election::Alone => {
                let _ = replica;
                Ok(None)
            }
            #[cfg(feature = "etcd")]
            Election::Etcd { store, lease } => {
                let presence = store
                    .announce(&replica.name, &replica.about, *lease)
                    .await
                    .map_err(|e| anyhow::anyhow!("announcing server {}: {e}", replica.name))?;
                Ok(Some(presence))
            }
        }
    }

    /// The list of servers `ServerService` answers with, as `replica` sees it.
    pub(super) fn roster(&self, replica: &Replica) -> Arc<dyn Roster> {
        match self {
            Election::Alone => Arc::new(Alone(replica.info())),
            #[cfg(feature = "etcd")]
            Election::Etcd { store, .. } => Arc::new(Shared {
                store: store.clone(),
                this: replica.name.clone(),
            }),
        }
    }
}

/// A server alone on its store: it is the one server, and leads.
struct Alone(pb::ServerInfo);

#[tonic::async_trait]
impl Roster for Alone {
    async fn servers(&self) -> Result<Vec<pb::ServerInfo>, String> {
        Ok(vec![self.0.clone()])
    }
}

/// The servers announced on a shared store.
#[cfg(feature = "etcd")]
struct Shared {
    store: Arc<EtcdStore>,
    this: String,
}

#[cfg(feature = "etcd")]
#[tonic::async_trait]
impl Roster for Shared {
    async fn servers(&self) -> Result<Vec<pb::ServerInfo>, String> {
        let leader = self.store.leader().await.map_err(|e| e.to_string())?;
        let announced = self.store.servers().await.map_err(|e| e.to_string())?;
        Ok(announced
            .into_iter()
            .map(|(name, endpoints)| pb::ServerInfo {
                leader: leader.as_deref() == Some(name.as_str()),
                answering: name == self.this,
                name,
                endpoints,
            })
            .collect())
    }

    async fn store_members(&self) -> Vec<pb::StoreMember> {
        self.store
            .reachable_members()
            .await
            .into_iter()
            .map(|(endpoint, reachable)| pb::StoreMember {
                endpoint,
                reachable,
            })
            .collect()
    }
}

/// This server's announcement, when it shares its store.
#[cfg(feature = "etcd")]
pub(super) type Presence = crate::store::Presence;
/// A store of one server announces nothing.
#[cfg(not(feature = "etcd"))]
pub(super) enum Presence {}

/// Runs the controllers whenever this server leads, as `replica`, until `stopping` turns
/// true; a leader that stops resigns, so another takes over at once, and the server's
/// announcement ends with it.
pub(super) async fn lead(
    election: Election,
    replica: Replica,
    presence: Option<Presence>,
    controllers: Controllers,
    stopping: watch::Receiver<bool>,
) {
    match election {
        Election::Alone => {
            let _ = (replica, presence, stopping);
            controllers.metrics.set_leader(true);
            controllers.spawn();
        }
        #[cfg(feature = "etcd")]
        Election::Etcd { store, lease } => {
            campaign(&store, lease, &replica.name, &controllers, stopping).await;
            if let Some(presence) = presence
                && let Err(e) = presence.withdraw().await
            {
                tracing::warn!(error = %e, "could not withdraw this server's announcement; it ends with its lease");
            }
        }
    }
}

#[cfg(feature = "etcd")]
async fn campaign(
    store: &Arc<EtcdStore>,
    lease: Duration,
    identity: &str,
    controllers: &Controllers,
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
        store.fence_commits(Some(leader.fence().clone()));
        controllers.metrics.set_leader(true);
        let runtime = match controller_runtime() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "could not start the controllers' runtime; resigning");
                store.fence_commits(None);
                let _ = leader.resign().await;
                continue;
            }
        };
        {
            let _entered = runtime.enter();
            controllers.spawn();
            tokio::spawn(watch_departures(
                store.clone(),
                controllers.resources.clone(),
                lease,
            ));
        }
        let mut lost = leader.lost();
        let stop = tokio::select! {
            _ = lost.wait_for(|l| *l) => false,
            _ = stopping.wait_for(|s| *s) => true,
        };
        // Nothing the controllers were writing may commit unfenced: their runtime (and its
        // blocking writes) ends before the term is cleared.
        let _ = tokio::task::spawn_blocking(move || runtime.shutdown_timeout(SHUTDOWN)).await;
        store.fence_commits(None);
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

/// Marks disconnected the data planes whose sessions a server that is gone held: at the
/// start of the term, then whenever the servers announced change (looked at every third of
/// the lease, so within about a lease and a third of a server's death).
#[cfg(feature = "etcd")]
async fn watch_departures(store: Arc<EtcdStore>, resources: Arc<Resources>, lease: Duration) {
    let mut known = None;
    loop {
        match store.servers().await {
            Ok(servers) if known.as_ref() != Some(&servers) => {
                match sweep(&store, &resources).await {
                    Ok(()) => known = Some(servers),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not look for data planes of departed servers")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not list the servers"),
        }
        tokio::time::sleep(lease / 3).await;
    }
}

/// One look: the servers are listed after the data planes, so a server that took an agent
/// after it announced itself is never taken for gone.
#[cfg(feature = "etcd")]
async fn sweep(store: &EtcdStore, resources: &Arc<Resources>) -> anyhow::Result<()> {
    let held = crate::agents::status::held_sessions(resources).await?;
    if held.is_empty() {
        return Ok(());
    }
    let alive = store.servers().await?;
    for (plane, server) in held {
        if !alive.contains_key(&server) {
            crate::agents::status::mark_departed(resources, &plane, &server).await?;
        }
    }
    Ok(())
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

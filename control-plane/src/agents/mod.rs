//! The agent hub: the control plane's side of the agent protocol (DESIGN §6).
//!
//! - [`pki`] and [`tokens`]: the CA that signs agent certificates, and the bootstrap tokens
//!   agents register with.
//! - [`Hub`] keeps, per data plane, an index of the Releases it should hold (generation,
//!   content hash, whether it waits for a prune), built from a watch on Releases, and the one
//!   open session of that data plane's agent.
//! - [`session`] runs one agent stream: delta resync from the agent's `known` map, one
//!   generation in flight per release (so updates never overtake each other and a slow agent
//!   gets the newest generation, not a backlog), acks, chunking, heartbeats.
//! - [`status`] turns acks and health reports into Release and DataPlane status (derived by
//!   [`crate::status`]), and asks the binding controller to roll bindings up after.
//! - `retry` sends a generation the agent failed to apply again, with backoff.
//!
//! Nothing is pruned because a connection dropped: a Release leaves a data plane only when it
//! leaves the store's desired set and the agent acknowledges the removal.

pub mod pki;
mod retry;
mod session;
pub mod status;
mod stream;
pub mod tokens;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use troupe_common::{Kind, Object, ObjectKey};

use crate::builds::Builds;
use crate::resources::{Resources, WatchEventType, WatchRequest};
use status::{StatusWriter, plane_of};

pub use stream::ControlStream;

/// How the hub runs its sessions.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How often each side sends a heartbeat; three silent intervals end a session.
    pub heartbeat: Duration,
    /// How long an agent has to send `Hello` after opening a stream.
    pub hello_deadline: Duration,
    /// Releases in flight (sent, not yet acknowledged) per session.
    pub window: usize,
    /// Largest release (encoded manifests) sent to an agent; a larger one fails alone.
    pub max_release_bytes: usize,
    /// Sessions resyncing at once; the rest wait their turn, so a control-plane restart
    /// with thousands of agents reconnecting is paced.
    pub concurrent_resyncs: usize,
    /// Before a generation the agent failed to apply is sent again; doubled for each
    /// failure of the same generation.
    pub retry_base: Duration,
    /// The longest wait before a failed generation is sent again.
    pub retry_max: Duration,
    /// The name of this server among the servers of its store, recorded in the status of
    /// the data planes whose sessions it holds.
    pub server: String,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            hello_deadline: Duration::from_secs(10),
            window: 64,
            max_release_bytes: 256 * 1024 * 1024,
            concurrent_resyncs: 256,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            server: String::new(),
        }
    }
}

/// What a data plane should hold of one release.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The Release's generation.
    pub generation: i64,
    /// Hash of its manifests.
    pub content_hash: String,
    /// True when it waits for the agent to prune it.
    pub terminating: bool,
    /// The generation its status says is applied (not part of what the agent must hold).
    pub applied: i64,
}

impl Desired {
    /// True when an agent holding `self` must be sent `other`.
    fn differs(&self, other: &Desired) -> bool {
        (self.generation, &self.content_hash, self.terminating)
            != (other.generation, &other.content_hash, other.terminating)
    }
}

/// Work for a session, in order; each release id waits at most once.
#[derive(Default)]
struct Work {
    items: Mutex<(VecDeque<Item>, HashSet<String>)>,
    ready: Notify,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// Bring this release id in line.
    Release(String),
    /// The initial diff is sent: say so.
    SyncComplete,
}

impl Work {
    fn push(&self, item: Item) {
        let mut guard = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let (queue, queued) = &mut *guard;
        if let Item::Release(id) = &item
            && !queued.insert(id.clone())
        {
            return;
        }
        queue.push_back(item);
        drop(guard);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Item> {
        let mut guard = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let (queue, queued) = &mut *guard;
        let item = queue.pop_front()?;
        if let Item::Release(id) = &item {
            queued.remove(id);
        }
        Some(item)
    }
}

struct Link {
    id: u64,
    work: Arc<Work>,
    displaced: watch::Sender<bool>,
}

#[derive(Default)]
struct Plane {
    releases: HashMap<String, Desired>,
    session: Option<Link>,
}

/// The agent hub.
pub struct Hub {
    resources: Arc<Resources>,
    status: Arc<StatusWriter>,
    config: HubConfig,
    planes: Mutex<HashMap<ObjectKey, Plane>>,
    /// True once the index holds every Release in the store.
    loaded: watch::Receiver<bool>,
    resyncs: Semaphore,
    sessions: AtomicU64,
    stopping: watch::Receiver<bool>,
    /// Where build agents' sessions report, once the build side is started.
    builds: std::sync::OnceLock<Arc<Builds>>,
}

impl Hub {
    /// Starts the hub: its Release index and its status writer. Sessions end when `stopping`
    /// turns true.
    pub fn start(
        resources: Arc<Resources>,
        config: &HubConfig,
        stopping: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let (loaded_tx, loaded) = watch::channel(false);
        let hub = Arc::new(Self {
            status: StatusWriter::start(resources.clone()),
            resources,
            resyncs: Semaphore::new(config.concurrent_resyncs.max(1)),
            config: config.clone(),
            planes: Mutex::default(),
            loaded,
            sessions: AtomicU64::new(0),
            stopping,
            builds: std::sync::OnceLock::new(),
        });
        tokio::spawn(hub.clone().follow_releases(loaded_tx));
        hub
    }

    /// Lets agents started with `--workflows` take builds from `builds`.
    pub fn serve_builds(&self, builds: Arc<Builds>) {
        let _ = self.builds.set(builds);
    }

    /// The build side, if the hub serves builds.
    fn builds(&self) -> Option<&Arc<Builds>> {
        self.builds.get()
    }

    /// The resource layer.
    pub fn resources(&self) -> &Arc<Resources> {
        &self.resources
    }

    /// Each data plane's last connection report (sessions, releases in sync, pending and
    /// failed), for metrics.
    pub fn plane_reports(&self) -> Vec<(ObjectKey, crate::status::plane::PlaneReport)> {
        self.status.plane_reports()
    }

    /// The queue of the hub's status writes, for metrics.
    pub fn status_queue(&self) -> Arc<crate::controllers::queue::Queue> {
        self.status.queue()
    }

    fn planes(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Plane>> {
        self.planes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the index in line with the store's Releases, relisting if the watch is lost.
    async fn follow_releases(self: Arc<Self>, loaded: watch::Sender<bool>) {
        loop {
            let request = WatchRequest {
                kinds: vec![Kind::Release],
                ..Default::default()
            };
            let mut events = match self.resources.watch(request) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "agent hub could not watch releases");
                    return;
                }
            };
            let mut snapshot: Option<HashSet<(ObjectKey, String)>> = Some(HashSet::new());
            while let Some(event) = events.recv().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::warn!(error = %e, "agent hub lost its release watch; relisting");
                        break;
                    }
                };
                match (event.kind, event.object) {
                    (WatchEventType::Bookmark, _) => {
                        if let Some(seen) = snapshot.take() {
                            self.forget_unseen(&seen);
                            let _ = loaded.send(true);
                        }
                    }
                    (WatchEventType::Deleted, Some(Object::Release(release))) => {
                        self.index(&release, true);
                    }
                    (_, Some(Object::Release(release))) => {
                        if let (Some(seen), Some(entry)) =
                            (&mut snapshot, self.index(&release, false))
                        {
                            seen.insert(entry);
                        }
                    }
                    _ => {}
                }
            }
            if *self.stopping.borrow() || loaded.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Records a Release (or its deletion) in the index; returns its plane and id.
    fn index(
        &self,
        release: &troupe_common::pb::v1alpha1::Release,
        deleted: bool,
    ) -> Option<(ObjectKey, String)> {
        let meta = release.metadata.as_ref()?;
        let plane = plane_of(&meta.namespace, release)?;
        let id = troupe_common::agent::release_id(&meta.namespace, &meta.name);
        let desired = Desired {
            generation: meta.generation,
            content_hash: release
                .spec
                .as_ref()
                .map(|s| s.content_hash.clone())
                .unwrap_or_default(),
            terminating: meta.delete_time.is_some(),
            applied: release.status.as_ref().map_or(0, |s| s.applied_generation),
        };
        let changed = {
            let mut planes = self.planes();
            let entry = planes.entry(plane.clone()).or_default();
            let changed = if deleted {
                entry.releases.remove(&id).is_some()
            } else {
                entry
                    .releases
                    .insert(id.clone(), desired.clone())
                    .is_none_or(|old| old.differs(&desired))
            };
            if changed && let Some(link) = &entry.session {
                link.work.push(Item::Release(id.clone()));
            }
            changed
        };
        if changed && !deleted {
            self.status
                .touch(ObjectKey::new(Kind::Release, &meta.namespace, &meta.name));
        }
        Some((plane, id))
    }

    /// After a relist, drops index entries for Releases that no longer exist.
    fn forget_unseen(&self, seen: &HashSet<(ObjectKey, String)>) {
        let mut planes = self.planes();
        for (plane, entry) in planes.iter_mut() {
            let gone: Vec<String> = entry
                .releases
                .keys()
                .filter(|id| !seen.contains(&(plane.clone(), (*id).clone())))
                .cloned()
                .collect();
            for id in gone {
                entry.releases.remove(&id);
                if let Some(link) = &entry.session {
                    link.work.push(Item::Release(id));
                }
            }
        }
    }

    /// What `plane` should hold of release `id`.
    fn desired(&self, plane: &ObjectKey, id: &str) -> Option<Desired> {
        self.planes().get(plane)?.releases.get(id).cloned()
    }

    /// Every release id `plane` should hold, with what.
    fn desired_set(&self, plane: &ObjectKey) -> HashMap<String, Desired> {
        self.planes()
            .get(plane)
            .map(|p| p.releases.clone())
            .unwrap_or_default()
    }

    /// Makes `work` the session of `plane`, displacing the one before.
    fn attach(&self, plane: &ObjectKey, work: Arc<Work>) -> (u64, watch::Receiver<bool>) {
        let id = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let (displaced, displaced_rx) = watch::channel(false);
        let mut planes = self.planes();
        let entry = planes.entry(plane.clone()).or_default();
        if let Some(old) = entry.session.replace(Link {
            id,
            work,
            displaced,
        }) {
            let _ = old.displaced.send(true);
        }
        (id, displaced_rx)
    }

    /// Removes session `id` of `plane`, unless a newer one replaced it. Returns true when it
    /// was the current session.
    fn detach(&self, plane: &ObjectKey, id: u64) -> bool {
        let mut planes = self.planes();
        match planes.get_mut(plane) {
            Some(entry) if entry.session.as_ref().is_some_and(|l| l.id == id) => {
                entry.session = None;
                true
            }
            _ => false,
        }
    }
}

//! The cluster the agent applies to: it outlives agent restarts, like a real cluster, and is
//! the ground truth the invariants are checked against.
//!
//! [`Cluster`] holds, per release, each object applied (by id, with the content hash it
//! carries), which objects the last apply could not write, and when an apply last changed
//! anything. Each agent process gets a [`SimApplier`] of its own epoch; once that process
//! crashed, its applier changes nothing more (an apply cut short leaves what it wrote).
//!
//! Applies and prunes go one object at a time, each taking a little simulated time, so an
//! apply can be caught halfway by a crash, a newer generation or a failure. Faults, while
//! on: an object refused (reported in [`Applied::failed`], which the agent retries with
//! backoff, as the Kubernetes applier's refusals are) and an apply or prune that fails
//! whole partway (an [`apply::Error`], as the directory applier's I/O errors are).
//!
//! Every prune that removes something is checked at once: the store, on disk, must have not
//! wanted the release at some moment since the content was applied (invariant 2).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use troupe_agent::apply::{self, Applied, Applier, describe};
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource};
use troupe_common::status::Health;

use crate::content;
use crate::oracle::Oracle;

/// What the cluster holds of one release.
#[derive(Debug, Clone, Default)]
struct Objects {
    /// Each object's content hash, by object id.
    objects: BTreeMap<String, String>,
    /// The objects the last apply refused; the agent retries them.
    failed: BTreeSet<String>,
    /// When an apply last changed an object (a prune must be explained since then).
    changed: Option<Instant>,
    /// Applies running, by number: what the release held (and had refused) when each
    /// started.
    running: Vec<(u64, Snapshot)>,
}

/// The objects of a release and those refused, as they stood.
type Snapshot = (BTreeMap<String, String>, BTreeSet<String>);

impl Objects {
    /// Whether `objects` are exactly content `hash`, except for the objects in `refused`.
    fn exactly(objects: &BTreeMap<String, String>, hash: &str, refused: &BTreeSet<String>) -> bool {
        let ids = content::ids(hash);
        objects.keys().all(|id| ids.contains(id))
            && ids
                .iter()
                .all(|id| objects.get(id).map(String::as_str) == Some(hash) || refused.contains(id))
    }
}

/// How faults are injected into applies and prunes.
#[derive(Debug, Clone, Copy)]
pub struct ApplyFaults {
    /// Chance that one object is refused.
    pub object: f64,
    /// Chance, per object, that the apply or prune fails whole there.
    pub whole: f64,
    /// The longest one object takes.
    pub max_step: Duration,
}

/// The simulated cluster.
pub struct Cluster {
    releases: Mutex<BTreeMap<String, Objects>>,
    epoch: AtomicU64,
    applies: AtomicU64,
    faults: ApplyFaults,
    faults_on: AtomicBool,
    rng: Mutex<StdRng>,
    oracle: Arc<Oracle>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// An empty cluster.
    pub fn new(faults: ApplyFaults, seed: u64, oracle: Arc<Oracle>) -> Arc<Self> {
        Arc::new(Self {
            releases: Mutex::default(),
            epoch: AtomicU64::new(0),
            applies: AtomicU64::new(0),
            faults,
            faults_on: AtomicBool::new(true),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            oracle,
        })
    }

    /// An applier for a new agent process; the appliers of earlier processes stop changing
    /// anything.
    pub fn applier(self: &Arc<Self>) -> Arc<SimApplier> {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        Arc::new(SimApplier {
            cluster: self.clone(),
            epoch,
        })
    }

    /// Stops injecting faults.
    pub fn faults_off(&self) {
        self.faults_on.store(false, Ordering::SeqCst);
    }

    /// Whether the cluster holds exactly content `hash` of `release`.
    pub fn holds(&self, release: &str, hash: &str) -> bool {
        let releases = lock(&self.releases);
        let objects = releases.get(release).map(|o| &o.objects);
        Objects::exactly(objects.unwrap_or(&BTreeMap::new()), hash, &BTreeSet::new())
    }

    /// Every release the cluster holds an object of.
    pub fn releases(&self) -> Vec<String> {
        let releases = lock(&self.releases);
        releases
            .iter()
            .filter(|(_, o)| !o.objects.is_empty())
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// What the cluster holds of `release`, for messages.
    pub fn describe(&self, release: &str) -> String {
        let releases = lock(&self.releases);
        match releases.get(release) {
            Some(o) if !o.objects.is_empty() || !o.running.is_empty() => format!(
                "{:?} (refused: {:?}, {} applies running)",
                o.objects,
                o.failed,
                o.running.len()
            ),
            _ => "nothing".into(),
        }
    }

    /// Invariant 3, for an ok ack of an upsert of content `hash` (or, with `None`, of a
    /// removal): the cluster holds exactly that content (objects the apply refused excepted:
    /// the agent retries them), or held it when an apply running now started.
    pub fn explains_ack(&self, release: &str, hash: Option<&str>) -> bool {
        let releases = lock(&self.releases);
        let empty = Objects::default();
        let o = releases.get(release).unwrap_or(&empty);
        let fits = |objects: &BTreeMap<String, String>, refused: &BTreeSet<String>| match hash {
            Some(hash) => Objects::exactly(objects, hash, refused),
            None => objects.is_empty(),
        };
        fits(&o.objects, &o.failed)
            || o.running
                .iter()
                .any(|(_, (objects, refused))| fits(objects, refused))
    }

    fn roll(&self, chance: f64) -> bool {
        self.faults_on.load(Ordering::SeqCst) && lock(&self.rng).random_bool(chance)
    }

    async fn step(&self) {
        let took = lock(&self.rng).random_range(Duration::from_millis(1)..=self.faults.max_step);
        tokio::time::sleep(took).await;
    }

    fn current(&self, epoch: u64) -> Result<(), apply::Error> {
        if self.epoch.load(Ordering::SeqCst) == epoch {
            return Ok(());
        }
        Err(io_error("the agent process is gone"))
    }
}

fn io_error(what: &str) -> apply::Error {
    apply::Error::Io {
        action: "writing",
        path: "/simulated".into(),
        source: std::io::Error::other(what.to_string()),
    }
}

/// One agent process's applier over the [`Cluster`].
pub struct SimApplier {
    cluster: Arc<Cluster>,
    epoch: u64,
}

impl SimApplier {
    async fn apply_objects(
        &self,
        release: &str,
        resources: &[ReleaseResource],
    ) -> Result<Applied, apply::Error> {
        let cluster = &*self.cluster;
        let mut applied = Applied::default();
        let mut failed = BTreeSet::new();
        for resource in resources {
            cluster.step().await;
            cluster.current(self.epoch)?;
            if cluster.roll(cluster.faults.whole) {
                return Err(io_error("the disk is full (simulated)"));
            }
            let mut status = describe(resource);
            if cluster.roll(cluster.faults.object) {
                status.health = Health::Degraded.as_str().into();
                status.message = "refused (simulated)".into();
                applied.failed.push(resource.id.clone());
                failed.insert(resource.id.clone());
            } else {
                status.health = Health::Healthy.as_str().into();
                let tag = content::tag_of(resource);
                let mut releases = lock(&cluster.releases);
                let o = releases.entry(release.to_string()).or_default();
                if o.objects.insert(resource.id.clone(), tag.clone()).as_ref() != Some(&tag) {
                    o.changed = Some(Instant::now());
                }
            }
            applied.statuses.push(status);
        }
        cluster.step().await;
        cluster.current(self.epoch)?;
        let keep: BTreeSet<&str> = resources.iter().map(|r| r.id.as_str()).collect();
        let mut releases = lock(&cluster.releases);
        let o = releases.entry(release.to_string()).or_default();
        let before = o.objects.len();
        o.objects.retain(|id, _| keep.contains(id.as_str()));
        if o.objects.len() != before {
            o.changed = Some(Instant::now());
        }
        o.failed = failed;
        Ok(applied)
    }

    async fn prune_objects(&self, release: &str) -> Result<(), apply::Error> {
        let cluster = &*self.cluster;
        loop {
            cluster.step().await;
            cluster.current(self.epoch)?;
            if cluster.roll(cluster.faults.whole) {
                return Err(io_error("the API server is unreachable (simulated)"));
            }
            let mut releases = lock(&cluster.releases);
            let Some(o) = releases.get_mut(release) else {
                return Ok(());
            };
            let Some(id) = o.objects.keys().next().cloned() else {
                o.failed.clear();
                return Ok(());
            };
            let since = o.changed.unwrap_or_else(Instant::now);
            if !cluster.oracle.unwanted_since(release, since) {
                cluster.oracle.violation(format!(
                    "the agent pruned {release} ({id}), which the store has wanted without a break since its content was applied"
                ));
            }
            o.objects.remove(&id);
        }
    }
}

impl Applier for SimApplier {
    fn apply<'a>(
        &'a self,
        release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Applied, apply::Error>> {
        Box::pin(async move {
            let number = self.cluster.applies.fetch_add(1, Ordering::SeqCst);
            {
                let mut releases = lock(&self.cluster.releases);
                let o = releases.entry(release.to_string()).or_default();
                // What this apply refuses replaces what the last one did.
                let refused = std::mem::take(&mut o.failed);
                o.running.push((number, (o.objects.clone(), refused)));
            }
            // Whatever ends the apply (done, failed, or dropped with its process), it no
            // longer runs.
            let _running = Running {
                cluster: &self.cluster,
                release,
                number,
            };
            self.apply_objects(release, resources).await
        })
    }

    fn prune<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), apply::Error>> {
        Box::pin(self.prune_objects(release))
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        Box::pin(async {
            ClusterInfo {
                platform: "simulation".into(),
                ..Default::default()
            }
        })
    }

    /// Like a real cluster's inventory: the releases with objects, whatever the agent's
    /// state says.
    fn found(&self) -> Vec<String> {
        self.cluster.releases()
    }
}

/// Marks an apply as running until dropped.
struct Running<'a> {
    cluster: &'a Cluster,
    release: &'a str,
    number: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut releases = lock(&self.cluster.releases);
        if let Some(o) = releases.get_mut(self.release) {
            o.running.retain(|(n, _)| *n != self.number);
        }
    }
}

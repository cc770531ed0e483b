//! One seed of the simulation: the parameters it draws, the machines it builds, the faults
//! and changes it drives, and the checks at the end.
//!
//! A seed runs in three phases. Under faults, a driver makes a random mix of changes:
//! releases created and updated (new generations, contents of different sizes), rolled back
//! to earlier content, deleted, or deleted and put back as they were; connections cut; the
//! agent and the control plane crashed and restarted after a while. Then the faults stop (no more cuts nor failed applies, both sides running) and the
//! system must converge within [`CONVERGE_WITHIN`] of simulated time: the cluster holds
//! exactly the content of every release the store has, each release's status says its
//! generation is applied, nothing waits for a prune and the cluster holds nothing else
//! (invariant 1). Once converged it must stay so for [`STABLE_FOR`]. Invariants 2 and 3 are
//! checked as things happen ([`crate::cluster`], [`crate::net`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::selector::LabelSelector;
use troupe_common::{Kind, Object, ObjectKey};
use troupe_control_plane::agents::HubConfig;
use troupe_control_plane::resources::Origin;

use crate::agent::{Agent, AgentTiming};
use crate::cluster::{ApplyFaults, Cluster};
use crate::content::{self, NAMESPACE};
use crate::net::{NetFaults, Network};
use crate::oracle::{Oracle, TRACE_TAIL};
use crate::plane::ControlPlane;

/// How long, once the faults stop, the system has to converge.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(180);
/// How long a converged system must stay converged.
const STABLE_FOR: Duration = Duration::from_secs(30);

/// What one seed did.
pub struct Outcome {
    /// Simulated time the seed took.
    pub simulated: Duration,
    /// Why it failed, with the tail of its trace; `None` when every invariant held.
    pub failure: Option<String>,
}

/// Writes release `name` with content `hash`, as the binding controller would.
async fn put(plane: Arc<ControlPlane>, oracle: Arc<Oracle>, name: String, hash: String) {
    let Some(resources) = plane.resources() else {
        return oracle.trace(format!(
            "driver: put {name} {hash}: the control plane is down"
        ));
    };
    let release = Object::Release(content::release(&name, &hash));
    match resources.apply(release, Origin::ControlPlane, false).await {
        Ok((object, outcome)) => oracle.trace(format!(
            "driver: put {name} {hash}: {outcome:?}, generation {}",
            object.meta().generation
        )),
        Err(e) => oracle.trace(format!("driver: put {name} {hash}: {e}")),
    }
}

/// Deletes release `name`, as the binding controller would.
async fn delete(plane: Arc<ControlPlane>, oracle: Arc<Oracle>, name: String) {
    let Some(resources) = plane.resources() else {
        return oracle.trace(format!("driver: delete {name}: the control plane is down"));
    };
    let key = ObjectKey::new(Kind::Release, NAMESPACE, &name);
    match resources.delete(&key, Origin::ControlPlane, 0, false).await {
        Ok(deleted) => oracle.trace(format!(
            "driver: delete {name}: {}",
            if deleted.pruning.is_empty() {
                "gone"
            } else {
                "waits for its prune"
            }
        )),
        Err(e) => oracle.trace(format!("driver: delete {name}: {e}")),
    }
}

/// Everything a seed draws before it starts.
struct Params {
    names: usize,
    actions: usize,
    max_gap: Duration,
    net: NetFaults,
    apply: ApplyFaults,
    hub: HubConfig,
    agent: AgentTiming,
    max_flush: Duration,
}

impl Params {
    fn draw(rng: &mut StdRng) -> Self {
        let ms =
            |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..=hi));
        Self {
            names: rng.random_range(2..=6),
            actions: rng.random_range(10..=30),
            max_gap: ms(rng, 200, 3_000),
            net: NetFaults {
                cut_per_message: rng.random_range(0.0..0.03),
                silent: rng.random_range(0.0..0.5),
                max_latency: ms(rng, 0, 50),
                max_notice: ms(rng, 0, 3_000),
            },
            apply: ApplyFaults {
                object: rng.random_range(0.0..0.15),
                whole: rng.random_range(0.0..0.05),
                max_step: ms(rng, 1, 30),
            },
            hub: HubConfig {
                heartbeat: Duration::from_secs(rng.random_range(1..=3)),
                hello_deadline: Duration::from_secs(5),
                window: rng.random_range(1..=8),
                concurrent_resyncs: rng.random_range(1..=2),
                retry_base: ms(rng, 200, 1_000),
                retry_max: Duration::from_secs(rng.random_range(5..=20)),
                ..HubConfig::default()
            },
            agent: AgentTiming {
                resync_every: Duration::from_secs(rng.random_range(15..=60)),
                retry_base: ms(rng, 200, 1_000),
                retry_max: Duration::from_secs(rng.random_range(4..=10)),
                concurrency: rng.random_range(1..=4),
                backoff_base: ms(rng, 100, 500),
                backoff_max: Duration::from_secs(rng.random_range(2..=5)),
            },
            max_flush: ms(rng, 0, 10),
        }
    }
}

/// The machines of one seed.
struct World {
    oracle: Arc<Oracle>,
    cluster: Arc<Cluster>,
    net: Arc<Network>,
    plane: Arc<ControlPlane>,
    agent: Arc<Agent>,
}

/// Runs seed `seed` on the current (paused-clock, single-threaded) runtime; agent state
/// goes under `dir`. A failure carries the whole trace with `full_trace`, else its tail.
pub async fn run(seed: u64, dir: &std::path::Path, full_trace: bool) -> Outcome {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let params = Params::draw(&mut rng);
    let oracle = Arc::new(Oracle::new());
    let cluster = Cluster::new(params.apply, rng.random(), oracle.clone());
    let net = Network::new(params.net, rng.random(), cluster.clone(), oracle.clone());
    let plane = Arc::new(ControlPlane::new(
        params.hub.clone(),
        params.max_flush,
        rng.random(),
        net.clone(),
        oracle.clone(),
    ));
    let agent = Arc::new(Agent::new(
        dir.to_path_buf(),
        params.agent,
        rng.random(),
        cluster.clone(),
        net.clone(),
        oracle.clone(),
    ));
    let world = World {
        oracle,
        cluster,
        net,
        plane,
        agent,
    };
    world.plane.start().await;
    world.agent.start();
    let failure = match world.drive(&mut rng, &params).await {
        Ok(()) => world.settle().await.err(),
        Err(e) => Some(e),
    };
    let failure = failure.or_else(|| world.oracle.violations().first().cloned());
    if full_trace && std::env::var_os("TROUPE_SIM_TRACE").is_some() {
        println!("{}", world.oracle.trace_tail(usize::MAX).join("\n"));
    }
    Outcome {
        simulated: start.elapsed(),
        failure: failure.map(|why| {
            let lines = if full_trace { usize::MAX } else { TRACE_TAIL };
            let trace = world.oracle.trace_tail(lines).join("\n");
            format!(
                "{why}\n--- the last {} events (simulated time) ---\n{trace}",
                trace.lines().count()
            )
        }),
    }
}

impl World {
    /// The faulty phase: `params.actions` random changes and faults, a random gap apart.
    /// Changes: a release put with new content, or rolled back to the content it had
    /// before, deleted, or deleted and put back soon after as it was.
    async fn drive(&self, rng: &mut StdRng, params: &Params) -> Result<(), String> {
        let mut pending: Vec<JoinHandle<()>> = Vec::new();
        let mut history: HashMap<String, Vec<String>> = HashMap::new();
        for _ in 0..params.actions {
            let gap = rng.random_range(Duration::ZERO..=params.max_gap);
            tokio::time::sleep(gap).await;
            let name = format!("r{}", rng.random_range(0..params.names));
            let past = history.entry(name.clone()).or_default();
            let (plane, oracle) = (self.plane.clone(), self.oracle.clone());
            match rng.random_range(0..100) {
                0..=29 => {
                    let hash = content::pick(rng);
                    past.push(hash.clone());
                    pending.push(tokio::spawn(put(plane, oracle, name, hash)));
                }
                30..=39 if past.len() > 1 => {
                    let hash = past[past.len() - 2].clone();
                    past.push(hash.clone());
                    pending.push(tokio::spawn(put(plane, oracle, name, hash)));
                }
                40..=49 => pending.push(tokio::spawn(delete(plane, oracle, name))),
                50..=54 if !past.is_empty() => {
                    let hash = past[past.len() - 1].clone();
                    let back = rng.random_range(Duration::ZERO..=Duration::from_millis(1_500));
                    pending.push(tokio::spawn(async move {
                        delete(plane.clone(), oracle.clone(), name.clone()).await;
                        tokio::time::sleep(back).await;
                        put(plane, oracle, name, hash).await;
                    }));
                }
                55..=69 => {
                    self.net.cut_one();
                }
                70..=77 if self.agent.is_up() => {
                    let down = rng.random_range(Duration::ZERO..=Duration::from_secs(5));
                    self.agent.crash().await;
                    pending.push(self.restart_agent(down));
                }
                78..=84 if self.plane.is_up() => {
                    let down = rng.random_range(Duration::ZERO..=Duration::from_secs(5));
                    pending.push(self.restart_plane(down));
                }
                _ => {}
            }
            if let Some(violation) = self.oracle.violations().first() {
                return Err(violation.clone());
            }
        }
        for task in pending {
            task.await
                .map_err(|e| format!("a driver task failed: {e}"))?;
        }
        Ok(())
    }

    /// Starts the agent again after `down`.
    fn restart_agent(&self, down: Duration) -> JoinHandle<()> {
        let agent = self.agent.clone();
        tokio::spawn(async move {
            tokio::time::sleep(down).await;
            agent.start();
        })
    }

    /// Crashes the control plane, and starts it again after `down`.
    fn restart_plane(&self, down: Duration) -> JoinHandle<()> {
        let plane = self.plane.clone();
        plane.crash();
        tokio::spawn(async move {
            tokio::time::sleep(down).await;
            plane.start().await;
        })
    }

    /// The quiet phase: faults stop, and the system must converge, then stay converged.
    async fn settle(&self) -> Result<(), String> {
        self.net.faults_off();
        self.cluster.faults_off();
        self.oracle.trace("faults stop");
        let quiet = Instant::now();
        let mut last = Err("not checked yet".to_string());
        while quiet.elapsed() < CONVERGE_WITHIN {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(violation) = self.oracle.violations().first() {
                return Err(violation.clone());
            }
            last = self.converged().await;
            if last.is_ok() {
                break;
            }
        }
        if let Err(why) = last {
            return Err(format!(
                "not converged {} s after the faults stopped: {why}",
                CONVERGE_WITHIN.as_secs()
            ));
        }
        self.oracle.trace(format!(
            "converged after {} ms",
            quiet.elapsed().as_millis()
        ));
        tokio::time::sleep(STABLE_FOR).await;
        self.converged()
            .await
            .map_err(|why| format!("converged, then no longer: {why}"))
    }

    /// Invariant 1: the cluster holds exactly what the store has, each Release's status
    /// says its generation is applied, and nothing waits for a prune.
    async fn converged(&self) -> Result<(), String> {
        let resources = self.plane.resources().ok_or("the control plane is down")?;
        let releases: Vec<pb::Release> = resources
            .list_as(NAMESPACE, &LabelSelector::default())
            .await
            .map_err(|e| format!("listing releases: {e}"))?;
        let mut wanted = BTreeSet::new();
        for release in &releases {
            let meta = release.metadata.clone().unwrap_or_default();
            let id = format!("{NAMESPACE}/{}", meta.name);
            if meta.delete_time.is_some() {
                return Err(format!("{id} still waits for its prune"));
            }
            let hash = release
                .spec
                .as_ref()
                .map(|s| s.content_hash.as_str())
                .unwrap_or("");
            if !self.cluster.holds(&id, hash) {
                return Err(format!(
                    "{id}: the store has {hash} (generation {}); the cluster holds {}",
                    meta.generation,
                    self.cluster.describe(&id)
                ));
            }
            let applied = release.status.as_ref().map_or(0, |s| s.applied_generation);
            if applied != meta.generation {
                return Err(format!(
                    "{id}: generation {} is in the cluster, but its status says appliedGeneration {applied}",
                    meta.generation
                ));
            }
            wanted.insert(id);
        }
        for id in self.cluster.releases() {
            if !wanted.contains(&id) {
                return Err(format!(
                    "the cluster still holds {id} ({}), which the store no longer has",
                    self.cluster.describe(&id)
                ));
            }
        }
        Ok(())
    }
}

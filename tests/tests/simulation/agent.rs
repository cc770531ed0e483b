//! The agent in the simulation: the real worker and the real stream session
//! ([`troupe_agent::stream::spawn_worker`], [`Session`]), over the agent's state directory
//! (real files, which outlive the process as a disk does) and the simulated cluster.
//!
//! A process opens a session whenever the control plane is reachable and reconnects after a
//! full-jitter backoff drawn from the seed, as `troupe_agent::stream::run` does with its own
//! randomness. A crash aborts the session at once, stops the worker (which abandons applies
//! in flight, as a crash would) and waits until it has stopped before the cluster stops
//! taking that process's writes; the next process loads the state from disk.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use troupe_agent::Config;
use troupe_agent::state::State;
use troupe_agent::stream::{Session, WorkerHandle, spawn_worker};
use troupe_common::pb::v1alpha1::DataPlaneIdentity;

use crate::cluster::Cluster;
use crate::content::{DATA_PLANE, NAMESPACE};
use crate::net::Network;
use crate::oracle::Oracle;

/// How the agent runs.
#[derive(Debug, Clone, Copy)]
pub struct AgentTiming {
    /// Between two drift passes.
    pub resync_every: Duration,
    /// First retry of a failing apply or prune.
    pub retry_base: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// Releases applied at once.
    pub concurrency: usize,
    /// First reconnect delay bound.
    pub backoff_base: Duration,
    /// Largest reconnect delay bound.
    pub backoff_max: Duration,
}

struct Process {
    shutdown: watch::Sender<bool>,
    worker: WorkerHandle,
    connecting: JoinHandle<()>,
}

/// The agent's machine: its state directory and the process running on it, if any.
pub struct Agent {
    state_dir: PathBuf,
    timing: AgentTiming,
    rng: Arc<Mutex<StdRng>>,
    process: Mutex<Option<Process>>,
    cluster: Arc<Cluster>,
    net: Arc<Network>,
    oracle: Arc<Oracle>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Agent {
    /// A machine whose state lives in `state_dir`, with nothing running.
    pub fn new(
        state_dir: PathBuf,
        timing: AgentTiming,
        seed: u64,
        cluster: Arc<Cluster>,
        net: Arc<Network>,
        oracle: Arc<Oracle>,
    ) -> Self {
        Self {
            state_dir,
            timing,
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            process: Mutex::default(),
            cluster,
            net,
            oracle,
        }
    }

    /// Whether a process runs.
    pub fn is_up(&self) -> bool {
        lock(&self.process).is_some()
    }

    /// Starts a process, unless one runs: loads the state, starts the worker over a fresh
    /// applier, and keeps a session open.
    pub fn start(&self) {
        if self.is_up() {
            return;
        }
        let identity = DataPlaneIdentity {
            namespace: NAMESPACE.into(),
            name: DATA_PLANE.into(),
        };
        let applier = self.cluster.applier();
        let mut config = Config::new("sim://control-plane", identity, &self.state_dir, applier);
        config.resync_every = self.timing.resync_every;
        config.retry_base = self.timing.retry_base;
        config.retry_max = self.timing.retry_max;
        config.apply_concurrency = self.timing.concurrency;
        config.backoff_base = self.timing.backoff_base;
        config.backoff_max = self.timing.backoff_max;
        let state = State::open(&self.state_dir).expect("the state directory opens");
        let held = state.load().expect("the state loads");
        self.oracle.trace(format!(
            "agent: up, holding {:?}",
            held.keys().collect::<Vec<_>>()
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let worker = spawn_worker(&config, state, held, shutdown_rx);
        let connecting = tokio::spawn(connect(
            config,
            worker.clone(),
            self.net.clone(),
            self.rng.clone(),
            self.oracle.clone(),
        ));
        *lock(&self.process) = Some(Process {
            shutdown,
            worker,
            connecting,
        });
    }

    /// Kills the running process, if any; returns once nothing of it runs.
    pub async fn crash(&self) {
        let Some(process) = lock(&self.process).take() else {
            return;
        };
        self.oracle.trace("agent: crash");
        process.connecting.abort();
        let _ = process.shutdown.send(true);
        process.worker.stopped().await;
        // Its applies in flight are aborted with the worker; should one still run, the
        // cluster takes nothing more from it.
        let _ = self.cluster.applier();
    }
}

/// Keeps a session open, reconnecting with full-jitter backoff.
async fn connect(
    config: Config,
    worker: WorkerHandle,
    net: Arc<Network>,
    rng: Arc<Mutex<StdRng>>,
    oracle: Arc<Oracle>,
) {
    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        // As with gRPC, the connection is dialed first; the session starts once it is up.
        let outcome = if net.is_up() {
            let Ok((session, outbound)) = Session::open(&config, &worker).await else {
                return;
            };
            match net.dial(outbound) {
                Ok(inbound) => match session.serve(inbound).await {
                    Ok(()) => "the control plane ended the stream".to_string(),
                    Err(e) => format!("{e:#}"),
                },
                Err(e) => e,
            }
        } else {
            "connection refused: the control plane is down".to_string()
        };
        oracle.trace(format!("agent: session over: {outcome}"));
        if started.elapsed() > Duration::from_secs(30) {
            attempt = 0;
        }
        let bound = config
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(config.backoff_max);
        attempt = attempt.saturating_add(1);
        let delay = lock(&rng).random_range(Duration::ZERO..=bound);
        tokio::time::sleep(delay).await;
    }
}

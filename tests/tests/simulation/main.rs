//! A deterministic simulation of the agent protocol: the control plane's real resource
//! layer and agent hub, and the real agent (its worker and its stream session), over a
//! simulated network and a simulated clock, with faults, over many seeds.
//!
//! **What runs.** Each seed runs on its own single-threaded tokio runtime whose clock is
//! paused: time moves only when every task waits, straight to the next timer, so
//! heartbeats, timeouts, backoffs, latencies and retries cost no real time. The control
//! plane is [`troupe_control_plane::resources::Resources`] and
//! [`troupe_control_plane::agents::Hub`] over a store that simulates its disk
//! ([`store`]); the agent is `troupe_agent::stream::{spawn_worker, Session}` over its state
//! directory (real files on tmpfs) and a simulated cluster ([`cluster`]); between them runs
//! [`net`]. Releases are written and deleted through the resource layer, as the binding
//! controller does ([`world`]).
//!
//! **Faults** (while the fault phase lasts, see [`world`]):
//! - network ([`net`]): latency per message; connections cut at random messages, by the
//!   driver, or with a crashed side, losing a random suffix of what was in flight (drops);
//!   resets noticed by each side after its own delay, or silent half-open cuts only
//!   heartbeats detect; an old connection's tail handled after the next one opened
//!   (reordering across connections) and what was lost sent again (duplicates). TCP neither
//!   reorders nor duplicates within a connection, so neither does the simulation.
//! - the cluster ([`cluster`]): objects refused (retried by the agent with backoff), applies
//!   and prunes failing whole partway, every step taking time so a crash can land halfway.
//! - the agent crashes and restarts after up to 5 s: the session is aborted and the worker
//!   stopped (abandoning applies in flight); the state directory and the cluster survive.
//! - the control plane crashes and restarts after up to 5 s, **losing what was not
//!   durable**: every commit is journaled, but only commits a simulated flush covered
//!   survive; the next process replays those into a fresh store at the same revisions. The
//!   dead process's tasks may linger, but its store is fenced: nothing they do reaches the
//!   disk, and the network no longer carries their messages.
//!
//! **Invariants.**
//! 1. Every desired release converges: within [`world::CONVERGE_WITHIN`] of the faults
//!    stopping, the cluster holds exactly the content of every Release in the store, each
//!    Release's `status.appliedGeneration` equals its generation, nothing waits for its
//!    prune, and the cluster holds nothing else; and it stays so.
//! 2. Nothing is pruned without an explicit removal: when the agent prunes a release, the
//!    store, on disk, must have not wanted it (absent, or waiting for its prune) at some
//!    moment since the content pruned was applied. A dropped connection or a restart of
//!    either side explains no prune.
//! 3. An ack means the content was applied: when an ok ack enters the network, the cluster
//!    holds exactly the content the control plane sent under that release and generation
//!    (objects the apply refused excepted: the agent retries those, and invariant 1 sees
//!    them through), or nothing for a removal. An apply of the same release that started
//!    in the same instant is allowed for: the cluster held that content when it started.
//!
//! **Seeds and replay.** `TROUPE_SIM_SEEDS=N` runs seeds `0..N` (1,000 by default) on
//! `TROUPE_SIM_THREADS` threads (2 by default); `TROUPE_SIM_SEED=S` runs seed `S` alone and
//! prints its whole trace if it fails. A failing seed prints its failure, the tail of its
//! trace and the command that replays it:
//! `TROUPE_SIM_SEED=S cargo test -p troupe-tests --test simulation`. With
//! `TROUPE_SIM_TRACE=1` a seed run alone prints its trace even when it passes;
//! `TROUPE_SIM_KEEP_GOING=1` runs every seed and lists each that fails.
//!
//! **Determinism, and what can still vary.** One seed draws every random choice the
//! simulation makes (parameters, changes, faults, latencies, flush times, backoffs) from
//! generators seeded by it, each component its own; the runtime is single-threaded and the
//! clock simulated. What the seed does not fix: tokio picks a random branch first in an
//! unbiased `select!` (the agent's worker and session loops), and its seed cannot be set
//! on stable tokio; the hub's and the agent's `HashMap`s iterate in a per-process random
//! order; the resource layer commits on tokio's blocking threads, which interleave with
//! the runtime thread in real time; wall-clock timestamps go into statuses. So a seed's
//! run is the same in its choices and may differ in the order of events in the same
//! simulated instant. In practice a failure found this way has replayed from its seed.
//! A seed that makes no progress (a livelock never lets simulated time advance) is
//! reported with its seed after [`STUCK_AFTER`] of real time, and the run is aborted.

mod agent;
mod cluster;
mod content;
mod net;
mod oracle;
mod plane;
mod store;
mod world;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Seeds run when `TROUPE_SIM_SEEDS` does not say.
const DEFAULT_SEEDS: u64 = 1_000;
/// Threads used when `TROUPE_SIM_THREADS` does not say.
const DEFAULT_THREADS: usize = 2;
/// Real time after which a seed counts as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(120);

/// The command that replays `seed`.
fn replay(seed: u64) -> String {
    format!("TROUPE_SIM_SEED={seed} cargo test -p troupe-tests --test simulation")
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".into(),
    }
}

/// Runs one seed on a runtime of its own.
fn run_seed(seed: u64, full_trace: bool) -> world::Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let shm = std::path::Path::new("/dev/shm");
    let mut dir = tempfile::Builder::new();
    dir.prefix("troupe-sim-");
    // The agent's state is fsynced on every write: tmpfs makes that free.
    let dir = if shm.is_dir() {
        dir.tempdir_in(shm)
    } else {
        dir.tempdir()
    }
    .expect("a temporary directory");
    let outcome = runtime.block_on(world::run(seed, dir.path(), full_trace));
    runtime.shutdown_background();
    outcome
}

/// What the threads share: the next seed, the failures, and what each thread runs since
/// when (for the watchdog).
struct Run {
    seeds: Vec<u64>,
    next: AtomicU64,
    completed: AtomicU64,
    stop: AtomicBool,
    /// Run every seed even after one failed (`TROUPE_SIM_KEEP_GOING`), to see how many do.
    keep_going: bool,
    failures: Mutex<Vec<(u64, String)>>,
    simulated: Mutex<Duration>,
    running: Mutex<Vec<Option<(u64, Instant)>>>,
}

impl Run {
    fn thread(&self, slot: usize) {
        let single = self.seeds.len() == 1;
        loop {
            let i = self.next.fetch_add(1, Ordering::SeqCst) as usize;
            if i >= self.seeds.len() || self.stop.load(Ordering::SeqCst) {
                return;
            }
            let seed = self.seeds[i];
            self.running.lock().unwrap_or_else(PoisonError::into_inner)[slot] =
                Some((seed, Instant::now()));
            let outcome = std::panic::catch_unwind(|| run_seed(seed, single));
            self.running.lock().unwrap_or_else(PoisonError::into_inner)[slot] = None;
            let outcome = outcome.unwrap_or_else(|panic| world::Outcome {
                simulated: Duration::ZERO,
                failure: Some(format!(
                    "the simulation panicked: {}",
                    panic_message(&panic)
                )),
            });
            *self
                .simulated
                .lock()
                .unwrap_or_else(PoisonError::into_inner) += outcome.simulated;
            self.completed.fetch_add(1, Ordering::SeqCst);
            if let Some(failure) = outcome.failure {
                self.stop.store(!self.keep_going, Ordering::SeqCst);
                self.failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((seed, failure));
            }
        }
    }

    /// Aborts the test run, naming the seed, if one runs for longer than [`STUCK_AFTER`].
    fn watch(&self, done: &AtomicBool) {
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            for (seed, since) in running.iter().flatten() {
                if since.elapsed() > STUCK_AFTER {
                    // Straight to stderr: the test harness's capture would swallow it.
                    let _ = writeln!(
                        std::io::stderr(),
                        "simulation: seed {seed} made no progress for {STUCK_AFTER:?} of real time (a livelock?)\nreplay: {}",
                        replay(*seed)
                    );
                    std::process::abort();
                }
            }
        }
    }
}

#[test]
fn the_agent_protocol_converges_and_keeps_its_invariants_under_faults() {
    let seeds: Vec<u64> = match env_number("TROUPE_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_number("TROUPE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let threads = env_number("TROUPE_SIM_THREADS")
        .map_or(DEFAULT_THREADS, |t| t.max(1) as usize)
        .min(seeds.len().max(1));
    let run = Arc::new(Run {
        next: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        keep_going: std::env::var_os("TROUPE_SIM_KEEP_GOING").is_some(),
        failures: Mutex::default(),
        simulated: Mutex::default(),
        running: Mutex::new(vec![None; threads]),
        seeds,
    });
    let started = Instant::now();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|slot| {
                let run = run.clone();
                scope.spawn(move || run.thread(slot))
            })
            .collect();
        scope.spawn(|| run.watch(&done));
        let joined: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        done.store(true, Ordering::SeqCst);
        for worker in joined {
            worker.expect("a simulation thread panicked");
        }
    });
    let ran = run.completed.load(Ordering::SeqCst);
    let simulated = *run.simulated.lock().unwrap_or_else(PoisonError::into_inner);
    println!(
        "simulation: {ran} seeds on {threads} threads, {} s simulated in {:.1} s real",
        simulated.as_secs(),
        started.elapsed().as_secs_f64()
    );
    let mut failures =
        std::mem::take(&mut *run.failures.lock().unwrap_or_else(PoisonError::into_inner));
    failures.sort_by_key(|(seed, _)| *seed);
    if failures.len() > 1 {
        println!("{} seeds failed:", failures.len());
        for (seed, failure) in &failures {
            println!(
                "  seed {seed}: {}",
                failure.lines().next().unwrap_or_default()
            );
        }
    }
    if let Some((seed, failure)) = failures.first() {
        panic!("seed {seed} failed: {failure}\n\nreplay: {}", replay(*seed));
    }
}

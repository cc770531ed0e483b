//! What the simulation knows that neither side is told: a trace of what happened (printed
//! when a seed fails), the invariants broken so far, and, per release, when the store last
//! did not want it (absent or waiting for its prune), as of what is on disk. A prune is
//! explained only by such a moment since the content it removes was applied.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

/// How many trace lines a failing seed prints.
pub const TRACE_TAIL: usize = 120;

/// Whether the store wants one release, as of its last durable change.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    wanted: bool,
    /// The last moment the store, on disk, did not want the release.
    last_unwanted: Instant,
}

/// The simulation's own record: trace, violations, and what the store wanted when.
pub struct Oracle {
    start: Instant,
    trace: Mutex<Vec<String>>,
    violations: Mutex<Vec<String>>,
    wanted: Mutex<BTreeMap<String, Wanted>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Oracle {
    /// An oracle whose clock starts now (simulated time).
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            trace: Mutex::default(),
            violations: Mutex::default(),
            wanted: Mutex::default(),
        }
    }

    /// Simulated time since the start, in milliseconds.
    pub fn millis(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    /// Notes what happened, stamped with the simulated time.
    pub fn trace(&self, line: impl std::fmt::Display) {
        let line = format!("{:>8} ms  {line}", self.millis());
        lock(&self.trace).push(line);
    }

    /// Records a broken invariant (and traces it).
    pub fn violation(&self, what: impl std::fmt::Display) {
        let what = format!("{what} (at {} ms)", self.millis());
        self.trace(format!("VIOLATION: {what}"));
        lock(&self.violations).push(what);
    }

    /// The invariants broken so far.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.violations).clone()
    }

    /// The last `n` trace lines.
    pub fn trace_tail(&self, n: usize) -> Vec<String> {
        let trace = lock(&self.trace);
        trace[trace.len().saturating_sub(n)..].to_vec()
    }

    /// The store made durable a change of `release`: wanted (present, not waiting for its
    /// prune) or not.
    pub fn durable_change(&self, release: &str, wanted: bool) {
        let now = Instant::now();
        let mut all = lock(&self.wanted);
        let entry = all.entry(release.to_string()).or_insert(Wanted {
            wanted: false,
            last_unwanted: self.start,
        });
        if !entry.wanted || !wanted {
            // Leaving or entering "unwanted": either way it was unwanted until now.
            entry.last_unwanted = now;
        }
        entry.wanted = wanted;
    }

    /// Whether the store, on disk, did not want `release` at some moment since `since` (or
    /// does not want it now).
    pub fn unwanted_since(&self, release: &str, since: Instant) -> bool {
        match lock(&self.wanted).get(release) {
            None => true,
            Some(w) => !w.wanted || w.last_unwanted >= since,
        }
    }
}

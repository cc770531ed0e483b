//! The work queue between a controller's event stream and its reconcile workers.
//!
//! - A key waits in the queue at most once: a burst of changes to one object (or to a type
//!   that a thousand components use, each queued once) is reconciled once per burst.
//! - A key is reconciled by one worker at a time; a key changed while it is being reconciled
//!   is queued again once that reconcile ends, so the last change is never missed.
//! - Keys are taken in the order they were first queued.
//! - A reconcile that fails (or panics) is tried again after a delay that doubles with each
//!   failure of that key in a row, from [`FIRST_RETRY`] up to [`MAX_RETRY`], so a fault that
//!   clears (a flush error, a conflict) converges without a new change, and one that does not
//!   costs one attempt a minute. A new change to the key resets the delay and queues it at
//!   once.
//! - [`Queue::stats`] counts what an operator wants to see: depth, failures, retries and
//!   reconcile latency.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use troupe_common::ObjectKey;

/// The delay before the first retry of a failed reconcile.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest delay between retries of a key that keeps failing.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// A deduplicating work queue of object keys, with retries.
pub struct Queue {
    /// Names the controller in logs.
    name: &'static str,
    state: Mutex<State>,
    ready: Notify,
    counters: Counters,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<ObjectKey>,
    queued: HashSet<ObjectKey>,
    active: HashSet<ObjectKey>,
    /// Active keys that changed again while being reconciled.
    again: HashSet<ObjectKey>,
    /// Failures in a row, by key; cleared by a success or a change.
    failures: HashMap<ObjectKey, u32>,
    /// Keys waiting for a retry, with the token of the timer that will queue them: a change
    /// meanwhile removes the entry, so the timer's late add does not reset anything.
    backing_off: HashMap<ObjectKey, u64>,
    next_token: u64,
}

#[derive(Default)]
struct Counters {
    reconciles: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    reconcile_micros: AtomicU64,
    slowest_micros: AtomicU64,
}

/// When a failed reconcile is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Failures of the key in a row, this one included.
    pub attempt: u32,
    /// Delay before the next attempt.
    pub delay: Duration,
}

/// What a queue has done and holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Keys waiting for a worker.
    pub waiting: usize,
    /// Keys being reconciled.
    pub active: usize,
    /// Keys waiting for a retry after a failure.
    pub backing_off: usize,
    /// Reconciles run, failed or not.
    pub reconciles: u64,
    /// Reconciles that failed (or panicked).
    pub failures: u64,
    /// Keys queued again by a retry timer (not by a change).
    pub retries: u64,
    /// Time spent in reconciles, in total.
    pub reconcile_time: Duration,
    /// The longest reconcile.
    pub slowest_reconcile: Duration,
}

impl QueueStats {
    /// Keys waiting, being reconciled or backing off: the queue's depth.
    pub fn depth(&self) -> usize {
        self.waiting + self.active + self.backing_off
    }
}

/// The delay before retrying a key that failed `attempt` times in a row.
pub fn backoff(attempt: u32) -> Duration {
    troupe_common::backoff::doubling(FIRST_RETRY, MAX_RETRY, attempt)
}

impl Queue {
    /// An empty queue; `name` labels the controller in logs.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            state: Mutex::default(),
            ready: Notify::new(),
            counters: Counters::default(),
        }
    }

    /// Queues `key` for a change: at once unless it is already waiting, and with any retry
    /// delay it had reset.
    pub fn add(&self, key: ObjectKey) {
        let mut state = self.lock();
        state.failures.remove(&key);
        state.backing_off.remove(&key);
        self.enqueue(&mut state, key);
    }

    /// Queues `key` for work that is not a change (a roll-up of its status): like
    /// [`Queue::add`], except that a key waiting for a retry keeps waiting (the retry does
    /// the work), so frequent nudges cannot turn a failing key's backoff into a tight loop.
    pub fn nudge(&self, key: ObjectKey) {
        let mut state = self.lock();
        if !state.backing_off.contains_key(&key) {
            self.enqueue(&mut state, key);
        }
    }

    fn enqueue(&self, state: &mut State, key: ObjectKey) {
        if state.active.contains(&key) {
            state.again.insert(key);
        } else if state.queued.insert(key.clone()) {
            state.waiting.push_back(key);
            self.ready.notify_one();
        }
    }

    /// When `key` would be tried again if its reconcile, now running, fails.
    pub fn next_retry(&self, key: &ObjectKey) -> Retry {
        let attempt = self.lock().failures.get(key).copied().unwrap_or(0) + 1;
        Retry {
            attempt,
            delay: backoff(attempt),
        }
    }

    /// What the queue has done and holds.
    pub fn stats(&self) -> QueueStats {
        let state = self.lock();
        let counter = |c: &AtomicU64| c.load(Ordering::Relaxed);
        QueueStats {
            waiting: state.waiting.len(),
            active: state.active.len(),
            backing_off: state.backing_off.len(),
            reconciles: counter(&self.counters.reconciles),
            failures: counter(&self.counters.failures),
            retries: counter(&self.counters.retries),
            reconcile_time: Duration::from_micros(counter(&self.counters.reconcile_micros)),
            slowest_reconcile: Duration::from_micros(counter(&self.counters.slowest_micros)),
        }
    }

    /// Waits for the next key and marks it active.
    async fn next(&self) -> ObjectKey {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.lock();
                if let Some(key) = state.waiting.pop_front() {
                    state.queued.remove(&key);
                    state.active.insert(key.clone());
                    if !state.waiting.is_empty() {
                        // Wake another worker for the rest.
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` done: queued again at once if it changed meanwhile, after its backoff if
    /// the reconcile failed, and forgotten otherwise.
    fn done(self: &Arc<Self>, key: &ObjectKey, failed: Option<Retry>) {
        let mut state = self.lock();
        state.active.remove(key);
        if state.again.remove(key) {
            self.enqueue(&mut state, key.clone());
            return;
        }
        let Some(retry) = failed else {
            state.failures.remove(key);
            return;
        };
        state.failures.insert(key.clone(), retry.attempt);
        state.next_token += 1;
        let token = state.next_token;
        state.backing_off.insert(key.clone(), token);
        let (queue, key) = (self.clone(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(retry.delay).await;
            queue.retry(key, token);
        });
    }

    /// Queues `key` for its retry, unless a change queued it since it failed.
    fn retry(&self, key: ObjectKey, token: u64) {
        let mut state = self.lock();
        if state.backing_off.get(&key) == Some(&token) {
            state.backing_off.remove(&key);
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            self.enqueue(&mut state, key);
        }
    }

    fn record(&self, took: Duration, failed: bool) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.counters.reconciles.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.counters
            .reconcile_micros
            .fetch_add(micros, Ordering::Relaxed);
        self.counters
            .slowest_micros
            .fetch_max(micros, Ordering::Relaxed);
    }

    /// Keys waiting, being reconciled or backing off.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.stats().depth()
    }

    /// Whether nothing is waiting, being reconciled or backing off.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `workers` tasks that reconcile queued keys with `reconcile` until the runtime
    /// stops. A reconcile that returns an error or panics is logged and retried with backoff.
    pub fn spawn_workers<F, Fut, E>(self: &Arc<Self>, workers: usize, reconcile: F)
    where
        F: Fn(ObjectKey) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        for _ in 0..workers {
            let queue = self.clone();
            let reconcile = reconcile.clone();
            tokio::spawn(async move {
                loop {
                    let key = queue.next().await;
                    let started = Instant::now();
                    // Its own task, so a panic fails this key instead of ending the worker
                    // with the key marked active for good.
                    let outcome = match tokio::spawn(reconcile(key.clone())).await {
                        Ok(result) => result.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("reconcile panicked: {e}")),
                    };
                    queue.record(started.elapsed(), outcome.is_err());
                    let failed = outcome.err().map(|error| {
                        let retry = queue.next_retry(&key);
                        tracing::warn!(
                            controller = queue.name,
                            key = %key,
                            attempt = retry.attempt,
                            retry_in = ?retry.delay,
                            %error,
                            "reconcile failed; will retry"
                        );
                        retry
                    });
                    queue.done(&key, failed);
                }
            });
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;

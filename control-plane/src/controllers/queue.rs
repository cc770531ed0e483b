//! The work queue between a controller's event stream and its reconcile workers.
//!
//! - A key waits in the queue at most once: a burst of changes to one object (or to a type
//!   that a thousand components use, each queued once) is reconciled once per burst.
//! - A key is reconciled by one worker at a time; a key changed while it is being reconciled
//!   is queued again once that reconcile ends, so the last change is never missed.
//! - Keys are taken in the order they were first queued.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use troupe_common::ObjectKey;

/// A deduplicating work queue of object keys.
#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<ObjectKey>,
    queued: HashSet<ObjectKey>,
    active: HashSet<ObjectKey>,
    /// Active keys that changed again while being reconciled.
    again: HashSet<ObjectKey>,
}

impl Queue {
    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: ObjectKey) {
        let mut state = self.lock();
        if state.active.contains(&key) {
            state.again.insert(key);
        } else if state.queued.insert(key.clone()) {
            state.waiting.push_back(key);
            self.ready.notify_one();
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

    /// Marks `key` done, queueing it again if it changed meanwhile.
    fn done(&self, key: &ObjectKey) {
        let again = {
            let mut state = self.lock();
            state.active.remove(key);
            state.again.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }

    /// Keys waiting or being reconciled.
    #[cfg(test)]
    fn len(&self) -> usize {
        let state = self.lock();
        state.waiting.len() + state.active.len()
    }

    /// Whether nothing is waiting or being reconciled.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `workers` tasks that reconcile queued keys with `reconcile` until the runtime
    /// stops.
    pub fn spawn_workers<F, Fut>(self: &Arc<Self>, workers: usize, reconcile: F)
    where
        F: Fn(ObjectKey) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        for _ in 0..workers {
            let queue = self.clone();
            let reconcile = reconcile.clone();
            tokio::spawn(async move {
                loop {
                    let key = queue.next().await;
                    reconcile(key.clone()).await;
                    queue.done(&key);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use troupe_common::Kind;

    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Component, "acme", name)
    }

    #[tokio::test]
    async fn a_burst_of_changes_to_one_key_is_reconciled_once() {
        let queue = Arc::new(Queue::default());
        for _ in 0..100 {
            queue.add(key("api"));
        }
        queue.add(key("web"));
        assert_eq!(queue.len(), 2);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        queue.spawn_workers(4, move |_| {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        });
        while !queue.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_change_during_a_reconcile_is_reconciled_after_it() {
        let queue = Arc::new(Queue::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let again = queue.clone();
        queue.spawn_workers(2, move |k| {
            let runs = counted.clone();
            let queue = again.clone();
            async move {
                // The first reconcile sees a change arrive while it runs.
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    queue.add(k);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        queue.add(key("api"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(queue.is_empty());
        assert_eq!(runs.load(Ordering::SeqCst), 2, "once, then once more");
    }
}

//! Timing the store from outside: [`MeteredStore`] wraps any [`Store`] and measures what
//! writers wait for, so neither implementation knows about metrics.
//!
//! - Commit: the time `commit` takes (the commit lock, preconditions, the write).
//! - Flush: from a flush request (a writer waiting for its commit to be durable) to the
//!   durability watch covering that commit. With group commit this is one flush plus any wait
//!   for a flush already running, which is what a writer feels.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, watch};
use troupe_agent::metrics::latency_histogram;
use troupe_common::{Kind, ObjectKey};

use crate::store::{Committing, Durability, Event, Record, Revision, Store, StoreError, Txn};

/// A store whose commits and flushes are timed.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    commit_seconds: Histogram,
    /// Flush requests not yet covered: the revision each waits for and when it was asked,
    /// revisions increasing.
    flushes: Arc<Mutex<VecDeque<(Revision, Instant)>>>,
}

impl MeteredStore {
    /// Wraps `inner`, registering its figures in `registry`. Starts a task (on the current
    /// runtime) that follows durability; it ends with the store.
    pub fn new(inner: Arc<dyn Store>, registry: &mut Registry) -> Self {
        let commit_seconds = latency_histogram();
        let flush_seconds = latency_histogram();
        registry.register(
            "troupe_store_commit_duration_seconds",
            "Time a store commit takes, from the commit lock to the write (not the flush)",
            commit_seconds.clone(),
        );
        registry.register(
            "troupe_store_flush_duration_seconds",
            "Time from a writer asking for a flush to its commit being on disk; with group \
             commit, a flush plus any wait for the one already running",
            flush_seconds.clone(),
        );
        let flushes: Arc<Mutex<VecDeque<(Revision, Instant)>>> = Arc::default();
        tokio::spawn(follow_durability(
            inner.durability(),
            flushes.clone(),
            flush_seconds,
        ));
        Self {
            inner,
            commit_seconds,
            flushes,
        }
    }
}

/// Observes each flush request once durability covers its revision.
async fn follow_durability(
    mut durability: watch::Receiver<Durability>,
    flushes: Arc<Mutex<VecDeque<(Revision, Instant)>>>,
    seconds: Histogram,
) {
    while durability.changed().await.is_ok() {
        let durable = durability.borrow_and_update().revision;
        let mut flushes = flushes.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((_, asked)) = flushes.front().filter(|(r, _)| *r <= durable) {
            seconds.observe(asked.elapsed().as_secs_f64());
            flushes.pop_front();
        }
    }
}

impl Store for MeteredStore {
    fn get(&self, key: &ObjectKey) -> Result<Option<Record>, StoreError> {
        self.inner.get(key)
    }

    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        self.inner.list(kind, namespace)
    }

    fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        self.inner.list_page(kind, namespace, after, limit)
    }

    fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let started = Instant::now();
        let result = self.inner.commit(txn);
        self.commit_seconds.observe(started.elapsed().as_secs_f64());
        result
    }

    fn commit_async(&self, txn: Txn) -> Result<Committing, Txn> {
        let started = Instant::now();
        let committing = self.inner.commit_async(txn)?;
        let seconds = self.commit_seconds.clone();
        Ok(Box::pin(async move {
            let result = committing.await;
            seconds.observe(started.elapsed().as_secs_f64());
            result
        }))
    }

    fn revision(&self) -> Revision {
        self.inner.revision()
    }

    fn events_after(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.events_after(after, limit)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.inner.subscribe()
    }

    fn durability(&self) -> watch::Receiver<Durability> {
        self.inner.durability()
    }

    fn request_flush(&self) {
        // Everything committed so far is what this request waits for; a request for a
        // revision already waited for adds nothing.
        let revision = self.inner.revision();
        {
            let mut flushes = self.flushes.lock().unwrap_or_else(PoisonError::into_inner);
            if flushes.back().is_none_or(|(r, _)| *r < revision) {
                flushes.push_back((revision, Instant::now()));
            }
        }
        self.inner.request_flush();
    }
}

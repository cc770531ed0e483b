//! A store whose commits carry this server's leadership while it has one: while
//! [`Term::set`] holds a fence, every transaction is fenced with it, so nothing this server
//! writes (its controllers' writes above all) commits once another server may lead. On a store
//! of one server the term stays empty and commits pass through unchanged.

use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{broadcast, watch};
use troupe_common::{Kind, ObjectKey};

use super::{Durability, Event, Fence, Record, Revision, Store, StoreError, Txn};

/// The leadership this server holds now, if any.
#[derive(Default)]
pub struct Term(RwLock<Option<Fence>>);

impl Term {
    /// Fences every commit from now on with `fence` (`None`: none).
    pub fn set(&self, fence: Option<Fence>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = fence;
    }

    /// The fence commits carry now.
    pub fn fence(&self) -> Option<Fence> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `inner`, its commits fenced by `term`.
pub struct FencedStore {
    inner: Arc<dyn Store>,
    term: Arc<Term>,
}

impl FencedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, term: Arc<Term>) -> Self {
        Self { inner, term }
    }
}

impl Store for FencedStore {
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
        let txn = match (&txn.fence, self.term.fence()) {
            (None, Some(fence)) => txn.fenced(fence),
            _ => txn,
        };
        self.inner.commit(txn)
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
        self.inner.request_flush()
    }
}

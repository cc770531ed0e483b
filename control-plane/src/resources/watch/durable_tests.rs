//! Durable before visible: a watch shows a change only once the store has it on disk, live,
//! replayed from the log, and in a snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use troupe_common::{Kind, ObjectKey};

use super::tests::mk_namespace;
use super::{WatchEvent, WatchEventType, WatchRequest};
use crate::resources::{Origin, Resources};
use crate::store::{Durability, Event, MemoryStore, Record, Revision, Store, StoreError, Txn};

/// A [`MemoryStore`] whose flushes hang while `held` is set: commits are visible at once and
/// durable only once the test lets go, as on a slow disk.
struct SlowDisk {
    inner: MemoryStore,
    held: AtomicBool,
    durable: watch::Sender<Durability>,
}

impl SlowDisk {
    fn new() -> Self {
        Self {
            inner: MemoryStore::new(),
            held: AtomicBool::new(false),
            durable: watch::channel(Durability::default()).0,
        }
    }

    fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Lets the disk catch up with every commit so far.
    fn let_go(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.request_flush();
    }
}

impl Store for SlowDisk {
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
        self.durable.subscribe()
    }

    fn request_flush(&self) {
        if !self.held.load(Ordering::SeqCst) {
            let revision = self.inner.revision();
            self.durable
                .send_modify(|d| d.revision = d.revision.max(revision));
        }
    }
}

type Events = crate::resources::WatchEvents;

fn watch_namespaces(resources: &Arc<Resources>, since: Revision) -> Events {
    resources
        .watch(WatchRequest {
            kinds: vec![Kind::Namespace],
            since,
            ..Default::default()
        })
        .unwrap()
}

/// The next event that is not a bookmark, if one comes within `wait`.
async fn next_change(rx: &mut Events, wait: Duration) -> Option<WatchEvent> {
    loop {
        let event = tokio::time::timeout(wait, rx.recv()).await.ok()?;
        let event = event.expect("the watch goes on").expect("no error");
        if event.kind != WatchEventType::Bookmark {
            return Some(event);
        }
    }
}

fn name(event: &WatchEvent) -> &str {
    &event.object.as_ref().expect("an object").meta().name
}

#[tokio::test]
async fn a_watch_shows_a_change_only_once_it_is_on_disk() {
    let disk = Arc::new(SlowDisk::new());
    let resources = Arc::new(Resources::new(disk.clone()));
    resources
        .apply(mk_namespace("early", 0), Origin::User, false)
        .await
        .unwrap();
    let before = resources.revision();
    let mut live = watch_namespaces(&resources, before);

    // A write lands in the store but not on disk: its writer is still waiting.
    disk.hold();
    let writer = {
        let resources = resources.clone();
        tokio::spawn(async move {
            resources
                .apply(mk_namespace("late", 0), Origin::User, false)
                .await
        })
    };
    while disk.revision() == before {
        tokio::task::yield_now().await;
    }
    let mut replayed = watch_namespaces(&resources, before);
    let mut snapshot = watch_namespaces(&resources, 0);

    // A quiet window long enough for any of them to have sent what it had.
    let quiet = Duration::from_millis(300);
    assert!(
        next_change(&mut live, quiet).await.is_none(),
        "a live watch saw a change that is not on disk"
    );
    assert!(
        next_change(&mut replayed, quiet).await.is_none(),
        "a watch replaying the log saw a change that is not on disk"
    );
    assert!(
        next_change(&mut snapshot, quiet).await.is_none(),
        "a snapshot showed a change that is not on disk"
    );
    assert!(
        !writer.is_finished(),
        "the writer is answered only once durable"
    );

    disk.let_go();
    writer.await.unwrap().unwrap();
    let patience = Duration::from_secs(10);
    let seen = next_change(&mut live, patience).await.expect("live event");
    assert_eq!(name(&seen), "late");
    let seen = next_change(&mut replayed, patience)
        .await
        .expect("replayed");
    assert_eq!(name(&seen), "late");
    let mut names = vec![
        name(&next_change(&mut snapshot, patience).await.unwrap()).to_string(),
        name(&next_change(&mut snapshot, patience).await.unwrap()).to_string(),
    ];
    names.sort();
    assert_eq!(names, ["early", "late"]);
}

//! What the cluster holds of the agent's objects, kept by watches instead of asked for.
//!
//! There is one watch per kind some release has used, cluster-wide, selecting the objects of
//! every release this agent manages (by the inventory labels). Its first list is served from
//! the API server's cache (`resourceVersion=0`), then events keep a copy of every object:
//! the applier reads it to see whether an object drifted, whether it exists and whose it is,
//! and which objects of a release are left to prune, without a request. Each event also
//! goes to the health [`Board`].
//!
//! A watch restarts by itself with backoff. A watch refused with HTTP 410 Gone (its
//! resourceVersion compacted away, typically after the API server restarted) relists:
//! kube's watcher would retry the same stale version forever. Watches run until the applier
//! is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::board::Board;
use super::inventory;

/// Namespace (empty for cluster-scoped objects) and name.
type Name = (String, String);

/// The watched objects of one kind.
pub struct KindCache {
    objects: Mutex<HashMap<Name, Arc<DynamicObject>>>,
    /// True once the first list is in.
    synced: watch::Sender<bool>,
    task: Mutex<Option<AbortHandle>>,
}

/// Whether the cache can answer for an object.
pub enum Lookup {
    /// The cache is synced: the object as last seen, or `None` if the agent manages none
    /// such (an object of someone else's may still exist there).
    Known(Option<Arc<DynamicObject>>),
    /// The first list is not in yet.
    Unknown,
}

impl KindCache {
    fn objects(&self) -> MutexGuard<'_, HashMap<Name, Arc<DynamicObject>>> {
        // Every update is one insert or remove: the map stays whole if a holder panicked.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The object at `namespace/name` as last seen.
    pub fn get(&self, namespace: &str, name: &str) -> Lookup {
        if !*self.synced.borrow() {
            return Lookup::Unknown;
        }
        let key = (namespace.to_string(), name.to_string());
        Lookup::Known(self.objects().get(&key).cloned())
    }

    /// Waits up to `limit` for the first list; returns whether it came.
    pub async fn synced(&self, limit: Duration) -> bool {
        let mut synced = self.synced.subscribe();
        tokio::time::timeout(limit, synced.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Every object whose labels name `release`.
    pub fn of_release(&self, release: &str) -> Vec<Arc<DynamicObject>> {
        self.objects()
            .values()
            .filter(|o| owner(o).as_deref() == Some(release))
            .cloned()
            .collect()
    }

    /// Whether some object in `namespace` belongs to a release other than `except`.
    pub fn used_in(&self, namespace: &str, except: &str) -> bool {
        self.objects().iter().any(|((ns, _), o)| {
            ns == namespace && owner(o).is_some_and(|release| release != except)
        })
    }

    /// Takes in an object as the API server answered a write of the agent's, ahead of its
    /// watch event, so the next look at the cache sees the agent's own writes.
    pub fn wrote(&self, object: DynamicObject) {
        let object = trimmed(object);
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        self.objects().insert(key, Arc::new(object));
    }

    fn apply(&self, board: &Board, resource: &ApiResource, object: DynamicObject) {
        board.on_event(resource, &object, false);
        let object = trimmed(object);
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        self.objects().insert(key, Arc::new(object));
    }

    fn delete(&self, board: &Board, resource: &ApiResource, object: &DynamicObject) {
        board.on_event(resource, object, true);
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        self.objects().remove(&key);
    }

    /// A fresh list replaces what was seen; what is gone from it was deleted.
    fn replace(&self, board: &Board, resource: &ApiResource, listed: Vec<DynamicObject>) {
        let listed: HashMap<Name, Arc<DynamicObject>> = listed
            .into_iter()
            .map(|o| {
                (
                    (o.namespace().unwrap_or_default(), o.name_any()),
                    Arc::new(o),
                )
            })
            .collect();
        let gone: Vec<Arc<DynamicObject>> = self
            .objects()
            .iter()
            .filter(|(k, _)| !listed.contains_key(*k))
            .map(|(_, o)| o.clone())
            .collect();
        for object in gone {
            board.on_event(resource, &object, true);
        }
        for object in listed.values() {
            board.on_event(resource, object, false);
        }
        *self.objects() = listed;
        self.synced.send_replace(true);
    }
}

/// What the cache keeps of an object: all but its field-manager bookkeeping, which can be as
/// large as the object and which nothing the agent decides reads.
fn trimmed(mut object: DynamicObject) -> DynamicObject {
    object.metadata.managed_fields = None;
    object
}

fn owner(object: &DynamicObject) -> Option<String> {
    object
        .metadata
        .labels
        .as_ref()
        .and_then(inventory::release_of)
}

/// The watched objects of every kind in use.
pub struct Cache {
    client: Client,
    board: Arc<Board>,
    kinds: Mutex<HashMap<(String, String), Arc<KindCache>>>,
}

impl Cache {
    /// A cache with no watch yet; events go to `board`.
    pub fn new(client: Client, board: Arc<Board>) -> Self {
        Self {
            client,
            board,
            kinds: Mutex::default(),
        }
    }

    fn kinds(&self) -> MutexGuard<'_, HashMap<(String, String), Arc<KindCache>>> {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cache of `resource`'s kind, starting its watch if it has none.
    pub fn kind(&self, resource: &ApiResource) -> Arc<KindCache> {
        let key = (resource.group.clone(), resource.kind.clone());
        let mut kinds = self.kinds();
        if let Some(found) = kinds.get(&key) {
            return found.clone();
        }
        let cache = Arc::new(KindCache {
            objects: Mutex::default(),
            synced: watch::channel(false).0,
            task: Mutex::default(),
        });
        let task = spawn(
            self.client.clone(),
            resource.clone(),
            cache.clone(),
            self.board.clone(),
        );
        *cache.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        kinds.insert(key, cache.clone());
        cache
    }

    /// Every kind watched.
    pub fn all(&self) -> Vec<Arc<KindCache>> {
        self.kinds().values().cloned().collect()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        for kind in self.kinds().values() {
            if let Some(task) = kind.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
        }
    }
}

/// Whether a watcher error is the API server saying the resourceVersion is gone.
fn expired(error: &watcher::Error) -> bool {
    let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 410);
    match error {
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => gone(e),
        watcher::Error::WatchError(status) => status.code == 410,
        _ => false,
    }
}

/// Watches the agent's objects of kind `resource` into `cache` until aborted.
fn spawn(
    client: Client,
    resource: ApiResource,
    cache: Arc<KindCache>,
    board: Arc<Board>,
) -> AbortHandle {
    let api = Api::<DynamicObject>::all_with(client, &resource);
    let config = watcher::Config::default()
        .labels(&inventory::any_release_selector())
        .any_semantic();
    let task = tokio::spawn(async move {
        loop {
            let mut events = watcher(api.clone(), config.clone())
                .default_backoff()
                .boxed();
            let mut listing: Option<Vec<DynamicObject>> = None;
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Init) => listing = Some(Vec::new()),
                    Ok(watcher::Event::InitApply(o)) => listing.get_or_insert_default().push(o),
                    Ok(watcher::Event::InitDone) => {
                        cache.replace(&board, &resource, listing.take().unwrap_or_default())
                    }
                    Ok(watcher::Event::Apply(o)) => cache.apply(&board, &resource, o),
                    Ok(watcher::Event::Delete(o)) => cache.delete(&board, &resource, &o),
                    Err(e) if expired(&e) => {
                        tracing::info!(kind = %resource.kind, error = %e, "watch expired; listing again");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(kind = %resource.kind, error = %e, "watch failed; retrying")
                    }
                }
            }
        }
    });
    task.abort_handle()
}

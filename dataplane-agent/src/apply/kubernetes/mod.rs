//! The Kubernetes applier: server-side apply of each release's objects to a cluster, light on
//! the API server, and health read from the objects' status and kept current by watches.
//!
//! Applying a release: each object gets the release's [`inventory`] labels; the kinds and
//! namespaces it uses are added to the release's record; objects are applied in order
//! (Namespaces, then CustomResourceDefinitions, then the rest as the release lists them), each
//! kind found through API discovery, each target namespace created when missing
//! ([`namespaces`]). Every object is applied on its own ([`object`]): one that fails does not
//! stop the others, and comes back in [`Applied::failed`] for the worker to retry with
//! backoff. Custom resources wait, `Progressing`, until the CustomResourceDefinition that
//! defines them is Established. Objects of the release's recorded kinds that carry its labels
//! but left it are deleted; the record is narrowed to what is now in use.
//!
//! What the cluster holds is read from watches ([`cache`]), one per kind, not asked for: an
//! object applied before and unchanged since costs no request, so an idle agent sends none,
//! and pruning needs no list. The health of each object comes from what the API server
//! returned or the watch saw ([`health`], [`board`]).
//!
//! Pruning a release deletes the objects the cache holds with its labels, and the namespaces
//! the agent created for it once nothing else is in them. An object is deleted only if its own
//! labels name the release: objects of other releases or tools are never touched.

pub mod board;
pub mod cache;
pub mod health;
pub mod inventory;
mod namespaces;
pub mod object;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::discovery::{ApiResource, Scope};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::Notify;
use troupe_common::agent::parse_release_id;
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource, ReleaseResourceStatus};
use troupe_common::status::Health;

use self::board::{Board, ObjectKey};
use self::cache::Cache;
use self::inventory::{Kind, KindRecord, Used};
use self::object::{LastApplied, Manifest, Outcome};
use super::{Applied, Applier, Error};

/// How long pruning waits for the first list of a kind's watch.
const SYNC_WAIT: Duration = Duration::from_secs(30);

/// Applies releases to a Kubernetes cluster.
pub struct KubeApplier {
    client: Client,
    record: KindRecord,
    board: Arc<Board>,
    cache: Cache,
    /// Kinds found through discovery; an entry is dropped when applying that kind fails.
    discovered: Mutex<HashMap<Kind, (ApiResource, bool)>>,
    /// What was last applied of each object, to send only what changed or drifted.
    last_applied: Mutex<HashMap<ObjectKey, LastApplied>>,
    /// Namespaces known to exist.
    namespaces: Mutex<BTreeSet<String>>,
    /// Per release, the status entries of the objects its last apply did not apply;
    /// reported beside the watched health.
    unapplied: Mutex<HashMap<String, Vec<ReleaseResourceStatus>>>,
}

/// Namespaces first, then CustomResourceDefinitions, then network policies (so no pod starts
/// before the policy that holds it), then everything else; pruning goes the other way round.
fn apply_rank(kind: &Kind) -> u8 {
    match (kind.api_version.as_str(), kind.kind.as_str()) {
        ("v1", "Namespace") => 0,
        (v, "CustomResourceDefinition") if v.starts_with("apiextensions.k8s.io/") => 1,
        (v, "NetworkPolicy") if v.starts_with("networking.k8s.io/") => 2,
        (v, "CiliumNetworkPolicy") if v.starts_with("cilium.io/") => 2,
        _ => 3,
    }
}

/// Whether the API server says the object, or its whole kind, is not there.
fn not_found(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.is_not_found(),
        kube::Error::Discovery(_) => true,
        _ => false,
    }
}

/// The group and kind a CustomResourceDefinition defines, and whether it is Established.
fn defines(crd: &Value) -> Option<((String, String), bool)> {
    let group = crd.pointer("/spec/group")?.as_str()?.to_string();
    let kind = crd.pointer("/spec/names/kind")?.as_str()?.to_string();
    let established = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
    Some(((group, kind), established))
}

impl KubeApplier {
    /// An applier talking to the cluster through `client`, recording what each release uses
    /// under `record_dir`.
    pub fn new(client: Client, record_dir: impl Into<PathBuf>) -> Self {
        let board = Arc::new(Board::default());
        Self {
            cache: Cache::new(client.clone(), board.clone()),
            client,
            record: KindRecord::new(record_dir),
            board,
            discovered: Mutex::default(),
            last_applied: Mutex::default(),
            namespaces: Mutex::default(),
            unapplied: Mutex::default(),
        }
    }

    /// Reads or writes the record off the runtime: writes are flushed to disk.
    async fn with_record<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KindRecord) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let record = self.record.clone();
        let dir = record.dir().to_path_buf();
        tokio::task::spawn_blocking(move || f(&record))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| Error::Record { dir, source })
    }

    /// The resource and whether it is namespaced, for a kind.
    async fn resolve(&self, kind: &Kind) -> Result<(ApiResource, bool), Error> {
        if let Some(found) = self
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(kind)
        {
            return Ok(found.clone());
        }
        let (group, version) = match kind.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", kind.api_version.as_str()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind.kind);
        let (resource, capabilities) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|source| Error::Discovery {
                api_version: kind.api_version.clone(),
                kind: kind.kind.clone(),
                source,
            })?;
        let found = (resource, capabilities.scope == Scope::Namespaced);
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind.clone(), found.clone());
        Ok(found)
    }

    /// Looks `kind` up again next time: applying it failed, it may have gone.
    fn forget_kind(&self, kind: &Kind) {
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(kind);
    }

    fn api(&self, resource: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), resource)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, resource)
        }
    }

    /// Where a manifest's object lives.
    fn namespace_of<'a>(&'a self, manifest: &'a Manifest, namespaced: bool) -> &'a str {
        match (namespaced, manifest.namespace.as_str()) {
            (false, _) => "",
            (true, "") => self.client.default_namespace(),
            (true, ns) => ns,
        }
    }

    /// Applies one manifest of a release whose CustomResourceDefinitions, applied before it,
    /// define what `crds` says.
    async fn apply_manifest(
        &self,
        release: &str,
        manifest: &Manifest,
        crds: &HashMap<(String, String), (String, bool)>,
    ) -> Outcome {
        let (group, _) = manifest
            .kind
            .api_version
            .split_once('/')
            .unwrap_or(("", ""));
        if let Some((crd, false)) = crds.get(&(group.to_string(), manifest.kind.kind.clone())) {
            let why = format!("waiting for CustomResourceDefinition {crd} to be Established");
            return Outcome::Failed(manifest.status(&manifest.namespace, Health::Progressing, why));
        }
        let (resource, namespaced) = match self.resolve(&manifest.kind).await {
            Ok(found) => found,
            Err(e) => {
                return Outcome::Failed(manifest.status(
                    &manifest.namespace,
                    Health::Degraded,
                    e.to_string(),
                ));
            }
        };
        let namespace = self.namespace_of(manifest, namespaced);
        if namespaced && let Err(e) = self.ensure_namespace(namespace, manifest).await {
            return Outcome::Failed(manifest.status(namespace, Health::Degraded, e.to_string()));
        }
        self.apply_one(release, manifest, &resource, namespace)
            .await
    }

    async fn apply_release(
        &self,
        release: &str,
        resources: &[ReleaseResource],
    ) -> Result<Applied, Error> {
        let (namespace, name) =
            parse_release_id(release).ok_or_else(|| Error::BadRelease(release.into()))?;
        let labels = inventory::labels(namespace, name);
        let manifests: Vec<Result<Manifest, Box<ReleaseResourceStatus>>> = resources
            .iter()
            .map(|r| Manifest::new(r, &labels))
            .collect();

        // Widen the record before creating anything, so no object is ever unrecorded.
        let id = release.to_string();
        let before = self.with_record(move |r| r.load(&id)).await?;
        let now = Used {
            kinds: manifests.iter().flatten().map(|m| m.kind.clone()).collect(),
            namespaces: manifests
                .iter()
                .flatten()
                .filter(|m| !m.namespace.is_empty())
                .map(|m| m.namespace.clone())
                .collect(),
        };
        let both = before.union(&now);
        if both != before {
            let (id, used) = (release.to_string(), both.clone());
            self.with_record(move |r| r.save(&id, &used)).await?;
        }

        let mut order: Vec<usize> = (0..manifests.len()).collect();
        order.sort_by_key(|&i| {
            manifests[i]
                .as_ref()
                .map_or(u8::MAX, |m| apply_rank(&m.kind))
        });
        let mut outcomes: Vec<Option<Outcome>> = (0..manifests.len()).map(|_| None).collect();
        let mut crds = HashMap::new();
        for i in order {
            let manifest = match &manifests[i] {
                Ok(manifest) => manifest,
                Err(status) => {
                    outcomes[i] = Some(Outcome::Refused((**status).clone()));
                    continue;
                }
            };
            let outcome = self.apply_manifest(release, manifest, &crds).await;
            if let Outcome::Applied { object, .. } = &outcome {
                match apply_rank(&manifest.kind) {
                    0 => self.namespace_exists(&manifest.name),
                    1 => {
                        if let Some((defined, established)) = defines(object) {
                            crds.insert(defined, (manifest.name.clone(), established));
                        }
                    }
                    _ => {}
                }
            }
            outcomes[i] = Some(outcome);
        }
        self.settle(release, manifests, outcomes, both, now).await
    }

    /// Prunes what left the release, narrows its record and sorts the outcomes into what the
    /// worker sees.
    async fn settle(
        &self,
        release: &str,
        manifests: Vec<Result<Manifest, Box<ReleaseResourceStatus>>>,
        outcomes: Vec<Option<Outcome>>,
        both: Used,
        now: Used,
    ) -> Result<Applied, Error> {
        // Every object still in the release is kept, applied or not; a kind that could not
        // even be looked up keeps all its objects this time.
        let mut keep = Vec::new();
        let mut unresolved = BTreeSet::new();
        for (manifest, outcome) in manifests.iter().zip(&outcomes) {
            match (manifest, outcome) {
                (Ok(_), Some(Outcome::Applied { key, .. })) => keep.push(key.clone()),
                (Ok(m), Some(Outcome::Failed(status) | Outcome::Refused(status))) => {
                    match self.resolve(&m.kind).await {
                        Ok(_) => keep.push(ObjectKey::of(status)),
                        Err(_) => {
                            unresolved.insert(m.kind.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let kinds: BTreeSet<Kind> = both.kinds.difference(&unresolved).cloned().collect();
        let pruned = self.delete_objects(release, &kinds, &keep).await;
        if let Err(e) = &pruned {
            tracing::warn!(%release, error = %e, "could not delete what left the release");
        }
        if pruned.is_ok() && both != now {
            let id = release.to_string();
            self.with_record(move |r| r.save(&id, &now)).await?;
        }

        let mut applied = Applied {
            incomplete: pruned.is_err(),
            ..Applied::default()
        };
        // Applied objects' statuses come from the board, which watches keep current; the
        // others' are what the outcome says.
        let mut unapplied = Vec::new();
        let mut keys = Vec::new();
        let mut slots = Vec::with_capacity(outcomes.len());
        for outcome in outcomes.into_iter().flatten() {
            match outcome {
                Outcome::Applied { status, key, .. } => {
                    self.board.record(release, status);
                    keys.push(key);
                    slots.push(None);
                }
                Outcome::Failed(status) => {
                    applied.failed.push(status.id.clone());
                    unapplied.push(status.clone());
                    slots.push(Some(status));
                }
                Outcome::Refused(status) => {
                    unapplied.push(status.clone());
                    slots.push(Some(status));
                }
            }
        }
        let mut on_board = self.board.settle(release, &keys).into_iter();
        applied.statuses = slots
            .into_iter()
            .map(|slot| slot.or_else(|| on_board.next()))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        let mut held = self.unapplied.lock().unwrap_or_else(|e| e.into_inner());
        if unapplied.is_empty() {
            held.remove(release);
        } else {
            held.insert(release.to_string(), unapplied);
        }
        Ok(applied)
    }

    /// Deletes the objects of `release` of the given kinds, except `keep`, as the watches
    /// see them. Every object is tried; the first failure is returned.
    async fn delete_objects(
        &self,
        release: &str,
        kinds: &BTreeSet<Kind>,
        keep: &[ObjectKey],
    ) -> Result<(), Error> {
        let mut kinds: Vec<&Kind> = kinds.iter().collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(apply_rank(k)));
        let mut first_error = None;
        for kind in kinds {
            let resource = match self.resolve(kind).await {
                Ok((resource, _)) => resource,
                // A kind no longer served has no objects left to delete.
                Err(Error::Discovery { source, .. }) if not_found(&source) => continue,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let cache = self.cache.kind(&resource);
            let objects = if cache.synced(SYNC_WAIT).await {
                cache.of_release(release)
            } else {
                first_error.get_or_insert(Error::Request {
                    action: "listing",
                    object: resource.kind.clone(),
                    source: kube::Error::Service("the watch has not listed it yet".into()),
                });
                continue;
            };
            for object in objects {
                let object_namespace = object.namespace().unwrap_or_default();
                let object_name = object.name_any();
                let key = ObjectKey::new(&resource, &object_namespace, &object_name);
                if keep.contains(&key) || object.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                tracing::info!(%release, kind = %resource.kind, namespace = %object_namespace, name = %object_name, "pruning");
                self.forget_applied(&key);
                match self
                    .api(&resource, &object_namespace)
                    .delete(&object_name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if not_found(&e) => {}
                    Err(source) => {
                        first_error.get_or_insert(Error::Request {
                            action: "deleting",
                            object: describe_object(
                                &resource.kind,
                                &object_namespace,
                                &object_name,
                            ),
                            source,
                        });
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn prune_release(&self, release: &str) -> Result<(), Error> {
        let id = release.to_string();
        let used = self.with_record(move |r| r.load(&id)).await?;
        self.delete_objects(release, &used.kinds, &[]).await?;
        self.collect_namespaces(release, &used.namespaces).await?;
        self.board.forget(release);
        self.unapplied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(release);
        let id = release.to_string();
        self.with_record(move |r| r.remove(&id)).await
    }

    async fn cluster_info(&self) -> ClusterInfo {
        let version = match self.client.apiserver_version().await {
            Ok(info) => info.git_version,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the Kubernetes version");
                String::new()
            }
        };
        // Listing nodes may not be permitted; the count is then 0.
        let nodes = Api::<Node>::all(self.client.clone())
            .list_metadata(&ListParams::default())
            .await
            .map_or(0, |list| list.items.len());
        ClusterInfo {
            kubernetes_version: version,
            platform: "kubernetes".into(),
            node_count: i32::try_from(nodes).unwrap_or(i32::MAX),
        }
    }
}

fn describe_object(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

impl Applier for KubeApplier {
    fn apply<'a>(
        &'a self,
        release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Applied, Error>> {
        Box::pin(async move { self.apply_release(release, resources).await })
    }

    fn prune<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.prune_release(release).await })
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        Box::pin(async move {
            let fallback = ClusterInfo {
                platform: "kubernetes".into(),
                ..Default::default()
            };
            tokio::time::timeout(Duration::from_secs(10), self.cluster_info())
                .await
                .unwrap_or(fallback)
        })
    }

    fn health(&self, release: &str) -> Option<Vec<ReleaseResourceStatus>> {
        let mut statuses = self.board.get(release)?;
        let unapplied = self.unapplied.lock().unwrap_or_else(|e| e.into_inner());
        statuses.extend(unapplied.get(release).cloned().unwrap_or_default());
        Some(statuses)
    }

    fn health_changes(&self) -> Option<Arc<Notify>> {
        Some(self.board.changed())
    }

    fn drifted(&self) -> Vec<String> {
        self.board.take_drifted()
    }

    /// The releases with an inventory record (the kinds and namespaces they used).
    fn found(&self) -> Vec<String> {
        self.record.releases()
    }
}

//! The Kubernetes applier: server-side apply of each release's objects to a cluster, pruning
//! by inventory labels, and health read from the objects' status and kept current by watches.
//!
//! Applying a release: each object gets the release's [`inventory`] labels; the kinds it uses
//! are added to the release's record; objects are applied in order (Namespaces, then
//! CustomResourceDefinitions, then the rest as the release lists them) with one field manager,
//! `troupe-agent`, forcing ownership, each kind found through API discovery; objects of the
//! release's recorded kinds that carry its labels but left it are deleted; the record is
//! narrowed to the kinds now in use. The health of each object comes from what the API server
//! returned ([`health`]), and [`watch`] keeps it current afterwards.
//!
//! Pruning lists objects by the release's label selector only, and deletes an object only if
//! its own labels name the release: objects of other releases or tools are never touched.
//!
//! One release owns each object: before applying, the applier reads the object, and one whose
//! inventory labels name another release is left alone, that object failing `Degraded` (`owned
//! by release …`) while the rest of the release applies. The labels, not a field manager per
//! release, carry ownership: a forced apply takes fields from any manager, so a manager name
//! would prevent nothing, and the labels are what pruning trusts already. Objects without the
//! labels (made by hand, or by another tool) are taken over as before. The agent's worker keeps
//! the same rule for every applier; this check also holds between agents sharing a cluster.

pub mod health;
pub mod inventory;
pub mod watch;

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{ApiResource, Scope};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use troupe_common::agent::parse_release_id;
use troupe_common::document::integral_numbers;
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource, ReleaseResourceStatus};

use self::inventory::{Kind, KindRecord, MANAGER};
use self::watch::{Board, ObjectKey};
use super::{Applier, Error, describe};

/// How long to wait for the kinds of CustomResourceDefinitions applied moments earlier to be
/// served.
const NEW_KIND_WAIT: Duration = Duration::from_secs(10);

/// Applies releases to a Kubernetes cluster.
pub struct KubeApplier {
    client: Client,
    record: KindRecord,
    board: Arc<Board>,
    /// Kinds found through discovery; an entry is dropped when applying that kind fails.
    discovered: Mutex<HashMap<Kind, (ApiResource, bool)>>,
    /// One watch per group and kind with a health rule.
    watches: Mutex<HashMap<(String, String), AbortHandle>>,
    /// Per release, the objects its last apply left to the release that owns them; reported
    /// beside the watched health.
    conflicts: Mutex<HashMap<String, Vec<ReleaseResourceStatus>>>,
}

/// A rendered object, labelled and ready to apply.
struct Manifest {
    kind: Kind,
    name: String,
    /// As rendered; empty means the client's default namespace for namespaced kinds.
    namespace: String,
    body: Value,
    status: ReleaseResourceStatus,
}

impl Manifest {
    fn new(resource: &ReleaseResource, labels: &[(&str, String)]) -> Result<Self, Error> {
        let status = describe(resource);
        let bad = |reason: &str| Error::BadObject {
            id: resource.id.clone(),
            reason: reason.to_string(),
        };
        if status.kind.is_empty() || status.version.is_empty() || status.name.is_empty() {
            return Err(bad("it has no apiVersion, kind or metadata.name"));
        }
        let mut body = serde_json::to_value(&resource.object).map_err(|e| bad(&e.to_string()))?;
        // google.protobuf.Struct holds every number as a double; the API server decodes int32
        // and int64 fields strictly, so whole numbers go out as integers.
        integral_numbers(&mut body);
        let metadata = body
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| bad("metadata is not a map"))?;
        let object_labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()))
            .as_object_mut()
            .ok_or_else(|| bad("metadata.labels is not a map"))?;
        for (key, value) in labels {
            object_labels.insert(key.to_string(), Value::String(value.clone()));
        }
        let api_version = body["apiVersion"].as_str().unwrap_or_default().to_string();
        Ok(Self {
            kind: Kind {
                api_version,
                kind: status.kind.clone(),
            },
            name: status.name.clone(),
            namespace: status.namespace.clone(),
            body,
            status,
        })
    }
}

/// Namespaces first, then CustomResourceDefinitions, then everything else; pruning goes the
/// other way round.
fn apply_rank(kind: &Kind) -> u8 {
    match (kind.api_version.as_str(), kind.kind.as_str()) {
        ("v1", "Namespace") => 0,
        (v, "CustomResourceDefinition") if v.starts_with("apiextensions.k8s.io/") => 1,
        _ => 2,
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

impl KubeApplier {
    /// An applier talking to the cluster through `client`, recording the kinds of each
    /// release under `record_dir`.
    pub fn new(client: Client, record_dir: impl Into<PathBuf>) -> Self {
        Self {
            client,
            record: KindRecord::new(record_dir),
            board: Arc::default(),
            discovered: Mutex::default(),
            watches: Mutex::default(),
            conflicts: Mutex::default(),
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

    /// The resource and whether it is namespaced, for a kind; waits up to [`NEW_KIND_WAIT`]
    /// when the kind may come from a CustomResourceDefinition just applied.
    async fn resolve(&self, kind: &Kind, just_defined: bool) -> Result<(ApiResource, bool), Error> {
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
        let deadline = tokio::time::Instant::now() + NEW_KIND_WAIT;
        let (resource, capabilities) = loop {
            match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok(found) => break found,
                Err(e) if just_defined && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(kind = %kind.kind, error = %e, "waiting for a new kind to be served");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(source) => {
                    return Err(Error::Discovery {
                        api_version: kind.api_version.clone(),
                        kind: kind.kind.clone(),
                        source,
                    });
                }
            }
        };
        let found = (resource, capabilities.scope == Scope::Namespaced);
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind.clone(), found.clone());
        Ok(found)
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

    /// The other release whose inventory labels the object of `manifest` carries on the
    /// cluster, if any.
    async fn owned_elsewhere(
        &self,
        release: &str,
        manifest: &Manifest,
        resource: &ApiResource,
        namespaced: bool,
    ) -> Result<Option<String>, Error> {
        let namespace = self.namespace_of(manifest, namespaced);
        let existing = self
            .api(resource, namespace)
            .get_opt(&manifest.name)
            .await
            .map_err(|source| Error::Request {
                action: "reading",
                object: describe_object(&resource.kind, namespace, &manifest.name),
                source,
            })?;
        Ok(existing
            .and_then(|o| o.metadata.labels.as_ref().and_then(inventory::release_of))
            .filter(|owner| owner != release))
    }

    /// Server-side applies one object and returns its status entry.
    async fn apply_object(
        &self,
        manifest: &Manifest,
        resource: &ApiResource,
        namespaced: bool,
    ) -> Result<ReleaseResourceStatus, Error> {
        let namespace = self.namespace_of(manifest, namespaced);
        let mut body = manifest.body.clone();
        if let Some(metadata) = body["metadata"].as_object_mut() {
            if namespace.is_empty() {
                metadata.remove("namespace");
            } else {
                metadata.insert("namespace".into(), Value::String(namespace.to_string()));
            }
        }
        let params = PatchParams::apply(MANAGER).force();
        let applied = self
            .api(resource, namespace)
            .patch(&manifest.name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| {
                // The kind may have gone (a CRD removed): look it up again next time.
                self.discovered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&manifest.kind);
                Error::Request {
                    action: "applying",
                    object: describe_object(&resource.kind, namespace, &manifest.name),
                    source,
                }
            })?;
        let value = serde_json::to_value(&applied).unwrap_or_default();
        let health = health::of(&resource.group, &resource.kind, &value);
        Ok(ReleaseResourceStatus {
            namespace: namespace.to_string(),
            health: health.health.to_string(),
            message: health.message,
            ..manifest.status.clone()
        })
    }

    /// Starts watching `resource` if its kind has a health rule and is not watched yet.
    fn watch(&self, resource: &ApiResource) {
        if !health::has_rule(&resource.group, &resource.kind) {
            return;
        }
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches
            .entry((resource.group.clone(), resource.kind.clone()))
            .or_insert_with(|| {
                watch::spawn(self.client.clone(), resource.clone(), self.board.clone())
            });
    }

    async fn apply_release(
        &self,
        release: &str,
        resources: &[ReleaseResource],
    ) -> Result<Vec<ReleaseResourceStatus>, Error> {
        let (namespace, name) =
            parse_release_id(release).ok_or_else(|| Error::BadRelease(release.into()))?;
        let labels = inventory::labels(namespace, name);
        let manifests = resources
            .iter()
            .map(|r| Manifest::new(r, &labels))
            .collect::<Result<Vec<_>, _>>()?;

        // Widen the record before creating anything, so no object is ever unrecorded.
        let id = release.to_string();
        let before = self.with_record(move |r| r.load(&id)).await?;
        let now: BTreeSet<Kind> = manifests.iter().map(|m| m.kind.clone()).collect();
        let both: BTreeSet<Kind> = before.union(&now).cloned().collect();
        if both != before {
            let (id, kinds) = (release.to_string(), both.clone());
            self.with_record(move |r| r.save(&id, &kinds)).await?;
        }

        let mut order: Vec<usize> = (0..manifests.len()).collect();
        order.sort_by_key(|&i| apply_rank(&manifests[i].kind));
        let mut keys = vec![None; manifests.len()];
        let mut conflicts = vec![None; manifests.len()];
        let mut defined_kinds = false;
        for i in order {
            let manifest = &manifests[i];
            let (resource, namespaced) = self.resolve(&manifest.kind, defined_kinds).await?;
            if let Some(owner) = self
                .owned_elsewhere(release, manifest, &resource, namespaced)
                .await?
            {
                conflicts[i] = Some(ReleaseResourceStatus {
                    namespace: self.namespace_of(manifest, namespaced).to_string(),
                    health: troupe_common::status::Health::Degraded.as_str().into(),
                    message: format!("owned by release {owner}"),
                    ..manifest.status.clone()
                });
                continue;
            }
            let status = self.apply_object(manifest, &resource, namespaced).await?;
            defined_kinds |= apply_rank(&manifest.kind) == 1;
            keys[i] = Some(ObjectKey::new(&resource, &status.namespace, &status.name));
            self.board.record(release, status);
            self.watch(&resource);
        }
        let keys: Vec<ObjectKey> = keys.into_iter().flatten().collect();

        self.delete_objects(release, &both, &keys).await?;
        if both != now {
            let id = release.to_string();
            self.with_record(move |r| r.save(&id, &now)).await?;
        }
        let mut applied = self.board.settle(release, &keys).into_iter();
        let statuses = conflicts
            .iter()
            .filter_map(|c| c.clone().or_else(|| applied.next()))
            .collect();
        let conflicts: Vec<_> = conflicts.into_iter().flatten().collect();
        let mut held = self.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        if conflicts.is_empty() {
            held.remove(release);
        } else {
            held.insert(release.to_string(), conflicts);
        }
        Ok(statuses)
    }

    /// Deletes the objects of `release` of the given kinds, except `keep`.
    async fn delete_objects(
        &self,
        release: &str,
        kinds: &BTreeSet<Kind>,
        keep: &[ObjectKey],
    ) -> Result<(), Error> {
        let (namespace, name) =
            parse_release_id(release).ok_or_else(|| Error::BadRelease(release.into()))?;
        let selector = inventory::selector(namespace, name);
        let mut kinds: Vec<&Kind> = kinds.iter().collect();
        kinds.sort_by_key(|k| Reverse(apply_rank(k)));
        for kind in kinds {
            let resource = match self.resolve(kind, false).await {
                Ok((resource, _)) => resource,
                // A kind no longer served has no objects left to delete.
                Err(Error::Discovery { source, .. }) if not_found(&source) => continue,
                Err(e) => return Err(e),
            };
            let listed = Api::<DynamicObject>::all_with(self.client.clone(), &resource)
                .list_metadata(&ListParams::default().labels(&selector))
                .await
                .map_err(|source| Error::Request {
                    action: "listing",
                    object: resource.kind.clone(),
                    source,
                })?;
            for object in listed.items {
                // The selector says so already; an object is deleted only if its own labels
                // name this release.
                if object
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(inventory::release_of)
                    .as_deref()
                    != Some(release)
                {
                    continue;
                }
                let object_namespace = object.namespace().unwrap_or_default();
                let object_name = object.name_any();
                if keep.contains(&ObjectKey::new(&resource, &object_namespace, &object_name)) {
                    continue;
                }
                tracing::info!(%release, kind = %resource.kind, namespace = %object_namespace, name = %object_name, "pruning");
                match self
                    .api(&resource, &object_namespace)
                    .delete(&object_name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if not_found(&e) => {}
                    Err(source) => {
                        return Err(Error::Request {
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
        Ok(())
    }

    async fn prune_release(&self, release: &str) -> Result<(), Error> {
        self.board.forget(release);
        self.conflicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(release);
        let id = release.to_string();
        let kinds = self.with_record(move |r| r.load(&id)).await?;
        self.delete_objects(release, &kinds, &[]).await?;
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

impl Drop for KubeApplier {
    fn drop(&mut self) {
        let watches = self.watches.get_mut().unwrap_or_else(|e| e.into_inner());
        for watch in watches.values() {
            watch.abort();
        }
    }
}

impl Applier for KubeApplier {
    fn apply<'a>(
        &'a self,
        release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Vec<ReleaseResourceStatus>, Error>> {
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
        let conflicts = self.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        statuses.extend(conflicts.get(release).cloned().unwrap_or_default());
        Some(statuses)
    }

    fn health_changes(&self) -> Option<Arc<Notify>> {
        Some(self.board.changed())
    }
}

//! Health between applies: a board of each release's objects and their health, filled by the
//! applier from what the API server returns on apply and kept current by the watches of the
//! [`super::cache`].
//!
//! A watch event recomputes the health of the object it names; when that changes, the board
//! notifies [`Board::changed`], and the agent reads the board
//! ([`crate::apply::Applier::health`]) and reports. An object of a release that was deleted
//! is `Degraded`, and its release is listed for the worker to apply again at once
//! ([`Board::take_drifted`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::discovery::ApiResource;
use tokio::sync::Notify;
use troupe_common::pb::v1alpha1::ReleaseResourceStatus;
use troupe_common::status::Health::Degraded;

use super::health::{self, Health};
use super::inventory;

/// What names an object on the board: API group, kind, namespace (empty for cluster-scoped
/// objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    group: String,
    kind: String,
    namespace: String,
    name: String,
}

impl ObjectKey {
    /// The key of an object of the resource `resource`.
    pub fn new(resource: &ApiResource, namespace: &str, name: &str) -> Self {
        Self {
            group: resource.group.clone(),
            kind: resource.kind.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The key of the object a status entry is about.
    pub fn of(status: &ReleaseResourceStatus) -> Self {
        Self {
            group: status.group.clone(),
            kind: status.kind.clone(),
            namespace: status.namespace.clone(),
            name: status.name.clone(),
        }
    }
}

/// The last known health of every object of every release applied.
#[derive(Default)]
pub struct Board {
    /// By release id; never locked across an `.await`.
    releases: Mutex<HashMap<String, Vec<ReleaseResourceStatus>>>,
    /// Releases with an object someone deleted, for the worker to apply again.
    drifted: Mutex<BTreeSet<String>>,
    changed: Arc<Notify>,
}

impl Board {
    /// Notified when the health of some object changed without an apply.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    fn releases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<ReleaseResourceStatus>>> {
        // The map stays consistent even if a holder panicked: every update is one assignment.
        self.releases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one object of `release` as the API server returned it on apply.
    pub fn record(&self, release: &str, status: ReleaseResourceStatus) {
        let mut releases = self.releases();
        let entries = releases.entry(release.to_string()).or_default();
        let key = ObjectKey::of(&status);
        match entries.iter_mut().find(|e| ObjectKey::of(e) == key) {
            Some(entry) => *entry = status,
            None => entries.push(status),
        }
    }

    /// Keeps exactly the objects `keys` of `release`, in that order, and returns them.
    pub fn settle(&self, release: &str, keys: &[ObjectKey]) -> Vec<ReleaseResourceStatus> {
        let mut releases = self.releases();
        let entries = releases.entry(release.to_string()).or_default();
        let settled: Vec<ReleaseResourceStatus> = keys
            .iter()
            .filter_map(|k| entries.iter().find(|e| ObjectKey::of(e) == *k).cloned())
            .collect();
        *entries = settled.clone();
        settled
    }

    /// Forgets `release`: events about its objects are ignored from now on.
    pub fn forget(&self, release: &str) {
        self.releases().remove(release);
    }

    /// The objects of `release` and their health, if it was applied.
    pub fn get(&self, release: &str) -> Option<Vec<ReleaseResourceStatus>> {
        self.releases().get(release).cloned()
    }

    /// Takes the releases with an object someone deleted since the last call.
    pub fn take_drifted(&self) -> Vec<String> {
        let mut drifted = self.drifted.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *drifted).into_iter().collect()
    }

    /// Sets the health of one object of `release`, if the board holds it, and notifies when
    /// it changed.
    fn observe(&self, release: &str, key: &ObjectKey, health: Health) {
        let mut releases = self.releases();
        let Some(entry) = releases
            .get_mut(release)
            .and_then(|entries| entries.iter_mut().find(|e| ObjectKey::of(e) == *key))
        else {
            return;
        };
        if entry.health != health.health || entry.message != health.message {
            tracing::debug!(%release, kind = %key.kind, name = %key.name, health = health.health.as_str(), "health changed");
            entry.health = health.health.to_string();
            entry.message = health.message;
            drop(releases);
            self.changed.notify_one();
        }
    }

    /// Applies one watch event about an object of kind `resource`.
    pub fn on_event(&self, resource: &ApiResource, object: &DynamicObject, deleted: bool) {
        let Some(release) = object
            .metadata
            .labels
            .as_ref()
            .and_then(inventory::release_of)
        else {
            return;
        };
        let key = ObjectKey::new(
            resource,
            &object.namespace().unwrap_or_default(),
            &object.name_any(),
        );
        let health = if deleted {
            Health {
                health: Degraded,
                message: "deleted by someone other than the agent; re-creating it".into(),
            }
        } else {
            match serde_json::to_value(object) {
                Ok(value) => health::of(&resource.group, &resource.kind, &value),
                Err(e) => Health {
                    health: Degraded,
                    message: format!("unreadable object: {e}"),
                },
            }
        };
        self.observe(&release, &key, health);
        if deleted {
            // The worker applies the release again at once: the object comes back if it is
            // still part of it (before the board even knew of it, too); if the agent pruned
            // it, that apply changes nothing and sends nothing.
            self.drifted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(release);
            self.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_common::status::Health::{Healthy, Progressing};

    fn mk_status(kind: &str, name: &str, health: &str) -> ReleaseResourceStatus {
        ReleaseResourceStatus {
            id: format!("{kind}/{name}"),
            group: "apps".into(),
            version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "shop".into(),
            health: health.into(),
            ..Default::default()
        }
    }

    fn mk_deployment(release: &str, name: &str, available: i64) -> DynamicObject {
        let (ns, rel) = release.split_once('/').unwrap();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop", "generation": 1, "labels": {
                "agent.troupe.dev/release-namespace": ns, "agent.troupe.dev/release": rel}},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": available}
        }))
        .unwrap()
    }

    fn deployments() -> ApiResource {
        ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        }
    }

    #[tokio::test]
    async fn events_update_the_objects_of_their_release_only_and_notify_on_change() {
        let board = Board::default();
        board.record(
            "acme/web",
            mk_status("Deployment", "web", Progressing.as_str()),
        );
        let key = ObjectKey::of(&mk_status("Deployment", "web", ""));
        assert_eq!(
            board.settle("acme/web", std::slice::from_ref(&key)).len(),
            1
        );
        let changed = board.changed();

        // Another release's object of the same name: not ours to report.
        board.on_event(
            &deployments(),
            &mk_deployment("acme/other", "web", 1),
            false,
        );
        assert_eq!(board.get("acme/web").unwrap()[0].health, Progressing);

        board.on_event(&deployments(), &mk_deployment("acme/web", "web", 1), false);
        assert_eq!(board.get("acme/web").unwrap()[0].health, Healthy);
        tokio::time::timeout(std::time::Duration::from_secs(1), changed.notified())
            .await
            .expect("a change notifies");

        board.on_event(&deployments(), &mk_deployment("acme/web", "web", 1), true);
        assert_eq!(board.get("acme/web").unwrap()[0].health, Degraded);

        board.forget("acme/web");
        board.on_event(&deployments(), &mk_deployment("acme/web", "web", 1), false);
        assert_eq!(board.get("acme/web"), None);
    }
}

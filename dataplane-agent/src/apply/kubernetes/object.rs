//! One object of a release: labelled, checked against what the cluster holds, and applied
//! only when it differs.
//!
//! - **Drift**: the agent remembers what it last applied of each object and what the API
//!   server answered, projected onto the fields the agent sets. While the manifest is the
//!   same and the watched object still shows those fields as answered, nothing is sent: an
//!   idle agent makes no requests. A field someone changed, or a deleted object, is applied
//!   again at the next drift pass.
//! - **Ownership**: an object that exists without the release's labels was made by someone
//!   else and is a conflict, left alone, unless its manifest says `troupe.dev/adopt: "true"`.
//!   One labelled for another release is that release's.
//! - **Field managers**: server-side apply as `troupe-agent`, forcing fields other managers
//!   set, as the release is the source of truth. A manifest annotated
//!   `troupe.dev/force-conflicts: "false"` is applied without force: a field another manager
//!   owns is reported as a conflict, not taken.
//! - **Immutable fields**: when the API server refuses a change as immutable and the object
//!   may be replaced (`troupe.dev/replace-on-immutable: "true"`, the default for Jobs), the old
//!   object is deleted in the foreground and the new one created.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::Value;
use troupe_common::document::integral_numbers;
use troupe_common::pb::v1alpha1::{ReleaseResource, ReleaseResourceStatus};
use troupe_common::status::Health;

use super::board::ObjectKey;
use super::cache::Lookup;
use super::inventory::{self, Kind, MANAGED_BY_LABEL, MANAGER};
use super::{KubeApplier, describe_object, health};
use crate::apply::{Error, describe};

/// Annotation: take over an object that exists without the release's labels.
pub const ADOPT: &str = "troupe.dev/adopt";
/// Annotation: apply with or without forcing fields other managers own (default "true").
pub const FORCE_CONFLICTS: &str = "troupe.dev/force-conflicts";
/// Annotation: replace the object when a change is refused as immutable (default "true" for
/// Jobs, "false" for anything else).
pub const REPLACE_ON_IMMUTABLE: &str = "troupe.dev/replace-on-immutable";

/// How long a replaced object may take to go before the apply is tried again later.
const REPLACE_WAIT: Duration = Duration::from_secs(10);

/// A rendered object, labelled and ready to apply.
pub(super) struct Manifest {
    pub kind: Kind,
    pub name: String,
    /// As rendered; empty means the client's default namespace for namespaced kinds.
    pub namespace: String,
    pub body: Value,
    pub status: ReleaseResourceStatus,
    /// Of `body`, to tell whether it changed since the last apply.
    pub hash: u64,
}

impl Manifest {
    /// The manifest of `resource` with the release's inventory `labels`; a status entry
    /// saying what is wrong when it cannot be applied at all.
    pub fn new(
        resource: &ReleaseResource,
        labels: &[(&str, String)],
    ) -> Result<Self, Box<ReleaseResourceStatus>> {
        let status = describe(resource);
        let bad = |reason: &str| ReleaseResourceStatus {
            health: Health::Degraded.as_str().into(),
            message: Error::BadObject {
                id: resource.id.clone(),
                reason: reason.to_string(),
            }
            .to_string(),
            ..status.clone()
        };
        let bad = |reason: &str| Box::new(bad(reason));
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
        object_labels
            .entry(MANAGED_BY_LABEL)
            .or_insert_with(|| Value::String(MANAGER.into()));
        let api_version = body["apiVersion"].as_str().unwrap_or_default().to_string();
        let mut hasher = DefaultHasher::new();
        body.to_string().hash(&mut hasher);
        Ok(Self {
            kind: Kind {
                api_version,
                kind: status.kind.clone(),
            },
            name: status.name.clone(),
            namespace: status.namespace.clone(),
            hash: hasher.finish(),
            body,
            status,
        })
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.body["metadata"]["annotations"][key].as_str()
    }

    fn adopts(&self) -> bool {
        self.annotation(ADOPT) == Some("true")
    }

    fn forces(&self) -> bool {
        self.annotation(FORCE_CONFLICTS) != Some("false")
    }

    fn replaces_on_immutable(&self, resource: &ApiResource) -> bool {
        match self.annotation(REPLACE_ON_IMMUTABLE) {
            Some(value) => value == "true",
            None => resource.group == "batch" && resource.kind == "Job",
        }
    }

    /// The status entry of this object in `namespace` with `health` and `message`.
    pub fn status(
        &self,
        namespace: &str,
        health: Health,
        message: String,
    ) -> ReleaseResourceStatus {
        ReleaseResourceStatus {
            namespace: namespace.to_string(),
            health: health.as_str().into(),
            message,
            ..self.status.clone()
        }
    }
}

/// What became of one object.
pub(super) enum Outcome {
    /// It is on the cluster as the release has it.
    Applied {
        status: ReleaseResourceStatus,
        key: ObjectKey,
        /// As the API server returned or the watch last saw it.
        object: Value,
    },
    /// Not applied; worth another try (the status says why: `Degraded`, or `Progressing`
    /// while it waits for something).
    Failed(ReleaseResourceStatus),
    /// Not applied and not retried: someone else's object, or a manifest that cannot be
    /// applied. The next drift pass looks again.
    Refused(ReleaseResourceStatus),
}

/// What the agent last applied of an object: the manifest's hash and the API server's answer
/// projected onto the manifest's fields.
pub(super) struct LastApplied {
    hash: u64,
    projection: Value,
}

/// `value` restricted to the fields `shape` has: what the API server made of the fields the
/// agent sets, whatever others add.
pub(super) fn project(shape: &Value, value: &Value) -> Value {
    match (shape, value) {
        (Value::Object(shape), Value::Object(value)) => Value::Object(
            shape
                .iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        value.get(k).map_or(Value::Null, |v| project(s, v)),
                    )
                })
                .collect(),
        ),
        (Value::Array(shape), Value::Array(value)) if shape.len() == value.len() => Value::Array(
            shape
                .iter()
                .zip(value)
                .map(|(s, v)| project(s, v))
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// Whether the API server refused a change because a field cannot change.
fn immutable(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 422 && s.message.contains("immutable"))
}

/// Whether the API server says the object's namespace does not exist.
pub(super) fn namespace_missing(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404 && s.message.starts_with("namespaces \""))
}

fn to_value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or_default()
}

impl KubeApplier {
    /// Applies one object of `release` unless the cluster has it as the release does.
    pub(super) async fn apply_one(
        &self,
        release: &str,
        manifest: &Manifest,
        resource: &ApiResource,
        namespace: &str,
    ) -> Outcome {
        let key = ObjectKey::new(resource, namespace, &manifest.name);
        let object = describe_object(&resource.kind, namespace, &manifest.name);
        let failed = |error: Error| {
            Outcome::Failed(manifest.status(namespace, Health::Degraded, error.to_string()))
        };
        let live = match self.cache.kind(resource).get(namespace, &manifest.name) {
            Lookup::Known(Some(live)) => Some(to_value(&live)),
            // Not one of the agent's, or not known yet: someone else's may be there.
            Lookup::Known(None) | Lookup::Unknown => {
                match self.api(resource, namespace).get_opt(&manifest.name).await {
                    Ok(found) => found.as_ref().map(to_value),
                    Err(source) => {
                        return failed(Error::Request {
                            action: "reading",
                            object,
                            source,
                        });
                    }
                }
            }
        };
        if let Some(live) = &live {
            let labels =
                serde_json::from_value(live["metadata"]["labels"].clone()).unwrap_or_default();
            match inventory::release_of(&labels) {
                Some(owner) if owner != release => {
                    let why = format!("owned by release {owner}");
                    return Outcome::Refused(manifest.status(namespace, Health::Degraded, why));
                }
                Some(_) => {}
                None if manifest.adopts() => {}
                None => {
                    let why = format!(
                        "{object} exists and was not made by this release{}; Troupe leaves it alone \
                         (delete it, or annotate the manifest with {ADOPT}: \"true\" to take it over)",
                        made_by(live)
                    );
                    return Outcome::Refused(manifest.status(namespace, Health::Degraded, why));
                }
            }
            if self.unchanged(&key, manifest, live) {
                let health = health::of(&resource.group, &resource.kind, live);
                return Outcome::Applied {
                    status: manifest.status(namespace, health.health, health.message),
                    key,
                    object: live.clone(),
                };
            }
        }
        let applied = match self.patch(manifest, resource, namespace).await {
            Err(source) if immutable(&source) && manifest.replaces_on_immutable(resource) => {
                self.replace(manifest, resource, namespace).await
            }
            other => other.map_err(|source| {
                if !namespace_missing(&source) {
                    // The kind may have gone (a CRD removed): look it up again next time.
                    self.forget_kind(&manifest.kind);
                } else {
                    self.forget_namespace(namespace);
                }
                Some(Error::Request {
                    action: "applying",
                    object: object.clone(),
                    source,
                })
            }),
        };
        match applied {
            Ok(value) => {
                let health = health::of(&resource.group, &resource.kind, &value);
                self.remember(key.clone(), manifest, &value);
                Outcome::Applied {
                    status: manifest.status(namespace, health.health, health.message),
                    key,
                    object: value,
                }
            }
            Err(Some(error)) => failed(error),
            Err(None) => Outcome::Failed(manifest.status(
                namespace,
                Health::Progressing,
                format!("replacing {object}: waiting for the old one to be deleted"),
            )),
        }
    }

    fn unchanged(&self, key: &ObjectKey, manifest: &Manifest, live: &Value) -> bool {
        if !live["metadata"]["deletionTimestamp"].is_null() {
            return false;
        }
        let last = self.last_applied.lock().unwrap_or_else(|e| e.into_inner());
        last.get(key).is_some_and(|last| {
            last.hash == manifest.hash && last.projection == project(&manifest.body, live)
        })
    }

    fn remember(&self, key: ObjectKey, manifest: &Manifest, answer: &Value) {
        let last = LastApplied {
            hash: manifest.hash,
            projection: project(&manifest.body, answer),
        };
        self.last_applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, last);
    }

    /// Forgets what was applied of an object, so the next apply sends it.
    pub(super) fn forget_applied(&self, key: &ObjectKey) {
        self.last_applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Server-side applies the manifest; the object as the API server answered.
    async fn patch(
        &self,
        manifest: &Manifest,
        resource: &ApiResource,
        namespace: &str,
    ) -> Result<Value, kube::Error> {
        let mut body = manifest.body.clone();
        if let Some(metadata) = body["metadata"].as_object_mut() {
            if namespace.is_empty() {
                metadata.remove("namespace");
            } else {
                metadata.insert("namespace".into(), Value::String(namespace.to_string()));
            }
        }
        let mut params = PatchParams::apply(MANAGER);
        if manifest.forces() {
            params = params.force();
        }
        let answer = self
            .api(resource, namespace)
            .patch(&manifest.name, &params, &Patch::Apply(&body))
            .await?;
        let value = to_value(&answer);
        self.cache.kind(resource).wrote(answer);
        Ok(value)
    }

    /// Deletes the object in the foreground, waits for it to go, and applies the manifest
    /// anew. `Err(None)` when it is still going after [`REPLACE_WAIT`].
    async fn replace(
        &self,
        manifest: &Manifest,
        resource: &ApiResource,
        namespace: &str,
    ) -> Result<Value, Option<Error>> {
        let object = describe_object(&resource.kind, namespace, &manifest.name);
        tracing::info!(object = %object, "replacing: a field that changed is immutable");
        let api = self.api(resource, namespace);
        let request = |action, source| {
            Some(Error::Request {
                action,
                object: object.clone(),
                source,
            })
        };
        match api
            .delete(&manifest.name, &DeleteParams::foreground())
            .await
        {
            Ok(_) => {}
            Err(e) if super::not_found(&e) => {}
            Err(e) => return Err(request("replacing", e)),
        }
        let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
        let mut pause = Duration::from_millis(50);
        loop {
            match api.get_opt(&manifest.name).await {
                Ok(None) => break,
                Ok(Some(_)) if tokio::time::Instant::now() >= deadline => return Err(None),
                Ok(Some(_)) => {}
                Err(e) => return Err(request("reading", e)),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        self.patch(manifest, resource, namespace)
            .await
            .map_err(|e| request("applying", e))
    }
}

/// `, made by kubectl` from the object's field managers, when it names any.
fn made_by(object: &Value) -> String {
    let managers: Vec<&str> = object["metadata"]["managedFields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f["manager"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if managers.is_empty() {
        String::new()
    } else {
        format!(" (managed by {})", managers.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_projection_keeps_the_fields_the_agent_sets_as_the_server_has_them() {
        let shape = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let live = json!({"spec": {"replicas": 3, "paused": false,
            "ports": [{"port": 80, "protocol": "TCP"}]}, "status": {"ready": 1}});
        assert_eq!(
            project(&shape, &live),
            json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}})
        );
        // A field gone is null; a list of another length is taken whole.
        let gone = json!({"spec": {"ports": []}});
        assert_eq!(
            project(&shape, &gone),
            json!({"spec": {"replicas": null, "ports": []}})
        );
    }
}

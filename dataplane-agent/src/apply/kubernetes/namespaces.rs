//! The namespaces a release's objects go to.
//!
//! Before the first object of a namespace is applied, the agent makes sure the namespace
//! exists: one that exists is used as it is, whoever made it; a missing one is created,
//! labelled `agent.troupe.dev/created-namespace=true` and with the tenant, project and
//! environment labels (`troupe.dev/namespace`, `troupe.dev/project`,
//! `troupe.dev/environment`) of the object that needed it. Namespaces known to exist are
//! remembered; an apply refused for a missing namespace forgets it, so the retry creates it.
//!
//! When a release is removed, a namespace it used is deleted only if the agent created it,
//! no other release's object is in it, and it holds nothing else: no ConfigMap, Secret,
//! Service, ServiceAccount, PersistentVolumeClaim or Pod besides what Kubernetes puts in
//! every namespace (`kube-root-ca.crt`, the `default` ServiceAccount and its token), objects
//! owned by another object, and the release's own objects on their way out. Kinds the agent
//! may not list are not looked at.

use std::collections::BTreeSet;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{Map, json};

use super::KubeApplier;
use super::inventory::{self, CREATED_NAMESPACE_LABEL, MANAGED_BY_LABEL, MANAGER};
use super::object::Manifest;
use crate::apply::Error;

/// The labels of an object that a namespace created for it carries too.
const COPIED_LABELS: [&str; 3] = [
    "troupe.dev/namespace",
    "troupe.dev/project",
    "troupe.dev/environment",
];

/// What is looked at before a namespace the agent created is deleted: kind and plural.
const CONTENTS: [(&str, &str); 6] = [
    ("ConfigMap", "configmaps"),
    ("Secret", "secrets"),
    ("Service", "services"),
    ("ServiceAccount", "serviceaccounts"),
    ("PersistentVolumeClaim", "persistentvolumeclaims"),
    ("Pod", "pods"),
];

fn namespaces() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Namespace"), "namespaces")
}

impl KubeApplier {
    fn known_namespaces(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.namespaces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that `namespace` exists (a Namespace of a release was just applied).
    pub(super) fn namespace_exists(&self, namespace: &str) {
        self.known_namespaces().insert(namespace.to_string());
    }

    /// Forgets that `namespace` exists: someone deleted it.
    pub(super) fn forget_namespace(&self, namespace: &str) {
        self.known_namespaces().remove(namespace);
    }

    /// Makes sure `namespace`, where `manifest`'s object goes, exists.
    pub(super) async fn ensure_namespace(
        &self,
        namespace: &str,
        manifest: &Manifest,
    ) -> Result<(), Error> {
        if self.known_namespaces().contains(namespace) {
            return Ok(());
        }
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &namespaces());
        let request = |action, source| Error::Request {
            action,
            object: format!("Namespace {namespace}"),
            source,
        };
        if api
            .get_metadata_opt(namespace)
            .await
            .map_err(|e| request("reading", e))?
            .is_none()
        {
            let mut labels = Map::new();
            labels.insert(CREATED_NAMESPACE_LABEL.into(), "true".into());
            labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
            for key in COPIED_LABELS {
                if let Some(value) = manifest.body["metadata"]["labels"].get(key) {
                    labels.insert(key.into(), value.clone());
                }
            }
            let body = json!({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": namespace, "labels": labels}});
            tracing::info!(%namespace, "creating the namespace");
            api.patch(
                namespace,
                &PatchParams::apply(MANAGER),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| request("creating", e))?;
        }
        self.namespace_exists(namespace);
        Ok(())
    }

    /// Deletes the namespaces of `used` that the agent created for objects and that nothing
    /// else uses, now that `release` is gone.
    pub(super) async fn collect_namespaces(
        &self,
        release: &str,
        used: &BTreeSet<String>,
    ) -> Result<(), Error> {
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &namespaces());
        for namespace in used {
            let request = |action, source| Error::Request {
                action,
                object: format!("Namespace {namespace}"),
                source,
            };
            let Some(found) = api
                .get_metadata_opt(namespace)
                .await
                .map_err(|e| request("reading", e))?
            else {
                continue;
            };
            let created = found
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CREATED_NAMESPACE_LABEL))
                .is_some_and(|v| v == "true");
            if !created
                || self
                    .cache
                    .all()
                    .iter()
                    .any(|k| k.used_in(namespace, release))
                || self.holds_something(release, namespace).await
            {
                continue;
            }
            tracing::info!(%namespace, "deleting the namespace the agent created: nothing uses it");
            match api.delete(namespace, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if super::not_found(&e) => {}
                Err(e) => return Err(request("deleting", e)),
            }
            self.forget_namespace(namespace);
        }
        Ok(())
    }

    /// Whether `namespace` holds something that is not `release`'s on its way out nor put
    /// there by Kubernetes.
    async fn holds_something(&self, release: &str, namespace: &str) -> bool {
        for (kind, plural) in CONTENTS {
            let resource =
                ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", kind), plural);
            let api =
                Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource);
            let listed = match api.list_metadata(&ListParams::default().match_any()).await {
                Ok(listed) => listed,
                // Not allowed to look, or not served: nothing the agent could tell about.
                Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => continue,
                Err(e) => {
                    tracing::warn!(%namespace, kind, error = %e, "cannot tell what the namespace holds; keeping it");
                    return true;
                }
            };
            let foreign = listed.items.iter().any(|o| {
                let meta = &o.metadata;
                let name = meta.name.as_deref().unwrap_or_default();
                let system = (kind == "ConfigMap" && name == "kube-root-ca.crt")
                    || (kind == "ServiceAccount" && name == "default")
                    || (kind == "Secret" && name.starts_with("default-token-"));
                let owned = meta
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| !o.is_empty());
                let leaving = meta.deletion_timestamp.is_some()
                    || meta
                        .labels
                        .as_ref()
                        .and_then(inventory::release_of)
                        .as_deref()
                        == Some(release);
                !(system || owned || leaving)
            });
            if foreign {
                return true;
            }
        }
        false
    }
}

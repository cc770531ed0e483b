//! The binding controller: each ReleaseBinding whose state is Active and which names a
//! release is rendered (release + environment + data plane + the binding's overrides) into a
//! Release of the same name, holding the final manifests. A binding that cannot be rendered
//! gets a `Rendered=False` condition with the full message, and its Release is left as it was.
//! An `Undeploy` binding has no Release.
//!
//! The binding's status also says where the component's endpoints are reached
//! (`status.endpoints`) and how its workload's connections resolved: `resolvedConnections`,
//! `pendingConnections` with the reason, and the `ConnectionsResolved` condition. A pending
//! connection does not stop the render; its environment variables are left out until it
//! resolves.
//!
//! Level-triggered: every binding is reconciled at start, and again whenever it, its
//! environment or that environment's data plane changes (their spec, not their status), and
//! when the binding of a component it connects to changes (the controller remembers who
//! connects to whom, and which bindings sit in which environment). Rendering is
//! deterministic, so re-rendering unchanged inputs writes nothing (no new revision).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::queue::Queue;
use super::{WORKERS, follow, set_condition};
use crate::agents::status::rollup_binding;
use crate::releases::{Releases, RenderRequest};
use crate::resources::{Error, Resources, WatchEventType};

/// A component in one environment: `(namespace, environment, project, component)`.
type Placement = (String, String, String, String);

/// Renders ReleaseBindings into Releases.
pub struct BindingController {
    resources: Arc<Resources>,
    releases: Arc<Releases>,
    /// For each connection target, the bindings whose workload connects to it.
    consumers: Mutex<HashMap<Placement, BTreeSet<ObjectKey>>>,
    /// The generation last seen of each environment and data plane: their status changes
    /// (an agent connecting, a heartbeat) render nothing differently.
    seen: Mutex<HashMap<ObjectKey, i64>>,
    /// Which bindings sit in which environment, and which data plane each environment uses,
    /// so a change to either re-renders only the bindings it reaches.
    placements: Mutex<Placements>,
}

/// `(namespace, environment)`.
type EnvKey = (String, String);

#[derive(Default)]
struct Placements {
    bindings: HashMap<EnvKey, BTreeSet<ObjectKey>>,
    environment_of: HashMap<ObjectKey, EnvKey>,
    plane_of: HashMap<EnvKey, ObjectKey>,
}

impl Placements {
    fn place(&mut self, binding: ObjectKey, environment: Option<EnvKey>) {
        if let Some(old) = self.environment_of.remove(&binding)
            && let Some(set) = self.bindings.get_mut(&old)
        {
            set.remove(&binding);
        }
        if let Some(env) = environment {
            self.bindings
                .entry(env.clone())
                .or_default()
                .insert(binding.clone());
            self.environment_of.insert(binding, env);
        }
    }

    fn in_environment(&self, env: &EnvKey) -> Vec<ObjectKey> {
        self.bindings
            .get(env)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn on_plane(&self, plane: &ObjectKey) -> Vec<ObjectKey> {
        self.plane_of
            .iter()
            .filter(|(_, p)| *p == plane)
            .flat_map(|(env, _)| self.in_environment(env))
            .collect()
    }
}

impl BindingController {
    /// A controller over `resources`.
    pub fn new(resources: Arc<Resources>, releases: Arc<Releases>) -> Self {
        Self {
            resources,
            releases,
            consumers: Mutex::default(),
            seen: Mutex::default(),
            placements: Mutex::default(),
        }
    }

    /// Runs until the event stream ends (the server stops).
    pub async fn run(self) {
        let kinds = vec![
            // Not ComponentRelease: releases never change, and a binding can only name one
            // that exists.
            Kind::ReleaseBinding,
            Kind::Environment,
            Kind::DataPlane,
            Kind::ClusterDataPlane,
        ];
        let this = Arc::new(self);
        let queue = Arc::new(Queue::default());
        let worker = this.clone();
        queue.spawn_workers(WORKERS, move |key| {
            let this = worker.clone();
            async move {
                if let Err(e) = this.reconcile(&key).await {
                    tracing::warn!(binding = %key, error = %e, "reconcile failed");
                }
            }
        });
        let resources = this.resources.clone();
        follow(&resources, "binding", kinds, |kind, object| {
            let (this, queue) = (this.clone(), queue.clone());
            async move {
                for key in this.affected(kind, object).await {
                    queue.add(key);
                }
            }
        })
        .await;
    }

    /// The bindings a change can affect.
    async fn affected(&self, event: WatchEventType, object: Object) -> Vec<ObjectKey> {
        let key = object.key();
        let deleted = event == WatchEventType::Deleted;
        match &object {
            Object::ReleaseBinding(binding) => {
                let environment = binding
                    .spec
                    .as_ref()
                    .filter(|_| !deleted)
                    .map(|s| (key.namespace.clone(), s.environment.clone()));
                self.placements().place(key.clone(), environment);
                // The controller's own status write comes back as a change with the
                // generation already observed: only the binding's consumers need a look.
                let generation = binding.metadata.as_ref().map_or(0, |m| m.generation);
                let observed = binding
                    .status
                    .as_ref()
                    .map_or(-1, |s| s.observed_generation);
                let mut targets = if event == WatchEventType::Modified && observed == generation {
                    vec![]
                } else {
                    vec![key.clone()]
                };
                if let Some(placement) = placement(&key.namespace, binding) {
                    let consumers = self
                        .consumers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(found) = consumers.get(&placement) {
                        targets.extend(found.iter().filter(|k| **k != key).cloned());
                    }
                }
                targets
            }
            Object::Environment(env) => {
                let env_key = (key.namespace.clone(), key.name.clone());
                let plane = env
                    .spec
                    .as_ref()
                    .and_then(|s| s.data_plane_ref.as_ref())
                    .map(|r| r.key(&key.namespace));
                let mut placements = self.placements();
                match plane.filter(|_| !deleted) {
                    Some(plane) => placements.plane_of.insert(env_key.clone(), plane),
                    None => placements.plane_of.remove(&env_key),
                };
                if self.spec_changed(event, &object) {
                    placements.in_environment(&env_key)
                } else {
                    vec![]
                }
            }
            _ if !self.spec_changed(event, &object) => vec![],
            _ => self.placements().on_plane(&key),
        }
    }

    fn placements(&self) -> std::sync::MutexGuard<'_, Placements> {
        self.placements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// False for a change that left the object's spec as the controller last saw it.
    fn spec_changed(&self, event: WatchEventType, object: &Object) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let key = object.key();
        if event == WatchEventType::Deleted {
            seen.remove(&key);
            return true;
        }
        let generation = object.meta().generation;
        seen.insert(key, generation) != Some(generation)
    }

    /// Brings the binding's Release and conditions in line with the binding.
    pub async fn reconcile(&self, key: &ObjectKey) -> Result<(), Error> {
        let Object::ReleaseBinding(binding) = (match self.resources.get(key) {
            Ok(o) => o,
            // Deleting a binding deletes its Release with it (owner cascade).
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        }) else {
            return Ok(());
        };
        let spec = binding.spec.clone().unwrap_or_default();
        let generation = binding.metadata.as_ref().map_or(0, |m| m.generation);
        let release_key = ObjectKey::new(Kind::Release, &key.namespace, &key.name);
        let mut status = binding.status.clone().unwrap_or_default();
        self.remember_connections(key, &spec);
        if spec.state == "Undeploy" || spec.release_name.is_empty() {
            let reason = if spec.state == "Undeploy" {
                "Undeployed"
            } else {
                "NoRelease"
            };
            // A Release already waiting for its prune is left to the agent hub.
            let live = self
                .resources
                .get(&release_key)
                .is_ok_and(|r| r.meta().delete_time.is_none());
            if live {
                self.resources.delete(&release_key, 0, false).await?;
            }
            // Nothing runs, so there is nothing to reach and nothing connects.
            status.endpoints.clear();
            status.resolved_connections.clear();
            status.pending_connections.clear();
            status
                .conditions
                .retain(|c| c.r#type != "ConnectionsResolved");
            set_condition(
                &mut status.conditions,
                "Rendered",
                false,
                reason,
                "nothing to render",
                generation,
            );
        } else {
            let owner = spec.owner.clone().unwrap_or_default();
            let rendered = self
                .releases
                .render(RenderRequest {
                    namespace: key.namespace.clone(),
                    component: owner.component_name.clone(),
                    environment: spec.environment.clone(),
                    release: spec.release_name.clone(),
                    type_environment_configs: spec.component_type_environment_configs.clone(),
                    trait_environment_configs: spec.trait_environment_configs.clone(),
                    workload_overrides: spec.workload_overrides.clone(),
                })
                .await;
            match rendered {
                Ok(rendered) => {
                    let connections = rendered.connections;
                    let (resolved, reason, message) = match connections.pending.as_slice() {
                        [] if connections.resolved.is_empty() => (
                            true,
                            "NoConnections",
                            "the workload has no connections".into(),
                        ),
                        [] => (
                            true,
                            "AllConnectionsResolved",
                            format!("{} connection(s) resolved", connections.resolved.len()),
                        ),
                        pending => (
                            false,
                            "ConnectionsPending",
                            pending
                                .iter()
                                .map(|p| format!("{}: {}", p.endpoint, p.reason))
                                .collect::<Vec<_>>()
                                .join("; "),
                        ),
                    };
                    set_condition(
                        &mut status.conditions,
                        "ConnectionsResolved",
                        resolved,
                        reason,
                        &message,
                        generation,
                    );
                    status.endpoints = rendered.endpoints;
                    status.resolved_connections = connections.resolved;
                    status.pending_connections = connections.pending;
                    let release = self.release_object(key, &spec, rendered.manifests)?;
                    self.resources.apply(release, false).await?;
                    let message =
                        format!("rendered {} into Release {}", spec.release_name, key.name);
                    set_condition(
                        &mut status.conditions,
                        "Rendered",
                        true,
                        "Rendered",
                        &message,
                        generation,
                    );
                }
                Err(e) => {
                    set_condition(
                        &mut status.conditions,
                        "Rendered",
                        false,
                        "RenderFailed",
                        &e.to_string(),
                        generation,
                    );
                }
            }
        }
        status.observed_generation = generation;
        // Merged into the stored status, whose Ready/Progressing/Degraded the agent hub keeps
        // up to date too, then rolled up again from the Release as it is now.
        self.resources
            .update_status(key, move |resources, object| {
                if let Object::ReleaseBinding(stored) = object {
                    let stored_status = stored.status.get_or_insert_default();
                    stored_status.observed_generation = status.observed_generation;
                    stored_status.endpoints = status.endpoints;
                    stored_status.resolved_connections = status.resolved_connections;
                    stored_status.pending_connections = status.pending_connections;
                    for owned in ["Rendered", "ConnectionsResolved"] {
                        let computed = status.conditions.iter().find(|c| c.r#type == owned);
                        let conditions = &mut stored_status.conditions;
                        match (computed, conditions.iter().position(|c| c.r#type == owned)) {
                            (Some(c), Some(i)) => conditions[i] = c.clone(),
                            (Some(c), None) => conditions.push(c.clone()),
                            (None, Some(i)) => {
                                conditions.remove(i);
                            }
                            (None, None) => {}
                        }
                    }
                }
                rollup_binding(resources, object);
            })
            .await?;
        Ok(())
    }

    /// Records which components the binding's release connects to, so a change to their
    /// bindings re-renders this one.
    fn remember_connections(&self, key: &ObjectKey, spec: &pb::ReleaseBindingSpec) {
        let release = ObjectKey::new(Kind::ComponentRelease, &key.namespace, &spec.release_name);
        let Ok(Object::ComponentRelease(release)) = self.resources.get(&release) else {
            return;
        };
        let release = release.spec.unwrap_or_default();
        let project = release.owner.unwrap_or_default().project_name;
        let connections = release.workload.map(|w| w.connections).unwrap_or_default();
        let mut consumers = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for c in connections {
            let target_project = if c.project.is_empty() {
                project.clone()
            } else {
                c.project
            };
            consumers
                .entry((
                    key.namespace.clone(),
                    spec.environment.clone(),
                    target_project,
                    c.component,
                ))
                .or_default()
                .insert(key.clone());
        }
    }

    fn release_object(
        &self,
        key: &ObjectKey,
        spec: &pb::ReleaseBindingSpec,
        manifests: Vec<serde_json::Value>,
    ) -> Result<Object, Error> {
        let env_key = ObjectKey::new(Kind::Environment, &key.namespace, &spec.environment);
        let environment = self.resources.get_as::<pb::Environment>(&env_key)?;
        let data_plane_ref = environment.spec.and_then(|s| s.data_plane_ref).map(|r| {
            let kind = r.key(&key.namespace).kind.name().to_string();
            pb::DataPlaneRef { kind, name: r.name }
        });
        let content = serde_json::Value::Array(manifests.clone()).to_string();
        let content_hash = troupe_common::agent::sha256_hex(content.as_bytes());
        let resources = manifests
            .into_iter()
            .map(|m| {
                let id = format!(
                    "{}/{}",
                    m["kind"].as_str().unwrap_or_default(),
                    m["metadata"]["name"].as_str().unwrap_or_default()
                );
                let object = serde_json::from_value(m).map_err(|e| Error::Render {
                    object: key.clone(),
                    message: format!("rendered object {id} is not a JSON object: {e}"),
                })?;
                Ok(pb::ReleaseResource {
                    id,
                    object: Some(object),
                })
            })
            .collect::<Result<_, Error>>()?;
        let owner = spec.owner.clone();
        let labels = [
            (
                crate::releases::LABEL_PROJECT.to_string(),
                owner.clone().unwrap_or_default().project_name,
            ),
            (
                crate::releases::LABEL_COMPONENT.to_string(),
                owner.clone().unwrap_or_default().component_name,
            ),
        ];
        Ok(Object::Release(pb::Release {
            metadata: Some(pb::ObjectMeta {
                name: key.name.clone(),
                namespace: key.namespace.clone(),
                labels: labels.into(),
                ..Default::default()
            }),
            spec: Some(pb::ReleaseSpec {
                owner,
                environment: spec.environment.clone(),
                release_binding: key.name.clone(),
                data_plane_ref,
                resources,
                content_hash,
            }),
            ..Default::default()
        }))
    }
}

/// Where a binding places its component.
fn placement(namespace: &str, binding: &pb::ReleaseBinding) -> Option<Placement> {
    let spec = binding.spec.as_ref()?;
    let owner = spec.owner.as_ref()?;
    Some((
        namespace.to_string(),
        spec.environment.clone(),
        owner.project_name.clone(),
        owner.component_name.clone(),
    ))
}

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
//! environment, that environment's data plane or its project changes (their spec, not their
//! status), when the binding of a component it connects to changes, and when the components
//! connecting to it change (its network policy admits them). Who connects to whom is kept by
//! [`Releases`] (learnt from every binding before the first render, then from the watch);
//! the controller remembers which bindings sit in which environment. Rendering is
//! deterministic, so re-rendering unchanged inputs writes nothing (no new revision).
//!
//! The controller is the one writer of binding status. The outcome of a render and the
//! roll-up of `Ready`, `Progressing` and `Degraded` from the binding's Release are computed by
//! [`crate::status::binding`]; when only a Release's status changed (an agent reported, through
//! whichever server holds its session), the controller sees the write in its watch and queues
//! a roll-up ([`rollups`]) on the render queue (a binding is worked on by one worker at a time,
//! and a queued render includes the roll-up).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::queue::Queue;
use super::{WORKERS, follow};

mod rollups;
use crate::releases::{Placement, Releases, RenderRequest, placement};
use crate::resources::{Error, Origin, Resources, WatchEventType};
use crate::status;

/// Renders ReleaseBindings into Releases.
pub struct BindingController {
    resources: Arc<Resources>,
    releases: Arc<Releases>,
    /// The generation last seen of each environment and data plane: their status changes
    /// (an agent connecting, a heartbeat) render nothing differently.
    seen: Mutex<HashMap<ObjectKey, i64>>,
    /// Which bindings sit in which environment, and which data plane each environment uses,
    /// so a change to either re-renders only the bindings it reaches.
    placements: Mutex<Placements>,
    /// Bindings to render or roll up; each waits at most once.
    queue: Arc<Queue>,
    /// Queued bindings that need a render, not just a roll-up.
    renders: Mutex<HashSet<ObjectKey>>,
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
    fn place(&mut self, binding: ObjectKey, placement: Option<&Placement>) {
        if let Some(old) = self.environment_of.remove(&binding)
            && let Some(set) = self.bindings.get_mut(&old)
        {
            set.remove(&binding);
        }
        if let Some((namespace, environment, _, _)) = placement {
            let env = (namespace.clone(), environment.clone());
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
            seen: Mutex::default(),
            placements: Mutex::default(),
            queue: Arc::new(Queue::new("binding")),
            renders: Mutex::default(),
        }
    }

    /// The controller's work queue, for its [`Queue::stats`].
    pub fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
    }

    /// Runs for as long as the runtime runs (see [`follow`]); a failed reconcile is retried
    /// by the queue with backoff.
    pub async fn run(self) {
        let kinds = vec![
            // Not ComponentRelease: releases never change, and a binding can only name one
            // that exists.
            Kind::ReleaseBinding,
            Kind::Environment,
            Kind::DataPlane,
            Kind::ClusterDataPlane,
            // A project's egress ceiling goes into the policies of its components.
            Kind::Project,
        ];
        let this = Arc::new(self);
        // Every binding is reconciled (and rolled up) from the listing below; status written
        // after this revision is followed from the watch.
        tokio::spawn(
            this.clone()
                .follow_release_status(this.resources.revision()),
        );
        // Who connects to whom must be known before the first render: a target rendered
        // without its consumers would shut them out until their bindings are seen.
        this.learn_bindings().await;
        let worker = this.clone();
        this.queue.spawn_workers(WORKERS, move |key| {
            let this = worker.clone();
            async move {
                let render = this.renders().remove(&key);
                let result = if render {
                    this.reconcile(&key).await
                } else {
                    this.roll_up(&key).await
                };
                if let Err(e) = &result {
                    if render {
                        // The retry renders, whatever is asked of it meanwhile.
                        this.renders().insert(key.clone());
                    }
                    this.record_failure(&key, e).await;
                }
                result
            }
        });
        let resources = this.resources.clone();
        follow(&resources, "binding", kinds, |kind, object| {
            let this = this.clone();
            async move {
                for key in this.affected(kind, object).await {
                    // Marked before it is queued, so the worker that takes it renders.
                    this.renders().insert(key.clone());
                    this.queue.add(key);
                }
            }
        })
        .await;
    }

    /// Records where every binding places its component and what its release connects to,
    /// until one listing succeeds (the watch that follows sees the same bindings again).
    async fn learn_bindings(&self) {
        let mut delay = super::FIRST_REWATCH;
        loop {
            match self
                .resources
                .list(Kind::ReleaseBinding, "", &Default::default(), 0, "")
                .await
            {
                Ok(page) => {
                    for object in page.items {
                        if let Object::ReleaseBinding(binding) = &object {
                            let key = object.key();
                            let at = placement(&key.namespace, binding);
                            self.placements().place(key.clone(), at.as_ref());
                            self.releases.note_binding(&key, Some(binding));
                        }
                    }
                    self.releases.bindings_noted();
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?delay, "binding controller: could not list the bindings");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(super::MAX_REWATCH);
                }
            }
        }
    }

    fn renders(&self) -> std::sync::MutexGuard<'_, HashSet<ObjectKey>> {
        self.renders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bindings a change can affect.
    async fn affected(&self, event: WatchEventType, object: Object) -> Vec<ObjectKey> {
        let key = object.key();
        let deleted = event == WatchEventType::Deleted;
        match &object {
            Object::ReleaseBinding(binding) => {
                let at = placement(&key.namespace, binding).filter(|_| !deleted);
                self.placements().place(key.clone(), at.as_ref());
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
                    let consumers = self.releases.consumer_bindings(&placement);
                    targets.extend(consumers.into_iter().filter(|k| *k != key));
                }
                if deleted {
                    // The targets it connected to: their policies no longer admit it. (A
                    // live binding's connections are noted when it is reconciled, off this
                    // loop: reading its release is not free.)
                    let changed = self.releases.note_binding(&key, None);
                    targets.extend(self.bindings_at(&key, &changed));
                } else {
                    self.releases.place_binding(&key, binding);
                }
                targets
            }
            Object::Project(_) if self.spec_changed(event, &object) => {
                self.releases.bindings_of_project(&key.namespace, &key.name)
            }
            Object::Project(_) => vec![],
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

    /// Brings the binding's Release and status in line with the binding.
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
        let mut status = binding.status.clone().unwrap_or_default();
        match status::binding::not_rendering(&spec) {
            Some(reason) => {
                self.remove_release(key).await?;
                status::binding::not_rendered(&mut status, reason, generation);
            }
            None => self.render(key, &spec, &mut status, generation).await?,
        }
        // The targets whose consumers changed render again: their policies admit them.
        let changed = self.releases.note_binding(key, Some(&binding));
        for target in self.bindings_at(key, &changed) {
            // Marked before it is queued, so the worker that takes it renders.
            self.renders().insert(target.clone());
            self.queue.add(target);
        }
        status.observed_generation = generation;
        self.write_status(key, status).await
    }

    /// The bindings at `placements`, but `key`.
    fn bindings_at(&self, key: &ObjectKey, placements: &BTreeSet<Placement>) -> Vec<ObjectKey> {
        let mut found = self.releases.bindings_placed_at(placements);
        found.retain(|k| k != key);
        found
    }

    /// Deletes the binding's Release, unless it already waits for its prune (the agent hub
    /// finishes that).
    async fn remove_release(&self, key: &ObjectKey) -> Result<(), Error> {
        let release_key = ObjectKey::new(Kind::Release, &key.namespace, &key.name);
        let live = self
            .resources
            .get(&release_key)
            .is_ok_and(|r| r.meta().delete_time.is_none());
        if live {
            self.resources
                .delete(&release_key, Origin::ControlPlane, 0, false)
                .await?;
        }
        Ok(())
    }

    /// Renders the binding into its Release and records the outcome in `status`. A render
    /// that fails is recorded, not returned: the Release is left as it was.
    async fn render(
        &self,
        key: &ObjectKey,
        spec: &pb::ReleaseBindingSpec,
        status: &mut pb::ReleaseBindingStatus,
        generation: i64,
    ) -> Result<(), Error> {
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
        let rendered = match rendered {
            Ok(rendered) => rendered,
            Err(e) => {
                status::binding::render_failed(status, &e.to_string(), generation);
                return Ok(());
            }
        };
        let connections = rendered.connections;
        status::binding::connections(
            status,
            connections.resolved,
            connections.pending,
            generation,
        );
        status::binding::network(status, &rendered.unenforced, generation);
        status.endpoints = rendered.endpoints;
        let release = self.release_object(key, spec, rendered.manifests)?;
        self.resources
            .apply(release, Origin::ControlPlane, false)
            .await?;
        status::binding::rendered(status, &spec.release_name, &key.name, generation);
        Ok(())
    }

    /// Merges what the render computed into the stored status, then rolls the binding up
    /// from its Release as it is now.
    async fn write_status(
        &self,
        key: &ObjectKey,
        computed: pb::ReleaseBindingStatus,
    ) -> Result<(), Error> {
        self.resources
            .update_status(key, move |resources, object| {
                if let Object::ReleaseBinding(stored) = object {
                    status::binding::merge_render(
                        stored.status.get_or_insert_default(),
                        computed.clone(),
                    );
                    roll_up(resources, stored);
                }
            })
            .await?;
        Ok(())
    }

    /// Shows a failed reconcile on the binding (`Rendered=False`, reason `ReconcileFailed`,
    /// with the error and when it is tried again). Best effort: when the binding's status
    /// cannot be written either, the queue's log line is all there is.
    async fn record_failure(&self, key: &ObjectKey, error: &Error) {
        let retry = self.queue.next_retry(key);
        let error = error.to_string();
        let result = self
            .resources
            .update_status(key, move |resources, object| {
                if let Object::ReleaseBinding(binding) = object {
                    let generation = binding.metadata.as_ref().map_or(0, |m| m.generation);
                    let status = binding.status.get_or_insert_default();
                    status::binding::reconcile_failed(
                        status,
                        &error,
                        retry.attempt,
                        retry.delay,
                        generation,
                    );
                    roll_up(resources, binding);
                }
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(binding = %key, error = %e, "could not record the failed reconcile");
        }
    }

    /// Rolls the binding's `Ready`, `Progressing` and `Degraded` up from its Release's
    /// status, rendering nothing. A binding that is gone has nothing to roll up.
    async fn roll_up(&self, key: &ObjectKey) -> Result<(), Error> {
        let result = self
            .resources
            .update_status(key, |resources, object| {
                if let Object::ReleaseBinding(binding) = object {
                    roll_up(resources, binding);
                }
            })
            .await;
        match result {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
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

/// Rolls `binding` up from its Release as stored now (read in the same write, so the two agree).
fn roll_up(resources: &Resources, binding: &mut pb::ReleaseBinding) {
    let meta = binding.metadata.clone().unwrap_or_default();
    let key = ObjectKey::new(Kind::Release, &meta.namespace, &meta.name);
    let release = match resources.get(&key) {
        Ok(Object::Release(release)) => Some(release),
        _ => None,
    };
    status::binding::roll_up(binding, release.as_ref());
}

//! Releases: cutting immutable ComponentReleases from components, and rendering what a
//! release becomes in an environment.
//!
//! A release is named by its content, so cutting one from unchanged inputs finds the release
//! already there instead of making a second. Each release also carries a per-component
//! sequence number (annotation `troupe.dev/sequence`) for people.

pub mod bind;
pub mod connections;
mod network;
mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey, Policy};

use crate::render::component::{Plan, RenderError, RenderInput};
use crate::render::network::{Egress, GatewayPeer, NetworkInput, Provider};
use crate::resources::{Error, Origin, Resources};
use connections::Resolution;
pub use network::{Placement, placement};

/// What to render: a component (its current state, or one of its releases) in an environment,
/// with the overrides a ReleaseBinding would carry.
#[derive(Debug, Clone, Default)]
pub struct RenderRequest {
    /// Namespace of the component.
    pub namespace: String,
    /// The component.
    pub component: String,
    /// The environment.
    pub environment: String,
    /// A ComponentRelease of the component; empty renders its current state.
    pub release: String,
    /// Values for the ComponentType's `environmentConfigs`.
    pub type_environment_configs: Option<pbjson_types::Struct>,
    /// Values for trait instances' `environmentConfigs`, by instance name.
    pub trait_environment_configs: std::collections::HashMap<String, pbjson_types::Struct>,
    /// Changes to the workload in this environment.
    pub workload_overrides: Option<pb::WorkloadOverrides>,
}

/// What a render produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    /// The Kubernetes objects, in render order.
    pub manifests: Vec<serde_json::Value>,
    /// The release rendered; empty for the component's current state.
    pub release: String,
    /// Where the component's endpoints are reached in the environment.
    pub endpoints: Vec<pb::EndpointStatus>,
    /// How the workload's connections resolved.
    pub connections: Resolution,
    /// Network rules the data plane's provider cannot enforce, each a sentence.
    pub unenforced: Vec<String>,
}

/// Label naming the project an object belongs to.
pub const LABEL_PROJECT: &str = "troupe.dev/project";
/// Label naming the component an object belongs to.
pub const LABEL_COMPONENT: &str = "troupe.dev/component";
/// Annotation holding a release's per-component sequence number.
pub const ANNOTATION_SEQUENCE: &str = "troupe.dev/sequence";

/// The release service.
pub struct Releases {
    resources: Arc<Resources>,
    plans: Arc<PlanCache>,
    /// The connections of releases, for the consumers of a component.
    connections: network::ConnectionCache,
    /// Who connects to whom, as the bindings say (kept by the binding controller).
    consumers: network::ConsumerIndex,
    /// Per namespace and component: the highest release sequence number, and the releases
    /// that may still exist by sequence number (what retention goes through).
    sequences: Mutex<Sequences>,
    /// Told of every render, once set.
    render_observer: OnceLock<RenderObserver>,
}

/// Told how long a render took and whether it succeeded (metrics).
pub type RenderObserver = Arc<dyn Fn(Duration, bool) + Send + Sync>;

type Sequences = HashMap<String, HashMap<String, Cut>>;

/// The releases cut of one component.
#[derive(Default)]
struct Cut {
    highest: u64,
    releases: std::collections::BTreeMap<u64, String>,
}

/// Releases kept per component when its `releaseHistoryLimit` is 0.
pub const DEFAULT_RELEASE_HISTORY: usize = 10;

/// Render plans of releases, by the release's key and uid.
#[derive(Default)]
struct PlanCache {
    plans: Mutex<HashMap<(ObjectKey, String), Arc<Plan>>>,
}

/// Bound on kept plans; past it the cache starts over.
const MAX_PLANS: usize = 4096;

impl PlanCache {
    fn get_or_try(
        &self,
        key: (ObjectKey, String),
        build: impl FnOnce() -> Result<Plan, RenderError>,
    ) -> Result<Arc<Plan>, RenderError> {
        let lock = || self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(plan) = lock().get(&key) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(build()?);
        let mut plans = lock();
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert(key, plan.clone());
        Ok(plan)
    }
}

impl Releases {
    /// Releases over `resources`.
    pub fn new(resources: Arc<Resources>) -> Self {
        Self {
            resources,
            plans: Arc::default(),
            connections: network::ConnectionCache::default(),
            consumers: network::ConsumerIndex::default(),
            sequences: Mutex::default(),
            render_observer: OnceLock::new(),
        }
    }

    /// Tells `observer` how long each render takes from now on (the first observer set
    /// stays).
    pub fn observe_renders(&self, observer: RenderObserver) {
        let _ = self.render_observer.set(observer);
    }

    /// Cuts a release of the component's current state; returns it and whether it is new.
    pub async fn create(&self, namespace: &str, component: &str) -> Result<(Object, bool), Error> {
        let (spec, name) = snapshot::snapshot(&self.resources, namespace, component).await?;
        let key = ObjectKey::new(Kind::ComponentRelease, namespace, &name);
        match self.resources.get(&key) {
            Ok(existing) => return Ok((existing, false)),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let owner = spec.owner.clone().unwrap_or_default();
        let sequence = self.next_sequence(namespace, component).await?;
        let metadata = pb::ObjectMeta {
            name,
            namespace: namespace.to_string(),
            labels: [
                (LABEL_PROJECT.to_string(), owner.project_name.clone()),
                (LABEL_COMPONENT.to_string(), component.to_string()),
            ]
            .into(),
            annotations: [(ANNOTATION_SEQUENCE.to_string(), sequence.to_string())].into(),
            ..Default::default()
        };
        let release = Object::ComponentRelease(pb::ComponentRelease {
            metadata: Some(metadata),
            spec: Some(spec),
            ..Default::default()
        });
        let (release, _) = self
            .resources
            .apply(release, Origin::ControlPlane, false)
            .await?;
        self.note_cut(namespace, component, sequence, &release.meta().name);
        self.retain(namespace, component).await?;
        Ok((release, true))
    }

    /// The release the component's current state makes, cut or not.
    pub async fn latest(
        &self,
        namespace: &str,
        component: &str,
    ) -> Result<pb::LatestRelease, Error> {
        let (spec, name) = snapshot::snapshot(&self.resources, namespace, component).await?;
        Ok(pb::LatestRelease {
            name,
            hash: spec.content_hash,
        })
    }

    /// Removes the component's oldest releases beyond its `releaseHistoryLimit`, except those
    /// a binding or a pending promotion still uses (the store refuses to delete those).
    async fn retain(&self, namespace: &str, component: &str) -> Result<(), Error> {
        let key = ObjectKey::new(Kind::Component, namespace, component);
        let limit = match self.resources.get_as::<pb::Component>(&key) {
            Ok(c) => c.spec.map_or(0, |s| s.release_history_limit),
            Err(_) => return Ok(()),
        };
        let limit = if limit > 0 {
            limit as usize
        } else {
            DEFAULT_RELEASE_HISTORY
        };
        let candidates: Vec<(u64, String)> = {
            let sequences = self.sequences_lock();
            let Some(cut) = sequences.get(namespace).and_then(|c| c.get(component)) else {
                return Ok(());
            };
            let excess = cut.releases.len().saturating_sub(limit);
            cut.releases
                .iter()
                .take(excess)
                .map(|(n, name)| (*n, name.clone()))
                .collect()
        };
        for (sequence, name) in candidates {
            let key = ObjectKey::new(Kind::ComponentRelease, namespace, &name);
            match self
                .resources
                .delete(&key, Origin::ControlPlane, 0, false)
                .await
            {
                Ok(_) | Err(Error::NotFound(_)) => {
                    tracing::debug!(release = %key, "removed by retention");
                    let mut sequences = self.sequences_lock();
                    if let Some(cut) = sequences
                        .get_mut(namespace)
                        .and_then(|c| c.get_mut(component))
                    {
                        cut.releases.remove(&sequence);
                    }
                }
                Err(Error::StillReferenced { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Notes a new release for retention.
    fn note_cut(&self, namespace: &str, component: &str, sequence: u64, name: &str) {
        self.sequences_lock()
            .entry(namespace.to_string())
            .or_default()
            .entry(component.to_string())
            .or_default()
            .releases
            .insert(sequence, name.to_string());
    }

    /// The next sequence number of `component`'s releases. The numbers of a namespace are
    /// read from its releases once, then counted here, so cutting a release never lists every
    /// release of the namespace.
    async fn next_sequence(&self, namespace: &str, component: &str) -> Result<u64, Error> {
        let loaded = self.sequences_lock().contains_key(namespace);
        if !loaded {
            let releases = self
                .resources
                .list(
                    Kind::ComponentRelease,
                    namespace,
                    &Default::default(),
                    0,
                    "",
                )
                .await?;
            let mut cuts: HashMap<String, Cut> = HashMap::new();
            for release in &releases.items {
                let meta = release.meta();
                let (Some(owner), Some(sequence)) = (
                    meta.labels.get(LABEL_COMPONENT),
                    meta.annotations
                        .get(ANNOTATION_SEQUENCE)
                        .and_then(|s| s.parse::<u64>().ok()),
                ) else {
                    continue;
                };
                let cut = cuts.entry(owner.clone()).or_default();
                cut.highest = cut.highest.max(sequence);
                cut.releases.insert(sequence, meta.name.clone());
            }
            self.sequences_lock()
                .entry(namespace.to_string())
                .or_insert(cuts);
        }
        let mut sequences = self.sequences_lock();
        let cut = sequences
            .entry(namespace.to_string())
            .or_default()
            .entry(component.to_string())
            .or_default();
        cut.highest += 1;
        Ok(cut.highest)
    }

    fn sequences_lock(&self) -> std::sync::MutexGuard<'_, Sequences> {
        self.sequences
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records what the release `binding` binds connects to (`None`: the binding is gone),
    /// for the network policies of its targets; returns the placements whose consumers
    /// changed, whose bindings must be rendered again.
    pub fn note_binding(
        &self,
        key: &ObjectKey,
        binding: Option<&pb::ReleaseBinding>,
    ) -> std::collections::BTreeSet<Placement> {
        self.consumers
            .note(&self.connections, &self.resources, key, binding)
    }

    /// Records where `binding` places its component, without reading its release (what it
    /// connects to is noted by [`Releases::note_binding`]).
    pub fn place_binding(&self, key: &ObjectKey, binding: &pb::ReleaseBinding) {
        self.consumers.place(key, binding);
    }

    /// The bindings at any of `placements`.
    pub fn bindings_placed_at(
        &self,
        placements: &std::collections::BTreeSet<Placement>,
    ) -> Vec<ObjectKey> {
        self.consumers.placed_at(placements)
    }

    /// The bindings of the components of `project` (in `namespace`).
    pub fn bindings_of_project(&self, namespace: &str, project: &str) -> Vec<ObjectKey> {
        self.consumers.of_project(namespace, project)
    }

    /// Says that every binding has been noted: renders find the targets of connections in
    /// the index from now on, instead of listing the namespace's bindings.
    pub fn bindings_noted(&self) {
        self.consumers.complete();
    }

    /// The ReleaseBindings in `environment` of the components `workload` connects to: from
    /// the index once it is complete, else listed.
    async fn target_bindings(
        &self,
        namespace: &str,
        environment: &str,
        project: &str,
        workload: &pb::WorkloadTemplate,
    ) -> Result<Vec<pb::ReleaseBinding>, Error> {
        if workload.connections.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys = std::collections::BTreeSet::new();
        for c in &workload.connections {
            let target_project = if c.project.is_empty() {
                project
            } else {
                &c.project
            };
            let at = (
                namespace.to_string(),
                environment.to_string(),
                target_project.to_string(),
                c.component.clone(),
            );
            match self.consumers.bindings_at(&at) {
                Some(found) => keys.extend(found),
                None => {
                    let mut all: Vec<pb::ReleaseBinding> = self
                        .resources
                        .list_as(namespace, &Default::default())
                        .await?;
                    all.retain(|b| {
                        b.spec
                            .as_ref()
                            .is_some_and(|s| s.environment == environment)
                    });
                    return Ok(all);
                }
            }
        }
        let mut bindings = Vec::with_capacity(keys.len());
        for key in keys {
            match self.resources.get_as::<pb::ReleaseBinding>(&key) {
                Ok(binding) => bindings.push(binding),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(bindings)
    }

    /// The bindings whose release connects to the component at `placement`: they render
    /// again when its binding changes.
    pub fn consumer_bindings(&self, placement: &Placement) -> Vec<ObjectKey> {
        self.consumers.consumer_bindings(placement)
    }

    /// The release spec a render renders (the named release, or the component's current
    /// state) and the key its plan is kept under: releases never change, so a plan is kept,
    /// keyed by the object's uid so a release deleted and written again under the same name
    /// is planned again.
    async fn release_spec(
        &self,
        request: &RenderRequest,
    ) -> Result<(pb::ComponentReleaseSpec, Option<(ObjectKey, String)>), Error> {
        let ns = request.namespace.as_str();
        if request.release.is_empty() {
            let spec = snapshot::snapshot(&self.resources, ns, &request.component)
                .await?
                .0;
            Ok((spec, None))
        } else {
            let key = ObjectKey::new(Kind::ComponentRelease, ns, &request.release);
            let release = self.resources.get_as::<pb::ComponentRelease>(&key)?;
            let spec = release.spec.unwrap_or_default();
            let owner = spec.owner.clone().unwrap_or_default();
            if owner.component_name != request.component {
                return Err(Error::invalid(
                    &key,
                    "spec.owner.componentName",
                    format!(
                        "the release belongs to component {:?}, not {:?}",
                        owner.component_name, request.component
                    ),
                ));
            }
            let uid = release.metadata.unwrap_or_default().uid;
            // Read anyway: what it connects to is kept for the index of consumers.
            self.connections.keep(&key, &spec);
            Ok((spec, Some((key, uid))))
        }
    }

    /// Renders a component in an environment without storing anything.
    pub async fn render(&self, request: RenderRequest) -> Result<Rendered, Error> {
        let ns = request.namespace.as_str();
        let component_key = ObjectKey::new(Kind::Component, ns, &request.component);
        let (spec, plan_key) = self.release_spec(&request).await?;
        let env_key = ObjectKey::new(Kind::Environment, ns, &request.environment);
        let environment = self.resources.get_as::<pb::Environment>(&env_key)?;
        let plane = self.data_plane(ns, &environment)?;
        let owner = spec.owner.clone().unwrap_or_default();
        let workload = spec.workload.clone().unwrap_or_default();
        let bindings = self
            .target_bindings(ns, &request.environment, &owner.project_name, &workload)
            .await?;
        let resolution = connections::resolve(
            &self.resources,
            ns,
            (&owner.project_name, &request.environment),
            &bindings,
            &workload.connections,
        );
        let egress = network::egress_rules(
            &self.resources,
            ns,
            &owner.project_name,
            spec.component_profile
                .as_ref()
                .and_then(|p| p.egress.as_ref()),
            &component_key,
        )?
        .map(|rules| Egress {
            destinations: resolution.destinations.clone(),
            rules,
        });
        let consumers = self.consumers.consumers(&(
            ns.to_string(),
            request.environment.clone(),
            owner.project_name.clone(),
            owner.component_name.clone(),
        ));
        let resources = self.resources.clone();
        let plans = self.plans.clone();
        let started = Instant::now();
        let rendered = tokio::task::spawn_blocking(move || {
            let to_error = |e: RenderError| Error::Render {
                object: component_key.clone(),
                message: e.to_string(),
            };
            let plan = match plan_key {
                None => Arc::new(Plan::new(resources.schemas(), &spec).map_err(to_error)?),
                Some(key) => plans
                    .get_or_try(key, || Plan::new(resources.schemas(), &spec))
                    .map_err(to_error)?,
            };
            let network = NetworkInput {
                provider: plane.provider,
                tenant: &request.namespace,
                project: &owner.project_name,
                component: &owner.component_name,
                environment: &request.environment,
                endpoints: &workload.endpoints,
                gateways: &plane.gateways,
                consumers: &consumers,
                egress: egress.as_ref(),
            };
            let input = RenderInput {
                namespace: &request.namespace,
                release_name: &request.release,
                release: &spec,
                environment: &environment,
                data_plane: plane.document,
                policy: &plane.policy,
                type_environment_configs: request.type_environment_configs.as_ref(),
                trait_environment_configs: &request.trait_environment_configs,
                workload_overrides: request.workload_overrides.as_ref(),
                connections: &resolution.addresses,
                network: (plane.provider != Provider::None).then_some(&network),
            };
            let output = plan.render(resources.engine(), &input).map_err(to_error)?;
            let mut unenforced = output.unenforced;
            if plane.provider == Provider::None && egress.is_some() {
                unenforced.push(format!(
                    "egress control is on, but data plane {} renders no network policies (provider none): nothing restricts the traffic",
                    plane.name
                ));
            }
            Ok(Rendered {
                manifests: output.objects,
                release: request.release,
                endpoints: output.endpoints,
                connections: resolution,
                unenforced,
            })
        })
        .await
        // A render that panicked panics here too; one cancelled by shutdown is an error.
        .unwrap_or_else(|e| Err(crate::resources::joined(e).into()));
        if let Some(observe) = self.render_observer.get() {
            observe(started.elapsed(), rendered.is_ok());
        }
        rendered
    }

    /// The environment's data plane: as templates see it, its resource policy, how it
    /// renders network policies; read once for the whole render.
    fn data_plane(&self, namespace: &str, environment: &pb::Environment) -> Result<Plane, Error> {
        let r = environment
            .spec
            .as_ref()
            .and_then(|s| s.data_plane_ref.clone())
            .unwrap_or_default();
        let key = r.key(namespace);
        let spec = match self.resources.get(&key)? {
            Object::DataPlane(dp) => dp.spec,
            Object::ClusterDataPlane(dp) => dp.spec,
            _ => None,
        }
        .unwrap_or_default();
        let policy = Policy::new(key.to_string(), spec.resource_policy.as_ref());
        let (provider, gateways) = network::plane_network(&spec);
        let mut spec = serde_json::to_value(spec).unwrap_or_default();
        troupe_common::document::integral_numbers(&mut spec);
        let document = serde_json::json!({"kind": key.kind.name(), "name": r.name, "spec": spec});
        Ok(Plane {
            name: key.to_string(),
            document,
            policy,
            provider,
            gateways,
        })
    }
}

/// What a render reads of the environment's data plane.
struct Plane {
    /// `DataPlane NAME` or `ClusterDataPlane NAME`, for messages.
    name: String,
    /// `{kind, name, spec}`, the `dataplane` of templates.
    document: serde_json::Value,
    /// Its resource policy.
    policy: Policy,
    /// How it renders network policies.
    provider: Provider,
    /// Its configured gateways.
    gateways: Vec<GatewayPeer>,
}

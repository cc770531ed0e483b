//! What a component's network policies are rendered from, gathered from the store: the data
//! plane's provider and gateways, the components of the environment that connect to it, and
//! the egress rules its project and itself put in force.
//!
//! Consumers come from the ReleaseBindings and the releases they bind (what actually runs,
//! not what Workloads say now), kept in a [`ConsumerIndex`] that the binding controller
//! fills: every binding before its first render, then where each binding places its
//! component from its watch and what it connects to when it reconciles it. The index also
//! finds the bindings a connection names, so no render lists every binding of a namespace.
//! A release never changes: the connections of each are read once and kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::BindingState;
use troupe_common::{Kind, ObjectKey};

use crate::render::network::{Consumer, GatewayPeer, Peer, Provider, effective_egress};
use crate::resources::{Error, Resources};

/// The project and connections of a release, by release key.
#[derive(Default)]
pub(super) struct ConnectionCache {
    releases: Mutex<HashMap<ObjectKey, Arc<Connects>>>,
}

/// What a release connects to: its project, and its workload's connections.
struct Connects {
    project: String,
    connections: Vec<pb::Connection>,
}

/// Bound on kept releases; past it the cache starts over.
const MAX_RELEASES: usize = 16_384;

impl ConnectionCache {
    /// Keeps what release `key` (with `spec`) connects to, read for another reason.
    pub(super) fn keep(&self, key: &ObjectKey, spec: &pb::ComponentReleaseSpec) {
        let mut releases = self.releases.lock().unwrap_or_else(PoisonError::into_inner);
        if releases.contains_key(key) {
            return;
        }
        if releases.len() >= MAX_RELEASES {
            releases.clear();
        }
        let connects = Connects {
            project: spec.owner.clone().unwrap_or_default().project_name,
            connections: spec
                .workload
                .as_ref()
                .map(|w| w.connections.clone())
                .unwrap_or_default(),
        };
        releases.insert(key.clone(), Arc::new(connects));
    }

    /// The project and connections of release `name` of `namespace`; `None` when it is gone.
    fn get(&self, resources: &Resources, namespace: &str, name: &str) -> Option<Arc<Connects>> {
        let key = ObjectKey::new(Kind::ComponentRelease, namespace, name);
        let lock = || self.releases.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = lock().get(&key) {
            return Some(found.clone());
        }
        let spec = resources
            .get_as::<pb::ComponentRelease>(&key)
            .ok()?
            .spec
            .unwrap_or_default();
        self.keep(&key, &spec);
        lock().get(&key).cloned()
    }
}

/// A component in one environment: `(namespace, environment, project, component)`.
pub type Placement = (String, String, String, String);

/// Who connects to whom, by binding: for each placement, the consumers whose bound release
/// connects to it.
#[derive(Default)]
pub(super) struct ConsumerIndex {
    links: Mutex<Links>,
}

#[derive(Default)]
struct Links {
    /// For each target, the consumers by binding.
    consumers: HashMap<Placement, BTreeMap<ObjectKey, BTreeSet<Consumer>>>,
    /// For each binding, the targets its release connects to.
    targets: HashMap<ObjectKey, BTreeSet<Placement>>,
    /// The bindings at each placement, and where each binding places its component.
    bindings: HashMap<Placement, BTreeSet<ObjectKey>>,
    placed: HashMap<ObjectKey, Placement>,
    /// Whether every binding has been noted once (the binding controller says so).
    complete: bool,
}

impl ConsumerIndex {
    /// Records what `binding` (`None`: deleted) connects to now; returns the placements
    /// whose consumers changed.
    pub(super) fn note(
        &self,
        cache: &ConnectionCache,
        resources: &Resources,
        key: &ObjectKey,
        binding: Option<&pb::ReleaseBinding>,
    ) -> BTreeSet<Placement> {
        let links = binding.map_or_else(BTreeMap::new, |b| links(cache, resources, key, b));
        let mut index = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        index.place(key, binding.and_then(|b| placement(&key.namespace, b)));
        let old = index.targets.remove(key).unwrap_or_default();
        let mut changed = BTreeSet::new();
        for placement in &old {
            let consumers = index.consumers.entry(placement.clone()).or_default();
            let before = consumers.remove(key);
            if before.as_ref() != links.get(placement) {
                changed.insert(placement.clone());
            }
            if consumers.is_empty() {
                index.consumers.remove(placement);
            }
        }
        for (placement, consumers) in &links {
            if !old.contains(placement) {
                changed.insert(placement.clone());
            }
            index
                .consumers
                .entry(placement.clone())
                .or_default()
                .insert(key.clone(), consumers.clone());
        }
        if !links.is_empty() {
            index
                .targets
                .insert(key.clone(), links.into_keys().collect());
        }
        changed
    }

    /// Records where `binding` places its component.
    pub(super) fn place(&self, key: &ObjectKey, binding: &pb::ReleaseBinding) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .place(key, placement(&key.namespace, binding));
    }

    /// Says that every binding has been noted: from now on [`ConsumerIndex::bindings_at`]
    /// answers.
    pub(super) fn complete(&self) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .complete = true;
    }

    /// The bindings of the component at `placement`; `None` until the index is complete (no
    /// binding controller runs: the caller lists them).
    pub(super) fn bindings_at(&self, placement: &Placement) -> Option<Vec<ObjectKey>> {
        let index = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        index.complete.then(|| {
            index
                .bindings
                .get(placement)
                .map(|keys| keys.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// The bindings at any of `placements`, whether or not the index is complete.
    pub(super) fn placed_at(&self, placements: &BTreeSet<Placement>) -> Vec<ObjectKey> {
        let index = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        placements
            .iter()
            .filter_map(|p| index.bindings.get(p))
            .flatten()
            .cloned()
            .collect()
    }

    /// The bindings of the components of `project` (in `namespace`).
    pub(super) fn of_project(&self, namespace: &str, project: &str) -> Vec<ObjectKey> {
        let index = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        index
            .bindings
            .iter()
            .filter(|((ns, _, p, _), _)| ns == namespace && p == project)
            .flat_map(|(_, bindings)| bindings.iter().cloned())
            .collect()
    }

    /// The consumers of the component at `placement`, sorted.
    pub(super) fn consumers(&self, placement: &Placement) -> Vec<Consumer> {
        let index = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<Consumer> = index
            .consumers
            .get(placement)
            .into_iter()
            .flat_map(|by_binding| by_binding.values().flatten().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The bindings whose release connects to the component at `placement`.
    pub(super) fn consumer_bindings(&self, placement: &Placement) -> Vec<ObjectKey> {
        let index = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        index
            .consumers
            .get(placement)
            .map(|by_binding| by_binding.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl Links {
    /// Records where `key` places its component now (`None`: nowhere).
    fn place(&mut self, key: &ObjectKey, at: Option<Placement>) {
        if let Some(old) = self.placed.remove(key)
            && let Some(keys) = self.bindings.get_mut(&old)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.bindings.remove(&old);
            }
        }
        if let Some(at) = at {
            self.bindings
                .entry(at.clone())
                .or_default()
                .insert(key.clone());
            self.placed.insert(key.clone(), at);
        }
    }
}

/// Where a binding places its component.
pub fn placement(namespace: &str, binding: &pb::ReleaseBinding) -> Option<Placement> {
    let spec = binding.spec.as_ref()?;
    let owner = spec.owner.as_ref()?;
    Some((
        namespace.to_string(),
        spec.environment.clone(),
        owner.project_name.clone(),
        owner.component_name.clone(),
    ))
}

/// The connections of an active binding's release, by target placement.
fn links(
    cache: &ConnectionCache,
    resources: &Resources,
    key: &ObjectKey,
    binding: &pb::ReleaseBinding,
) -> BTreeMap<Placement, BTreeSet<Consumer>> {
    let mut links: BTreeMap<Placement, BTreeSet<Consumer>> = BTreeMap::new();
    let spec = binding.spec.clone().unwrap_or_default();
    if spec.state == BindingState::Undeploy || spec.release_name.is_empty() {
        return links;
    }
    let Some(release) = cache.get(resources, &key.namespace, &spec.release_name) else {
        return links;
    };
    let Connects {
        project,
        connections,
    } = &*release;
    let component = spec.owner.unwrap_or_default().component_name;
    for c in connections {
        let target_project = if c.project.is_empty() {
            project.clone()
        } else {
            c.project.clone()
        };
        let target = (
            key.namespace.clone(),
            spec.environment.clone(),
            target_project,
            c.component.clone(),
        );
        links.entry(target).or_default().insert(Consumer {
            peer: Peer {
                project: project.clone(),
                component: component.clone(),
            },
            endpoint: c.endpoint.clone(),
            visibility: if c.visibility.is_empty() {
                "project".into()
            } else {
                c.visibility.clone()
            },
        });
    }
    links
}

/// How a data plane renders policies: its provider and its configured gateways.
pub(super) fn plane_network(spec: &pb::DataPlaneSpec) -> (Provider, Vec<GatewayPeer>) {
    let provider = spec
        .network_policy
        .as_ref()
        .and_then(|n| Provider::parse(&n.provider))
        .unwrap_or(Provider::Kubernetes);
    let gateways = spec.gateway.clone().unwrap_or_default();
    let gateways = [
        ("external", gateways.external),
        ("internal", gateways.internal),
    ]
    .into_iter()
    .filter_map(|(visibility, gateway)| {
        let gateway = gateway?;
        (!gateway.name.is_empty() && !gateway.namespace.is_empty()).then(|| GatewayPeer {
            visibility: visibility.into(),
            namespace: gateway.namespace,
            pod_selector: gateway.pod_selector.into_iter().collect(),
        })
    })
    .collect();
    (provider, gateways)
}

/// The egress rules in force for a component of `project` whose release carries
/// `component_egress`: `None` when neither controls egress.
pub(super) fn egress_rules(
    resources: &Resources,
    namespace: &str,
    project: &str,
    component_egress: Option<&pb::EgressPolicy>,
    component: &ObjectKey,
) -> Result<Option<Vec<pb::EgressRule>>, Error> {
    let project_key = ObjectKey::new(Kind::Project, namespace, project);
    let project_egress = match resources.get_as::<pb::Project>(&project_key) {
        Ok(p) => p.spec.and_then(|s| s.egress),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    effective_egress(project_egress.as_ref(), component_egress).map_err(|message| Error::Render {
        object: component.clone(),
        message: format!("egress within project {project}: {message}"),
    })
}

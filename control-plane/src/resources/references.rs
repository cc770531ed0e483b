//! The reference graph: which objects each object points at, and which kinds can point at a
//! given kind. Write-time checks (every reference resolves) and delete-time checks (nothing
//! still points here; owned children cascade) both read it from here, so the two can never
//! disagree.

use troupe_common::pb::v1alpha1::{ComponentOwner, DataPlaneRef};
use troupe_common::{Kind, Object, ObjectKey};

/// One reference from an object to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Path of the referring field, e.g. `spec.owner.projectName`.
    pub field: String,
    /// The referenced object.
    pub target: ObjectKey,
    /// True when the target owns the referrer: deleting the target deletes the referrer.
    pub owner: bool,
}

impl Reference {
    fn to(field: impl Into<String>, target: ObjectKey) -> Self {
        Self {
            field: field.into(),
            target,
            owner: false,
        }
    }

    fn owned_by(field: impl Into<String>, target: ObjectKey) -> Self {
        Self {
            field: field.into(),
            target,
            owner: true,
        }
    }
}

/// Resolves a `{kind, name}` reference where `kind` may name a namespaced kind or its
/// cluster-scoped twin (empty means the namespaced one).
pub fn scoped_kind(kind: &str, namespaced: Kind, cluster: Kind) -> Option<Kind> {
    match kind {
        "" => Some(namespaced),
        k if k == namespaced.name() => Some(namespaced),
        k if k == cluster.name() => Some(cluster),
        _ => None,
    }
}

fn scoped_key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    let ns = if kind.is_cluster_scoped() {
        ""
    } else {
        namespace
    };
    ObjectKey::new(kind, ns, name)
}

fn data_plane(ns: &str, r: &DataPlaneRef, field: &str, out: &mut Vec<Reference>) {
    if let Some(kind) = scoped_kind(&r.kind, Kind::DataPlane, Kind::ClusterDataPlane) {
        out.push(Reference::to(field, scoped_key(kind, ns, &r.name)));
    }
}

fn component_owner(ns: &str, owner: &ComponentOwner, out: &mut Vec<Reference>) {
    out.push(Reference::owned_by(
        "spec.owner.componentName",
        ObjectKey::new(Kind::Component, ns, &owner.component_name),
    ));
}

/// Every reference `object` makes. References whose `kind` is not one of the allowed values
/// are left out here; validation reports them.
pub fn references(object: &Object) -> Vec<Reference> {
    let meta = object.meta();
    let ns = meta.namespace.as_str();
    let mut out = Vec::new();
    if !object.kind().is_cluster_scoped() {
        out.push(Reference::to(
            "metadata.namespace",
            ObjectKey::new(Kind::Namespace, "", ns),
        ));
    }
    match object {
        Object::Environment(env) => {
            if let Some(r) = env.spec.as_ref().and_then(|s| s.data_plane_ref.as_ref()) {
                data_plane(ns, r, "spec.dataPlaneRef", &mut out);
            }
        }
        Object::DeploymentPipeline(p) => {
            for (i, path) in p.spec.iter().flat_map(|s| &s.promotion_paths).enumerate() {
                out.push(Reference::to(
                    format!("spec.promotionPaths[{i}].sourceEnvironment"),
                    ObjectKey::new(Kind::Environment, ns, &path.source_environment),
                ));
                for (j, target) in path.targets.iter().enumerate() {
                    out.push(Reference::to(
                        format!("spec.promotionPaths[{i}].targets[{j}].environment"),
                        ObjectKey::new(Kind::Environment, ns, &target.environment),
                    ));
                }
            }
        }
        Object::Project(p) => {
            if let Some(spec) = &p.spec {
                out.push(Reference::to(
                    "spec.deploymentPipelineRef",
                    ObjectKey::new(Kind::DeploymentPipeline, ns, &spec.deployment_pipeline_ref),
                ));
            }
        }
        Object::Component(c) => {
            let Some(spec) = &c.spec else { return out };
            if let Some(owner) = &spec.owner {
                out.push(Reference::owned_by(
                    "spec.owner.projectName",
                    ObjectKey::new(Kind::Project, ns, &owner.project_name),
                ));
            }
            if let Some(ct) = &spec.component_type
                && let Some(kind) =
                    scoped_kind(&ct.kind, Kind::ComponentType, Kind::ClusterComponentType)
                && let Some((_, type_name)) = ct.name.split_once('/')
            {
                out.push(Reference::to(
                    "spec.componentType.name",
                    scoped_key(kind, ns, type_name),
                ));
            }
            for (i, t) in spec.traits.iter().enumerate() {
                if let Some(kind) = scoped_kind(&t.kind, Kind::Trait, Kind::ClusterTrait) {
                    out.push(Reference::to(
                        format!("spec.traits[{i}].name"),
                        scoped_key(kind, ns, &t.name),
                    ));
                }
            }
            if let Some(w) = &spec.workflow
                && let Some(kind) = scoped_kind(&w.kind, Kind::Workflow, Kind::ClusterWorkflow)
            {
                out.push(Reference::to(
                    "spec.workflow.name",
                    scoped_key(kind, ns, &w.name),
                ));
            }
        }
        Object::Workload(w) => {
            if let Some(owner) = w.spec.as_ref().and_then(|s| s.owner.as_ref()) {
                component_owner(ns, owner, &mut out);
            }
        }
        Object::WorkflowRun(run) => {
            let Some(spec) = &run.spec else { return out };
            if let Some(owner) = &spec.owner
                && !owner.component_name.is_empty()
            {
                component_owner(ns, owner, &mut out);
            }
            if let Some(w) = &spec.workflow
                && let Some(kind) = scoped_kind(&w.kind, Kind::Workflow, Kind::ClusterWorkflow)
            {
                out.push(Reference::to(
                    "spec.workflow.name",
                    scoped_key(kind, ns, &w.name),
                ));
            }
        }
        Object::ComponentRelease(r) => {
            if let Some(owner) = r.spec.as_ref().and_then(|s| s.owner.as_ref()) {
                component_owner(ns, owner, &mut out);
            }
        }
        Object::ReleaseBinding(b) => {
            let Some(spec) = &b.spec else { return out };
            if let Some(owner) = &spec.owner {
                component_owner(ns, owner, &mut out);
            }
            // Deleting an environment takes its bindings with it (and waits for their
            // Releases to be pruned).
            out.push(Reference::owned_by(
                "spec.environment",
                ObjectKey::new(Kind::Environment, ns, &spec.environment),
            ));
            if !spec.release_name.is_empty() {
                out.push(Reference::to(
                    "spec.releaseName",
                    ObjectKey::new(Kind::ComponentRelease, ns, &spec.release_name),
                ));
            }
        }
        Object::Release(r) => {
            let Some(spec) = &r.spec else { return out };
            // A Release waiting for its prune has outlived its owners; it still holds its
            // environment and data plane until the agent lets go of it.
            let pruning = r.metadata.as_ref().is_some_and(|m| m.delete_time.is_some());
            if pruning {
                out.push(Reference::owned_by(
                    "spec.environment",
                    ObjectKey::new(Kind::Environment, ns, &spec.environment),
                ));
                if let Some(dp) = &spec.data_plane_ref {
                    data_plane(ns, dp, "spec.dataPlaneRef", &mut out);
                }
                return out;
            }
            if let Some(owner) = &spec.owner {
                component_owner(ns, owner, &mut out);
            }
            out.push(Reference::owned_by(
                "spec.environment",
                ObjectKey::new(Kind::Environment, ns, &spec.environment),
            ));
            if !spec.release_binding.is_empty() {
                out.push(Reference::owned_by(
                    "spec.releaseBinding",
                    ObjectKey::new(Kind::ReleaseBinding, ns, &spec.release_binding),
                ));
            }
            if let Some(dp) = &spec.data_plane_ref {
                data_plane(ns, dp, "spec.dataPlaneRef", &mut out);
            }
        }
        Object::Promotion(p) => {
            let Some(spec) = &p.spec else { return out };
            if let Some(owner) = &spec.owner {
                component_owner(ns, owner, &mut out);
            }
            // A finished promotion is a record: it holds on to nothing but its component, so
            // history never keeps an environment or an old release from being deleted.
            let pending = p
                .status
                .as_ref()
                .is_none_or(|s| s.phase == "Pending" || s.phase.is_empty());
            if !pending {
                return out;
            }
            for (field, environment) in [
                ("spec.sourceEnvironment", &spec.source_environment),
                ("spec.targetEnvironment", &spec.target_environment),
            ] {
                if !environment.is_empty() {
                    out.push(Reference::to(
                        field,
                        ObjectKey::new(Kind::Environment, ns, environment),
                    ));
                }
            }
            if !spec.release_name.is_empty() {
                out.push(Reference::to(
                    "spec.releaseName",
                    ObjectKey::new(Kind::ComponentRelease, ns, &spec.release_name),
                ));
            }
        }
        Object::Namespace(_)
        | Object::DataPlane(_)
        | Object::ClusterDataPlane(_)
        | Object::ComponentType(_)
        | Object::ClusterComponentType(_)
        | Object::Trait(_)
        | Object::ClusterTrait(_)
        | Object::Workflow(_)
        | Object::ClusterWorkflow(_) => {}
    }
    out
}

/// The kinds whose objects may reference an object of `kind`.
pub fn referrer_kinds(kind: Kind) -> &'static [Kind] {
    match kind {
        Kind::Namespace => &[
            Kind::DataPlane,
            Kind::Environment,
            Kind::DeploymentPipeline,
            Kind::Project,
            Kind::ComponentType,
            Kind::Trait,
            Kind::Workflow,
            Kind::Component,
            Kind::Workload,
            Kind::WorkflowRun,
            Kind::ComponentRelease,
            Kind::ReleaseBinding,
            Kind::Release,
            Kind::Promotion,
        ],
        Kind::DataPlane | Kind::ClusterDataPlane => &[Kind::Environment, Kind::Release],
        Kind::Environment => &[
            Kind::DeploymentPipeline,
            Kind::ReleaseBinding,
            Kind::Release,
            Kind::Promotion,
        ],
        Kind::DeploymentPipeline => &[Kind::Project],
        Kind::Project => &[Kind::Component],
        Kind::ComponentType | Kind::ClusterComponentType | Kind::Trait | Kind::ClusterTrait => {
            &[Kind::Component]
        }
        Kind::Workflow | Kind::ClusterWorkflow => &[Kind::Component, Kind::WorkflowRun],
        Kind::Component => &[
            Kind::Workload,
            Kind::WorkflowRun,
            Kind::ComponentRelease,
            Kind::ReleaseBinding,
            Kind::Release,
            Kind::Promotion,
        ],
        Kind::ComponentRelease => &[Kind::ReleaseBinding, Kind::Promotion],
        Kind::ReleaseBinding => &[Kind::Release],
        Kind::Workload | Kind::WorkflowRun | Kind::Release | Kind::Promotion => &[],
    }
}

/// The namespace to search for referrers of `target`: its own namespace, every namespace
/// (`None`) for cluster-scoped kinds, or the namespace a Namespace names.
pub fn referrer_scope(target: &ObjectKey) -> Option<&str> {
    match target.kind {
        Kind::Namespace => Some(&target.name),
        k if k.is_cluster_scoped() => None,
        _ => Some(&target.namespace),
    }
}

//! Component: a deployable unit of a project, of one ComponentType, with trait instances and
//! maybe a workflow. On its own: names and reference kinds well-formed, trait instances named
//! once. Against what it refers to: the type's workload type, its allowed traits and workflows,
//! and parameters valid against the type's and traits' schemas.

use std::collections::BTreeSet;

use troupe_common::kind::scoped_kind;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::{Ctx, Error, Reference, Resolved, Rules, kind_or, unchanged_fields};
use crate::resources::Resources;
use crate::resources::validate::WORKLOAD_TYPES;

impl Rules for pb::Component {
    const REFERS_TO: &'static [Kind] = &[
        Kind::Project,
        Kind::ComponentType,
        Kind::ClusterComponentType,
        Kind::Trait,
        Kind::ClusterTrait,
        Kind::Workflow,
        Kind::ClusterWorkflow,
    ];
    const CHECKS_CONTENT_OF: &'static [Kind] = &[
        Kind::ComponentType,
        Kind::ClusterComponentType,
        Kind::Trait,
        Kind::ClusterTrait,
    ];

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        let owner = spec.owner.unwrap_or_default();
        ctx.dns("spec.owner.projectName", &owner.project_name)?;
        component_type_ref(ctx, spec.component_type.as_ref())?;
        let mut instances = BTreeSet::new();
        for (i, t) in spec.traits.iter().enumerate() {
            ctx.ref_kind(
                &format!("spec.traits[{i}].kind"),
                &t.kind,
                Kind::Trait,
                Kind::ClusterTrait,
            )?;
            ctx.dns(&format!("spec.traits[{i}].name"), &t.name)?;
            ctx.dns(&format!("spec.traits[{i}].instanceName"), &t.instance_name)?;
            if !instances.insert(t.instance_name.as_str()) {
                return Err(ctx.invalid(
                    format!("spec.traits[{i}].instanceName"),
                    format!(
                        "{:?} is used by more than one trait instance",
                        t.instance_name
                    ),
                ));
            }
        }
        if let Some(w) = &spec.workflow {
            ctx.ref_kind(
                "spec.workflow.kind",
                &w.kind,
                Kind::Workflow,
                Kind::ClusterWorkflow,
            )?;
            ctx.dns("spec.workflow.name", &w.name)?;
        }
        super::project::check_egress(ctx, spec.egress.as_ref())
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        let Some(spec) = &self.spec else { return };
        if let Some(owner) = &spec.owner {
            out.push(Reference::owned_by(
                "spec.owner.projectName",
                ObjectKey::new(Kind::Project, namespace, &owner.project_name),
            ));
        }
        if let Some(ct) = &spec.component_type
            && let Some(kind) =
                scoped_kind(&ct.kind, Kind::ComponentType, Kind::ClusterComponentType)
            && let Some((_, type_name)) = ct.name.split_once('/')
        {
            out.push(Reference::to(
                "spec.componentType.name",
                ObjectKey::scoped(kind, namespace, type_name),
            ));
        }
        for (i, t) in spec.traits.iter().enumerate() {
            if let Some(kind) = scoped_kind(&t.kind, Kind::Trait, Kind::ClusterTrait) {
                out.push(Reference::to(
                    format!("spec.traits[{i}].name"),
                    ObjectKey::scoped(kind, namespace, &t.name),
                ));
            }
        }
        if let Some(w) = &spec.workflow
            && let Some(kind) = scoped_kind(&w.kind, Kind::Workflow, Kind::ClusterWorkflow)
        {
            out.push(Reference::to(
                "spec.workflow.name",
                ObjectKey::scoped(kind, namespace, &w.name),
            ));
        }
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(key, old, self, "spec.owner" => owner, "spec.componentType" => component_type)
    }

    /// Against its type and traits: workload type, allowed traits and workflow, parameters
    /// valid against the schemas.
    fn check_resolved(
        &self,
        resources: &Resources,
        key: &ObjectKey,
        resolved: &Resolved,
    ) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        let Some(resolved_type) = component_type_of(resolved) else {
            return Ok(());
        };
        let wanted = spec.component_type.clone().unwrap_or_default();
        resolved_type.check_workload_type(key, &wanted)?;
        resolved_type.check_allowed(key, &spec)?;
        let TypeRef {
            reference,
            version,
            spec: type_spec,
        } = resolved_type;
        resources.check_values(
            key,
            "spec.parameters",
            Some(format!("{}@{version}/parameters", reference.target)),
            type_spec.parameters.as_ref(),
            spec.parameters.as_ref(),
        )?;
        for (i, instance) in spec.traits.iter().enumerate() {
            let found = resolved.iter().find_map(|(r, o)| match &**o {
                Object::Trait(t) if r.target.name == instance.name => Some((r, o, &t.spec)),
                Object::ClusterTrait(t) if r.target.name == instance.name => Some((r, o, &t.spec)),
                _ => None,
            });
            let Some((reference, object, trait_spec)) = found else {
                continue;
            };
            let version = object.meta().resource_version;
            resources.check_values(
                key,
                &format!("spec.traits[{i}].parameters"),
                Some(format!("{}@{version}/parameters", reference.target)),
                trait_spec.as_ref().and_then(|s| s.parameters.as_ref()),
                instance.parameters.as_ref(),
            )?;
        }
        Ok(())
    }
}

/// `spec.componentType`: a type kind, and a name of the form `{workloadType}/{name}` with a
/// known workload type.
fn component_type_ref(ctx: &Ctx<'_>, ct: Option<&pb::ComponentTypeRef>) -> Result<(), Error> {
    let ct = ctx.required("spec.componentType", ct)?;
    ctx.ref_kind(
        "spec.componentType.kind",
        &ct.kind,
        Kind::ComponentType,
        Kind::ClusterComponentType,
    )?;
    let (workload_type, type_name) = ct.name.split_once('/').ok_or_else(|| {
        ctx.invalid(
            "spec.componentType.name",
            format!(
                "{:?} must have the form {{workloadType}}/{{name}}, e.g. deployment/service",
                ct.name
            ),
        )
    })?;
    if !WORKLOAD_TYPES.contains(&workload_type) {
        return Err(ctx.invalid(
            "spec.componentType.name",
            format!(
                "workload type {workload_type:?} is not one of {}",
                WORKLOAD_TYPES.join(", ")
            ),
        ));
    }
    ctx.dns("spec.componentType.name", type_name)
}

/// The component's type as resolved: the reference, the type's version and its spec.
struct TypeRef<'a> {
    reference: &'a Reference,
    version: u64,
    spec: &'a pb::ComponentTypeSpec,
}

/// The spec of a type stored without one.
static NO_TYPE_SPEC: std::sync::LazyLock<pb::ComponentTypeSpec> =
    std::sync::LazyLock::new(pb::ComponentTypeSpec::default);

fn component_type_of(resolved: &Resolved) -> Option<TypeRef<'_>> {
    resolved.iter().find_map(|(r, o)| {
        let spec = match &**o {
            Object::ComponentType(t) => t.spec.as_ref(),
            Object::ClusterComponentType(t) => t.spec.as_ref(),
            _ => return None,
        };
        Some(TypeRef {
            reference: r,
            version: o.meta().resource_version,
            spec: spec.unwrap_or(&NO_TYPE_SPEC),
        })
    })
}

impl TypeRef<'_> {
    /// The reference's `{workloadType}/` prefix is the type's workload type.
    fn check_workload_type(
        &self,
        key: &ObjectKey,
        wanted: &pb::ComponentTypeRef,
    ) -> Result<(), Error> {
        let prefix = wanted.name.split_once('/').map_or("", |(p, _)| p);
        if prefix == self.spec.workload_type {
            return Ok(());
        }
        Err(Error::BadReference {
            object: key.clone(),
            field: self.reference.field.clone(),
            message: format!(
                "{} has workloadType {:?}, so the reference must be \"{}/{}\", not {:?}",
                self.reference.target,
                self.spec.workload_type,
                self.spec.workload_type,
                self.reference.target.name,
                wanted.name
            ),
        })
    }

    /// Each trait instance is named apart from the type's embedded ones and allowed by the
    /// type, and so is the workflow.
    fn check_allowed(&self, key: &ObjectKey, spec: &pb::ComponentSpec) -> Result<(), Error> {
        let target = &self.reference.target;
        for (i, t) in spec.traits.iter().enumerate() {
            if self
                .spec
                .traits
                .iter()
                .any(|embedded| embedded.instance_name == t.instance_name)
            {
                return Err(Error::invalid(
                    key,
                    format!("spec.traits[{i}].instanceName"),
                    format!(
                        "{:?} is already the name of a trait instance embedded in {target}",
                        t.instance_name
                    ),
                ));
            }
            let kind = kind_or(&t.kind, Kind::Trait);
            if !self
                .spec
                .allowed_traits
                .iter()
                .any(|a| kind_or(&a.kind, Kind::Trait) == kind && a.name == t.name)
            {
                return Err(Error::BadReference {
                    object: key.clone(),
                    field: format!("spec.traits[{i}]"),
                    message: format!(
                        "{kind} {:?} is not in the allowedTraits of {target}",
                        t.name
                    ),
                });
            }
        }
        if let Some(w) = &spec.workflow {
            let kind = kind_or(&w.kind, Kind::Workflow);
            if !self
                .spec
                .allowed_workflows
                .iter()
                .any(|a| kind_or(&a.kind, Kind::Workflow) == kind && a.name == w.name)
            {
                return Err(Error::BadReference {
                    object: key.clone(),
                    field: "spec.workflow".into(),
                    message: format!(
                        "{kind} {:?} is not in the allowedWorkflows of {target}",
                        w.name
                    ),
                });
            }
        }
        Ok(())
    }
}

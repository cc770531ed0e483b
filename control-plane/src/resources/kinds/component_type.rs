//! ComponentType and ClusterComponentType: the platform's template for a kind of component.
//! Its workload type is fixed once written; its schemas, templates and expressions must
//! compile.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Ctx, Error, Rules, unchanged_fields};
use crate::resources::validate::WORKLOAD_TYPES;

impl Rules for pb::ComponentType {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        component_type(ctx, &self.spec.clone().unwrap_or_default())
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(key, old, self, "spec.workloadType" => workload_type)
    }
}

impl Rules for pb::ClusterComponentType {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        component_type(ctx, &self.spec.clone().unwrap_or_default())
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(key, old, self, "spec.workloadType" => workload_type)
    }
}

fn component_type(ctx: &Ctx<'_>, spec: &pb::ComponentTypeSpec) -> Result<(), Error> {
    if !WORKLOAD_TYPES.contains(&spec.workload_type.as_str()) {
        return Err(ctx.invalid(
            "spec.workloadType",
            format!(
                "{:?} is not one of {}",
                spec.workload_type,
                WORKLOAD_TYPES.join(", ")
            ),
        ));
    }
    ctx.schema("spec.parameters", spec.parameters.as_ref())?;
    ctx.schema("spec.environmentConfigs", spec.environment_configs.as_ref())?;
    let mut ids = std::collections::BTreeSet::new();
    for (i, r) in spec.resources.iter().enumerate() {
        if r.id.is_empty() {
            return Err(ctx.invalid(format!("spec.resources[{i}].id"), "required"));
        }
        if !ids.insert(r.id.as_str()) {
            return Err(ctx.invalid(
                format!("spec.resources[{i}].id"),
                format!("{:?} is used twice", r.id),
            ));
        }
        ctx.resource_template(&format!("spec.resources[{i}]"), r)?;
    }
    ctx.rules(&spec.validations)?;
    ctx.output_rules(&spec.output_validations)?;
    for (i, t) in spec.allowed_traits.iter().enumerate() {
        ctx.ref_kind(
            &format!("spec.allowedTraits[{i}].kind"),
            &t.kind,
            Kind::Trait,
            Kind::ClusterTrait,
        )?;
        ctx.dns(&format!("spec.allowedTraits[{i}].name"), &t.name)?;
    }
    for (i, w) in spec.allowed_workflows.iter().enumerate() {
        ctx.ref_kind(
            &format!("spec.allowedWorkflows[{i}].kind"),
            &w.kind,
            Kind::Workflow,
            Kind::ClusterWorkflow,
        )?;
        ctx.dns(&format!("spec.allowedWorkflows[{i}].name"), &w.name)?;
    }
    Ok(())
}

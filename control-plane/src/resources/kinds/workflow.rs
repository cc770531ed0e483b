//! Workflow and ClusterWorkflow (build or automation templates, whose parameter schema must
//! compile) and WorkflowRun (one execution, fixed once started).

use troupe_common::kind::scoped_kind;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Ctx, Error, Reference, Rules, unchanged_fields};
use crate::resources::references::component_owner;

impl Rules for pb::Workflow {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.as_ref();
        ctx.schema("spec.parameters", spec.and_then(|s| s.parameters.as_ref()))
    }
}

impl Rules for pb::ClusterWorkflow {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.as_ref();
        ctx.schema("spec.parameters", spec.and_then(|s| s.parameters.as_ref()))
    }
}

impl Rules for pb::WorkflowRun {
    const REFERS_TO: &'static [Kind] = &[Kind::Workflow, Kind::ClusterWorkflow, Kind::Component];

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        let w = ctx.required("spec.workflow", spec.workflow.as_ref())?;
        ctx.ref_kind(
            "spec.workflow.kind",
            &w.kind,
            Kind::Workflow,
            Kind::ClusterWorkflow,
        )?;
        ctx.dns("spec.workflow.name", &w.name)?;
        if let Some(owner) = &spec.owner
            && (!owner.project_name.is_empty() || !owner.component_name.is_empty())
        {
            ctx.component_owner(Some(owner))?;
        }
        Ok(())
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        let Some(spec) = &self.spec else { return };
        if let Some(owner) = &spec.owner
            && !owner.component_name.is_empty()
        {
            component_owner(namespace, owner, out);
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
        unchanged_fields!(
            key, old, self,
            "spec.owner" => owner, "spec.workflow" => workflow, "spec.commit" => commit
        )
    }

    fn owner(&self) -> Option<&pb::ComponentOwner> {
        self.spec.as_ref().and_then(|s| s.owner.as_ref())
    }
}

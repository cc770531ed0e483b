//! Project: a team's boundary, promoting along one DeploymentPipeline.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Ctx, Error, Reference, Rules};

/// `spec.egress`, when set, lists well-formed rules (Projects and Components).
pub(super) fn check_egress(ctx: &Ctx<'_>, egress: Option<&pb::EgressPolicy>) -> Result<(), Error> {
    match egress {
        None => Ok(()),
        Some(egress) => crate::render::network::check_egress("spec.egress", egress)
            .map_err(|(field, why)| ctx.invalid(field, why)),
    }
}

impl Rules for pb::Project {
    const REFERS_TO: &'static [Kind] = &[Kind::DeploymentPipeline];

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        ctx.dns("spec.deploymentPipelineRef", &spec.deployment_pipeline_ref)?;
        check_egress(ctx, spec.egress.as_ref())
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        if let Some(spec) = &self.spec {
            out.push(Reference::to(
                "spec.deploymentPipelineRef",
                ObjectKey::new(
                    Kind::DeploymentPipeline,
                    namespace,
                    &spec.deployment_pipeline_ref,
                ),
            ));
        }
    }
}

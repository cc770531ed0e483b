//! Trait and ClusterTrait: composable capabilities. Their schemas, templates, patches and
//! expressions must compile.

use troupe_common::pb::v1alpha1 as pb;

use super::{Ctx, Error, Rules};
use crate::render::patch::{Op, Path};
use crate::resources::validate::struct_to_json;

impl Rules for pb::Trait {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        trait_spec(ctx, &self.spec.clone().unwrap_or_default())
    }
}

impl Rules for pb::ClusterTrait {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        trait_spec(ctx, &self.spec.clone().unwrap_or_default())
    }
}

fn trait_spec(ctx: &Ctx<'_>, spec: &pb::TraitSpec) -> Result<(), Error> {
    ctx.schema("spec.parameters", spec.parameters.as_ref())?;
    ctx.schema("spec.environmentConfigs", spec.environment_configs.as_ref())?;
    for (i, c) in spec.creates.iter().enumerate() {
        ctx.resource_template(&format!("spec.creates[{i}]"), c)?;
    }
    ctx.rules(&spec.validations)?;
    ctx.output_rules(&spec.output_validations)?;
    for (i, p) in spec.patches.iter().enumerate() {
        let at = format!("spec.patches[{i}]");
        if p.target.as_ref().is_none_or(|t| t.kind.is_empty()) {
            return Err(ctx.invalid(format!("{at}.target.kind"), "required"));
        }
        ctx.expression(&format!("{at}.forEach"), &p.for_each)?;
        if !p.for_each.is_empty() && p.var.is_empty() {
            return Err(ctx.invalid(format!("{at}.var"), "required with forEach"));
        }
        if let Some(target) = &p.target {
            ctx.expression(&format!("{at}.target.where"), &target.r#where)?;
        }
        for (j, op) in p.operations.iter().enumerate() {
            let at = format!("{at}.operations[{j}]");
            Op::parse(&op.op).map_err(|e| ctx.invalid(format!("{at}.op"), e.to_string()))?;
            Path::parse(&op.path).map_err(|e| ctx.invalid(format!("{at}.path"), e.to_string()))?;
            if let Some(value) = &op.value {
                ctx.template(&format!("{at}.value"), &struct_to_json(value))?;
            }
        }
    }
    Ok(())
}

//! DeploymentPipeline: the promotion graph between environments. Each path and edge is
//! checked here with its field path; the graph as a whole (one first environment, no cycle)
//! by [`Pipeline::check`], the same reading of the graph autoDeploy and promotion use.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey, Pipeline};

use super::{Ctx, Error, Reference, Rules};

impl Rules for pb::DeploymentPipeline {
    const REFERS_TO: &'static [Kind] = &[Kind::Environment];

    /// The paths and edges are well-formed, each edge's approvals and gates can be met, and
    /// the graph has one first environment and no cycle.
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        if spec.promotion_paths.is_empty() {
            return Err(ctx.invalid(
                "spec.promotionPaths",
                "required: at least one path, whose source is the first environment",
            ));
        }
        for (i, path) in spec.promotion_paths.iter().enumerate() {
            let at = format!("spec.promotionPaths[{i}]");
            let source = path.source_environment.as_str();
            ctx.dns(&format!("{at}.sourceEnvironment"), source)?;
            if spec.promotion_paths[..i]
                .iter()
                .any(|p| p.source_environment == source)
            {
                return Err(ctx.invalid(
                    format!("{at}.sourceEnvironment"),
                    format!("{source:?} is the source of an earlier path; list all its targets in one path"),
                ));
            }
            for (j, t) in path.targets.iter().enumerate() {
                let at = format!("{at}.targets[{j}]");
                ctx.dns(&format!("{at}.environment"), &t.environment)?;
                if t.environment == source {
                    return Err(ctx.invalid(
                        format!("{at}.environment"),
                        format!("{source:?} cannot promote to itself"),
                    ));
                }
                if path.targets[..j]
                    .iter()
                    .any(|o| o.environment == t.environment)
                {
                    return Err(ctx.invalid(
                        format!("{at}.environment"),
                        format!("{:?} is listed twice", t.environment),
                    ));
                }
                promotion_target(ctx, &at, t)?;
            }
        }
        Pipeline::new(&spec)
            .check()
            .map_err(|e| ctx.invalid("spec.promotionPaths", e.to_string()))
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        let pipeline = Pipeline::new(&self.spec.clone().unwrap_or_default());
        for (i, path) in pipeline.paths().iter().enumerate() {
            out.push(Reference::to(
                format!("spec.promotionPaths[{i}].sourceEnvironment"),
                ObjectKey::new(Kind::Environment, namespace, &path.source_environment),
            ));
            for (j, target) in path.targets.iter().enumerate() {
                out.push(Reference::to(
                    format!("spec.promotionPaths[{i}].targets[{j}].environment"),
                    ObjectKey::new(Kind::Environment, namespace, &target.environment),
                ));
            }
        }
    }
}

/// One edge's approval settings and gates.
fn promotion_target(ctx: &Ctx<'_>, at: &str, t: &pb::PromotionTarget) -> Result<(), Error> {
    if t.required_approvals < 0 {
        return Err(ctx.invalid(format!("{at}.requiredApprovals"), "must not be negative"));
    }
    if !t.requires_approval && (t.required_approvals > 0 || !t.approvers.is_empty()) {
        let field = if t.approvers.is_empty() {
            "requiredApprovals"
        } else {
            "approvers"
        };
        return Err(ctx.invalid(
            format!("{at}.{field}"),
            "set, but requiresApproval is false",
        ));
    }
    // A `group:NAME` approver stands for every member, so only a list of users bounds
    // how many approvals can come.
    let only_users = t.approvers.iter().all(|a| !a.starts_with("group:"));
    if !t.approvers.is_empty() && only_users && t.required_approvals as usize > t.approvers.len() {
        return Err(ctx.invalid(
            format!("{at}.requiredApprovals"),
            format!(
                "{} approvals can never come from {} approver(s)",
                t.required_approvals,
                t.approvers.len()
            ),
        ));
    }
    for (k, approver) in t.approvers.iter().enumerate() {
        if approver.trim().is_empty() || approver.trim_start_matches("group:").is_empty() {
            return Err(ctx.invalid(
                format!("{at}.approvers[{k}]"),
                "must name a user, or a group as group:NAME",
            ));
        }
    }
    for (k, gate) in t.gates.iter().enumerate() {
        gate_rules(ctx, &format!("{at}.gates[{k}]"), gate, &t.gates[..k])?;
    }
    Ok(())
}

/// One gate: a name no earlier gate of the edge uses, a known type, a soak duration exactly
/// when it is a soak gate.
fn gate_rules(
    ctx: &Ctx<'_>,
    at: &str,
    gate: &pb::PromotionGate,
    earlier: &[pb::PromotionGate],
) -> Result<(), Error> {
    ctx.dns(&format!("{at}.name"), &gate.name)?;
    if earlier.iter().any(|g| g.name == gate.name) {
        return Err(ctx.invalid(
            format!("{at}.name"),
            format!("{:?} is used by an earlier gate of this edge", gate.name),
        ));
    }
    match gate.r#type.as_str() {
        "soak" if gate.soak_duration_seconds <= 0 => Err(ctx.invalid(
            format!("{at}.soakDurationSeconds"),
            "required for a soak gate: a number of seconds above 0",
        )),
        "soak" => Ok(()),
        "healthy" | "check" if gate.soak_duration_seconds != 0 => Err(ctx.invalid(
            format!("{at}.soakDurationSeconds"),
            format!("only soak gates have one, this is a {} gate", gate.r#type),
        )),
        "healthy" | "check" => Ok(()),
        other => Err(ctx.invalid(
            format!("{at}.type"),
            format!("{other:?} is not one of healthy, soak, check"),
        )),
    }
}

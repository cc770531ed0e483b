//! Trait patches: parsed once per release, applied to every object their target selects.

use serde_json::{Value, json};
use troupe_common::pb::v1alpha1 as pb;

use super::{RenderError, fail};
use crate::render::context::to_json;
use crate::render::patch::{self, Op, Path, Target};
use crate::render::template::{Context, Engine};

/// A trait patch, parsed.
pub(super) struct PatchPlan {
    location: String,
    for_each: String,
    var: String,
    target: pb::PatchTarget,
    required: bool,
    operations: Vec<OperationPlan>,
}

struct OperationPlan {
    location: String,
    op: Op,
    path: Path,
    raw_path: String,
    value: Option<Value>,
}

pub(super) fn patch_plan(location: &str, p: &pb::TraitPatch) -> Result<PatchPlan, RenderError> {
    let target = p.target.clone().unwrap_or_default();
    if target.kind.is_empty() {
        return Err(fail(location, "target.kind is required"));
    }
    let operations = p
        .operations
        .iter()
        .enumerate()
        .map(|(j, operation)| {
            let at = format!("{location} operations[{j}]");
            let op = Op::parse(&operation.op).map_err(|e| fail(&at, e.to_string()))?;
            let path = Path::parse(&operation.path).map_err(|e| fail(&at, e.to_string()))?;
            Ok(OperationPlan {
                location: at,
                op,
                path,
                raw_path: operation.path.clone(),
                value: operation.value.as_ref().map(to_json),
            })
        })
        .collect::<Result<_, RenderError>>()?;
    Ok(PatchPlan {
        location: location.to_string(),
        for_each: p.for_each.clone(),
        var: p.var.clone(),
        target,
        required: p.required,
        operations,
    })
}

/// Whether `target` (group, version, kind, and `where` with `object` and the `bound`
/// variables visible) selects `object`. A target without a kind selects every object.
pub(super) fn selects(
    engine: &Engine,
    location: &str,
    target: &pb::PatchTarget,
    context: &Context,
    bound: &[(&str, &Value)],
    object: &Value,
) -> Result<bool, RenderError> {
    let selector = Target {
        group: &target.group,
        version: &target.version,
        kind: &target.kind,
    };
    if !target.kind.is_empty() && !patch::matches(&selector, object) {
        return Ok(false);
    }
    if target.r#where.is_empty() {
        return Ok(true);
    }
    let mut bound = bound.to_vec();
    bound.push(("object", object));
    let keep = engine
        .eval_bound("where", &target.r#where, context, &bound)
        .map_err(|e| fail(location, e.to_string()))?;
    match keep {
        Value::Bool(keep) => Ok(keep),
        other => Err(fail(
            location,
            format!("where must give true or false, not {other}"),
        )),
    }
}

/// `apps/v1 Deployment`: a target's group, version and kind, for messages.
fn target_name(target: &pb::PatchTarget) -> String {
    let version = if target.group.is_empty() {
        target.version.clone()
    } else {
        format!("{}/{}", target.group, target.version)
    };
    format!("{version} {}", target.kind).trim().to_string()
}

/// `Kind/name` of a rendered object, for messages.
pub(super) fn object_id(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

impl PatchPlan {
    /// Applies the patch to every object its target selects, once per `forEach` item.
    pub(super) fn apply(
        &self,
        engine: &Engine,
        context: &Context,
        objects: &mut [Value],
    ) -> Result<(), RenderError> {
        let location = self.location.as_str();
        // forEach over the patch: one pass per item, with `var` bound.
        let passes: Vec<Option<Value>> = if self.for_each.is_empty() {
            vec![None]
        } else {
            let items = engine
                .eval("forEach", &self.for_each, context)
                .map_err(|e| fail(location, e.to_string()))?;
            match items {
                Value::Array(items) => items.into_iter().map(Some).collect(),
                Value::Object(map) => map
                    .into_iter()
                    .map(|(k, v)| Some(json!({"key": k, "value": v})))
                    .collect(),
                other => {
                    return Err(fail(
                        location,
                        format!("forEach must give a list or a map, not {other}"),
                    ));
                }
            }
        };
        let budget = context.budget();
        if !self.for_each.is_empty() {
            budget
                .count_iterations(passes.len())
                .map_err(|m| fail(location, m))?;
        }
        let target = &self.target;
        let mut selected = 0;
        for pass in &passes {
            let bound: Vec<(&str, &Value)> =
                pass.iter().map(|item| (self.var.as_str(), item)).collect();
            for object in objects.iter_mut() {
                // Passes times objects is the patch's work even when no expression runs.
                budget.spend_fuel(1).map_err(|m| fail(location, m))?;
                if !selects(engine, location, target, context, &bound, object)? {
                    continue;
                }
                selected += 1;
                for operation in &self.operations {
                    let at = operation.location.as_str();
                    let value = match &operation.value {
                        Some(v) => Some(
                            engine
                                .render_bound("/value", v, context, &bound)
                                .map_err(|e| fail(at, e.to_string()))?,
                        ),
                        None => None,
                    };
                    let changed =
                        patch::apply(object, operation.op, &operation.path, value.as_ref())
                            .map_err(|e| fail(at, e.to_string()))?;
                    if self.required && changed == 0 {
                        return Err(fail(
                            at,
                            format!(
                                "required patch: {} matches nothing in {}",
                                operation.raw_path,
                                object_id(object)
                            ),
                        ));
                    }
                }
            }
        }
        if self.required && selected == 0 && !passes.is_empty() {
            return Err(fail(
                location,
                format!(
                    "required patch: no rendered object is a {}{}",
                    target_name(target),
                    if target.r#where.is_empty() {
                        String::new()
                    } else {
                        format!(" where {}", target.r#where)
                    }
                ),
            ));
        }
        Ok(())
    }
}

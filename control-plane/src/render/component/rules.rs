//! Checks on a render: a type's or trait's validation rules before it renders, output rules
//! over what it rendered, and the shape every rendered object must have.

use serde_json::Value;
use troupe_common::pb::v1alpha1 as pb;

use super::patches::{object_id, selects};
use super::{RenderError, fail};
use crate::render::template::{Context, Engine};

/// Checks a type's or trait's validation rules before anything renders: each rule must
/// evaluate to `true`, otherwise its message is the error.
pub(super) fn check_rules(
    engine: &Engine,
    location: &str,
    rules: &[pb::ValidationRule],
    context: &Context,
) -> Result<(), RenderError> {
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{location} validations[{i}]");
        let holds = engine
            .eval("rule", &rule.rule, context)
            .map_err(|e| fail(&at, e.to_string()))?;
        verdict(&at, &rule.rule, &rule.message, holds)?;
    }
    Ok(())
}

/// Checks rules over the rendered objects: each rule must give `true` for every object its
/// target selects, otherwise its message, naming the object, is the error.
pub(super) fn check_output_rules(
    engine: &Engine,
    location: &str,
    rules: &[pb::OutputValidationRule],
    context: &Context,
    objects: &[Value],
) -> Result<(), RenderError> {
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{location} outputValidations[{i}]");
        let target = rule.target.clone().unwrap_or_default();
        for object in objects {
            if !selects(engine, &at, &target, context, &[], object)? {
                continue;
            }
            let object_at = format!("{at} on {}", object_id(object));
            let holds = engine
                .eval_bound("rule", &rule.rule, context, &[("object", object)])
                .map_err(|e| fail(&object_at, e.to_string()))?;
            verdict(&object_at, &rule.rule, &rule.message, holds)?;
        }
    }
    Ok(())
}

/// What a rule's value means: `true` holds, `false` fails with the rule's message (or says
/// which rule did not hold), anything else is an error in the rule itself.
fn verdict(at: &str, rule: &str, message: &str, holds: Value) -> Result<(), RenderError> {
    match holds {
        Value::Bool(true) => Ok(()),
        Value::Bool(false) if message.is_empty() => Err(fail(at, format!("{rule} does not hold"))),
        Value::Bool(false) => Err(fail(at, message)),
        other => Err(fail(
            at,
            format!("the rule must give true or false, not {other}"),
        )),
    }
}

/// Every rendered object must be a Kubernetes object: apiVersion, kind and metadata.name.
pub(super) fn check_object(index: usize, object: &Value) -> Result<(), RenderError> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let location = format!(
        "rendered object {index} ({})",
        if kind.is_empty() { "no kind" } else { kind }
    );
    for field in ["apiVersion", "kind"] {
        if object
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(fail(location, format!("{field} is missing")));
        }
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        return Err(fail(location, "metadata.name is missing"));
    }
    Ok(())
}

/// Pod templates of workload kinds, where the configuration hash goes.
pub(super) fn pod_templates(object: &mut Value) -> Vec<&mut Value> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let pointer = match kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return vec![],
    };
    object.pointer_mut(pointer).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check_object;

    #[test]
    fn rendered_objects_must_name_api_version_kind_and_name() {
        assert!(
            check_object(
                0,
                &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"}})
            )
            .is_ok()
        );
        let err =
            check_object(2, &json!({"kind": "Service", "metadata": {"name": "api"}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rendered object 2 (Service): apiVersion is missing"
        );
        let err = check_object(0, &json!({"apiVersion": "v1", "metadata": {}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rendered object 0 (no kind): kind is missing"
        );
        let err = check_object(
            0,
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rendered object 0 (Service): metadata.name is missing"
        );
    }
}

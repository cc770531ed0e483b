//! Rendering one component release for one environment: build the context, render the
//! ComponentType's resources, then each trait instance's `creates` and `patches` (the type's
//! embedded traits first, then the component's, each seeing what came before), then add the
//! standard labels and the configuration hash. Pure and deterministic.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use troupe_common::pb::v1alpha1 as pb;

use super::context::{
    configurations, connections_context, hash_hex, overridden, target_namespace, to_json,
    workload_context,
};
use super::endpoints::{Address, endpoint_statuses};
use super::patch::{self, Op, Path, Target};
use super::schema::{SchemaCache, describe};
use super::template::{Context, Engine, ResourceEntry};

/// Everything one render reads.
pub struct RenderInput<'a> {
    /// Control-plane namespace of the component.
    pub namespace: &'a str,
    /// Name of the ComponentRelease rendered; empty when rendering the current state.
    pub release_name: &'a str,
    /// The release content.
    pub release: &'a pb::ComponentReleaseSpec,
    /// The target environment.
    pub environment: &'a pb::Environment,
    /// The environment's data plane, as a JSON document (`{name, spec}`), for templates.
    pub data_plane: Value,
    /// Values for the ComponentType's `environmentConfigs`.
    pub type_environment_configs: Option<&'a pbjson_types::Struct>,
    /// Values for each trait instance's `environmentConfigs`, by instance name.
    pub trait_environment_configs: &'a HashMap<String, pbjson_types::Struct>,
    /// Changes to the workload's container in this environment.
    pub workload_overrides: Option<&'a pb::WorkloadOverrides>,
    /// Addresses of the workload's connections, by position; `None` (or missing) where the
    /// target is not available: its environment variables are left out.
    pub connections: &'a [Option<Address>],
}

/// What a render produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The Kubernetes objects, in render order.
    pub objects: Vec<Value>,
    /// Where the workload's endpoints are reached, from the rendered Services.
    pub endpoints: Vec<pb::EndpointStatus>,
}

/// A render failure: where, and what.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct RenderError {
    /// What was being rendered, e.g. `ComponentType resources[deployment]`.
    pub location: String,
    /// What went wrong.
    pub message: String,
}

fn fail(location: impl Into<String>, message: impl Into<String>) -> RenderError {
    RenderError {
        location: location.into(),
        message: message.into(),
    }
}

/// Standard label keys added to every rendered object.
pub const LABELS: [&str; 5] = [
    "troupe.dev/namespace",
    "troupe.dev/project",
    "troupe.dev/component",
    "troupe.dev/environment",
    "troupe.dev/release",
];

/// Annotation on pod templates whose value changes when configuration does, so pods roll.
pub const CONFIG_HASH: &str = "troupe.dev/config-hash";

/// Renders `input` into Kubernetes objects.
pub fn render(
    engine: &Engine,
    schemas: &SchemaCache,
    input: &RenderInput<'_>,
) -> Result<Rendered, RenderError> {
    let release = input.release;
    let owner = release.owner.clone().unwrap_or_default();
    let component_type = release.component_type.clone().unwrap_or_default();
    let type_spec = component_type.spec.unwrap_or_default();
    let profile = release.component_profile.clone().unwrap_or_default();
    let workload = release.workload.clone().unwrap_or_default();
    let env_meta = input.environment.metadata.clone().unwrap_or_default();
    let env_spec = input.environment.spec.clone().unwrap_or_default();

    let parameters = validated(
        schemas,
        "ComponentType parameters",
        type_spec.parameters.as_ref(),
        profile.parameters.as_ref(),
    )?;
    let environment_configs = validated(
        schemas,
        "ComponentType environmentConfigs",
        type_spec.environment_configs.as_ref(),
        input.type_environment_configs,
    )?;

    let component = owner.component_name.as_str();
    let labels: Map<String, Value> = LABELS
        .iter()
        .zip([
            input.namespace,
            owner.project_name.as_str(),
            component,
            env_meta.name.as_str(),
            input.release_name,
        ])
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), Value::from(v)))
        .collect();
    let pod_selectors = json!({
        "troupe.dev/project": owner.project_name,
        "troupe.dev/component": component,
        "troupe.dev/environment": env_meta.name,
    });
    let container = overridden(
        workload.container.as_ref(),
        input.workload_overrides,
        &workload.connections,
        input.connections,
    );
    let configurations = configurations(&container);
    let namespace = target_namespace(input.namespace, &owner.project_name, &env_meta.name);
    let context = json!({
        "metadata": {
            "name": component,
            "componentName": component,
            "projectName": owner.project_name,
            "environmentName": env_meta.name,
            "namespace": namespace,
            "controlPlaneNamespace": input.namespace,
            "labels": labels,
            "podSelectors": pod_selectors,
        },
        "parameters": parameters,
        "environmentConfigs": environment_configs,
        "workload": workload_context(&workload),
        "configurations": configurations,
        "connections": connections_context(&workload.connections, input.connections),
        "dataplane": input.data_plane,
        "environment": {
            "name": env_meta.name,
            "isProduction": env_spec.is_production,
            "spec": to_json(&env_spec),
        },
    });

    let mut objects = Vec::new();
    // Output rules run once everything is rendered, each with the context it was declared in.
    let mut output_rules = Vec::new();
    let prepared = prepare(engine, "the render context", &context)?;
    check_rules(engine, "ComponentType", &type_spec.validations, &prepared)?;
    for (i, resource) in type_spec.resources.iter().enumerate() {
        let location = format!("ComponentType resources[{}]", label(&resource.id, i));
        objects.extend(render_entry(engine, &location, resource, &prepared)?);
    }
    output_rules.push((
        "ComponentType".to_string(),
        type_spec.output_validations.clone(),
        prepared.clone(),
    ));

    // Trait instances: the type's embedded ones, then the component's.
    for (origin, instance) in type_spec
        .traits
        .iter()
        .map(|t| ("ComponentType", t))
        .chain(profile.traits.iter().map(|t| ("Component", t)))
    {
        let snapshot = release
            .traits
            .iter()
            .find(|t| t.name == instance.name && same_trait_kind(&t.kind, &instance.kind))
            .ok_or_else(|| {
                fail(
                    format!("{origin} trait {}", instance.instance_name),
                    format!("trait {:?} is not in the release", instance.name),
                )
            })?;
        let trait_spec = snapshot.spec.clone().unwrap_or_default();
        let at = format!("trait {} ({})", instance.instance_name, instance.name);
        let trait_parameters = validated(
            schemas,
            &format!("{at} parameters"),
            trait_spec.parameters.as_ref(),
            instance.parameters.as_ref(),
        )?;
        let env_values = input
            .trait_environment_configs
            .get(&instance.instance_name)
            .or(instance.environment_configs.as_ref());
        let trait_env = validated(
            schemas,
            &format!("{at} environmentConfigs"),
            trait_spec.environment_configs.as_ref(),
            env_values,
        )?;
        let mut trait_context = context.clone();
        trait_context["parameters"] = trait_parameters;
        trait_context["environmentConfigs"] = trait_env;
        trait_context["trait"] =
            json!({"name": instance.name, "instanceName": instance.instance_name});
        let prepared = prepare(engine, &at, &trait_context)?;
        check_rules(engine, &at, &trait_spec.validations, &prepared)?;
        for (i, create) in trait_spec.creates.iter().enumerate() {
            let location = format!("{at} creates[{}]", label(&create.id, i));
            objects.extend(render_entry(engine, &location, create, &prepared)?);
        }
        for (i, p) in trait_spec.patches.iter().enumerate() {
            apply_patch(
                engine,
                &format!("{at} patches[{i}]"),
                p,
                &prepared,
                &mut objects,
            )?;
        }
        output_rules.push((at, trait_spec.output_validations, prepared));
    }

    let config_hash = hash_hex(&configurations.to_string());
    for (i, object) in objects.iter_mut().enumerate() {
        check_object(i, object)?;
        let meta = object["metadata"].as_object_mut().expect("checked above");
        let object_labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(map) = object_labels.as_object_mut() {
            for (k, v) in &labels {
                map.insert(k.clone(), v.clone());
            }
        }
        for template in pod_templates(object) {
            let annotations = template
                .as_object_mut()
                .map(|t| t.entry("metadata").or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut)
                .map(|m| m.entry("annotations").or_insert_with(|| json!({})));
            if let Some(Value::Object(a)) = annotations {
                a.insert(CONFIG_HASH.into(), Value::from(&config_hash[..16]));
            }
        }
    }
    for (location, rules, context) in &output_rules {
        check_output_rules(engine, location, rules, context, &objects)?;
    }
    let endpoints = endpoint_statuses(&workload.endpoints, &objects, &namespace);
    Ok(Rendered { objects, endpoints })
}

fn same_trait_kind(a: &str, b: &str) -> bool {
    let norm = |k: &str| {
        if k.is_empty() {
            "Trait".to_string()
        } else {
            k.to_string()
        }
    };
    norm(a) == norm(b)
}

fn label(id: &str, index: usize) -> String {
    if id.is_empty() {
        index.to_string()
    } else {
        id.to_string()
    }
}

/// Defaults and validates `value` against `schema` (none: any object).
fn validated(
    schemas: &SchemaCache,
    location: &str,
    schema: Option<&pbjson_types::Struct>,
    value: Option<&pbjson_types::Struct>,
) -> Result<Value, RenderError> {
    let value = value.map(to_json);
    let Some(schema) = schema else {
        return Ok(value.unwrap_or_else(|| json!({})));
    };
    let schema = schemas
        .get(&to_json(schema))
        .map_err(|v| fail(location, format!("the schema does not compile: {v}")))?;
    schema
        .apply(value.as_ref())
        .map_err(|violations| fail(location, describe(&violations)))
}

/// Checks a type's or trait's validation rules before anything renders: each rule must
/// evaluate to `true`, otherwise its message is the error.
fn check_rules(
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
        match holds {
            Value::Bool(true) => {}
            Value::Bool(false) => {
                let message = if rule.message.is_empty() {
                    format!("{} does not hold", rule.rule)
                } else {
                    rule.message.clone()
                };
                return Err(fail(&at, message));
            }
            other => {
                return Err(fail(
                    &at,
                    format!("the rule must give true or false, not {other}"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks rules over the rendered objects: each rule must give `true` for every object its
/// target selects, otherwise its message, naming the object, is the error.
fn check_output_rules(
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
            match holds {
                Value::Bool(true) => {}
                Value::Bool(false) => {
                    let message = if rule.message.is_empty() {
                        format!("{} does not hold", rule.rule)
                    } else {
                        rule.message.clone()
                    };
                    return Err(fail(&object_at, message));
                }
                other => {
                    return Err(fail(
                        &object_at,
                        format!("the rule must give true or false, not {other}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether `target` (group, version, kind, and `where` with `object` and the `bound`
/// variables visible) selects `object`. A target without a kind selects every object.
fn selects(
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
fn object_id(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Converts a context once for the many template calls that share it.
fn prepare(engine: &Engine, location: &str, context: &Value) -> Result<Context, RenderError> {
    engine
        .context(context)
        .map_err(|e| fail(location, e.to_string()))
}

fn render_entry(
    engine: &Engine,
    location: &str,
    resource: &pb::ResourceTemplate,
    context: &Context,
) -> Result<Vec<Value>, RenderError> {
    let template = resource
        .template
        .as_ref()
        .map(to_json)
        .unwrap_or(Value::Null);
    let entry = ResourceEntry {
        include_when: &resource.include_when,
        for_each: &resource.for_each,
        var: &resource.var,
        template: &template,
    };
    engine
        .render_resource("", &entry, context)
        .map_err(|e| fail(location, e.to_string()))
}

fn apply_patch(
    engine: &Engine,
    location: &str,
    p: &pb::TraitPatch,
    context: &Context,
    objects: &mut [Value],
) -> Result<(), RenderError> {
    let target = p.target.clone().unwrap_or_default();
    if target.kind.is_empty() {
        return Err(fail(location, "target.kind is required"));
    }
    // forEach over the patch: one pass per item, with `var` bound.
    let passes: Vec<Option<Value>> = if p.for_each.is_empty() {
        vec![None]
    } else {
        let items = engine
            .eval("forEach", &p.for_each, context)
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
    let operations = p
        .operations
        .iter()
        .enumerate()
        .map(|(j, operation)| {
            let at = format!("{location} operations[{j}]");
            let op = Op::parse(&operation.op).map_err(|e| fail(&at, e.to_string()))?;
            let path = Path::parse(&operation.path).map_err(|e| fail(&at, e.to_string()))?;
            Ok((
                at,
                op,
                path,
                &operation.path,
                operation.value.as_ref().map(to_json),
            ))
        })
        .collect::<Result<Vec<_>, RenderError>>()?;
    let mut selected = 0;
    for pass in &passes {
        let bound: Vec<(&str, &Value)> = pass.iter().map(|item| (p.var.as_str(), item)).collect();
        for object in objects.iter_mut() {
            if !selects(engine, location, &target, context, &bound, object)? {
                continue;
            }
            selected += 1;
            for (at, op, path, raw, value) in &operations {
                let value = match value {
                    Some(v) => Some(
                        engine
                            .render_bound("/value", v, context, &bound)
                            .map_err(|e| fail(at, e.to_string()))?,
                    ),
                    None => None,
                };
                let changed = patch::apply(object, *op, path, value.as_ref())
                    .map_err(|e| fail(at, e.to_string()))?;
                if p.required && changed == 0 {
                    return Err(fail(
                        at,
                        format!(
                            "required patch: {} matches nothing in {}",
                            raw,
                            object_id(object)
                        ),
                    ));
                }
            }
        }
    }
    if p.required && selected == 0 && !passes.is_empty() {
        return Err(fail(
            location,
            format!(
                "required patch: no rendered object is a {}{}",
                target_name(&target),
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

/// Every rendered object must be a Kubernetes object: apiVersion, kind and metadata.name.
fn check_object(index: usize, object: &Value) -> Result<(), RenderError> {
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
fn pod_templates(object: &mut Value) -> Vec<&mut Value> {
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

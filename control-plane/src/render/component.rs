//! Rendering one component release for one environment: build the context, render the
//! ComponentType's resources, then each trait instance's `creates` and `patches` (the type's
//! embedded traits first, then the component's, each seeing what came before), then add the
//! standard labels and the configuration hash. Pure and deterministic.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use troupe_common::pb::v1alpha1 as pb;

use super::context::{configurations, hash_hex, target_namespace, to_json, workload_context};
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
) -> Result<Vec<Value>, RenderError> {
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
    let configurations = configurations(workload.container.as_ref());
    let mut context = json!({
        "metadata": {
            "name": component,
            "componentName": component,
            "projectName": owner.project_name,
            "environmentName": env_meta.name,
            "namespace": target_namespace(input.namespace, &owner.project_name, &env_meta.name),
            "controlPlaneNamespace": input.namespace,
            "labels": labels,
            "podSelectors": pod_selectors,
        },
        "parameters": parameters,
        "environmentConfigs": environment_configs,
        "workload": workload_context(&workload),
        "configurations": configurations,
        "connections": {},
        "dataplane": input.data_plane,
        "environment": {
            "name": env_meta.name,
            "isProduction": env_spec.is_production,
            "spec": to_json(&env_spec),
        },
    });

    let mut objects = Vec::new();
    let prepared = prepare(engine, "the render context", &context)?;
    check_rules(engine, "ComponentType", &type_spec.validations, &prepared)?;
    for (i, resource) in type_spec.resources.iter().enumerate() {
        let location = format!("ComponentType resources[{}]", label(&resource.id, i));
        objects.extend(render_entry(engine, &location, resource, &prepared)?);
    }

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
                &trait_context,
                &mut objects,
            )?;
        }
    }
    // The trait contexts are done with; the base context is reused for post-processing only.
    context["trait"] = Value::Null;

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
    Ok(objects)
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
    context: &Value,
    objects: &mut [Value],
) -> Result<(), RenderError> {
    let target = p.target.clone().unwrap_or_default();
    let selector = Target {
        group: &target.group,
        version: &target.version,
        kind: &target.kind,
    };
    // forEach over the patch: one pass per item, with `var` bound.
    let passes: Vec<Value> = if p.for_each.is_empty() {
        vec![context.clone()]
    } else {
        let items = engine
            .eval("forEach", &p.for_each, context)
            .map_err(|e| fail(location, e.to_string()))?;
        let items = match items {
            Value::Array(items) => items,
            Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect(),
            other => {
                return Err(fail(
                    location,
                    format!("forEach must give a list or a map, not {other}"),
                ));
            }
        };
        items
            .into_iter()
            .map(|item| {
                let mut c = context.clone();
                c[p.var.as_str()] = item;
                c
            })
            .collect()
    };
    for pass in passes {
        let prepared = prepare(engine, location, &pass)?;
        for object in objects.iter_mut() {
            if !patch::matches(&selector, object) {
                continue;
            }
            if !target.r#where.is_empty() {
                let mut c = pass.clone();
                c["object"] = object.clone();
                let keep = engine
                    .eval("where", &target.r#where, &c)
                    .map_err(|e| fail(location, e.to_string()))?;
                if keep != Value::Bool(true) {
                    continue;
                }
            }
            for (j, operation) in p.operations.iter().enumerate() {
                let at = format!("{location} operations[{j}]");
                let op = Op::parse(&operation.op).map_err(|e| fail(&at, e.to_string()))?;
                let path = Path::parse(&operation.path).map_err(|e| fail(&at, e.to_string()))?;
                let value = match &operation.value {
                    Some(v) => Some(
                        engine
                            .render("/value", &to_json(v), &prepared)
                            .map_err(|e| fail(&at, e.to_string()))?,
                    ),
                    None => None,
                };
                patch::apply(object, op, &path, value.as_ref())
                    .map_err(|e| fail(&at, e.to_string()))?;
            }
        }
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

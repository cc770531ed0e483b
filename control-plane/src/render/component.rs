//! Rendering one component release for one environment, pure and deterministic, in two
//! steps. [`Plan::new`] works out what no environment changes, once per release: parameters
//! defaulted and validated, schemas compiled, templates converted, patch paths parsed.
//! [`Plan::render`] then builds the context (environment, overrides, resolved connections),
//! renders the ComponentType's resources, then each trait instance's `creates` and `patches`
//! (the type's embedded traits first, then the component's, each seeing what came before),
//! adds the standard labels and the configuration hash, checks the output rules, and finds
//! where the endpoints are reached.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use troupe_common::pb::v1alpha1 as pb;

use super::context::{
    configurations, connections_context, hash_hex, overridden, target_namespace, to_json,
    workload_context,
};
use super::endpoints::{Address, endpoint_statuses};
use super::patch::{self, Op, Path, Target};
use super::schema::{Schema, SchemaCache, describe};
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

/// Renders `input` into Kubernetes objects: [`Plan::new`] then [`Plan::render`].
pub fn render(
    engine: &Engine,
    schemas: &SchemaCache,
    input: &RenderInput<'_>,
) -> Result<Rendered, RenderError> {
    Plan::new(schemas, input.release)?.render(engine, input)
}

/// The part of rendering a release that no environment changes, worked out once per release:
/// the type and trait instances in order with their parameters defaulted and validated, the
/// `environmentConfigs` schemas compiled, templates and patch values as JSON and patch paths
/// parsed. A release is immutable, so its plan can be kept and reused for every binding.
pub struct Plan {
    owner: pb::ComponentOwner,
    workload: pb::WorkloadTemplate,
    workload_context: Value,
    /// The ComponentType first, then each trait instance.
    stages: Vec<Stage>,
}

/// The ComponentType, or one trait instance.
struct Stage {
    /// `ComponentType` or `trait INSTANCE (TRAIT)`, for messages.
    location: String,
    /// The trait instance's name; empty for the type.
    instance_name: String,
    /// `{name, instanceName}` for a trait; `None` for the type.
    trait_value: Option<Value>,
    parameters: Value,
    environment_schema: Option<Arc<Schema>>,
    /// A trait instance's own `environmentConfigs`, used when the binding sets none.
    environment_defaults: Option<Value>,
    validations: Vec<pb::ValidationRule>,
    output_validations: Vec<pb::OutputValidationRule>,
    entries: Vec<Entry>,
    patches: Vec<PatchPlan>,
}

/// A resource template (a type's resource or a trait's create).
struct Entry {
    location: String,
    include_when: String,
    for_each: String,
    var: String,
    template: Value,
}

/// A trait patch, parsed.
struct PatchPlan {
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

impl Plan {
    /// Works out the environment-independent part of rendering `release`.
    pub fn new(
        schemas: &SchemaCache,
        release: &pb::ComponentReleaseSpec,
    ) -> Result<Plan, RenderError> {
        let default_type = pb::ComponentTypeSpec::default();
        let type_spec = release
            .component_type
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .unwrap_or(&default_type);
        let profile = release.component_profile.clone().unwrap_or_default();
        let workload = release.workload.clone().unwrap_or_default();
        let mut stages = vec![Stage {
            location: "ComponentType".into(),
            instance_name: String::new(),
            trait_value: None,
            parameters: validated(
                schemas,
                "ComponentType parameters",
                type_spec.parameters.as_ref(),
                profile.parameters.as_ref(),
            )?,
            environment_schema: schema(
                schemas,
                "ComponentType environmentConfigs",
                type_spec.environment_configs.as_ref(),
            )?,
            environment_defaults: None,
            validations: type_spec.validations.clone(),
            output_validations: type_spec.output_validations.clone(),
            entries: entries("ComponentType resources", &type_spec.resources),
            patches: vec![],
        }];
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
            let default_trait = pb::TraitSpec::default();
            let trait_spec = snapshot.spec.as_ref().unwrap_or(&default_trait);
            let at = format!("trait {} ({})", instance.instance_name, instance.name);
            stages.push(Stage {
                instance_name: instance.instance_name.clone(),
                trait_value: Some(
                    json!({"name": instance.name, "instanceName": instance.instance_name}),
                ),
                parameters: validated(
                    schemas,
                    &format!("{at} parameters"),
                    trait_spec.parameters.as_ref(),
                    instance.parameters.as_ref(),
                )?,
                environment_schema: schema(
                    schemas,
                    &format!("{at} environmentConfigs"),
                    trait_spec.environment_configs.as_ref(),
                )?,
                environment_defaults: instance.environment_configs.as_ref().map(to_json),
                validations: trait_spec.validations.clone(),
                output_validations: trait_spec.output_validations.clone(),
                entries: entries(&format!("{at} creates"), &trait_spec.creates),
                patches: trait_spec
                    .patches
                    .iter()
                    .enumerate()
                    .map(|(i, p)| patch_plan(&format!("{at} patches[{i}]"), p))
                    .collect::<Result<_, _>>()?,
                location: at,
            });
        }
        Ok(Plan {
            owner: release.owner.clone().unwrap_or_default(),
            workload_context: workload_context(&workload),
            workload,
            stages,
        })
    }

    /// Renders the release for the environment, overrides and connections in `input`
    /// (`input.release` is not read again: the plan holds what it needs of it).
    pub fn render(
        &self,
        engine: &Engine,
        input: &RenderInput<'_>,
    ) -> Result<Rendered, RenderError> {
        let owner = &self.owner;
        let workload = &self.workload;
        let default_env = pb::EnvironmentSpec::default();
        let env_name = input
            .environment
            .metadata
            .as_ref()
            .map_or("", |m| m.name.as_str());
        let env_spec = input.environment.spec.as_ref().unwrap_or(&default_env);

        let component = owner.component_name.as_str();
        let labels: Map<String, Value> = LABELS
            .iter()
            .zip([
                input.namespace,
                owner.project_name.as_str(),
                component,
                env_name,
                input.release_name,
            ])
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect();
        let pod_selectors = json!({
            "troupe.dev/project": owner.project_name,
            "troupe.dev/component": component,
            "troupe.dev/environment": env_name,
        });
        let container = overridden(
            workload.container.as_ref(),
            input.workload_overrides,
            &workload.connections,
            input.connections,
        );
        let configurations = configurations(&container);
        let config_hash = hash_hex(&configurations.to_string());
        let namespace = target_namespace(input.namespace, &owner.project_name, env_name);
        let type_stage = &self.stages[0];
        let context = json!({
            "metadata": {
                "name": component,
                "componentName": component,
                "projectName": owner.project_name,
                "environmentName": env_name,
                "namespace": namespace,
                "controlPlaneNamespace": input.namespace,
                "labels": labels,
                "podSelectors": pod_selectors,
            },
            "parameters": type_stage.parameters,
            "environmentConfigs": type_stage.environment_configs(input.type_environment_configs)?,
            "workload": self.workload_context,
            "configurations": configurations,
            "connections": connections_context(&workload.connections, input.connections),
            "dataplane": input.data_plane,
            "environment": {
                "name": env_name,
                "isProduction": env_spec.is_production,
                "spec": to_json(env_spec),
            },
        });
        let base = engine
            .context(&context)
            .map_err(|e| fail("the render context", e.to_string()))?;

        let mut objects = Vec::new();
        // Each stage's context, kept for its output rules, which run once everything is
        // rendered.
        let mut contexts = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let context = match &stage.trait_value {
                None => base.clone(),
                Some(trait_value) => {
                    let values = input
                        .trait_environment_configs
                        .get(&stage.instance_name)
                        .map(to_json)
                        .or_else(|| stage.environment_defaults.clone());
                    let environment_configs = stage.environment_configs_json(values.as_ref())?;
                    base.with(&[
                        ("parameters", &stage.parameters),
                        ("environmentConfigs", &environment_configs),
                        ("trait", trait_value),
                    ])
                }
            };
            check_rules(engine, &stage.location, &stage.validations, &context)?;
            for entry in &stage.entries {
                objects.extend(entry.render(engine, &context)?);
            }
            for patch in &stage.patches {
                patch.apply(engine, &context, &mut objects)?;
            }
            contexts.push(context);
        }

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
        for (stage, context) in self.stages.iter().zip(&contexts) {
            check_output_rules(
                engine,
                &stage.location,
                &stage.output_validations,
                context,
                &objects,
            )?;
        }
        let endpoints =
            endpoint_statuses(&workload.endpoints, &objects, &namespace, &input.data_plane);
        Ok(Rendered { objects, endpoints })
    }
}

impl Stage {
    /// The stage's `environmentConfigs` from a binding's values, defaulted and validated.
    fn environment_configs(
        &self,
        values: Option<&pbjson_types::Struct>,
    ) -> Result<Value, RenderError> {
        self.environment_configs_json(values.map(to_json).as_ref())
    }

    fn environment_configs_json(&self, values: Option<&Value>) -> Result<Value, RenderError> {
        match &self.environment_schema {
            None => Ok(values.cloned().unwrap_or_else(|| json!({}))),
            Some(schema) => schema.apply(values).map_err(|violations| {
                fail(
                    format!("{} environmentConfigs", self.location),
                    describe(&violations),
                )
            }),
        }
    }
}

/// A list of resource templates, with their locations.
fn entries(location: &str, templates: &[pb::ResourceTemplate]) -> Vec<Entry> {
    templates
        .iter()
        .enumerate()
        .map(|(i, t)| Entry {
            location: format!("{location}[{}]", label(&t.id, i)),
            include_when: t.include_when.clone(),
            for_each: t.for_each.clone(),
            var: t.var.clone(),
            template: t.template.as_ref().map(to_json).unwrap_or(Value::Null),
        })
        .collect()
}

impl Entry {
    fn render(&self, engine: &Engine, context: &Context) -> Result<Vec<Value>, RenderError> {
        let entry = ResourceEntry {
            include_when: &self.include_when,
            for_each: &self.for_each,
            var: &self.var,
            template: &self.template,
        };
        engine
            .render_resource("", &entry, context)
            .map_err(|e| fail(&self.location, e.to_string()))
    }
}

fn patch_plan(location: &str, p: &pb::TraitPatch) -> Result<PatchPlan, RenderError> {
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

/// The compiled form of a schema, if there is one.
fn schema(
    schemas: &SchemaCache,
    location: &str,
    schema: Option<&pbjson_types::Struct>,
) -> Result<Option<Arc<Schema>>, RenderError> {
    schema
        .map(|s| {
            schemas
                .get(&to_json(s))
                .map_err(|v| fail(location, format!("the schema does not compile: {v}")))
        })
        .transpose()
}

/// Defaults and validates `value` against `schema` (none: any object).
fn validated(
    schemas: &SchemaCache,
    location: &str,
    raw_schema: Option<&pbjson_types::Struct>,
    value: Option<&pbjson_types::Struct>,
) -> Result<Value, RenderError> {
    let value = value.map(to_json);
    match schema(schemas, location, raw_schema)? {
        None => Ok(value.unwrap_or_else(|| json!({}))),
        Some(schema) => schema
            .apply(value.as_ref())
            .map_err(|violations| fail(location, describe(&violations))),
    }
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

impl PatchPlan {
    /// Applies the patch to every object its target selects, once per `forEach` item.
    fn apply(
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
        let target = &self.target;
        let mut selected = 0;
        for pass in &passes {
            let bound: Vec<(&str, &Value)> =
                pass.iter().map(|item| (self.var.as_str(), item)).collect();
            for object in objects.iter_mut() {
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

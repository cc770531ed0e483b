//! The plan of a release (what no environment changes, worked out once) and its render for
//! one environment: the context, each stage's objects and patches, then the finishing touches.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use troupe_common::pb::v1alpha1 as pb;

use super::patches::{PatchPlan, patch_plan};
use super::rules::{check_object, check_output_rules, check_rules, pod_templates};
use super::{CONFIG_HASH, LABELS, RenderError, RenderInput, Rendered, fail};
use crate::render::context::{
    configurations, connections_context, hash_hex, overridden, target_namespace, to_json,
    workload_context,
};
use crate::render::endpoints::endpoint_statuses;
use crate::render::schema::{Schema, SchemaCache, describe};
use crate::render::template::{Context, Engine, ResourceEntry};

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
        let frame = Frame::new(&self.owner, &self.workload, input);
        let base = engine
            .context(&self.context(input, &frame)?)
            .map_err(|e| fail("the render context", e.to_string()))?;
        let (mut objects, contexts) = self.render_stages(engine, input, &base)?;
        for (i, object) in objects.iter_mut().enumerate() {
            check_object(i, object, input.policy, &frame.namespace)?;
            frame.stamp(object);
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
        let endpoints = endpoint_statuses(
            &self.workload.endpoints,
            &objects,
            &frame.namespace,
            &input.data_plane,
        );
        let mut unenforced = Vec::new();
        if let Some(network) = input.network {
            for template in objects.iter_mut().flat_map(pod_templates) {
                frame.label_pods(template);
            }
            let policies = crate::render::network::render(network);
            for mut policy in policies.objects {
                frame.stamp(&mut policy);
                objects.push(policy);
            }
            unenforced = policies.unenforced;
        }
        Ok(Rendered {
            objects,
            endpoints,
            unenforced,
        })
    }

    /// The template context every stage starts from: metadata, the type's parameters and
    /// `environmentConfigs`, the workload, configurations, connections, data plane and
    /// environment.
    fn context(&self, input: &RenderInput<'_>, frame: &Frame<'_>) -> Result<Value, RenderError> {
        let owner = &self.owner;
        let component = owner.component_name.as_str();
        let env_name = frame.env_name;
        let pod_selectors = Value::Object(frame.pod_labels.clone());
        let type_stage = &self.stages[0];
        Ok(json!({
            "metadata": {
                "name": component,
                "componentName": component,
                "projectName": owner.project_name,
                "environmentName": env_name,
                "namespace": frame.namespace,
                "controlPlaneNamespace": input.namespace,
                "labels": frame.labels,
                "podSelectors": pod_selectors,
            },
            "parameters": type_stage.parameters,
            "environmentConfigs": type_stage.environment_configs(input.type_environment_configs)?,
            "workload": self.workload_context,
            "configurations": frame.configurations,
            "connections": connections_context(&self.workload.connections, input.connections),
            "dataplane": input.data_plane,
            "environment": {
                "name": env_name,
                "isProduction": frame.env_spec.is_production,
                "spec": to_json(frame.env_spec),
            },
        }))
    }

    /// Runs each stage in order (its rules, its resources, its patches) over the objects the
    /// stages before it rendered. Returns the objects and each stage's context, kept for its
    /// output rules, which run once everything is rendered.
    fn render_stages(
        &self,
        engine: &Engine,
        input: &RenderInput<'_>,
        base: &Context,
    ) -> Result<(Vec<Value>, Vec<Context>), RenderError> {
        let mut objects = Vec::new();
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
        Ok((objects, contexts))
    }
}

/// What one render works out from its environment, overrides and connections before any
/// template runs, and stamps on every object after.
struct Frame<'a> {
    env_name: &'a str,
    env_spec: &'a pb::EnvironmentSpec,
    /// The standard labels, those with a value.
    labels: Map<String, Value>,
    /// The labels that select the component's pods (`metadata.podSelectors`).
    pod_labels: Map<String, Value>,
    /// The target namespace in the data plane.
    namespace: String,
    /// The container's env and files after overrides and connections.
    configurations: Value,
    /// Hash of `configurations`; its prefix goes on pod templates so pods roll on change.
    config_hash: String,
}

impl<'a> Frame<'a> {
    fn new(
        owner: &'a pb::ComponentOwner,
        workload: &pb::WorkloadTemplate,
        input: &'a RenderInput<'a>,
    ) -> Self {
        static DEFAULT_ENV: std::sync::OnceLock<pb::EnvironmentSpec> = std::sync::OnceLock::new();
        let env_name = input
            .environment
            .metadata
            .as_ref()
            .map_or("", |m| m.name.as_str());
        let env_spec = input
            .environment
            .spec
            .as_ref()
            .unwrap_or_else(|| DEFAULT_ENV.get_or_init(Default::default));
        let labels: Map<String, Value> = LABELS
            .iter()
            .zip([
                input.namespace,
                owner.project_name.as_str(),
                owner.component_name.as_str(),
                env_name,
                input.release_name,
            ])
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect();
        let container = overridden(
            workload.container.as_ref(),
            input.workload_overrides,
            &workload.connections,
            input.connections,
        );
        let configurations = configurations(&container);
        let config_hash = hash_hex(&configurations.to_string());
        let pod_labels = [
            ("troupe.dev/project", owner.project_name.as_str()),
            ("troupe.dev/component", owner.component_name.as_str()),
            ("troupe.dev/environment", env_name),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::from(v)))
        .collect();
        Frame {
            env_name,
            env_spec,
            labels,
            pod_labels,
            namespace: target_namespace(input.namespace, &owner.project_name, env_name),
            configurations,
            config_hash,
        }
    }

    /// Adds the component's pod labels to a pod template where it lacks them, so its network
    /// policy selects every pod the release runs.
    fn label_pods(&self, template: &mut Value) {
        let Some(template) = template.as_object_mut() else {
            return;
        };
        let meta = template.entry("metadata").or_insert_with(|| json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return;
        };
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            for (key, value) in &self.pod_labels {
                labels.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }

    /// Adds the standard labels to a checked object, and the configuration hash to its pod
    /// templates.
    fn stamp(&self, object: &mut Value) {
        let meta = object["metadata"].as_object_mut().expect("checked before");
        let object_labels = meta.entry("labels").or_insert_with(|| json!({}));
        if let Some(map) = object_labels.as_object_mut() {
            for (k, v) in &self.labels {
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
                a.insert(CONFIG_HASH.into(), Value::from(&self.config_hash[..16]));
            }
        }
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

//! `troupe release create` and `troupe render`.

use std::collections::HashMap;
use std::process::ExitCode;

use serde_json::{Map, Value};
use tonic::transport::Channel;
use troupe_common::document::{integral_numbers, json_to_yaml};
use troupe_common::pb::v1alpha1::release_service_client::ReleaseServiceClient;
use troupe_common::pb::v1alpha1::{CreateReleaseRequest, EnvVar, RenderRequest, WorkloadOverrides};

use super::server_error;

pub(super) async fn create(
    client: &mut ReleaseServiceClient<Channel>,
    namespace: &str,
    component: &str,
) -> anyhow::Result<ExitCode> {
    let request = CreateReleaseRequest {
        namespace: namespace.into(),
        component: component.into(),
    };
    let response = client
        .create_release(request)
        .await
        .map_err(server_error)?
        .into_inner();
    let release = response.release.unwrap_or_default();
    let meta = release.metadata.unwrap_or_default();
    let sequence = meta
        .annotations
        .get("troupe.dev/sequence")
        .cloned()
        .unwrap_or_default();
    let what = if response.created {
        "created"
    } else {
        "unchanged (same content)"
    };
    println!(
        "componentrelease/{} (namespace {namespace}) {what}; release #{sequence} of {component}",
        meta.name
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) struct RenderArgs<'a> {
    pub namespace: &'a str,
    pub component: &'a str,
    pub environment: &'a str,
    pub release: &'a str,
    pub sets: &'a [String],
    pub set_envs: &'a [String],
    pub output: &'a str,
}

pub(super) async fn render(
    client: &mut ReleaseServiceClient<Channel>,
    args: RenderArgs<'_>,
) -> anyhow::Result<ExitCode> {
    let (type_configs, trait_configs) = parse_sets(args.sets)?;
    let mut request = RenderRequest {
        namespace: args.namespace.into(),
        component: args.component.into(),
        environment: args.environment.into(),
        release: args.release.into(),
        ..Default::default()
    };
    set_configs(&mut request, type_configs, trait_configs)?;
    request.workload_overrides = set_env(args.set_envs, None)?;
    let response = client
        .render(request)
        .await
        .map_err(server_error)?
        .into_inner();
    for pending in &response.pending_connections {
        eprintln!(
            "connection to {}/{} endpoint {} is pending: {}",
            pending.project, pending.component, pending.endpoint, pending.reason
        );
    }
    let mut docs = Vec::new();
    for manifest in response.manifests {
        let mut value = serde_json::to_value(&manifest)?;
        integral_numbers(&mut value);
        docs.push(value);
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&Value::Array(docs))?);
    } else {
        let texts: Vec<String> = docs.iter().map(json_to_yaml).collect();
        print!("{}", texts.join("---\n"));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) type Configs = Map<String, Value>;

/// `--set-env KEY=VALUE` values on top of a binding's workload overrides (an existing key is
/// replaced). `None` when there is nothing to override.
pub(super) fn set_env(
    set_envs: &[String],
    base: Option<WorkloadOverrides>,
) -> anyhow::Result<Option<WorkloadOverrides>> {
    if set_envs.is_empty() {
        return Ok(base);
    }
    let mut overrides = base.unwrap_or_default();
    let container = overrides.container.get_or_insert_default();
    for set in set_envs {
        let (key, value) = set
            .split_once('=')
            .filter(|(key, _)| !key.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--set-env {set:?}: expected KEY=VALUE"))?;
        let var = EnvVar {
            key: key.into(),
            value: value.into(),
            value_from: None,
        };
        match container.env.iter_mut().find(|e| e.key == key) {
            Some(existing) => *existing = var,
            None => container.env.push(var),
        }
    }
    Ok(Some(overrides))
}

/// Puts override maps into a render request.
pub(super) fn set_configs(
    request: &mut RenderRequest,
    type_configs: Configs,
    trait_configs: HashMap<String, Configs>,
) -> anyhow::Result<()> {
    request.component_type_environment_configs =
        Some(serde_json::from_value(Value::Object(type_configs))?);
    request.trait_environment_configs = trait_configs
        .into_iter()
        .map(|(k, v)| Ok((k, serde_json::from_value(Value::Object(v))?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(())
}

/// `--set a.b=1` sets the ComponentType's environmentConfigs; `--set traits.NAME.a=1` sets
/// trait instance NAME's. Values are read as YAML scalars (`3`, `true`, `text`).
fn parse_sets(sets: &[String]) -> anyhow::Result<(Configs, HashMap<String, Configs>)> {
    let (mut type_configs, mut trait_configs) = (Map::new(), HashMap::new());
    apply_sets(sets, &mut type_configs, &mut trait_configs)?;
    Ok((type_configs, trait_configs))
}

/// Applies `--set` values on top of existing configs.
pub(super) fn apply_sets(
    sets: &[String],
    type_configs: &mut Configs,
    trait_configs: &mut HashMap<String, Configs>,
) -> anyhow::Result<()> {
    for set in sets {
        let (path, raw) = set
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {set:?}: expected PATH=VALUE"))?;
        let value: Value = serde_saphyr::from_str(raw).unwrap_or_else(|_| Value::from(raw));
        let segments: Vec<&str> = path.split('.').collect();
        let (target, segments) = match segments.as_slice() {
            ["traits", instance, rest @ ..] if !rest.is_empty() => {
                (trait_configs.entry(instance.to_string()).or_default(), rest)
            }
            _ => (&mut *type_configs, segments.as_slice()),
        };
        insert(target, segments, value).map_err(|e| anyhow::anyhow!("--set {set:?}: {e}"))?;
    }
    Ok(())
}

fn insert(map: &mut Configs, path: &[&str], value: Value) -> Result<(), String> {
    match path {
        [] => Err("empty path".into()),
        [last] => {
            map.insert(last.to_string(), value);
            Ok(())
        }
        [first, rest @ ..] => match map
            .entry(first.to_string())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(inner) => insert(inner, rest, value),
            _ => Err(format!("{first} is set to a value, not a map")),
        },
    }
}

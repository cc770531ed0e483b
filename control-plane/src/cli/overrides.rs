//! The `--set PATH=VALUE` and `--set-env KEY=VALUE` flags `render` and `diff` share: how they
//! become environmentConfigs and workload overrides of a render request.

use std::collections::HashMap;

use serde_json::{Map, Value};
use troupe_common::pb::v1alpha1::{EnvVar, RenderRequest, WorkloadOverrides};

/// environmentConfigs values, as JSON.
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
pub(super) fn parse_sets(sets: &[String]) -> anyhow::Result<(Configs, HashMap<String, Configs>)> {
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

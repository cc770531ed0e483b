//! `troupe diff BINDING`: renders what a ReleaseBinding would produce now (optionally with
//! `--set` changes to its overrides) and compares it with its stored Release, object by
//! object, as a line diff of their YAML. Exits 1 when they differ, like `kubectl diff`.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use serde_json::{Map, Value};
use troupe_common::Object;
use troupe_common::document::{integral_numbers, json_to_yaml};
use troupe_common::pb::v1alpha1::{GetRequest, RenderRequest};

use super::context::{Client, Context, Releases, server_error};
use super::overrides::{Configs, apply_sets, set_configs, set_env};

/// Compare what a ReleaseBinding renders now (with optional `--set` changes to its
/// overrides) with its stored Release; exits 1 when they differ.
#[derive(Debug, clap::Args)]
pub struct DiffCmd {
    /// The ReleaseBinding.
    binding: String,
    /// Namespace of the binding.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Change an override for the comparison: `replicas=3`, `traits.INSTANCE.key=value`.
    #[arg(long = "set")]
    sets: Vec<String>,
    /// Set a container environment variable for the comparison: `LOG_LEVEL=debug`.
    #[arg(long = "set-env")]
    set_envs: Vec<String>,
}

impl DiffCmd {
    /// Prints the differences, object by object; exits 1 when there are any.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let resources = ctx.resources().await?;
        let mut releases = ctx.releases().await?;
        let wanted = by_identity(self.rendered(&resources, &mut releases).await?);
        let current = by_identity(stored(&resources, &self.namespace, &self.binding).await?);
        let binding = &self.binding;
        let mut differs = false;
        let names: std::collections::BTreeSet<&String> =
            wanted.keys().chain(current.keys()).collect();
        for name in names {
            let old = current.get(name).map(json_to_yaml).unwrap_or_default();
            let new = wanted.get(name).map(json_to_yaml).unwrap_or_default();
            if old == new {
                continue;
            }
            differs = true;
            outln!("--- {name} (stored Release {binding})\n+++ {name} (rendered now)");
            for line in line_diff(&old, &new) {
                outln!("{line}");
            }
        }
        if !differs {
            eprintln!("no differences: Release {binding} matches what the binding renders");
        }
        Ok(if differs {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }

    /// What the binding renders now, with the changes applied to its overrides.
    async fn rendered(
        &self,
        resources: &Client,
        releases: &mut Releases,
    ) -> anyhow::Result<Vec<Value>> {
        let (namespace, binding) = (&self.namespace, &self.binding);
        let request = GetRequest {
            kind: "ReleaseBinding".into(),
            namespace: namespace.clone(),
            name: binding.clone(),
        };
        let object = resources
            .clone()
            .get(request)
            .await
            .map_err(server_error)?
            .into_inner()
            .resource
            .and_then(|r| r.object);
        let Some(Object::ReleaseBinding(b)) = object else {
            anyhow::bail!("ReleaseBinding {namespace}/{binding} has no spec");
        };
        let spec = b.spec.unwrap_or_default();
        let mut type_configs: Configs = as_map(&spec.component_type_environment_configs)?;
        let mut trait_configs: HashMap<String, Configs> = spec
            .trait_environment_configs
            .iter()
            .map(|(k, v)| Ok((k.clone(), as_map(&Some(v.clone()))?)))
            .collect::<anyhow::Result<_>>()?;
        apply_sets(&self.sets, &mut type_configs, &mut trait_configs)?;
        let mut request = RenderRequest {
            namespace: namespace.clone(),
            component: spec.owner.unwrap_or_default().component_name,
            environment: spec.environment,
            release: spec.release_name,
            workload_overrides: set_env(&self.set_envs, spec.workload_overrides)?,
            ..Default::default()
        };
        set_configs(&mut request, type_configs, trait_configs)?;
        let rendered = releases
            .render(request)
            .await
            .map_err(server_error)?
            .into_inner();
        Ok(rendered
            .manifests
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?)
    }
}

/// The objects of the binding's stored Release (same name as the binding); none when there
/// is no Release yet.
async fn stored(client: &Client, namespace: &str, binding: &str) -> anyhow::Result<Vec<Value>> {
    let request = GetRequest {
        kind: "Release".into(),
        namespace: namespace.into(),
        name: binding.into(),
    };
    Ok(match client.clone().get(request).await {
        Ok(response) => match response.into_inner().resource.and_then(|r| r.object) {
            Some(Object::Release(r)) => r
                .spec
                .unwrap_or_default()
                .resources
                .iter()
                .map(|res| serde_json::to_value(&res.object))
                .collect::<Result<_, _>>()?,
            _ => vec![],
        },
        Err(status) if status.code() == tonic::Code::NotFound => vec![],
        Err(status) => return Err(server_error(status)),
    })
}

fn as_map(value: &Option<pbjson_types::Struct>) -> anyhow::Result<Configs> {
    match value {
        Some(s) => match serde_json::to_value(s)? {
            Value::Object(map) => Ok(map),
            _ => Ok(Map::new()),
        },
        None => Ok(Map::new()),
    }
}

/// Objects keyed by `Kind namespace/name`, with integral numbers as integers.
fn by_identity(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|mut o| {
            integral_numbers(&mut o);
            let id = format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            );
            (id, o)
        })
        .collect()
}

/// A minimal line diff (longest common subsequence): ` ` kept, `-` removed, `+` added.
fn line_diff(old: &str, new: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!(" {}", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+{}", b[j]));
            j += 1;
        } else {
            out.push(format!("-{}", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn line_diff_marks_changed_lines() {
        let d = line_diff("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(d, [" a", "+B", "-b", " c", "+d"]);
    }
}

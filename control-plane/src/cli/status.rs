//! `troupe status COMPONENT`: each environment of the component's pipeline (in pipeline
//! order, then any other environment it is bound in) with its release and readiness, as the
//! bindings' `Ready` conditions say.

use std::process::ExitCode;

use troupe_common::pb::v1alpha1::{DeploymentPipelineSpec, GetRequest, ReleaseBinding};
use troupe_common::status::{BindingState, ConditionStatus};
use troupe_common::{Kind, Object, Pipeline};

use super::context::{Client, Context, server_error};
use super::output::columns;
use crate::status::binding::readiness;

/// Show where a component runs: each environment's release and whether it is ready.
#[derive(Debug, clap::Args)]
pub struct StatusCmd {
    /// The component.
    component: String,
    /// Namespace of the component.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Output format.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

/// One row.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    environment: String,
    binding: String,
    release: String,
    state: String,
    ready: bool,
    reason: String,
    message: String,
}

impl StatusCmd {
    /// Prints the component's environments as a table or a JSON document.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let client = ctx.resources().await?;
        let (namespace, component) = (&self.namespace, &self.component);
        let (order, latest) = pipeline_order(&client, namespace, component).await?;
        let rows = rows(&client, namespace, component, &order).await?;
        // A component without autoDeploy: is there a release newer than the first environment's?
        let first = order
            .first()
            .and_then(|env| rows.iter().find(|r| &r.environment == env));
        let newer = first.filter(|r| !latest.is_empty() && r.release != latest);
        if self.output == "json" {
            let doc = serde_json::json!({
                "component": component,
                "namespace": namespace,
                "environments": rows,
                "latestRelease": latest,
                "newerReleaseAvailable": newer.is_some(),
            });
            outln!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(ExitCode::SUCCESS);
        }
        out!("{}", table(&rows));
        if let Some(first) = newer {
            let runs = if first.release.is_empty() {
                "nothing".to_string()
            } else {
                first.release.clone()
            };
            outln!(
                "\nnewer release available: {latest} ({} runs {runs}); `troupe release create {component} -n {namespace}` cuts it",
                first.environment
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// One object, which must exist.
async fn get(client: &Client, kind: Kind, namespace: &str, name: &str) -> anyhow::Result<Object> {
    let request = GetRequest {
        kind: kind.name().into(),
        namespace: namespace.into(),
        name: name.into(),
    };
    client
        .clone()
        .get(request)
        .await
        .map_err(server_error)?
        .into_inner()
        .resource
        .and_then(|r| r.object)
        .ok_or_else(|| anyhow::anyhow!("empty answer"))
}

/// The environments of the component's project pipeline, first environment first, and the
/// release its current state makes (known for components without autoDeploy).
async fn pipeline_order(
    client: &Client,
    namespace: &str,
    component: &str,
) -> anyhow::Result<(Vec<String>, String)> {
    let Object::Component(component) = get(client, Kind::Component, namespace, component).await?
    else {
        return Ok((vec![], String::new()));
    };
    let latest = component
        .status
        .and_then(|s| s.latest_release)
        .map(|l| l.name)
        .unwrap_or_default();
    let project = component
        .spec
        .and_then(|s| s.owner)
        .unwrap_or_default()
        .project_name;
    let Ok(Object::Project(project)) = get(client, Kind::Project, namespace, &project).await else {
        return Ok((vec![], latest));
    };
    let pipeline = project.spec.unwrap_or_default().deployment_pipeline_ref;
    let Ok(Object::DeploymentPipeline(pipeline)) =
        get(client, Kind::DeploymentPipeline, namespace, &pipeline).await
    else {
        return Ok((vec![], latest));
    };
    Ok((environment_order(pipeline.spec.unwrap_or_default()), latest))
}

/// A pipeline's environments in promotion order: each path's source, then its targets, each
/// environment where it first appears.
fn environment_order(pipeline: DeploymentPipelineSpec) -> Vec<String> {
    Pipeline::new(&pipeline)
        .environments()
        .into_iter()
        .map(String::from)
        .collect()
}

/// One row per binding of the component, plus a `NotDeployed` row for each pipeline
/// environment without one; pipeline environments first, in `order`, then the others by name.
async fn rows(
    client: &Client,
    namespace: &str,
    component: &str,
    order: &[String],
) -> anyhow::Result<Vec<Row>> {
    let bindings = super::get::list(client, Kind::ReleaseBinding.name(), namespace, "").await?;
    let mut rows: Vec<Row> = bindings
        .into_iter()
        .filter_map(|object| match object {
            Object::ReleaseBinding(binding) => Row::of_binding(binding, component),
            _ => None,
        })
        .collect();
    for env in order {
        if !rows.iter().any(|r| &r.environment == env) {
            rows.push(Row::not_deployed(env));
        }
    }
    let rank = |env: &str| order.iter().position(|e| e == env).unwrap_or(usize::MAX);
    rows.sort_by(|a, b| {
        (rank(&a.environment), &a.environment).cmp(&(rank(&b.environment), &b.environment))
    });
    Ok(rows)
}

impl Row {
    /// The row of a binding, as its `Ready` condition says; `None` for another component's.
    fn of_binding(binding: ReleaseBinding, component: &str) -> Option<Row> {
        let readiness = readiness(Some(&binding));
        let spec = binding.spec.unwrap_or_default();
        if spec
            .owner
            .as_ref()
            .is_none_or(|o| o.component_name != component)
        {
            return None;
        }
        let state = match spec.state.as_str() {
            "" => BindingState::Active.as_str().to_string(),
            _ => spec.state,
        };
        Some(Row {
            environment: spec.environment,
            binding: binding.metadata.unwrap_or_default().name,
            release: spec.release_name,
            state,
            ready: readiness.ready,
            reason: readiness.reason,
            message: readiness.message,
        })
    }

    /// The row of a pipeline environment the component has no binding in.
    fn not_deployed(env: &str) -> Row {
        let readiness = readiness(None);
        Row {
            environment: env.to_string(),
            binding: String::new(),
            release: String::new(),
            state: String::new(),
            ready: readiness.ready,
            reason: readiness.reason,
            message: readiness.message,
        }
    }
}

/// The rows as aligned columns under a header.
fn table(rows: &[Row]) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut lines = vec![
        [
            "ENVIRONMENT",
            "RELEASE",
            "STATE",
            "READY",
            "REASON",
            "MESSAGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        lines.push(vec![
            r.environment.clone(),
            dash(&r.release),
            dash(&r.state),
            ConditionStatus::from(r.ready).as_str().into(),
            r.reason.clone(),
            r.message.clone(),
        ]);
    }
    columns(&lines)
}

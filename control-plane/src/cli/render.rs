//! `troupe render COMPONENT --env ENV`: asks the server to render the manifests a component
//! (or one of its releases) would become in an environment, with optional `--set` and
//! `--set-env` overrides, and prints them as YAML or JSON. Nothing is stored.

use std::process::ExitCode;

use serde_json::Value;
use troupe_common::document::{integral_numbers, json_to_yaml};
use troupe_common::pb::v1alpha1::RenderRequest;

use super::context::{Context, server_error};
use super::overrides::{parse_sets, set_configs, set_env};

/// Print the manifests a component would become in an environment; stores nothing.
#[derive(Debug, clap::Args)]
pub struct RenderCmd {
    /// The component.
    component: String,
    /// Namespace of the component.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Environment to render for.
    #[arg(long = "env")]
    environment: String,
    /// Render this ComponentRelease instead of the component's current state.
    #[arg(long, default_value = "")]
    release: String,
    /// Override an environmentConfigs value: `replicas=3`, or `traits.INSTANCE.key=value`.
    #[arg(long = "set")]
    sets: Vec<String>,
    /// Set an environment variable of the container, as a binding's workload overrides do:
    /// `LOG_LEVEL=debug`.
    #[arg(long = "set-env")]
    set_envs: Vec<String>,
    /// Output format.
    #[arg(short, long, default_value = "yaml", value_parser = ["yaml", "json"])]
    output: String,
}

impl RenderCmd {
    /// Renders and prints the manifests; pending connections are reported on standard error.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let mut client = ctx.releases().await?;
        let (type_configs, trait_configs) = parse_sets(&self.sets)?;
        let mut request = RenderRequest {
            namespace: self.namespace,
            component: self.component,
            environment: self.environment,
            release: self.release,
            ..Default::default()
        };
        set_configs(&mut request, type_configs, trait_configs)?;
        request.workload_overrides = set_env(&self.set_envs, None)?;
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
        if self.output == "json" {
            outln!("{}", serde_json::to_string_pretty(&Value::Array(docs))?);
        } else {
            let texts: Vec<String> = docs.iter().map(json_to_yaml).collect();
            out!("{}", texts.join("---\n"));
        }
        Ok(ExitCode::SUCCESS)
    }
}

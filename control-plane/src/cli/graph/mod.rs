//! `troupe graph -n NS [--project P] [--env E] [-o table|json|dot|mermaid]`: asks the server
//! for the dependency graph (ReleaseService.Graph) and prints it for people ([`table`]), for
//! programs (proto3 JSON), or for a picture: Graphviz DOT ([`dot`]) or a Mermaid flowchart
//! ([`mermaid`]). The printers are pure functions of the response and share the words below.

mod dot;
mod mermaid;
mod table;

use std::process::ExitCode;

use troupe_common::pb::v1alpha1::{self as pb, GraphRequest};
use troupe_common::status::ConnectionState;

use super::context::{Context, server_error};

/// Show the components of a namespace, their endpoints, and the connections between them
/// with their state in each environment.
#[derive(Debug, clap::Args)]
pub struct GraphCmd {
    /// Namespace to draw.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Only this project's components, the connections to and from them, and the components
    /// at their other ends.
    #[arg(long, default_value = "")]
    project: String,
    /// Give connection states in this environment only (default: every environment).
    #[arg(long = "env", default_value = "")]
    environment: String,
    /// Output format: `dot` is Graphviz (`| dot -Tsvg > graph.svg`), `mermaid` a flowchart
    /// for Markdown.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json", "dot", "mermaid"])]
    output: String,
}

impl GraphCmd {
    /// Prints the graph.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let mut client = ctx.releases().await?;
        let request = GraphRequest {
            namespace: self.namespace,
            project: self.project,
            environment: self.environment,
        };
        let graph = client
            .graph(request)
            .await
            .map_err(server_error)?
            .into_inner();
        match self.output.as_str() {
            "json" => outln!("{}", serde_json::to_string_pretty(&graph)?),
            "dot" => out!("{}", dot::render(&graph)),
            "mermaid" => out!("{}", mermaid::render(&graph)),
            _ if graph.components.is_empty() && graph.connections.is_empty() => {
                eprintln!("no components in namespace {}", graph.namespace);
            }
            _ => out!("{}", table::render(&graph)),
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// How a connection stands across the environments shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Resolved in every one.
    Resolved,
    /// Resolved in some, pending in others.
    Partly,
    /// Pending in every one (or there is no environment).
    Pending,
}

impl Standing {
    fn of(connection: &pb::GraphConnection) -> Self {
        let resolved = |s: &pb::GraphConnectionState| s.state == ConnectionState::Resolved;
        let count = connection.states.iter().filter(|s| resolved(s)).count();
        match count {
            0 => Standing::Pending,
            n if n == connection.states.len() => Standing::Resolved,
            _ => Standing::Partly,
        }
    }
}

/// `project/name` of a component reference.
fn key(r: Option<&pb::GraphComponentRef>) -> String {
    r.map_or_else(String::new, |r| format!("{}/{}", r.project, r.name))
}

/// `project/name` of a component.
fn component_key(c: &pb::GraphComponent) -> String {
    format!("{}/{}", c.project, c.name)
}

/// Who may reach an endpoint: its declared visibility, `project` (always implied) when none.
fn visibility(endpoint: &pb::Endpoint) -> String {
    if endpoint.visibility.is_empty() {
        "project".to_string()
    } else {
        endpoint.visibility.join(", ")
    }
}

/// `http :8080 HTTP (namespace, external)`.
fn endpoint_line(endpoint: &pb::Endpoint) -> String {
    format!(
        "{} :{} {} ({})",
        endpoint.name,
        endpoint.port,
        endpoint.r#type,
        visibility(endpoint)
    )
}

/// The endpoint a connection calls, when its target is drawn and declares it.
fn target_endpoint<'g>(
    graph: &'g pb::GraphResponse,
    connection: &pb::GraphConnection,
) -> Option<&'g pb::Endpoint> {
    let target = connection.target.as_ref()?;
    graph
        .components
        .iter()
        .find(|c| c.project == target.project && c.name == target.name)?
        .endpoints
        .iter()
        .find(|e| e.name == connection.endpoint)
}

/// `environment: Resolved http://…` or `environment: Pending: reason`, one line per state.
fn state_lines(connection: &pb::GraphConnection) -> Vec<String> {
    connection
        .states
        .iter()
        .map(|s| {
            if s.state == ConnectionState::Resolved {
                format!("{}: {} {}", s.environment, s.state, s.url)
            } else {
                format!("{}: {}: {}", s.environment, s.state, s.reason)
            }
        })
        .collect()
}

/// Components and connections shared by the printers' tests.
#[cfg(test)]
mod fixture {
    use serde_json::json;
    use troupe_common::pb::v1alpha1 as pb;

    /// billing/ledger calls shop/api's http (resolved in development, pending in staging);
    /// shop/web calls shop/"we\"ird" (pending everywhere); shop/batch calls nothing.
    pub(super) fn mk_graph() -> pb::GraphResponse {
        serde_json::from_value(json!({
            "namespace": "acme",
            "environments": ["development", "staging"],
            "components": [
                {"namespace": "acme", "project": "billing", "name": "ledger",
                 "componentType": "deployment/service"},
                {"namespace": "acme", "project": "shop", "name": "api",
                 "componentType": "deployment/service",
                 "endpoints": [{"name": "http", "type": "HTTP", "port": 8080,
                                "visibility": ["namespace", "external"]}]},
                {"namespace": "acme", "project": "shop", "name": "batch",
                 "componentType": "cronjob/job"},
                {"namespace": "acme", "project": "shop", "name": "web",
                 "componentType": "deployment/web-app"},
            ],
            "connections": [
                {"consumer": {"project": "billing", "name": "ledger"},
                 "target": {"project": "shop", "name": "api"}, "endpoint": "http",
                 "visibility": "namespace",
                 "states": [
                    {"environment": "development", "state": "Resolved",
                     "url": "http://api.acme-shop-development.svc.cluster.local:8080"},
                    {"environment": "staging", "state": "Pending",
                     "reason": "component shop/api has no ReleaseBinding in environment staging"},
                 ]},
                {"consumer": {"project": "shop", "name": "web"},
                 "target": {"project": "shop", "name": "we\"ird"}, "endpoint": "<http>",
                 "visibility": "project",
                 "states": [
                    {"environment": "development", "state": "Pending",
                     "reason": "component shop/we\"ird does not exist"},
                    {"environment": "staging", "state": "Pending",
                     "reason": "component shop/we\"ird does not exist"},
                 ]},
            ],
        }))
        .expect("a graph")
    }
}

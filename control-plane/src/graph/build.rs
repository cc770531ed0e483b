//! Drawing the graph from listed objects: pure, so the same objects always draw the same
//! graph. Components and endpoints come from the Components and their Workloads as declared
//! now; each connection's state in an environment comes from the consumer's ReleaseBinding
//! there (see the parent module for why).

use std::collections::{BTreeSet, HashMap};

use troupe_common::Pipeline;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::{ConditionType, ConnectionState, Reason};

use crate::status::binding::not_rendering;
use crate::status::find_condition;

/// The objects a graph is drawn from, each kind listed once for the namespace.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The namespace.
    pub namespace: String,
    /// Its Components.
    pub components: Vec<pb::Component>,
    /// Its Workloads.
    pub workloads: Vec<pb::Workload>,
    /// Its ReleaseBindings.
    pub bindings: Vec<pb::ReleaseBinding>,
    /// The environments to give states in, in the order to give them.
    pub environments: Vec<String>,
}

/// The environments in the order people read them: each pipeline's promotion order
/// (pipelines by name), then the environments no pipeline names, by name. Only environments
/// that exist are named.
pub fn environment_order(
    environments: &[pb::Environment],
    pipelines: &[pb::DeploymentPipeline],
) -> Vec<String> {
    let existing: BTreeSet<&str> = environments
        .iter()
        .filter_map(|e| e.metadata.as_ref().map(|m| m.name.as_str()))
        .collect();
    let mut pipelines: Vec<&pb::DeploymentPipeline> = pipelines.iter().collect();
    pipelines.sort_by_key(|p| p.metadata.as_ref().map(|m| m.name.clone()));
    let mut order: Vec<String> = Vec::new();
    for pipeline in pipelines {
        let Some(spec) = &pipeline.spec else { continue };
        let pipeline = Pipeline::new(spec);
        for env in pipeline.order() {
            if existing.contains(env) && !order.iter().any(|o| o == env) {
                order.push(env.to_string());
            }
        }
    }
    for env in existing {
        if !order.iter().any(|o| o == env) {
            order.push(env.to_string());
        }
    }
    order
}

/// Draws the graph of `inputs`; when `project` is not empty, only its components, the
/// connections to and from them, and the components at their other ends.
pub fn build(inputs: &Inputs, project: &str) -> pb::GraphResponse {
    let index = Index::new(inputs);
    let mut connections: Vec<pb::GraphConnection> = inputs
        .workloads
        .iter()
        .flat_map(|w| index.connections_of(w, &inputs.environments))
        .filter(|c| project.is_empty() || touches(c, project))
        .collect();
    connections.sort_by(|a, b| edge_key(a).cmp(&edge_key(b)));
    // With a project: the connections' other ends are drawn too, so no edge hangs loose.
    let ends: BTreeSet<(&str, &str)> = connections
        .iter()
        .flat_map(|c| [c.consumer.as_ref(), c.target.as_ref()])
        .flatten()
        .map(|r| (r.project.as_str(), r.name.as_str()))
        .collect();
    let mut components: Vec<pb::GraphComponent> = inputs
        .components
        .iter()
        .map(|c| index.component(c))
        .filter(|c| {
            project.is_empty()
                || c.project == project
                || ends.contains(&(c.project.as_str(), c.name.as_str()))
        })
        .collect();
    components.sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
    pb::GraphResponse {
        namespace: inputs.namespace.clone(),
        environments: inputs.environments.clone(),
        components,
        connections,
    }
}

/// Whether a connection starts or ends in `project`.
fn touches(connection: &pb::GraphConnection, project: &str) -> bool {
    [&connection.consumer, &connection.target]
        .into_iter()
        .flatten()
        .any(|r| r.project == project)
}

/// What connections sort by: consumer, target, endpoint.
fn edge_key(c: &pb::GraphConnection) -> (&str, &str, &str, &str, &str) {
    fn parts(r: Option<&pb::GraphComponentRef>) -> (&str, &str) {
        r.map_or(("", ""), |r| (r.project.as_str(), r.name.as_str()))
    }
    let (consumer, target) = (parts(c.consumer.as_ref()), parts(c.target.as_ref()));
    (consumer.0, consumer.1, target.0, target.1, &c.endpoint)
}

/// One declared connection, with its target's project filled in.
struct Edge<'a> {
    consumer: (&'a str, &'a str),
    target: (&'a str, &'a str),
    endpoint: &'a str,
}

/// The listed objects, looked up by what the graph asks of them.
struct Index<'a> {
    /// The project of each component, by component name (unique in a namespace).
    projects: HashMap<&'a str, &'a str>,
    /// The endpoints of each component's Workload, by `(project, component)`.
    endpoints: HashMap<(&'a str, &'a str), &'a [pb::Endpoint]>,
    /// The bindings of each component in each environment, by `(project, component,
    /// environment)`; more than one is a conflict the graph reports.
    bindings: HashMap<(&'a str, &'a str, &'a str), Vec<&'a pb::ReleaseBinding>>,
}

impl<'a> Index<'a> {
    fn new(inputs: &'a Inputs) -> Self {
        let projects = inputs
            .components
            .iter()
            .filter_map(|c| Some((c.metadata.as_ref()?.name.as_str(), project_of(c))))
            .collect();
        let endpoints = inputs
            .workloads
            .iter()
            .filter_map(|w| {
                let spec = w.spec.as_ref()?;
                let owner = spec.owner.as_ref()?;
                let key = (owner.project_name.as_str(), owner.component_name.as_str());
                Some((key, spec.endpoints.as_slice()))
            })
            .collect();
        let mut bindings: HashMap<_, Vec<_>> = HashMap::new();
        for binding in &inputs.bindings {
            let Some(spec) = binding.spec.as_ref() else {
                continue;
            };
            let Some(owner) = spec.owner.as_ref() else {
                continue;
            };
            let key = (
                owner.project_name.as_str(),
                owner.component_name.as_str(),
                spec.environment.as_str(),
            );
            bindings.entry(key).or_default().push(binding);
        }
        Self {
            projects,
            endpoints,
            bindings,
        }
    }

    /// A component as the graph shows it.
    fn component(&self, c: &pb::Component) -> pb::GraphComponent {
        let meta = c.metadata.clone().unwrap_or_default();
        let project = project_of(c);
        let component_type = c
            .spec
            .as_ref()
            .and_then(|s| s.component_type.as_ref())
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let endpoints = self
            .endpoints
            .get(&(project, meta.name.as_str()))
            .map(|e| e.to_vec())
            .unwrap_or_default();
        pb::GraphComponent {
            namespace: meta.namespace,
            project: project.to_string(),
            name: meta.name,
            component_type,
            endpoints,
        }
    }

    /// The connections `workload` declares, each with its state in every environment.
    fn connections_of(
        &self,
        workload: &'a pb::Workload,
        environments: &[String],
    ) -> Vec<pb::GraphConnection> {
        let Some(spec) = workload.spec.as_ref() else {
            return vec![];
        };
        let owner = spec.owner.clone().unwrap_or_default();
        spec.connections
            .iter()
            .map(|c| {
                let target_project = if c.project.is_empty() {
                    owner.project_name.as_str()
                } else {
                    c.project.as_str()
                };
                let edge = Edge {
                    consumer: (&owner.project_name, &owner.component_name),
                    target: (target_project, &c.component),
                    endpoint: &c.endpoint,
                };
                let reference = |(project, name): (&str, &str)| pb::GraphComponentRef {
                    project: project.to_string(),
                    name: name.to_string(),
                };
                pb::GraphConnection {
                    consumer: Some(reference(edge.consumer)),
                    target: Some(reference(edge.target)),
                    endpoint: c.endpoint.clone(),
                    visibility: if c.visibility.is_empty() {
                        "project".to_string()
                    } else {
                        c.visibility.clone()
                    },
                    states: environments
                        .iter()
                        .map(|env| state(env, self.outcome(&edge, env)))
                        .collect(),
                }
            })
            .collect()
    }

    /// The address the connection resolved to in `environment`, or why it did not.
    fn outcome(&self, edge: &Edge<'_>, environment: &str) -> Result<String, String> {
        let (target_project, target) = edge.target;
        if self.projects.get(target) != Some(&target_project) {
            return Err(format!(
                "component {target_project}/{target} does not exist"
            ));
        }
        let consumer = format!(
            "component {}/{} (the consumer)",
            edge.consumer.0, edge.consumer.1
        );
        let key = (edge.consumer.0, edge.consumer.1, environment);
        let binding = match self
            .bindings
            .get(&key)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            [] => {
                return Err(format!(
                    "{consumer} has no ReleaseBinding in environment {environment}"
                ));
            }
            [one] => *one,
            many => {
                let names: Vec<&str> = many
                    .iter()
                    .filter_map(|b| b.metadata.as_ref().map(|m| m.name.as_str()))
                    .collect();
                return Err(format!(
                    "{consumer} has {} ReleaseBindings in environment {environment} ({})",
                    many.len(),
                    names.join(", ")
                ));
            }
        };
        let spec = binding.spec.clone().unwrap_or_default();
        match not_rendering(&spec) {
            Some(Reason::Undeployed) => {
                return Err(format!(
                    "{consumer} is undeployed in environment {environment}"
                ));
            }
            Some(_) => {
                return Err(format!(
                    "{consumer} has no release bound in environment {environment}"
                ));
            }
            None => {}
        }
        let status = binding.status.clone().unwrap_or_default();
        let names = |project: &str, component: &str, endpoint: &str| {
            (project, component, endpoint) == (target_project, target, edge.endpoint)
        };
        if let Some(r) = status
            .resolved_connections
            .iter()
            .find(|r| names(&r.project, &r.component, &r.endpoint))
        {
            return Ok(r.url.clone());
        }
        if let Some(p) = status
            .pending_connections
            .iter()
            .find(|p| names(&p.project, &p.component, &p.endpoint))
        {
            return Err(p.reason.clone());
        }
        let name = binding.metadata.as_ref().map_or("", |m| m.name.as_str());
        if find_condition(&status.conditions, ConditionType::ConnectionsResolved).is_none() {
            return Err(format!(
                "ReleaseBinding {name} of {consumer} is not rendered yet"
            ));
        }
        Err(format!(
            "{consumer} runs release {} in environment {environment}, which does not declare the connection; a new release will",
            spec.release_name
        ))
    }
}

/// The project a component belongs to.
fn project_of(c: &pb::Component) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.owner.as_ref())
        .map_or("", |o| o.project_name.as_str())
}

/// A connection's state in `environment` from its outcome there.
fn state(environment: &str, outcome: Result<String, String>) -> pb::GraphConnectionState {
    let (state, url, reason) = match outcome {
        Ok(url) => (ConnectionState::Resolved, url, String::new()),
        Err(reason) => (ConnectionState::Pending, String::new(), reason),
    };
    pb::GraphConnectionState {
        environment: environment.to_string(),
        state: state.as_str().to_string(),
        url,
        reason,
    }
}

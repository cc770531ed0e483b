//! The dependency graph of a namespace: its components with the endpoints their Workloads
//! serve, and the connections their Workloads declare, each with how it stands in every
//! environment. [`graph`] reads what the graph is drawn from with one list per kind
//! (Environments, DeploymentPipelines, Components, Workloads, ReleaseBindings) and hands it
//! to [`build`], a pure function, so every state and reason a user can see is unit-tested.
//!
//! The states are not worked out again here. The binding controller resolves a workload's
//! connections each time it renders the consumer's binding (`releases::connections`) and
//! records the outcome in the binding's status; the graph reads that. Where there is no such
//! outcome (the target does not exist, the consumer is not deployed in the environment, or
//! the release it runs there predates the connection) the connection is pending with that
//! reason: a declared connection is never left out.

mod build;
#[cfg(test)]
mod tests;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::selector::LabelSelector;
use troupe_common::{Kind, ObjectKey};

pub use build::{Inputs, build, environment_order};

use crate::resources::{Error, Resources};

/// What to draw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The namespace.
    pub namespace: String,
    /// A project to narrow to; empty for the whole namespace.
    pub project: String,
    /// The one environment to give states in; empty for all of them.
    pub environment: String,
}

/// Draws the graph `query` asks for from the objects stored now. A namespace, project or
/// environment that does not exist is [`Error::NotFound`].
pub async fn graph(resources: &Resources, query: &Query) -> Result<pb::GraphResponse, Error> {
    let namespace = query.namespace.as_str();
    resources.get(&ObjectKey::new(Kind::Namespace, "", namespace))?;
    if !query.project.is_empty() {
        resources.get(&ObjectKey::new(Kind::Project, namespace, &query.project))?;
    }
    let all = LabelSelector::default();
    let environments: Vec<pb::Environment> = resources.list_as(namespace, &all).await?;
    let pipelines: Vec<pb::DeploymentPipeline> = resources.list_as(namespace, &all).await?;
    let mut order = environment_order(&environments, &pipelines);
    if !query.environment.is_empty() {
        if !order.contains(&query.environment) {
            return Err(Error::NotFound(ObjectKey::new(
                Kind::Environment,
                namespace,
                &query.environment,
            )));
        }
        order = vec![query.environment.clone()];
    }
    let inputs = Inputs {
        namespace: namespace.to_string(),
        components: resources.list_as(namespace, &all).await?,
        workloads: resources.list_as(namespace, &all).await?,
        bindings: resources.list_as(namespace, &all).await?,
        environments: order,
    };
    Ok(build(&inputs, &query.project))
}

/// Keeps the components `visible(project, component)` allows and the connections whose
/// consumer it allows: what a caller whose grants reach only some projects may see. A
/// connection's target stays named even when hidden, as the consumer's Workload names it.
pub fn retain_visible(graph: &mut pb::GraphResponse, visible: impl Fn(&str, &str) -> bool) {
    graph.components.retain(|c| visible(&c.project, &c.name));
    graph.connections.retain(|c| {
        let consumer = c.consumer.as_ref();
        consumer.is_some_and(|c| visible(&c.project, &c.name))
    });
}

//! Resolving a workload's connections in one environment. A connection names a component (in
//! the consumer's project unless it names another) and one of its endpoints; the address comes
//! from that component's ReleaseBinding in the same environment — the `status.endpoints` its
//! render produced — never from what a template meant to create. A connection that cannot
//! resolve is pending, with the reason, and its environment variables are left out until it
//! does.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use crate::render::endpoints::Address;
use crate::render::network::{Destination, Peer};
use crate::resources::Resources;

/// The outcome for every connection of a workload, in declaration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolution {
    /// Each connection's address, `None` while pending.
    pub addresses: Vec<Option<Address>>,
    /// The connections that resolved.
    pub resolved: Vec<pb::ResolvedConnection>,
    /// The connections that did not, with why.
    pub pending: Vec<pb::PendingConnection>,
    /// Where the resolved connections' traffic goes (the target's pods and port), for egress
    /// policies.
    pub destinations: Vec<Destination>,
}

/// Resolves `connections` of a component of `project` in `environment` (all in `namespace`),
/// against `bindings`, the ReleaseBindings of that environment.
pub fn resolve(
    resources: &Resources,
    namespace: &str,
    (project, environment): (&str, &str),
    bindings: &[pb::ReleaseBinding],
    connections: &[pb::Connection],
) -> Resolution {
    let mut resolution = Resolution::default();
    for connection in connections {
        let target_project = if connection.project.is_empty() {
            project
        } else {
            connection.project.as_str()
        };
        let visibility = if connection.visibility.is_empty() {
            "project"
        } else {
            connection.visibility.as_str()
        };
        let outcome = address(
            resources,
            namespace,
            environment,
            bindings,
            (project, target_project),
            visibility,
            connection,
        );
        match outcome {
            Ok((address, endpoint)) => {
                resolution.destinations.push(Destination {
                    peer: Peer {
                        project: target_project.to_string(),
                        component: connection.component.clone(),
                    },
                    port: if endpoint.target_port > 0 {
                        endpoint.target_port
                    } else {
                        endpoint.port
                    },
                    protocol: if endpoint.r#type == "UDP" {
                        "UDP"
                    } else {
                        "TCP"
                    }
                    .into(),
                });
                resolution.resolved.push(pb::ResolvedConnection {
                    namespace: namespace.to_string(),
                    project: target_project.to_string(),
                    component: connection.component.clone(),
                    endpoint: connection.endpoint.clone(),
                    visibility: visibility.to_string(),
                    url: address.url(),
                });
                resolution.addresses.push(Some(address));
            }
            Err(reason) => {
                resolution.pending.push(pb::PendingConnection {
                    namespace: namespace.to_string(),
                    project: target_project.to_string(),
                    component: connection.component.clone(),
                    endpoint: connection.endpoint.clone(),
                    visibility: visibility.to_string(),
                    reason,
                });
                resolution.addresses.push(None);
            }
        }
    }
    resolution
}

/// The address one connection resolves to and the endpoint it names, or why it does not.
fn address(
    resources: &Resources,
    namespace: &str,
    environment: &str,
    bindings: &[pb::ReleaseBinding],
    (project, target_project): (&str, &str),
    visibility: &str,
    connection: &pb::Connection,
) -> Result<(Address, pb::Endpoint), String> {
    let target = format!("component {}/{}", target_project, connection.component);
    if target_project != project && visibility != "namespace" {
        return Err(format!(
            "{target} is in another project; a connection across projects needs visibility namespace"
        ));
    }
    let binding = target_binding(bindings, &target, environment, target_project, connection)?;
    let spec = binding.spec.clone().unwrap_or_default();
    if spec.state == troupe_common::status::BindingState::Undeploy {
        return Err(format!(
            "{target} is undeployed in environment {environment}"
        ));
    }
    if spec.release_name.is_empty() {
        return Err(format!(
            "{target} has no release bound in environment {environment}"
        ));
    }
    let endpoint = released_endpoint(
        resources,
        namespace,
        &target,
        &spec.release_name,
        connection,
    )?;
    if visibility == "namespace" && !endpoint.visibility.iter().any(|v| v == "namespace") {
        return Err(format!(
            "endpoint {} of {target} is not visible to the namespace (its visibility: project{})",
            endpoint.name,
            endpoint
                .visibility
                .iter()
                .map(|v| format!(", {v}"))
                .collect::<String>()
        ));
    }
    binding
        .status
        .as_ref()
        .and_then(|s| s.endpoints.iter().find(|e| e.name == connection.endpoint))
        .and_then(|e| e.service_url.as_ref())
        .map(|url| (Address::from_url(url), endpoint.clone()))
        .ok_or_else(|| {
            format!(
                "endpoint {} of {target} has no address in environment {environment} yet (not rendered, or no Service exposes its port)",
                endpoint.name
            )
        })
}

/// The one binding of the connected component in the environment.
fn target_binding<'b>(
    bindings: &'b [pb::ReleaseBinding],
    target: &str,
    environment: &str,
    target_project: &str,
    connection: &pb::Connection,
) -> Result<&'b pb::ReleaseBinding, String> {
    let candidates: Vec<&pb::ReleaseBinding> = bindings
        .iter()
        .filter(|b| {
            let owner = b
                .spec
                .as_ref()
                .and_then(|s| s.owner.clone())
                .unwrap_or_default();
            owner.project_name == target_project && owner.component_name == connection.component
        })
        .collect();
    match candidates.as_slice() {
        [] => Err(format!(
            "{target} has no ReleaseBinding in environment {environment}"
        )),
        [one] => Ok(one),
        many => {
            let names: Vec<&str> = many
                .iter()
                .filter_map(|b| b.metadata.as_ref().map(|m| m.name.as_str()))
                .collect();
            Err(format!(
                "{target} has {} ReleaseBindings in environment {environment} ({}); which one is meant is ambiguous",
                many.len(),
                names.join(", ")
            ))
        }
    }
}

/// The endpoint the connection names, as declared in the bound release.
fn released_endpoint(
    resources: &Resources,
    namespace: &str,
    target: &str,
    release: &str,
    connection: &pb::Connection,
) -> Result<pb::Endpoint, String> {
    let release_key = ObjectKey::new(Kind::ComponentRelease, namespace, release);
    let endpoints = match resources.get_as::<pb::ComponentRelease>(&release_key) {
        Ok(r) => r
            .spec
            .and_then(|s| s.workload)
            .map(|w| w.endpoints)
            .unwrap_or_default(),
        Err(_) => return Err(format!("{target}: release {release} is not found")),
    };
    let Some(endpoint) = endpoints.iter().find(|e| e.name == connection.endpoint) else {
        let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
        return Err(format!(
            "{target} has no endpoint {:?} in release {release} (it has: {})",
            connection.endpoint,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    Ok(endpoint.clone())
}

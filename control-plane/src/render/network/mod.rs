//! Network policies: what a component's pods may receive and send, rendered as ordinary
//! objects of its Release.
//!
//! Every component gets one policy selecting its pods (`troupe.dev/project`,
//! `troupe.dev/component`, `troupe.dev/environment`). Ingress is always controlled: only the
//! ports of the component's endpoints are open, and only to whom each endpoint's visibility
//! admits (`project`: the component's own cell, the namespace of its project in that
//! environment; `namespace`: every cell of the tenant in that environment; `internal` and
//! `external`: the data plane's gateways), plus the components that declare a connection to
//! an endpoint that admits it. A component without endpoints receives nothing. Egress is
//! controlled only when its project or the component turns it on: then DNS, the declared
//! connections (the target's pods and port) and the listed CIDRs and host names.
//!
//! The provider chosen on the DataPlane decides the form: `kubernetes` NetworkPolicy, or
//! `cilium` CiliumNetworkPolicy (which can express host names). A rule the provider cannot
//! enforce is left out of the policy (so the traffic stays denied) and reported, never
//! dropped silently.
//!
//! Data flows one way: [`NetworkInput`] → `plan` (who may reach which port and where the
//! component may send, in provider-neutral terms) → `kubernetes` or `cilium` (the objects).
//! `egress` holds the rules about egress lists themselves: how a component's list narrows
//! its project's, and what a well-formed rule is.

mod cilium;
mod egress;
mod kubernetes;
mod plan;
#[cfg(test)]
mod tests;

use troupe_common::pb::v1alpha1 as pb;

pub use egress::{check_egress, effective_egress};

/// How a data plane enforces policies (`spec.networkPolicy.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `networking.k8s.io/v1` NetworkPolicy.
    Kubernetes,
    /// `cilium.io/v2` CiliumNetworkPolicy.
    Cilium,
    /// No policies.
    None,
}

impl Provider {
    /// The provider a DataPlane names; `None` (the Rust one) for an unknown name.
    pub fn parse(name: &str) -> Option<Provider> {
        match name {
            "" | "kubernetes" => Some(Provider::Kubernetes),
            "cilium" => Some(Provider::Cilium),
            "none" => Some(Provider::None),
            _ => None,
        }
    }
}

/// A component in the same environment, by project and name (its cell is
/// `target_namespace(tenant, project, environment)`, its pods carry the standard labels).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Its project.
    pub project: String,
    /// Its name.
    pub component: String,
}

/// A component that declares a connection to one of this component's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Consumer {
    /// Who connects.
    pub peer: Peer,
    /// The endpoint of this component it names.
    pub endpoint: String,
    /// The connection's visibility: `project` (the default) or `namespace`.
    pub visibility: String,
}

/// A declared connection of this component, resolved: where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Destination {
    /// The target component.
    pub peer: Peer,
    /// The port its pods listen on (the endpoint's `targetPort`, or `port`).
    pub port: i32,
    /// `TCP` or `UDP`.
    pub protocol: String,
}

/// One of the data plane's gateways, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPeer {
    /// `internal` or `external`: the visibility it serves.
    pub visibility: String,
    /// Its namespace on the cluster.
    pub namespace: String,
    /// Labels of its pods; empty admits the whole namespace.
    pub pod_selector: std::collections::BTreeMap<String, String>,
}

/// Egress control in force for the component: what it may reach besides DNS.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Egress {
    /// Its resolved connections.
    pub destinations: Vec<Destination>,
    /// The CIDRs and host names allowed (already narrowed to the project's ceiling).
    pub rules: Vec<pb::EgressRule>,
}

/// Everything one component's policies are rendered from.
#[derive(Debug, Clone)]
pub struct NetworkInput<'a> {
    /// The data plane's provider.
    pub provider: Provider,
    /// The control-plane namespace (the tenant).
    pub tenant: &'a str,
    /// The component's project.
    pub project: &'a str,
    /// The component.
    pub component: &'a str,
    /// The environment.
    pub environment: &'a str,
    /// The component's endpoints, as its release declares them.
    pub endpoints: &'a [pb::Endpoint],
    /// The data plane's gateways that are configured (a name and a namespace).
    pub gateways: &'a [GatewayPeer],
    /// Components of the environment that declare a connection to this one, sorted.
    pub consumers: &'a [Consumer],
    /// `None` when egress is not controlled.
    pub egress: Option<&'a Egress>,
}

/// What [`render`] produces.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkOutput {
    /// The policy objects, each with `metadata.name` and `metadata.namespace` (the cell).
    pub objects: Vec<serde_json::Value>,
    /// Rules the provider cannot enforce, each a sentence naming the rule.
    pub unenforced: Vec<String>,
}

/// Renders the component's policies for its provider (none for [`Provider::None`]).
pub fn render(input: &NetworkInput<'_>) -> NetworkOutput {
    match input.provider {
        Provider::Kubernetes => kubernetes::render(&plan::Plan::of(input)),
        Provider::Cilium => cilium::render(&plan::Plan::of(input)),
        Provider::None => NetworkOutput::default(),
    }
}

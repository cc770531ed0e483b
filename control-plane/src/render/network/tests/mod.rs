//! Tests of the network policies: golden renders for both providers, the behaviour a user
//! sees in them, a small evaluator of NetworkPolicy semantics with a table of the flows a
//! platform declares, and the egress allow lists. Builders are `mk_*`.

use std::collections::BTreeMap;

use troupe_common::pb::v1alpha1 as pb;

use super::*;

mod egress;
mod evaluator;
mod flows;
mod golden;
mod rendering;

/// The tenant every test renders for.
const TENANT: &str = "acme";

/// One component's policy input, owning what [`NetworkInput`] borrows.
#[derive(Debug, Clone)]
struct Case {
    provider: Provider,
    project: String,
    component: String,
    environment: String,
    endpoints: Vec<pb::Endpoint>,
    gateways: Vec<GatewayPeer>,
    consumers: Vec<Consumer>,
    egress: Option<Egress>,
}

impl Case {
    fn render(&self) -> NetworkOutput {
        render(&NetworkInput {
            provider: self.provider,
            tenant: TENANT,
            project: &self.project,
            component: &self.component,
            environment: &self.environment,
            endpoints: &self.endpoints,
            gateways: &self.gateways,
            consumers: &self.consumers,
            egress: self.egress.as_ref(),
        })
    }

    fn with_provider(mut self, provider: Provider) -> Case {
        self.provider = provider;
        self
    }
}

/// `component` of `project` in `development`, with no endpoints, gateways or consumers, for
/// the Kubernetes provider.
fn mk_case(project: &str, component: &str) -> Case {
    Case {
        provider: Provider::Kubernetes,
        project: project.into(),
        component: component.into(),
        environment: "development".into(),
        endpoints: Vec::new(),
        gateways: Vec::new(),
        consumers: Vec::new(),
        egress: None,
    }
}

/// An endpoint; `target_port` 0 means the same as `port`.
fn mk_endpoint(
    name: &str,
    kind: &str,
    port: i32,
    target_port: i32,
    visibility: &[&str],
) -> pb::Endpoint {
    pb::Endpoint {
        name: name.into(),
        r#type: kind.into(),
        port,
        target_port,
        visibility: visibility.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

fn mk_labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A gateway serving `visibility` from pods labelled `pods` (all of `namespace` when empty).
fn mk_gateway(visibility: &str, namespace: &str, pods: &[(&str, &str)]) -> GatewayPeer {
    GatewayPeer {
        visibility: visibility.into(),
        namespace: namespace.into(),
        pod_selector: mk_labels(pods),
    }
}

/// The data plane's gateways as the sample platform configures them: the internal one by
/// its namespace alone, the external one by its pods' labels.
fn mk_gateways() -> Vec<GatewayPeer> {
    vec![
        mk_gateway("internal", "gateway-internal", &[]),
        mk_gateway(
            "external",
            "gateway-external",
            &[("app.kubernetes.io/name", "external-gateway")],
        ),
    ]
}

fn mk_peer(project: &str, component: &str) -> Peer {
    Peer {
        project: project.into(),
        component: component.into(),
    }
}

/// `project/component` connects to `endpoint` through `visibility`.
fn mk_consumer(project: &str, component: &str, endpoint: &str, visibility: &str) -> Consumer {
    Consumer {
        peer: mk_peer(project, component),
        endpoint: endpoint.into(),
        visibility: visibility.into(),
    }
}

fn mk_destination(project: &str, component: &str, port: i32, protocol: &str) -> Destination {
    Destination {
        peer: mk_peer(project, component),
        port,
        protocol: protocol.into(),
    }
}

fn mk_cidr(cidr: &str, ports: &[i32]) -> pb::EgressRule {
    pb::EgressRule {
        cidr: cidr.into(),
        host: String::new(),
        ports: ports.to_vec(),
    }
}

fn mk_host(host: &str, ports: &[i32]) -> pb::EgressRule {
    pb::EgressRule {
        cidr: String::new(),
        host: host.into(),
        ports: ports.to_vec(),
    }
}

fn mk_policy(enabled: bool, allow: Vec<pb::EgressRule>) -> pb::EgressPolicy {
    pb::EgressPolicy { enabled, allow }
}

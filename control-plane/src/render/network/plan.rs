//! The policy of one component in provider-neutral terms: which pods may reach which of its
//! ports, and, when egress is controlled, where it may send. The providers only translate
//! this plan into their own objects, so both enforce the same decisions.

use std::collections::BTreeMap;

use troupe_common::pb::v1alpha1 as pb;

use super::{Consumer, Egress, NetworkInput};
use crate::render::context::target_namespace;

/// Label names and values, sorted (as Kubernetes prints them).
pub(super) type Labels = BTreeMap<String, String>;

/// The labels every pod of a component carries (`metadata.podSelectors` in templates).
const POD_LABELS: [&str; 3] = [
    "troupe.dev/project",
    "troupe.dev/component",
    "troupe.dev/environment",
];

/// The labels the agent puts on the namespaces it creates: the tenant and the environment.
const TENANT_LABEL: &str = "troupe.dev/namespace";
const ENVIRONMENT_LABEL: &str = "troupe.dev/environment";

/// A port of a pod and its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Port {
    /// 1–65535.
    pub number: i32,
    /// `TCP` or `UDP`.
    pub protocol: &'static str,
}

/// A set of pods that may send to the component or that it may send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pods {
    /// The pods carrying `labels` (every pod when empty) in the namespace named `namespace`.
    In { namespace: String, labels: Labels },
    /// Every pod of the namespaces carrying `labels`: the tenant's cells of one environment.
    InNamespaces { labels: Labels },
}

/// One port of the component and who may reach it. `from` is never empty: the component's
/// own cell may always reach its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ingress {
    pub port: Port,
    pub from: Vec<Pods>,
}

/// Where a component that controls its egress may send, besides DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A declared connection: the target's pods.
    Pods(Pods),
    /// An IP block, as written (checked by [`super::check_egress`]).
    Cidr(String),
    /// A host name, or `*.` and a name.
    Host(String),
}

/// One egress allowance; `ports` empty allows every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EgressRule {
    pub to: Target,
    pub ports: Vec<Port>,
}

/// The policy of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    /// `troupe-<component>`.
    pub name: String,
    /// The component's cell, where the policy lives.
    pub namespace: String,
    /// The labels of the component's pods.
    pub pods: Labels,
    /// One entry per port of its endpoints, in the order endpoints are declared.
    pub ingress: Vec<Ingress>,
    /// `None` when egress is not controlled.
    pub egress: Option<Vec<EgressRule>>,
}

impl Plan {
    /// The plan for the component `input` describes.
    pub(super) fn of(input: &NetworkInput<'_>) -> Plan {
        let namespace = cell(input, input.project);
        let mut ingress: Vec<Ingress> = Vec::new();
        for endpoint in input.endpoints {
            let Some(port) = pod_port(endpoint) else {
                continue;
            };
            let from = sources(input, &namespace, endpoint);
            // Two endpoints on one pod port share a rule: a port is open to the union.
            match ingress.iter_mut().find(|rule| rule.port == port) {
                Some(rule) => from
                    .into_iter()
                    .for_each(|p| push_unique(&mut rule.from, p)),
                None => ingress.push(Ingress { port, from }),
            }
        }
        Plan {
            name: format!("troupe-{}", input.component),
            pods: pod_labels(input.project, input.component, input.environment),
            namespace,
            ingress,
            egress: input.egress.map(|egress| egress_rules(input, egress)),
        }
    }
}

/// The labels of the pods of `component` of `project` in `environment`.
fn pod_labels(project: &str, component: &str, environment: &str) -> Labels {
    POD_LABELS
        .iter()
        .zip([project, component, environment])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The cell of `project` in the input's tenant and environment.
fn cell(input: &NetworkInput<'_>, project: &str) -> String {
    target_namespace(input.tenant, project, input.environment)
}

/// The port the endpoint's pods listen on, with its protocol; `None` for a port out of range
/// (validation refuses those; a policy naming port 0 would be refused by the cluster).
fn pod_port(endpoint: &pb::Endpoint) -> Option<Port> {
    let number = if endpoint.target_port > 0 {
        endpoint.target_port
    } else {
        endpoint.port
    };
    (1..=65535).contains(&number).then(|| Port {
        number,
        protocol: protocol(&endpoint.r#type),
    })
}

/// `UDP` for a UDP endpoint or connection, `TCP` for everything else (HTTP, gRPC, …).
fn protocol(kind: &str) -> &'static str {
    if kind.eq_ignore_ascii_case("UDP") {
        "UDP"
    } else {
        "TCP"
    }
}

/// Who may reach `endpoint`: its cell, then what its visibility adds, then every permitted
/// consumer by name (even when a broader peer already admits it, so the policy lists each
/// declared dependency and a new connection shows up as a change).
fn sources(input: &NetworkInput<'_>, namespace: &str, endpoint: &pb::Endpoint) -> Vec<Pods> {
    let visible = |scope: &str| endpoint.visibility.iter().any(|v| v == scope);
    let mut from = vec![Pods::In {
        namespace: namespace.to_string(),
        labels: Labels::new(),
    }];
    if visible("namespace") {
        let labels = [
            (TENANT_LABEL.to_string(), input.tenant.to_string()),
            (ENVIRONMENT_LABEL.to_string(), input.environment.to_string()),
        ];
        from.push(Pods::InNamespaces {
            labels: labels.into_iter().collect(),
        });
    }
    for scope in ["internal", "external"] {
        if !visible(scope) {
            continue;
        }
        for gateway in input.gateways.iter().filter(|g| g.visibility == scope) {
            let pods = Pods::In {
                namespace: gateway.namespace.clone(),
                labels: gateway.pod_selector.clone(),
            };
            push_unique(&mut from, pods);
        }
    }
    let consumers = input
        .consumers
        .iter()
        .filter(|c| c.endpoint == endpoint.name);
    for consumer in consumers.filter(|c| permitted(input.project, c, visible("namespace"))) {
        let peer = &consumer.peer;
        let pods = Pods::In {
            namespace: cell(input, &peer.project),
            labels: pod_labels(&peer.project, &peer.component, input.environment),
        };
        push_unique(&mut from, pods);
    }
    from
}

/// Whether a consumer's connection may reach the endpoint: always from the same project;
/// from another only through `namespace` on both sides.
fn permitted(project: &str, consumer: &Consumer, endpoint_namespace: bool) -> bool {
    consumer.peer.project == project || (consumer.visibility == "namespace" && endpoint_namespace)
}

/// The egress allowances: the declared connections, then the CIDRs and host names.
fn egress_rules(input: &NetworkInput<'_>, egress: &Egress) -> Vec<EgressRule> {
    let mut rules = Vec::new();
    for destination in &egress.destinations {
        let peer = &destination.peer;
        let to = Target::Pods(Pods::In {
            namespace: cell(input, &peer.project),
            labels: pod_labels(&peer.project, &peer.component, input.environment),
        });
        let port = Port {
            number: destination.port,
            protocol: protocol(&destination.protocol),
        };
        push_unique(
            &mut rules,
            EgressRule {
                to,
                ports: vec![port],
            },
        );
    }
    for rule in &egress.rules {
        let ports: Vec<Port> = rule
            .ports
            .iter()
            .map(|&number| Port {
                number,
                protocol: "TCP",
            })
            .collect();
        let targets = [
            (!rule.cidr.is_empty()).then(|| Target::Cidr(rule.cidr.clone())),
            (!rule.host.is_empty()).then(|| Target::Host(rule.host.clone())),
        ];
        for to in targets.into_iter().flatten() {
            let ports = ports.clone();
            push_unique(&mut rules, EgressRule { to, ports });
        }
    }
    rules
}

/// Appends `item` unless it is already there (the lists are short).
fn push_unique<T: PartialEq>(items: &mut Vec<T>, item: T) {
    if !items.contains(&item) {
        items.push(item);
    }
}

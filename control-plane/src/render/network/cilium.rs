//! The `cilium` provider: one `cilium.io/v2` CiliumNetworkPolicy per component.
//!
//! Peers are endpoint selectors over pod labels. A selector without a namespace label is
//! confined by Cilium to the policy's own namespace; pods elsewhere are named with
//! `k8s:io.kubernetes.pod.namespace`, and the tenant's cells with the namespace labels Cilium
//! exposes as `k8s:io.cilium.k8s.namespace.labels.<label>` (a selector using them is not
//! confined to the policy's namespace). With egress controlled, DNS goes to kube-dns through
//! Cilium's DNS proxy, which is how `toFQDNs` learns the addresses of the allowed host names.

use serde_json::{Map, Value, json};

use super::NetworkOutput;
use super::plan::{EgressRule, Ingress, Labels, Plan, Pods, Port, Target};

/// The label Cilium gives every pod: its namespace.
const POD_NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";
/// The prefix under which Cilium gives every pod the labels of its namespace.
const NAMESPACE_LABELS_PREFIX: &str = "k8s:io.cilium.k8s.namespace.labels.";

/// The CiliumNetworkPolicy of `plan`: Cilium enforces every rule, so nothing is unenforced.
pub(super) fn render(plan: &Plan) -> NetworkOutput {
    let ingress: Vec<Value> = if plan.ingress.is_empty() {
        // An empty rule selects the pods for ingress (default deny) and admits nothing.
        vec![json!({})]
    } else {
        plan.ingress
            .iter()
            .map(|r| ingress(r, &plan.namespace))
            .collect()
    };
    let mut spec = Map::new();
    spec.insert("endpointSelector".into(), json!({"matchLabels": plan.pods}));
    spec.insert("ingress".into(), Value::Array(ingress));
    if let Some(rules) = &plan.egress {
        let mut egress = vec![dns()];
        egress.extend(rules.iter().map(|r| egress_rule(r, &plan.namespace)));
        spec.insert("egress".into(), Value::Array(egress));
    }
    let policy = json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": plan.name, "namespace": plan.namespace},
        "spec": spec,
    });
    NetworkOutput {
        objects: vec![policy],
        unenforced: Vec::new(),
    }
}

/// An endpoint selector for pods, from a policy living in `namespace`.
fn endpoints(pods: &Pods, namespace: &str) -> Value {
    let labels: Labels = match pods {
        Pods::In {
            namespace: ns,
            labels,
        } if ns == namespace => labels.clone(),
        Pods::In {
            namespace: ns,
            labels,
        } => {
            let mut labels = labels.clone();
            labels.insert(POD_NAMESPACE_LABEL.to_string(), ns.clone());
            labels
        }
        Pods::InNamespaces { labels } => labels
            .iter()
            .map(|(k, v)| (format!("{NAMESPACE_LABELS_PREFIX}{k}"), v.clone()))
            .collect(),
    };
    if labels.is_empty() {
        json!({})
    } else {
        json!({"matchLabels": labels})
    }
}

/// `toPorts` for ports: Cilium writes port numbers as strings.
fn to_ports(ports: &[Port]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"port": p.number.to_string(), "protocol": p.protocol}))
        .collect();
    json!([{"ports": ports}])
}

fn ingress(rule: &Ingress, namespace: &str) -> Value {
    let from: Vec<Value> = rule.from.iter().map(|p| endpoints(p, namespace)).collect();
    json!({"fromEndpoints": from, "toPorts": to_ports(std::slice::from_ref(&rule.port))})
}

/// DNS to kube-dns, through the DNS proxy (`rules.dns`): without it `toFQDNs` never learns
/// an address.
fn dns() -> Value {
    json!({
        "toEndpoints": [{"matchLabels": {
            POD_NAMESPACE_LABEL: "kube-system",
            "k8s:k8s-app": "kube-dns",
        }}],
        "toPorts": [{
            "ports": [{"port": "53", "protocol": "ANY"}],
            "rules": {"dns": [{"matchPattern": "*"}]},
        }],
    })
}

fn egress_rule(rule: &EgressRule, namespace: &str) -> Value {
    let mut value = match &rule.to {
        Target::Pods(pods) => json!({"toEndpoints": [endpoints(pods, namespace)]}),
        Target::Cidr(cidr) => json!({"toCIDRSet": [{"cidr": cidr}]}),
        Target::Host(host) if host.starts_with("*.") => {
            json!({"toFQDNs": [{"matchPattern": host}]})
        }
        Target::Host(host) => json!({"toFQDNs": [{"matchName": host}]}),
    };
    if !rule.ports.is_empty() {
        value["toPorts"] = to_ports(&rule.ports);
    }
    value
}

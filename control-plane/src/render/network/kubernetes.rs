//! The `kubernetes` provider: one `networking.k8s.io/v1` NetworkPolicy per component.
//!
//! Ingress is always among its policy types, so the component's pods are isolated for
//! ingress even without endpoints. With egress controlled, DNS (port 53, any destination,
//! since where the resolver runs differs between clusters), the connections and the CIDRs are
//! allowed; host names have no form in a NetworkPolicy and are reported as unenforced.

use serde_json::{Map, Value, json};

use super::NetworkOutput;
use super::plan::{EgressRule, Ingress, Labels, Plan, Pods, Port, Target};

/// The label Kubernetes sets on every namespace: its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The NetworkPolicy of `plan`, and the host names it cannot hold.
pub(super) fn render(plan: &Plan) -> NetworkOutput {
    let mut spec = Map::new();
    spec.insert("podSelector".into(), selector(&plan.pods));
    let mut policy_types = vec!["Ingress"];
    if !plan.ingress.is_empty() {
        let rules = plan.ingress.iter().map(|r| ingress(r, &plan.namespace));
        spec.insert("ingress".into(), rules.collect());
    }
    let mut unenforced = Vec::new();
    if let Some(rules) = &plan.egress {
        policy_types.push("Egress");
        let mut egress = vec![dns()];
        for rule in rules {
            match egress_rule(rule, &plan.namespace) {
                Ok(value) => egress.push(value),
                Err(reason) => unenforced.push(reason),
            }
        }
        spec.insert("egress".into(), Value::Array(egress));
    }
    spec.insert("policyTypes".into(), json!(policy_types));
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": plan.name, "namespace": plan.namespace},
        "spec": spec,
    });
    NetworkOutput {
        objects: vec![policy],
        unenforced,
    }
}

/// A label selector: `{}` (everything) for no labels.
fn selector(labels: &Labels) -> Value {
    if labels.is_empty() {
        json!({})
    } else {
        json!({"matchLabels": labels})
    }
}

/// A peer of a policy living in `namespace`: pods of that namespace by a pod selector alone,
/// pods elsewhere by the namespace's name and, unless all of them, their labels.
fn peer(pods: &Pods, namespace: &str) -> Value {
    match pods {
        Pods::In {
            namespace: ns,
            labels,
        } if ns == namespace => json!({"podSelector": selector(labels)}),
        Pods::In {
            namespace: ns,
            labels,
        } => {
            let mut peer =
                json!({"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ns}}});
            if !labels.is_empty() {
                peer["podSelector"] = selector(labels);
            }
            peer
        }
        Pods::InNamespaces { labels } => json!({"namespaceSelector": selector(labels)}),
    }
}

fn ports(ports: &[Port]) -> Value {
    ports
        .iter()
        .map(|p| json!({"port": p.number, "protocol": p.protocol}))
        .collect()
}

fn ingress(rule: &Ingress, namespace: &str) -> Value {
    let from: Vec<Value> = rule.from.iter().map(|p| peer(p, namespace)).collect();
    json!({"from": from, "ports": ports(std::slice::from_ref(&rule.port))})
}

/// DNS to any destination: the resolver's pods differ between clusters, and a pod that
/// cannot resolve names cannot reach what it is allowed to either.
fn dns() -> Value {
    json!({"ports": [
        {"port": 53, "protocol": "UDP"},
        {"port": 53, "protocol": "TCP"},
    ]})
}

/// The egress rule for one allowance, or why a NetworkPolicy cannot hold it.
fn egress_rule(rule: &EgressRule, namespace: &str) -> Result<Value, String> {
    let to = match &rule.to {
        Target::Pods(pods) => peer(pods, namespace),
        Target::Cidr(cidr) => json!({"ipBlock": {"cidr": cidr}}),
        Target::Host(host) => {
            return Err(format!(
                "egress to host {host} cannot be enforced by the kubernetes provider \
                 (NetworkPolicy has no host names): its traffic is denied; use a CIDR, or the \
                 cilium provider"
            ));
        }
    };
    let mut value = json!({"to": [to]});
    if !rule.ports.is_empty() {
        value["ports"] = ports(&rule.ports);
    }
    Ok(value)
}

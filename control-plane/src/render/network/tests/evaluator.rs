//! A small evaluator of Kubernetes NetworkPolicy semantics, written from the Kubernetes
//! documentation rather than from the renderer, so the two can disagree.
//!
//! A pod is isolated for ingress (egress) when some policy in its namespace selects it and
//! has that policy type (`Ingress` always when `policyTypes` is absent, `Egress` when the
//! policy has an `egress` section). A flow src → dst:port/protocol is allowed iff dst is not
//! isolated for ingress or some ingress rule of a policy selecting it admits src and the
//! port, and src is not isolated for egress or some egress rule of a policy selecting it
//! admits dst and the port. Peers: `podSelector` alone selects pods of the policy's
//! namespace, `namespaceSelector` alone every pod of the matching namespaces, both the
//! matching pods of the matching namespaces, `ipBlock` the pods whose IP is in the block; a
//! missing or empty `from`/`to`/`ports` matches anything. Constructs the renderer never
//! writes (`matchExpressions`, named ports, `endPort`) fail the test rather than guess.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

pub(super) type Labels = BTreeMap<String, String>;

/// A pod, as policies see it.
#[derive(Debug, Clone)]
pub(super) struct Pod {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub ip: IpAddr,
}

/// Namespaces, pods and the policies applied to them.
#[derive(Debug, Default)]
pub(super) struct Cluster {
    namespaces: BTreeMap<String, Labels>,
    pub pods: Vec<Pod>,
    policies: Vec<Value>,
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn policy_type(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }

    fn rules_key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn peers_key(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

impl Cluster {
    /// Adds a namespace; like Kubernetes, it gets `kubernetes.io/metadata.name`.
    pub fn namespace(&mut self, name: &str, labels: &[(&str, &str)]) {
        let mut labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.insert("kubernetes.io/metadata.name".into(), name.into());
        self.namespaces.insert(name.into(), labels);
    }

    pub fn pod(&mut self, name: &str, namespace: &str, labels: Labels, ip: &str) {
        assert!(self.namespaces.contains_key(namespace), "{namespace}");
        self.pods.push(Pod {
            name: name.into(),
            namespace: namespace.into(),
            labels,
            ip: ip.parse().unwrap(),
        });
    }

    /// Applies a NetworkPolicy; other kinds are refused, as the evaluator cannot judge them.
    pub fn apply(&mut self, policy: Value) {
        assert_eq!(policy["apiVersion"], "networking.k8s.io/v1", "{policy}");
        assert_eq!(policy["kind"], "NetworkPolicy", "{policy}");
        assert!(policy["metadata"]["namespace"].is_string(), "{policy}");
        self.policies.push(policy);
    }

    pub fn find(&self, name: &str) -> &Pod {
        let found = self.pods.iter().find(|p| p.name == name);
        found.unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Whether `src` may open a connection to `dst` on `port`/`protocol`.
    pub fn allowed(&self, src: &Pod, dst: &Pod, port: i32, protocol: &str) -> bool {
        self.admits(Direction::Ingress, dst, src, port, protocol)
            && self.admits(Direction::Egress, src, dst, port, protocol)
    }

    /// Whether the policies of `subject` let traffic in `direction` with `peer` through.
    fn admits(
        &self,
        direction: Direction,
        subject: &Pod,
        peer: &Pod,
        port: i32,
        proto: &str,
    ) -> bool {
        let selecting: Vec<&Value> = self
            .policies
            .iter()
            .filter(|policy| {
                policy["metadata"]["namespace"] == subject.namespace.as_str()
                    && matches(&policy["spec"]["podSelector"], &subject.labels)
                    && policy_types(policy).contains(&direction.policy_type())
            })
            .collect();
        selecting.is_empty()
            || selecting.iter().any(|policy| {
                let namespace = policy["metadata"]["namespace"].as_str().unwrap();
                let rules = policy["spec"][direction.rules_key()].as_array();
                rules.into_iter().flatten().any(|rule| {
                    self.peers_match(&rule[direction.peers_key()], namespace, peer)
                        && ports_match(&rule["ports"], port, proto)
                })
            })
    }

    fn peers_match(&self, peers: &Value, policy_namespace: &str, pod: &Pod) -> bool {
        let peers = match peers {
            Value::Null => return true,
            Value::Array(peers) if peers.is_empty() => return true,
            Value::Array(peers) => peers,
            other => panic!("peers must be a list: {other}"),
        };
        peers
            .iter()
            .any(|peer| self.peer_matches(peer, policy_namespace, pod))
    }

    fn peer_matches(&self, peer: &Value, policy_namespace: &str, pod: &Pod) -> bool {
        if let Some(block) = peer.get("ipBlock") {
            assert!(block.get("except").is_none(), "unsupported: {peer}");
            return in_block(block["cidr"].as_str().unwrap(), pod.ip);
        }
        let pods = peer.get("podSelector");
        let namespaces = peer.get("namespaceSelector");
        assert!(pods.is_some() || namespaces.is_some(), "empty peer: {peer}");
        let namespace_ok = match namespaces {
            None => pod.namespace == policy_namespace,
            Some(selector) => matches(selector, &self.namespaces[&pod.namespace]),
        };
        namespace_ok && pods.is_none_or(|selector| matches(selector, &pod.labels))
    }
}

/// The policy's types, defaulted as Kubernetes does.
fn policy_types(policy: &Value) -> Vec<&str> {
    match policy["spec"].get("policyTypes") {
        Some(types) => types
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect(),
        None if policy["spec"].get("egress").is_some() => vec!["Ingress", "Egress"],
        None => vec!["Ingress"],
    }
}

/// A label selector with `matchLabels` only; `{}` matches everything.
fn matches(selector: &Value, labels: &Labels) -> bool {
    let selector = selector.as_object().expect("a selector is an object");
    for key in selector.keys() {
        assert_eq!(key, "matchLabels", "unsupported selector field {key}");
    }
    let wanted = selector.get("matchLabels").and_then(Value::as_object);
    wanted.into_iter().flatten().all(|(k, v)| {
        labels.get(k).map(String::as_str) == Some(v.as_str().expect("label values are strings"))
    })
}

fn ports_match(ports: &Value, port: i32, protocol: &str) -> bool {
    let ports = match ports {
        Value::Null => return true,
        Value::Array(ports) if ports.is_empty() => return true,
        Value::Array(ports) => ports,
        other => panic!("ports must be a list: {other}"),
    };
    ports.iter().any(|p| {
        assert!(p.get("endPort").is_none(), "unsupported: {p}");
        let number = p["port"].as_i64().expect("numeric ports only");
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        number == i64::from(port) && proto == protocol
    })
}

fn in_block(cidr: &str, ip: IpAddr) -> bool {
    let (network, prefix) = cidr.split_once('/').unwrap();
    let network: IpAddr = network.parse().unwrap();
    let prefix: u32 = prefix.parse().unwrap();
    match (network, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The evaluator on hand-written policies: each peer form and default, so a mistake in it
/// cannot hide one in the renderer.
mod semantics {
    use serde_json::json;

    use super::super::mk_labels;
    use super::*;

    fn mk_cluster() -> Cluster {
        let mut cluster = Cluster::default();
        cluster.namespace("a", &[("team", "red")]);
        cluster.namespace("b", &[("team", "red")]);
        cluster.namespace("c", &[("team", "blue")]);
        for (name, ns, app, ip) in [
            ("a-web", "a", "web", "10.0.0.1"),
            ("a-db", "a", "db", "10.0.0.2"),
            ("b-web", "b", "web", "10.0.1.1"),
            ("c-web", "c", "web", "10.0.2.1"),
            ("outside", "c", "none", "192.168.0.9"),
        ] {
            cluster.pod(name, ns, mk_labels(&[("app", app)]), ip);
        }
        cluster
    }

    /// Which of the cluster's pods may reach `dst` on 80/TCP.
    fn sources(cluster: &Cluster, dst: &str) -> Vec<String> {
        let dst = cluster.find(dst);
        let pods = cluster.pods.iter().filter(|p| p.name != dst.name);
        pods.filter(|src| cluster.allowed(src, dst, 80, "TCP"))
            .map(|p| p.name.clone())
            .collect()
    }

    fn ingress_to_db(from: Value, ports: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "db", "namespace": "a"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                     "ingress": [{"from": from, "ports": ports}]},
        })
    }

    #[test]
    fn peers_select_as_kubernetes_documents() {
        let all = ["a-web", "b-web", "c-web", "outside"];
        let web = json!({"matchLabels": {"app": "web"}});
        let red = json!({"matchLabels": {"team": "red"}});
        for (from, expected) in [
            (Value::Null, &all[..]),
            (json!([]), &all[..]),
            (json!([{"podSelector": {}}]), &["a-web"][..]),
            (json!([{"namespaceSelector": red}]), &["a-web", "b-web"][..]),
            (
                json!([{"namespaceSelector": {}, "podSelector": web}]),
                &["a-web", "b-web", "c-web"][..],
            ),
            (
                json!([{"namespaceSelector": red, "podSelector": web}, {"ipBlock": {"cidr": "192.168.0.0/24"}}]),
                &["a-web", "b-web", "outside"][..],
            ),
        ] {
            let mut cluster = mk_cluster();
            assert_eq!(sources(&cluster, "a-db"), all, "nothing isolates a-db yet");
            cluster.apply(ingress_to_db(from.clone(), Value::Null));
            assert_eq!(sources(&cluster, "a-db"), expected, "from {from}");
        }
    }

    #[test]
    fn ports_and_protocols_must_match_and_isolation_is_per_direction() {
        let mut cluster = mk_cluster();
        cluster.apply(ingress_to_db(
            Value::Null,
            json!([{"port": 80}, {"port": 53, "protocol": "UDP"}]),
        ));
        let (web, db) = (cluster.find("a-web"), cluster.find("a-db"));
        assert!(cluster.allowed(web, db, 80, "TCP"));
        assert!(!cluster.allowed(web, db, 80, "UDP"));
        assert!(cluster.allowed(web, db, 53, "UDP"));
        assert!(!cluster.allowed(web, db, 443, "TCP"));
        // Ingress isolation of a-db says nothing about what it sends.
        assert!(cluster.allowed(db, web, 443, "TCP"));

        let mut cluster = mk_cluster();
        cluster.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "a"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "192.168.0.9/32"}}], "ports": [{"port": 443}]}]},
        }));
        let (web, db, outside) = (
            cluster.find("a-web"),
            cluster.find("a-db"),
            cluster.find("outside"),
        );
        assert!(cluster.allowed(web, outside, 443, "TCP"));
        assert!(!cluster.allowed(web, outside, 80, "TCP"));
        assert!(!cluster.allowed(web, db, 443, "TCP"));
        assert!(
            cluster.allowed(db, web, 80, "TCP"),
            "not isolated for ingress"
        );
    }
}

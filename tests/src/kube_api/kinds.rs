//! The kinds the API server serves: the built-in ones of a v1.33 cluster that Troupe's
//! releases use, and those CustomResourceDefinitions define once Established. Discovery
//! (`/api`, `/apis`, `/apis/GROUP`, `/api/v1`, `/apis/GROUP/VERSION`) is answered from here.

use serde_json::{Value, json};

/// One served group/version/kind and its collection.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Kind {
    /// API group, empty for the core group.
    pub group: String,
    /// Version within the group.
    pub version: String,
    /// `Kind`, as in an object's `kind`.
    pub kind: String,
    /// The collection's name in paths (`deployments`).
    pub plural: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Built into the server (not defined by a CRD): its objects are decoded strictly.
    pub builtin: bool,
}

impl Kind {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// How messages name the collection: `deployments.apps`, or `configmaps` for the core group.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// How validation messages name the kind: `Job.batch`, or `Pod` for the core group.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether this is `group`'s `kind` (any version).
    pub fn is(&self, group: &str, kind: &str) -> bool {
        self.group == group && self.kind == kind
    }
}

/// Built-in kinds: group, version, kind, plural, namespaced.
const BUILTINS: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "Node", "nodes", false),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("", "v1", "Pod", "pods", true),
    ("apps", "v1", "Deployment", "deployments", true),
    ("batch", "v1", "Job", "jobs", true),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
];

/// The built-in kinds.
pub(crate) fn builtins() -> Vec<Kind> {
    BUILTINS
        .iter()
        .map(|&(group, version, kind, plural, namespaced)| Kind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            builtin: true,
        })
        .collect()
}

/// The kinds an Established CRD defines: one per served version.
pub(crate) fn from_crd(crd: &Value) -> Vec<Kind> {
    let spec = &crd["spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"] != false)
        .map(|v| Kind {
            group: text(&spec["group"]),
            version: text(&v["name"]),
            kind: text(&spec["names"]["kind"]),
            plural: text(&spec["names"]["plural"]),
            namespaced: spec["scope"] != "Cluster",
            builtin: false,
        })
        .collect()
}

/// `/api`: the core group's versions.
pub(crate) fn api_versions(address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]})
}

/// One `APIGroup` of `kinds` (all of the same group), versions in order of first appearance.
fn api_group(group: &str, kinds: &[Kind]) -> Value {
    let mut versions: Vec<&str> = Vec::new();
    for kind in kinds.iter().filter(|k| k.group == group) {
        if !versions.contains(&kind.version.as_str()) {
            versions.push(&kind.version);
        }
    }
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries,
           "preferredVersion": entries.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis`: every named group served.
pub(crate) fn api_group_list(kinds: &[Kind]) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for kind in kinds.iter().filter(|k| !k.group.is_empty()) {
        if !groups.contains(&kind.group.as_str()) {
            groups.push(&kind.group);
        }
    }
    let groups: Vec<Value> = groups.iter().map(|g| api_group(g, kinds)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP`, if that group is served.
pub(crate) fn group(group: &str, kinds: &[Kind]) -> Option<Value> {
    kinds
        .iter()
        .any(|k| k.group == group)
        .then(|| api_group(group, kinds))
}

/// `/api/v1` or `/apis/GROUP/VERSION`, if that group/version is served.
pub(crate) fn resource_list(group: &str, version: &str, kinds: &[Kind]) -> Option<Value> {
    let served: Vec<&Kind> = kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    let first = served.first()?;
    let resources: Vec<Value> = served
        .iter()
        .map(|k| {
            json!({"name": k.plural, "singularName": k.kind.to_lowercase(),
                   "namespaced": k.namespaced, "kind": k.kind,
                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": first.api_version(), "resources": resources}))
}

/// `/version`: a v1.33 server.
pub(crate) fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1", "gitCommit": "kubeapi",
           "gitTreeState": "clean", "buildDate": "2025-05-15T00:00:00Z", "goVersion": "go1.24.2",
           "compiler": "gc", "platform": "linux/amd64"})
}

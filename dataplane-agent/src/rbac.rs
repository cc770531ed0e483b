//! The Kubernetes RBAC the agent needs for the kinds it allows: `troupe-agent --print-rbac`.
//!
//! [`manifests`] reads the same `--allow-kinds` / `--allow-cluster-kinds` as the agent's own
//! [`policy`](crate::policy) and prints a ClusterRole and its ClusterRoleBinding to the
//! agent's ServiceAccount ([`SERVICE_ACCOUNT`] in [`NAMESPACE`]). The role grants:
//!
//! - on every allowed kind, what the Kubernetes applier does with it: `get` (the ownership
//!   check reads an object before applying it), `create`/`patch`/`update` (server-side
//!   apply), `list`/`watch` cluster-wide (health watches, pruning by label) and `delete`
//!   (pruning);
//! - on namespaces `get`/`list`/`watch`/`create`/`patch`/`delete`: each release's target
//!   namespace is created by the agent and removed when it created it;
//! - on nodes `list`: the node count reported as cluster info.
//!
//! Resources are named from a built-in table ([`RESOURCES`]: Troupe's default kinds, the
//! built-in cluster-scoped kinds and common add-on kinds); any other kind gets the
//! lowercase-plural rule of [`plural`], which is what a CustomResourceDefinition usually
//! declares. No verb or resource is `*`, so a whole group (`example.com/*`) cannot be printed:
//! its kinds must be named.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use troupe_common::pb::v1alpha1::GroupKind;
use troupe_common::policy::DEFAULT_KINDS;

use crate::policy::{from_flags, group_kinds};

/// The ServiceAccount the agent runs as, and the name of its ClusterRole and binding.
pub const SERVICE_ACCOUNT: &str = "troupe-agent";
/// The namespace the agent runs in (`deploy/namespace.yaml`).
pub const NAMESPACE: &str = "troupe-system";

/// What the applier does with the objects of an allowed kind.
const OBJECT_VERBS: &[&str] = &[
    "get", "list", "watch", "create", "patch", "update", "delete",
];
/// What the agent does with target namespaces.
const NAMESPACE_VERBS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// The resource (lowercase plural) of known kinds, as `(group, kind, resource)`.
pub const RESOURCES: &[(&str, &str, &str)] = &[
    // Troupe's default kinds.
    ("apps", "Deployment", "deployments"),
    ("apps", "StatefulSet", "statefulsets"),
    ("apps", "DaemonSet", "daemonsets"),
    ("apps", "ReplicaSet", "replicasets"),
    ("batch", "Job", "jobs"),
    ("batch", "CronJob", "cronjobs"),
    ("", "Service", "services"),
    ("", "ConfigMap", "configmaps"),
    ("", "Secret", "secrets"),
    ("", "ServiceAccount", "serviceaccounts"),
    ("", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "Pod", "pods"),
    ("networking.k8s.io", "Ingress", "ingresses"),
    ("networking.k8s.io", "NetworkPolicy", "networkpolicies"),
    ("gateway.networking.k8s.io", "HTTPRoute", "httproutes"),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    ),
    ("policy", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("rbac.authorization.k8s.io", "Role", "roles"),
    ("rbac.authorization.k8s.io", "RoleBinding", "rolebindings"),
    // Other namespaced kinds often allowed.
    ("", "Endpoints", "endpoints"),
    ("", "LimitRange", "limitranges"),
    ("", "ResourceQuota", "resourcequotas"),
    ("discovery.k8s.io", "EndpointSlice", "endpointslices"),
    ("coordination.k8s.io", "Lease", "leases"),
    ("gateway.networking.k8s.io", "Gateway", "gateways"),
    ("gateway.networking.k8s.io", "GRPCRoute", "grpcroutes"),
    (
        "gateway.networking.k8s.io",
        "ReferenceGrant",
        "referencegrants",
    ),
    ("cert-manager.io", "Certificate", "certificates"),
    ("cert-manager.io", "Issuer", "issuers"),
    ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    ("monitoring.coreos.com", "PodMonitor", "podmonitors"),
    ("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
    (
        "snapshot.storage.k8s.io",
        "VolumeSnapshot",
        "volumesnapshots",
    ),
    (
        "autoscaling.k8s.io",
        "VerticalPodAutoscaler",
        "verticalpodautoscalers",
    ),
    // Cluster-scoped kinds a platform may allow.
    ("", "Namespace", "namespaces"),
    ("", "PersistentVolume", "persistentvolumes"),
    ("rbac.authorization.k8s.io", "ClusterRole", "clusterroles"),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "clusterrolebindings",
    ),
    (
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
    ),
    ("storage.k8s.io", "StorageClass", "storageclasses"),
    ("scheduling.k8s.io", "PriorityClass", "priorityclasses"),
    ("networking.k8s.io", "IngressClass", "ingressclasses"),
    ("node.k8s.io", "RuntimeClass", "runtimeclasses"),
    (
        "gateway.networking.k8s.io",
        "GatewayClass",
        "gatewayclasses",
    ),
    (
        "snapshot.storage.k8s.io",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
    ),
    ("cert-manager.io", "ClusterIssuer", "clusterissuers"),
];

/// The resource of `group`/`kind`: from [`RESOURCES`], else [`plural`] of the kind.
pub fn resource_of(group: &str, kind: &str) -> String {
    RESOURCES
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map_or_else(|| plural(kind), |(_, _, resource)| resource.to_string())
}

/// The lowercase-plural rule: the kind in lowercase, plus `es` after `s`, `x`, `z`, `ch` or
/// `sh`, `ies` for a `y` after a consonant, else `s` (`Gadget` → `gadgets`, `Policy` →
/// `policies`, `Gateway` → `gateways`).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|end| lower.ends_with(end))
    {
        return format!("{lower}es");
    }
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    format!("{lower}s")
}

/// The ClusterRole and ClusterRoleBinding (YAML, two documents) the agent needs for the policy
/// of its flags (see [`crate::policy::from_flags`]); an error names the flag that cannot be
/// printed or is malformed.
pub fn manifests(allow_kinds: &[String], allow_cluster_kinds: &[String]) -> Result<String, String> {
    from_flags(allow_kinds, allow_cluster_kinds)?;
    let mut kinds = group_kinds("--allow-kinds", allow_kinds)?;
    if kinds.is_empty() {
        kinds = DEFAULT_KINDS
            .iter()
            .map(|(group, kind)| GroupKind {
                group: group.to_string(),
                kind: kind.to_string(),
            })
            .collect();
    }
    if let Some(any) = kinds
        .iter()
        .find(|gk| gk.kind == troupe_common::policy::ANY_KIND)
    {
        return Err(format!(
            "--allow-kinds {}/*: --print-rbac grants named resources only; list the group's kinds (GROUP/KIND) instead",
            any.group
        ));
    }
    let cluster_kinds = group_kinds("--allow-cluster-kinds", allow_cluster_kinds)?;

    let mut by_group: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for gk in kinds.iter().chain(&cluster_kinds) {
        by_group
            .entry(&gk.group)
            .or_default()
            .insert(resource_of(&gk.group, &gk.kind));
    }
    let core = by_group.get("");
    let has = |resource: &str| core.is_some_and(|r| r.contains(resource));

    let mut out = header(allow_kinds, allow_cluster_kinds, &kinds);
    out.push_str(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {SERVICE_ACCOUNT}\n  labels:\n    app.kubernetes.io/name: troupe-agent\nrules:\n"
    ));
    out.push_str("  # The allowed kinds: read, server-side apply, watch for health, prune.\n");
    for (group, resources) in &by_group {
        rule(
            &mut out,
            group,
            resources.iter().map(String::as_str),
            OBJECT_VERBS,
        );
    }
    if !has("namespaces") {
        out.push_str("  # Each release's target namespace: created when missing, removed when the agent made it.\n");
        rule(&mut out, "", ["namespaces"], NAMESPACE_VERBS);
    }
    if !has("nodes") {
        out.push_str("  # The node count, reported as cluster info.\n");
        rule(&mut out, "", ["nodes"], &["list"]);
    }
    out.push_str(&format!(
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {SERVICE_ACCOUNT}\n  labels:\n    app.kubernetes.io/name: troupe-agent\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {SERVICE_ACCOUNT}\nsubjects:\n  - kind: ServiceAccount\n    name: {SERVICE_ACCOUNT}\n    namespace: {NAMESPACE}\n"
    ));
    Ok(out)
}

/// What a build agent with `--workflows kubernetes` also needs, in its build namespace
/// `namespace` only: the namespace itself, and a Role (with its binding to the agent's
/// ServiceAccount) to create and delete build Jobs, follow their Pods and read their logs,
/// and delete a Pod to stop it within a cancel's grace.
pub fn build_manifests(namespace: &str) -> String {
    let labels = "  labels:\n    app.kubernetes.io/name: troupe-agent\n";
    let mut out = format!(
        "---\n# Builds (`--workflows kubernetes`): Jobs in {namespace} only.\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n{labels}\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  \
         name: {SERVICE_ACCOUNT}-builds\n  namespace: {namespace}\n{labels}rules:\n"
    );
    rule(&mut out, "batch", ["jobs"], &["get", "create", "delete"]);
    rule(&mut out, "", ["pods"], &["get", "list", "watch", "delete"]);
    rule(&mut out, "", ["pods/log"], &["get"]);
    let _ = write!(
        out,
        "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  \
         name: {SERVICE_ACCOUNT}-builds\n  namespace: {namespace}\n{labels}roleRef:\n  \
         apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: {SERVICE_ACCOUNT}-builds\n\
         subjects:\n  - kind: ServiceAccount\n    name: {SERVICE_ACCOUNT}\n    namespace: {NAMESPACE}\n"
    );
    out
}

/// The comment that opens the output: how it was made, and what RBAC will still refuse.
fn header(allow_kinds: &[String], allow_cluster_kinds: &[String], kinds: &[GroupKind]) -> String {
    let mut command = "troupe-agent --print-rbac".to_string();
    for (flag, values) in [
        ("--allow-kinds", allow_kinds),
        ("--allow-cluster-kinds", allow_cluster_kinds),
    ] {
        if !values.is_empty() {
            let _ = write!(command, " {flag} {}", values.join(","));
        }
    }
    let mut out = format!(
        "# The least privilege troupe-agent needs for the kinds it allows, generated by:\n\
         #   {command}\n\
         # Regenerate it with the --allow-kinds/--allow-cluster-kinds the agent runs with.\n"
    );
    let rbac_kinds = kinds
        .iter()
        .any(|gk| gk.group == "rbac.authorization.k8s.io");
    if rbac_kinds {
        out.push_str(
            "# Kubernetes lets the agent create Roles and RoleBindings that grant only what this\n\
             # ClusterRole grants; it is given neither `escalate` nor `bind`.\n",
        );
    }
    out
}

/// One rule, flow-style.
fn rule<'a>(
    out: &mut String,
    group: &str,
    resources: impl IntoIterator<Item = &'a str>,
    verbs: &[&str],
) {
    let list = |items: &mut dyn Iterator<Item = &str>| {
        items
            .map(|item| format!("\"{item}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        out,
        "  - apiGroups: [\"{group}\"]\n    resources: [{}]\n    verbs: [{}]\n",
        list(&mut resources.into_iter()),
        list(&mut verbs.iter().copied()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn builds_get_jobs_pods_and_logs_in_their_namespace_only() {
        let yaml = build_manifests("ci");
        let kinds: Vec<&str> = yaml
            .lines()
            .filter_map(|line| line.strip_prefix("kind: "))
            .collect();
        assert_eq!(kinds, ["Namespace", "Role", "RoleBinding"]);
        assert_eq!(yaml.matches("  namespace: ci\n").count(), 2);
        for rule in [
            "resources: [\"jobs\"]\n    verbs: [\"get\", \"create\", \"delete\"]",
            "resources: [\"pods/log\"]\n    verbs: [\"get\"]",
        ] {
            assert!(yaml.contains(rule), "{rule} in:\n{yaml}");
        }
        assert!(!yaml.contains('*') && !yaml.contains("ClusterRole"));
    }

    #[test]
    fn every_default_kind_has_a_resource_in_the_table() {
        for (group, kind) in DEFAULT_KINDS {
            assert!(
                RESOURCES.iter().any(|(g, k, _)| g == group && k == kind),
                "{group}/{kind} is missing from RESOURCES"
            );
        }
    }

    #[test]
    fn other_kinds_get_the_lowercase_plural() {
        assert_eq!(plural("Gadget"), "gadgets");
        assert_eq!(plural("GadgetPolicy"), "gadgetpolicies");
        assert_eq!(plural("Gateway"), "gateways");
        assert_eq!(plural("Mailbox"), "mailboxes");
        assert_eq!(plural("Class"), "classes");
        assert_eq!(plural("Patch"), "patches");
        assert_eq!(resource_of("example.com", "Gadget"), "gadgets");
        assert_eq!(resource_of("", "Endpoints"), "endpoints");
    }

    #[test]
    fn the_default_role_grants_the_default_kinds_namespaces_and_nodes_and_no_star() {
        let out = manifests(&[], &[]).unwrap();
        assert!(out.contains(
            "  - apiGroups: [\"apps\"]\n    resources: [\"daemonsets\", \"deployments\", \"replicasets\", \"statefulsets\"]\n    verbs: [\"get\", \"list\", \"watch\", \"create\", \"patch\", \"update\", \"delete\"]\n"
        ), "{out}");
        assert!(out.contains(
            "resources: [\"namespaces\"]\n    verbs: [\"get\", \"list\", \"watch\", \"create\", \"patch\", \"delete\"]"
        ), "{out}");
        assert!(
            out.contains("resources: [\"nodes\"]\n    verbs: [\"list\"]"),
            "{out}"
        );
        assert!(out.contains("neither `escalate` nor `bind`"), "{out}");
        assert!(!out.contains('*'), "{out}");
        assert!(!out.contains("customresourcedefinitions"), "{out}");
        assert!(
            out.contains("    name: troupe-agent\n    namespace: troupe-system\n"),
            "{out}"
        );
    }

    #[test]
    fn the_flags_decide_the_kinds_and_crds_and_namespaces_get_every_verb_once() {
        let out = manifests(
            &mk_flags(&["apps/Deployment", "example.com/Gadget"]),
            &mk_flags(&[
                "/Namespace",
                "apiextensions.k8s.io/CustomResourceDefinition",
            ]),
        )
        .unwrap();
        assert!(out.contains(
            "\n#   troupe-agent --print-rbac --allow-kinds apps/Deployment,example.com/Gadget --allow-cluster-kinds /Namespace,apiextensions.k8s.io/CustomResourceDefinition\n"
        ), "{out}");
        assert!(out.contains("[\"apiextensions.k8s.io\"]\n    resources: [\"customresourcedefinitions\"]\n    verbs: [\"get\", \"list\", \"watch\","), "{out}");
        assert!(
            out.contains("[\"example.com\"]\n    resources: [\"gadgets\"]"),
            "{out}"
        );
        assert_eq!(out.matches("\"namespaces\"").count(), 1, "{out}");
        assert!(!out.contains("\"secrets\""), "{out}");
        assert!(!out.contains("escalate"), "{out}");
    }

    #[test]
    fn a_whole_group_or_a_bad_flag_is_refused_naming_the_flag() {
        let err = manifests(&mk_flags(&["example.com/*"]), &[]).unwrap_err();
        assert!(err.starts_with("--allow-kinds example.com/*"), "{err}");
        let err = manifests(&[], &mk_flags(&["apps/"])).unwrap_err();
        assert!(err.starts_with("--allow-cluster-kinds"), "{err}");
    }
}

//! Which Kubernetes kinds may reach a data plane: the resource policy a platform sets on a
//! DataPlane (`spec.resourcePolicy`), read once into a [`Policy`] and asked about each
//! rendered object. The control plane asks before a Release is stored; an agent can ask
//! again about what it is sent.
//!
//! A kind is namespaced unless Kubernetes defines it as cluster-scoped ([`is_cluster_scoped`],
//! a built-in list) or the policy lists it in `allowedClusterKinds`. A namespaced kind must be
//! in `allowedKinds` (or, when that is empty, in [`DEFAULT_KINDS`]); a cluster-scoped kind
//! must be in `allowedClusterKinds`, which is empty unless the platform fills it.

use std::collections::HashMap;

use crate::pb::v1alpha1::{GroupKind, ResourcePolicy};

/// Where an allowed object lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In a namespace: the environment's target namespace.
    Namespaced,
    /// In no namespace.
    Cluster,
}

/// Why an object's kind is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A namespaced kind outside the allow-list.
    #[error(
        "kind {kind} ({}) is not allowed on {data_plane}: add {{group: {group:?}, kind: {kind}}} to spec.resourcePolicy.allowedKinds there to allow it",
        group_name(group)
    )]
    KindNotAllowed {
        /// The object's API group (empty for the core group).
        group: String,
        /// The object's kind.
        kind: String,
        /// The data plane whose policy refused it, e.g. `DataPlane acme/local`.
        data_plane: String,
    },
    /// A cluster-scoped kind the policy does not list.
    #[error(
        "kind {kind} ({}) is cluster-scoped and {data_plane} does not allow it: add {{group: {group:?}, kind: {kind}}} to spec.resourcePolicy.allowedClusterKinds there to allow it",
        group_name(group)
    )]
    ClusterKindNotAllowed {
        /// The object's API group (empty for the core group).
        group: String,
        /// The object's kind.
        kind: String,
        /// The data plane whose policy refused it.
        data_plane: String,
    },
    /// A cluster-scoped object that names a namespace.
    #[error(
        "metadata.namespace must be empty: {kind} ({}) is cluster-scoped",
        group_name(group)
    )]
    NamespaceOnClusterKind {
        /// The object's API group (empty for the core group).
        group: String,
        /// The object's kind.
        kind: String,
    },
}

fn group_name(group: &str) -> &str {
    if group.is_empty() {
        "core group"
    } else {
        group
    }
}

/// The namespaced kinds allowed when a policy lists none, as `(group, kind)`: what a platform
/// of services, jobs and their routing needs, and nothing that reaches beyond a namespace.
pub const DEFAULT_KINDS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("", "Service"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("", "PersistentVolumeClaim"),
    ("", "Pod"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("gateway.networking.k8s.io", "HTTPRoute"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("policy", "PodDisruptionBudget"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
];

/// Kinds Kubernetes (and the widespread add-ons Gateway API, snapshots and cert-manager)
/// defines as cluster-scoped, as `(group, kind)`.
pub const CLUSTER_SCOPED_KINDS: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("node.k8s.io", "RuntimeClass"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "ResourceSlice"),
    ("authentication.k8s.io", "TokenReview"),
    ("authentication.k8s.io", "SelfSubjectReview"),
    ("authorization.k8s.io", "SubjectAccessReview"),
    ("authorization.k8s.io", "SelfSubjectAccessReview"),
    ("authorization.k8s.io", "SelfSubjectRulesReview"),
    ("policy", "PodSecurityPolicy"),
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotClass"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotContent"),
    ("cert-manager.io", "ClusterIssuer"),
];

/// The kind that allows every kind of a group in `allowedKinds`.
pub const ANY_KIND: &str = "*";

/// True when Kubernetes defines `group`/`kind` as cluster-scoped (see [`CLUSTER_SCOPED_KINDS`]).
pub fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    CLUSTER_SCOPED_KINDS
        .iter()
        .any(|(g, k)| *k == kind && *g == group)
}

/// The API group of an `apiVersion`: the part before `/`, empty for the core group (`v1`).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// The kinds allowed in one API group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupRule {
    /// `*` was listed: every namespaced kind of the group.
    any: bool,
    kinds: Vec<String>,
}

impl GroupRule {
    fn allows(&self, kind: &str) -> bool {
        self.any || self.kinds.iter().any(|k| k == kind)
    }
}

/// A data plane's resource policy, read once and asked about each object. Lookups are by
/// group then a short scan of kinds: no allocation per object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The data plane it belongs to, for messages: `DataPlane acme/local`.
    data_plane: String,
    /// Namespaced kinds allowed, by group.
    allowed: HashMap<String, GroupRule>,
    /// Cluster-scoped kinds allowed, by group.
    allowed_cluster: HashMap<String, GroupRule>,
}

impl Default for Policy {
    /// The default policy: [`DEFAULT_KINDS`] and no cluster-scoped kind.
    fn default() -> Self {
        Self::new("the data plane", None)
    }
}

impl Policy {
    /// The policy of the data plane named `data_plane` (for messages) whose spec carries
    /// `policy`; `None` or an empty `allowedKinds` means [`DEFAULT_KINDS`]. Entries are taken
    /// as written: [`Policy::check_spec`] is what refuses a malformed policy.
    pub fn new(data_plane: impl Into<String>, policy: Option<&ResourcePolicy>) -> Self {
        let mut allowed = HashMap::new();
        let mut allowed_cluster = HashMap::new();
        match policy {
            Some(p) if !p.allowed_kinds.is_empty() => {
                for gk in &p.allowed_kinds {
                    add(&mut allowed, &gk.group, &gk.kind);
                }
            }
            _ => {
                for (group, kind) in DEFAULT_KINDS {
                    add(&mut allowed, group, kind);
                }
            }
        }
        for gk in policy
            .map(|p| p.allowed_cluster_kinds.as_slice())
            .unwrap_or_default()
        {
            add(&mut allowed_cluster, &gk.group, &gk.kind);
        }
        Policy {
            data_plane: data_plane.into(),
            allowed,
            allowed_cluster,
        }
    }

    /// The data plane this policy belongs to, as messages name it.
    pub fn data_plane(&self) -> &str {
        &self.data_plane
    }

    /// Decides about one object from its `apiVersion`, `kind` and `metadata.namespace` (empty
    /// when unset): where it lives if it is allowed, or why not. A cluster-scoped object must
    /// not name a namespace; whether a namespaced object's namespace is the right one is the
    /// caller's to check (it knows the target namespace).
    pub fn check(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
    ) -> Result<Scope, PolicyError> {
        let group = api_group(api_version);
        let listed_cluster = self
            .allowed_cluster
            .get(group)
            .is_some_and(|r| r.allows(kind));
        if listed_cluster || is_cluster_scoped(group, kind) {
            if !listed_cluster {
                return Err(PolicyError::ClusterKindNotAllowed {
                    group: group.into(),
                    kind: kind.into(),
                    data_plane: self.data_plane.clone(),
                });
            }
            if !namespace.is_empty() {
                return Err(PolicyError::NamespaceOnClusterKind {
                    group: group.into(),
                    kind: kind.into(),
                });
            }
            return Ok(Scope::Cluster);
        }
        if self.allowed.get(group).is_some_and(|r| r.allows(kind)) {
            return Ok(Scope::Namespaced);
        }
        Err(PolicyError::KindNotAllowed {
            group: group.into(),
            kind: kind.into(),
            data_plane: self.data_plane.clone(),
        })
    }

    /// Checks a policy as written on a DataPlane: every entry names a valid group and kind,
    /// `*` only in `allowedKinds`, no built-in cluster-scoped kind in `allowedKinds`, no entry
    /// twice. Returns the field (relative to the policy, e.g. `allowedKinds[2].kind`) and what
    /// is wrong with it.
    pub fn check_spec(policy: &ResourcePolicy) -> Result<(), (String, String)> {
        check_list("allowedKinds", &policy.allowed_kinds, true)?;
        check_list("allowedClusterKinds", &policy.allowed_cluster_kinds, false)?;
        for (i, gk) in policy.allowed_kinds.iter().enumerate() {
            if is_cluster_scoped(&gk.group, &gk.kind) {
                return Err((
                    format!("allowedKinds[{i}]"),
                    format!(
                        "{} ({}) is cluster-scoped: list it in allowedClusterKinds",
                        gk.kind,
                        group_name(&gk.group)
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn add(rules: &mut HashMap<String, GroupRule>, group: &str, kind: &str) {
    let rule = rules.entry(group.to_string()).or_default();
    if kind == ANY_KIND {
        rule.any = true;
    } else {
        rule.kinds.push(kind.to_string());
    }
}

fn check_list(field: &str, list: &[GroupKind], any_allowed: bool) -> Result<(), (String, String)> {
    for (i, gk) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if !gk.group.is_empty() {
            crate::k8s_names::check_dns_subdomain(&gk.group)
                .map_err(|why| (format!("{at}.group"), format!("{:?} {why}", gk.group)))?;
        }
        if gk.kind.is_empty() {
            return Err((format!("{at}.kind"), "required".into()));
        }
        if gk.kind == ANY_KIND {
            if !any_allowed {
                return Err((
                    format!("{at}.kind"),
                    "\"*\" is not allowed here: name each cluster-scoped kind".into(),
                ));
            }
        } else {
            crate::k8s_names::check_kind(&gk.kind)
                .map_err(|why| (format!("{at}.kind"), format!("{:?} {why}", gk.kind)))?;
        }
        if list[..i]
            .iter()
            .any(|other| other.group == gk.group && other.kind == gk.kind)
        {
            return Err((at, format!("{}/{} is listed twice", gk.group, gk.kind)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_gk(group: &str, kind: &str) -> GroupKind {
        GroupKind {
            group: group.into(),
            kind: kind.into(),
        }
    }

    fn mk_policy(allowed: &[(&str, &str)], cluster: &[(&str, &str)]) -> Policy {
        let spec = ResourcePolicy {
            allowed_kinds: allowed.iter().map(|(g, k)| mk_gk(g, k)).collect(),
            allowed_cluster_kinds: cluster.iter().map(|(g, k)| mk_gk(g, k)).collect(),
        };
        Policy::new("DataPlane acme/local", Some(&spec))
    }

    #[test]
    fn the_default_policy_allows_the_usual_namespaced_kinds_and_no_cluster_kind() {
        let policy = Policy::default();
        for (api_version, kind) in [
            ("apps/v1", "Deployment"),
            ("v1", "Service"),
            ("batch/v1", "CronJob"),
            ("gateway.networking.k8s.io/v1", "HTTPRoute"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ] {
            assert_eq!(policy.check(api_version, kind, ""), Ok(Scope::Namespaced));
        }
        let err = policy
            .check("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kind ClusterRoleBinding (rbac.authorization.k8s.io) is cluster-scoped and the data \
             plane does not allow it: add {group: \"rbac.authorization.k8s.io\", kind: \
             ClusterRoleBinding} to spec.resourcePolicy.allowedClusterKinds there to allow it"
        );
        assert!(matches!(
            policy.check("v1", "Namespace", ""),
            Err(PolicyError::ClusterKindNotAllowed { .. })
        ));
        // The group counts: a Deployment of another group is another kind.
        assert!(matches!(
            policy.check("example.com/v1", "Deployment", ""),
            Err(PolicyError::KindNotAllowed { .. })
        ));
    }

    #[test]
    fn a_kind_outside_the_list_is_refused_naming_the_field_that_allows_it() {
        let err = Policy::new("DataPlane acme/local", None)
            .check("example.com/v1", "Gadget", "")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kind Gadget (example.com) is not allowed on DataPlane acme/local: add {group: \
             \"example.com\", kind: Gadget} to spec.resourcePolicy.allowedKinds there to allow it"
        );
    }

    #[test]
    fn a_listed_policy_replaces_the_default_and_a_star_allows_a_group() {
        let policy = mk_policy(&[("apps", "Deployment"), ("example.com", "*")], &[]);
        assert_eq!(
            policy.check("apps/v1", "Deployment", ""),
            Ok(Scope::Namespaced)
        );
        assert_eq!(
            policy.check("example.com/v1", "Gadget", ""),
            Ok(Scope::Namespaced)
        );
        assert!(policy.check("v1", "Service", "").is_err());
        assert!(policy.check("apps/v1", "StatefulSet", "").is_err());
    }

    #[test]
    fn a_star_does_not_open_the_cluster_scoped_kinds_of_its_group() {
        let policy = mk_policy(&[("rbac.authorization.k8s.io", "*")], &[]);
        assert_eq!(
            policy.check("rbac.authorization.k8s.io/v1", "Role", ""),
            Ok(Scope::Namespaced)
        );
        assert!(matches!(
            policy.check("rbac.authorization.k8s.io/v1", "ClusterRole", ""),
            Err(PolicyError::ClusterKindNotAllowed { .. })
        ));
    }

    #[test]
    fn allowed_cluster_kinds_are_cluster_scoped_and_name_no_namespace() {
        let policy = mk_policy(&[], &[("", "Namespace"), ("example.com", "ClusterGadget")]);
        assert_eq!(policy.check("v1", "Namespace", ""), Ok(Scope::Cluster));
        assert_eq!(
            policy.check("example.com/v1", "ClusterGadget", ""),
            Ok(Scope::Cluster)
        );
        assert_eq!(
            policy
                .check("v1", "Namespace", "kube-system")
                .unwrap_err()
                .to_string(),
            "metadata.namespace must be empty: Namespace (core group) is cluster-scoped"
        );
        // The default namespaced list still holds.
        assert_eq!(
            policy.check("apps/v1", "Deployment", ""),
            Ok(Scope::Namespaced)
        );
    }

    #[test]
    fn a_policy_as_written_names_its_bad_field() {
        let spec = |allowed: Vec<GroupKind>, cluster: Vec<GroupKind>| ResourcePolicy {
            allowed_kinds: allowed,
            allowed_cluster_kinds: cluster,
        };
        assert_eq!(
            Policy::check_spec(&spec(
                vec![mk_gk("apps", "Deployment"), mk_gk("x.io", "*")],
                vec![mk_gk("", "Namespace")]
            )),
            Ok(())
        );
        let field = |p: ResourcePolicy| Policy::check_spec(&p).unwrap_err().0;
        assert_eq!(
            field(spec(vec![mk_gk("apps", "")], vec![])),
            "allowedKinds[0].kind"
        );
        assert_eq!(
            field(spec(vec![mk_gk("Apps!", "Deployment")], vec![])),
            "allowedKinds[0].group"
        );
        assert_eq!(
            field(spec(vec![mk_gk("apps", "../etc")], vec![])),
            "allowedKinds[0].kind"
        );
        assert_eq!(
            field(spec(vec![], vec![mk_gk("example.com", "*")])),
            "allowedClusterKinds[0].kind"
        );
        assert_eq!(
            field(spec(
                vec![mk_gk("", "Service"), mk_gk("", "Service")],
                vec![]
            )),
            "allowedKinds[1]"
        );
        let (at, why) = Policy::check_spec(&spec(
            vec![mk_gk("rbac.authorization.k8s.io", "ClusterRole")],
            vec![],
        ))
        .unwrap_err();
        assert_eq!(at, "allowedKinds[0]");
        assert!(why.contains("list it in allowedClusterKinds"), "{why}");
    }

    #[test]
    fn the_group_of_an_api_version() {
        assert_eq!(api_group("v1"), "");
        assert_eq!(api_group("apps/v1"), "apps");
        assert_eq!(
            api_group("gateway.networking.k8s.io/v1beta1"),
            "gateway.networking.k8s.io"
        );
    }
}

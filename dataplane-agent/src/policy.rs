//! The agent's own resource policy: a second line of defence behind the control plane's. The
//! agent checks every object it is sent against the kinds its flags allow (`--allow-kinds`,
//! `--allow-cluster-kinds`, read here into a [`Policy`]) and refuses the others one by one,
//! naming the flag that would allow them; a control plane that misbehaves cannot make it
//! create kinds its operator did not allow.

use troupe_common::k8s_names;
use troupe_common::pb::v1alpha1::{GroupKind, ResourcePolicy};
use troupe_common::policy::{Policy, PolicyError, Scope};

/// How the agent's policy names itself in messages.
const WHO: &str = "this agent";

/// The policy of the flags: `allow_kinds` and `allow_cluster_kinds` are lists of
/// `GROUP/KIND` (an empty group, or no `GROUP/`, is the core group; `*` as the kind allows a
/// whole group of namespaced kinds). No `--allow-kinds` means Troupe's default kinds; no
/// `--allow-cluster-kinds` means none.
pub fn from_flags(
    allow_kinds: &[String],
    allow_cluster_kinds: &[String],
) -> Result<Policy, String> {
    let spec = ResourcePolicy {
        allowed_kinds: group_kinds("--allow-kinds", allow_kinds)?,
        allowed_cluster_kinds: group_kinds("--allow-cluster-kinds", allow_cluster_kinds)?,
    };
    Policy::check_spec(&spec).map_err(|(field, why)| {
        let flag = match field.starts_with("allowedKinds") {
            true => "--allow-kinds",
            false => "--allow-cluster-kinds",
        };
        format!("{flag}: {why}")
    })?;
    Ok(Policy::new(WHO, Some(&spec)))
}

/// The `GROUP/KIND` entries of `flag` (comma-separated or repeated), as written.
pub(crate) fn group_kinds(flag: &str, entries: &[String]) -> Result<Vec<GroupKind>, String> {
    entries
        .iter()
        .flat_map(|e| e.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (group, kind) = entry.rsplit_once('/').unwrap_or(("", entry));
            if kind.is_empty() {
                return Err(format!("{flag}: {entry:?} is not GROUP/KIND"));
            }
            Ok(GroupKind {
                group: group.into(),
                kind: kind.into(),
            })
        })
        .collect()
}

/// Why `policy` refuses an object of `api_version`/`kind` in `namespace` (empty when unset),
/// naming the flag that would allow it; `None` when it may be applied. A namespaced object
/// must name a valid namespace.
pub fn refusal(policy: &Policy, api_version: &str, kind: &str, namespace: &str) -> Option<String> {
    let group = troupe_common::policy::api_group(api_version);
    let core = |g: &str| if g.is_empty() { "core group" } else { g }.to_string();
    match policy.check(api_version, kind, namespace) {
        Ok(Scope::Namespaced) if namespace.is_empty() => Some(format!(
            "metadata.namespace is required: {kind} ({}) is namespaced",
            core(group)
        )),
        Ok(Scope::Namespaced) => k8s_names::check_namespace(namespace)
            .err()
            .map(|why| format!("metadata.namespace {namespace:?} {why}")),
        Ok(Scope::Cluster) => None,
        Err(PolicyError::KindNotAllowed { group, kind, .. }) => Some(format!(
            "kind {kind} ({}) is not allowed by {WHO}: add {group}/{kind} to its --allow-kinds to allow it",
            core(&group)
        )),
        Err(PolicyError::ClusterKindNotAllowed { group, kind, .. }) => Some(format!(
            "kind {kind} ({}) is cluster-scoped and {WHO} does not allow it: add {group}/{kind} to its --allow-cluster-kinds to allow it",
            core(&group)
        )),
        Err(e @ PolicyError::NamespaceOnClusterKind { .. }) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn without_flags_the_default_kinds_are_allowed_and_no_cluster_kind() {
        let policy = from_flags(&[], &[]).unwrap();
        assert_eq!(refusal(&policy, "apps/v1", "Deployment", "shop"), None);
        assert_eq!(refusal(&policy, "v1", "ConfigMap", "shop"), None);
        assert_eq!(
            refusal(&policy, "v1", "Namespace", "").unwrap(),
            "kind Namespace (core group) is cluster-scoped and this agent does not allow it: \
             add /Namespace to its --allow-cluster-kinds to allow it"
        );
        assert_eq!(
            refusal(&policy, "example.com/v1", "Gadget", "shop").unwrap(),
            "kind Gadget (example.com) is not allowed by this agent: add example.com/Gadget to \
             its --allow-kinds to allow it"
        );
    }

    #[test]
    fn namespaced_objects_need_a_valid_namespace_and_cluster_ones_none() {
        let policy = from_flags(&[], &mk_flags(&["/Namespace"])).unwrap();
        assert!(
            refusal(&policy, "v1", "ConfigMap", "")
                .unwrap()
                .contains("metadata.namespace is required")
        );
        assert!(
            refusal(&policy, "v1", "ConfigMap", "../etc")
                .unwrap()
                .starts_with("metadata.namespace \"../etc\"")
        );
        assert_eq!(refusal(&policy, "v1", "Namespace", ""), None);
        assert!(
            refusal(&policy, "v1", "Namespace", "shop")
                .unwrap()
                .contains("metadata.namespace must be empty")
        );
    }

    #[test]
    fn flags_list_group_kinds_whole_groups_and_the_core_group() {
        let policy = from_flags(
            &mk_flags(&["apps/Deployment,/ConfigMap", "example.com/*"]),
            &[],
        )
        .unwrap();
        assert_eq!(refusal(&policy, "apps/v1", "Deployment", "shop"), None);
        assert_eq!(refusal(&policy, "v1", "ConfigMap", "shop"), None);
        assert_eq!(refusal(&policy, "example.com/v1", "Gadget", "shop"), None);
        assert!(refusal(&policy, "v1", "Secret", "shop").is_some());
        let policy = from_flags(&mk_flags(&["Secret"]), &[]).unwrap();
        assert_eq!(refusal(&policy, "v1", "Secret", "shop"), None);
    }

    #[test]
    fn malformed_flags_are_refused_naming_the_flag() {
        let err = from_flags(&mk_flags(&["apps/"]), &[]).unwrap_err();
        assert!(err.starts_with("--allow-kinds"), "{err}");
        let err = from_flags(&mk_flags(&["/Namespace"]), &[]).unwrap_err();
        assert!(err.starts_with("--allow-kinds"), "{err}");
        let err = from_flags(&[], &mk_flags(&["/*"])).unwrap_err();
        assert!(err.starts_with("--allow-cluster-kinds"), "{err}");
    }
}

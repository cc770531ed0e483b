//! Every kind of Troupe resource, with the names users may call it by and its scope.
//!
//! Requests and CLI arguments name kinds by canonical name (`Component`), plural
//! (`components`) or short name (`comp`), case-insensitively; [`Kind::parse`] is the one place
//! that resolves them.

use std::fmt;

/// A kind of Troupe resource.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Tenant boundary (cluster-scoped).
    Namespace,
    /// Target cluster in a namespace.
    DataPlane,
    /// Target cluster shared by every namespace.
    ClusterDataPlane,
    /// Deployment stage.
    Environment,
    /// Promotion graph between environments.
    DeploymentPipeline,
    /// Team or application boundary.
    Project,
    /// Platform template for a kind of component.
    ComponentType,
    /// Component type shared by every namespace.
    ClusterComponentType,
    /// Composable capability.
    Trait,
    /// Trait shared by every namespace.
    ClusterTrait,
    /// Build or automation template.
    Workflow,
    /// Workflow shared by every namespace.
    ClusterWorkflow,
    /// Deployable unit.
    Component,
    /// What a component runs.
    Workload,
    /// One execution of a workflow.
    WorkflowRun,
    /// Immutable snapshot of a component.
    ComponentRelease,
    /// A release bound to an environment.
    ReleaseBinding,
    /// Rendered manifests for one data plane.
    Release,
    /// A request to move a release to an environment, and its record.
    Promotion,
    /// Access rules in one namespace.
    Role,
    /// Access rules shared by every namespace.
    ClusterRole,
    /// A role granted within a namespace, project or component.
    RoleBinding,
    /// A cluster role granted everywhere.
    ClusterRoleBinding,
}

/// A kind name that matches no kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind {0:?} (see `troupe get --help` for the kinds and their short names)")]
pub struct UnknownKind(pub String);

impl Kind {
    /// Every kind, in creation order (a kind's references point only to kinds before it).
    pub const ALL: [Kind; 23] = [
        Kind::Namespace,
        Kind::DataPlane,
        Kind::ClusterDataPlane,
        Kind::Environment,
        Kind::DeploymentPipeline,
        Kind::ComponentType,
        Kind::ClusterComponentType,
        Kind::Trait,
        Kind::ClusterTrait,
        Kind::Workflow,
        Kind::ClusterWorkflow,
        Kind::Project,
        Kind::Component,
        Kind::Workload,
        Kind::WorkflowRun,
        Kind::ComponentRelease,
        Kind::ReleaseBinding,
        Kind::Release,
        Kind::Promotion,
        Kind::Role,
        Kind::ClusterRole,
        Kind::RoleBinding,
        Kind::ClusterRoleBinding,
    ];

    /// `(canonical name, plural, short name)`.
    const fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Namespace => ("Namespace", "namespaces", "ns"),
            Kind::DataPlane => ("DataPlane", "dataplanes", "dp"),
            Kind::ClusterDataPlane => ("ClusterDataPlane", "clusterdataplanes", "cdp"),
            Kind::Environment => ("Environment", "environments", "env"),
            Kind::DeploymentPipeline => ("DeploymentPipeline", "deploymentpipelines", "pipeline"),
            Kind::Project => ("Project", "projects", "proj"),
            Kind::ComponentType => ("ComponentType", "componenttypes", "ct"),
            Kind::ClusterComponentType => ("ClusterComponentType", "clustercomponenttypes", "cct"),
            Kind::Trait => ("Trait", "traits", "trait"),
            Kind::ClusterTrait => ("ClusterTrait", "clustertraits", "ctrait"),
            Kind::Workflow => ("Workflow", "workflows", "wf"),
            Kind::ClusterWorkflow => ("ClusterWorkflow", "clusterworkflows", "cwf"),
            Kind::Component => ("Component", "components", "comp"),
            Kind::Workload => ("Workload", "workloads", "wl"),
            Kind::WorkflowRun => ("WorkflowRun", "workflowruns", "wfr"),
            Kind::ComponentRelease => ("ComponentRelease", "componentreleases", "cr"),
            Kind::ReleaseBinding => ("ReleaseBinding", "releasebindings", "rb"),
            Kind::Release => ("Release", "releases", "rel"),
            Kind::Promotion => ("Promotion", "promotions", "promo"),
            Kind::Role => ("Role", "roles", "role"),
            Kind::ClusterRole => ("ClusterRole", "clusterroles", "crole"),
            // `rb` is ReleaseBinding's; the canonical name, lowercased, is the short name.
            Kind::RoleBinding => ("RoleBinding", "rolebindings", "rolebinding"),
            Kind::ClusterRoleBinding => ("ClusterRoleBinding", "clusterrolebindings", "crb"),
        }
    }

    /// Canonical name, as written in `kind:` (`ComponentType`).
    pub const fn name(self) -> &'static str {
        self.names().0
    }

    /// Lowercase plural (`componenttypes`).
    pub const fn plural(self) -> &'static str {
        self.names().1
    }

    /// Short name (`ct`).
    pub const fn short(self) -> &'static str {
        self.names().2
    }

    /// True for kinds that live outside any namespace.
    pub const fn is_cluster_scoped(self) -> bool {
        matches!(
            self,
            Kind::Namespace
                | Kind::ClusterDataPlane
                | Kind::ClusterComponentType
                | Kind::ClusterTrait
                | Kind::ClusterWorkflow
                | Kind::ClusterRole
                | Kind::ClusterRoleBinding
        )
    }

    /// Stable one-byte code used in storage keys. Never renumber: it is on disk.
    pub const fn code(self) -> u8 {
        match self {
            Kind::Namespace => 1,
            Kind::DataPlane => 2,
            Kind::ClusterDataPlane => 3,
            Kind::Environment => 4,
            Kind::DeploymentPipeline => 5,
            Kind::Project => 6,
            Kind::ComponentType => 7,
            Kind::ClusterComponentType => 8,
            Kind::Trait => 9,
            Kind::ClusterTrait => 10,
            Kind::Workflow => 11,
            Kind::ClusterWorkflow => 12,
            Kind::Component => 13,
            Kind::Workload => 14,
            Kind::WorkflowRun => 15,
            Kind::ComponentRelease => 16,
            Kind::ReleaseBinding => 17,
            Kind::Release => 18,
            Kind::Promotion => 19,
            Kind::Role => 20,
            Kind::ClusterRole => 21,
            Kind::RoleBinding => 22,
            Kind::ClusterRoleBinding => 23,
        }
    }

    /// The kind stored under `code`.
    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The field name of this kind in the `Resource` oneof, in JSON (`componentType`).
    pub fn json_field(self) -> String {
        let name = self.name();
        let mut out = name[..1].to_ascii_lowercase();
        out.push_str(&name[1..]);
        out
    }

    /// Resolves a canonical, plural or short name, case-insensitively.
    pub fn parse(s: &str) -> Result<Kind, UnknownKind> {
        let lower = s.trim().to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| {
                let (name, plural, short) = k.names();
                name.eq_ignore_ascii_case(&lower) || plural == lower || short == lower
            })
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// Resolves the `kind` of a `{kind, name}` reference that may name a namespaced kind or its
/// cluster-scoped twin (empty means the namespaced one); `None` for any other value.
pub fn scoped_kind(kind: &str, namespaced: Kind, cluster: Kind) -> Option<Kind> {
    match kind {
        "" => Some(namespaced),
        k if k == namespaced.name() => Some(namespaced),
        k if k == cluster.name() => Some(cluster),
        _ => None,
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves_to_its_kind() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Ok(kind));
            assert_eq!(Kind::parse(kind.plural()), Ok(kind));
            assert_eq!(Kind::parse(kind.short()), Ok(kind));
            assert_eq!(Kind::parse(&kind.name().to_uppercase()), Ok(kind));
            assert_eq!(Kind::from_code(kind.code()), Some(kind));
        }
        assert!(Kind::parse("gadget").is_err());
    }

    #[test]
    fn no_two_kinds_share_a_name() {
        let mut seen = std::collections::BTreeMap::new();
        for kind in Kind::ALL {
            let (name, plural, short) = kind.names();
            for word in [name.to_ascii_lowercase(), plural.into(), short.into()] {
                if let Some(other) = seen.insert(word.clone(), kind) {
                    assert_eq!(other, kind, "{word:?} names both {other} and {kind}");
                }
            }
        }
        assert_eq!(Kind::parse("rb"), Ok(Kind::ReleaseBinding));
        assert_eq!(Kind::parse("crb"), Ok(Kind::ClusterRoleBinding));
    }

    #[test]
    fn json_field_is_lower_camel() {
        assert_eq!(Kind::ComponentType.json_field(), "componentType");
        assert_eq!(Kind::Namespace.json_field(), "namespace");
    }
}

//! The rules of each kind, one file per kind or family of kinds: what its objects must look
//! like on their own (validation), which objects they point at (references, and which kinds
//! those can be), which fields never change once written, and what they must agree with in the
//! objects they point at. The shared machinery (`validate`, `references`, `integrity`) calls
//! them through the one table at the bottom of this file; a new kind is one new file
//! implementing [`Rules`] for its generated type, and one line in that table.

mod binding;
mod component;
mod component_type;
mod environment;
mod pipeline;
mod platform;
mod project;
mod promotion;
mod release;
mod role;
mod role_binding;
mod traits;
mod workflow;
mod workload;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::references::Reference;
use super::validate::Ctx;
use super::{Error, Resources};
use crate::store::Revision;

/// The objects an object's references resolved to, each with its reference: what
/// [`Rules::check_resolved`] looks inside.
pub(super) type Resolved = [(Reference, std::sync::Arc<Object>)];

/// `unchanged_fields!(key, old, new, "spec.x" => x, …)`: each named spec field is the same in
/// `old` and `new`, or the write is refused as [`Error::Immutable`].
macro_rules! unchanged_fields {
    ($key:expr, $old:expr, $new:expr, $($path:literal => $field:ident),+ $(,)?) => {{
        $(crate::resources::validate::unchanged(
            $key,
            $path,
            &$old.spec.as_ref().map(|s| s.$field.clone()),
            &$new.spec.as_ref().map(|s| s.$field.clone()),
        )?;)+
        Ok(())
    }};
}
use unchanged_fields;

/// What a kind's file says about its objects. Every rule has a default, "nothing to say", so
/// a kind states only the rules it has.
trait Rules {
    /// Kinds this kind's references may point at, besides the Namespace every namespaced
    /// object points at. Deleting an object of one of these kinds looks for referrers here.
    const REFERS_TO: &'static [Kind] = &[];

    /// Kinds among [`Rules::REFERS_TO`] whose objects [`Rules::check_resolved`] looks inside.
    const CHECKS_CONTENT_OF: &'static [Kind] = &[];

    /// For kinds only the control plane writes (it computes their content): what a user
    /// runs instead of applying one. A user's apply of such a kind is refused.
    const WRITTEN_BY_CONTROL_PLANE: Option<&'static str> = None;

    /// For kinds a user may not delete directly (deleting one would go around the rules that
    /// remove it): what a user runs instead. Cascades from what owns them still delete them.
    const DELETED_BY_CONTROL_PLANE: Option<&'static str> = None;

    /// Checks everything about the object that needs no other object; the metadata every
    /// kind shares is checked before.
    fn validate(&self, _ctx: &Ctx<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// Adds the references the object makes (besides its namespace) to `out`. References
    /// whose `kind` is not one of the allowed values are left out; validation reports them.
    fn references(&self, _namespace: &str, _out: &mut Vec<Reference>) {}

    /// Refuses a change from `old` to `self` of a field that never changes.
    fn immutable(&self, _old: &Self, _key: &ObjectKey) -> Result<(), Error> {
        Ok(())
    }

    /// The component that owns the object, for kinds owned by a component.
    fn owner(&self) -> Option<&pb::ComponentOwner> {
        None
    }

    /// Checks the object against the objects its references resolved to (those of the kinds
    /// in [`Rules::CHECKS_CONTENT_OF`], and its owning Component).
    fn check_resolved(
        &self,
        _resources: &Resources,
        _key: &ObjectKey,
        _resolved: &Resolved,
    ) -> Result<(), Error> {
        Ok(())
    }
    /// Refuses a change a user's apply may not make although the object is valid: one only
    /// the control plane's own paths make (`old` is the stored object, if any). Runs after
    /// the references are checked; the control plane's writes skip it. Returns the other
    /// objects it read, with the revision read (`None`: absent), which the write requires
    /// unchanged when it commits.
    fn check_user_apply(
        &self,
        _old: Option<&Self>,
        _resources: &Resources,
        _key: &ObjectKey,
    ) -> Result<Vec<(ObjectKey, Option<Revision>)>, Error> {
        Ok(Vec::new())
    }
}

/// A change a user asks for through the resource service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Create or update.
    Apply,
    /// Delete.
    Delete,
}

impl Change {
    /// The participle messages use: "is written by the control plane".
    fn done(self) -> &'static str {
        match self {
            Change::Apply => "written",
            Change::Delete => "deleted",
        }
    }
}

/// A reference's `kind`, or `default`'s name when it is empty.
fn kind_or(kind: &str, default: Kind) -> &str {
    if kind.is_empty() {
        default.name()
    } else {
        kind
    }
}

/// The kinds whose objects may reference an object of `kind`, in the order the table lists
/// them (which is the order a cascade collects them in).
pub(super) fn referrer_kinds(kind: Kind) -> Vec<Kind> {
    ORDER
        .iter()
        .copied()
        .filter(|k| {
            let namespaced = kind == Kind::Namespace && !k.is_cluster_scoped();
            namespaced || refers_to(*k).contains(&kind)
        })
        .collect()
}

/// True when a reference from `from` to `to` is checked beyond existence: every owned
/// object's Component (they must agree on the project), and what a kind looks inside.
pub(super) fn needs_content(from: Kind, to: Kind) -> bool {
    to == Kind::Component || checks_content_of(from).contains(&to)
}

/// The one table: every kind, in the order referrers are searched and cascades collected.
macro_rules! kinds {
    ($($variant:ident),+ $(,)?) => {
        const ORDER: &[Kind] = &[$(Kind::$variant),+];

        /// The checks of `object`'s kind.
        pub(super) fn validate(object: &Object, ctx: &Ctx<'_>) -> Result<(), Error> {
            match object { $(Object::$variant(o) => o.validate(ctx),)+ }
        }

        /// The references `object` makes, besides its namespace.
        pub(super) fn references(object: &Object, namespace: &str, out: &mut Vec<Reference>) {
            match object { $(Object::$variant(o) => o.references(namespace, out),)+ }
        }

        /// Refuses changes from `old` to `new` (of the same kind) to immutable fields.
        pub(super) fn immutable(old: &Object, new: &Object, key: &ObjectKey) -> Result<(), Error> {
            match (old, new) {
                $((Object::$variant(a), Object::$variant(b)) => b.immutable(a, key),)+
                _ => Ok(()),
            }
        }

        /// The component owning `object`, for kinds owned by a component.
        pub(super) fn owner(object: &Object) -> Option<&pb::ComponentOwner> {
            match object { $(Object::$variant(o) => o.owner(),)+ }
        }

        /// Checks `object` against the objects its references resolved to.
        pub(super) fn check_resolved(
            object: &Object,
            resources: &Resources,
            key: &ObjectKey,
            resolved: &Resolved,
        ) -> Result<(), Error> {
            match object { $(Object::$variant(o) => o.check_resolved(resources, key, resolved),)+ }
        }

        /// Refuses a user's apply of `new` over `old` (the stored object, if any) that only
        /// the control plane's paths may make.
        pub(super) fn check_user_apply(
            old: Option<&Object>,
            new: &Object,
            resources: &Resources,
            key: &ObjectKey,
        ) -> Result<Vec<(ObjectKey, Option<Revision>)>, Error> {
            match new {
                $(Object::$variant(o) => {
                    let old = match old {
                        Some(Object::$variant(old)) => Some(old),
                        _ => None,
                    };
                    o.check_user_apply(old, resources, key)
                })+
            }
        }

        /// Refuses `change` by a user to `key` when the control plane alone makes it.
        pub(super) fn check_user_change(key: &ObjectKey, change: Change) -> Result<(), Error> {
            let instead = match change {
                Change::Apply => match key.kind {
                    $(Kind::$variant => <pb::$variant as Rules>::WRITTEN_BY_CONTROL_PLANE,)+
                },
                Change::Delete => match key.kind {
                    $(Kind::$variant => <pb::$variant as Rules>::DELETED_BY_CONTROL_PLANE,)+
                },
            };
            match instead {
                Some(instead) => Err(Error::ControlPlaneOwned {
                    object: key.clone(),
                    verb: change.done(),
                    instead,
                }),
                None => Ok(()),
            }
        }

        fn refers_to(kind: Kind) -> &'static [Kind] {
            match kind { $(Kind::$variant => <pb::$variant as Rules>::REFERS_TO,)+ }
        }

        fn checks_content_of(kind: Kind) -> &'static [Kind] {
            match kind { $(Kind::$variant => <pb::$variant as Rules>::CHECKS_CONTENT_OF,)+ }
        }
    };
}

kinds!(
    Namespace,
    DataPlane,
    ClusterDataPlane,
    Environment,
    DeploymentPipeline,
    Project,
    ComponentType,
    ClusterComponentType,
    Trait,
    ClusterTrait,
    Workflow,
    ClusterWorkflow,
    Component,
    Workload,
    WorkflowRun,
    ComponentRelease,
    ReleaseBinding,
    Release,
    Promotion,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Who may reference whom, as written out by hand before the kinds stated it themselves:
    /// the derived table must match it, order included (cascades list objects in this order).
    fn mk_expected(kind: Kind) -> &'static [Kind] {
        match kind {
            Kind::Namespace => &[
                Kind::DataPlane,
                Kind::Environment,
                Kind::DeploymentPipeline,
                Kind::Project,
                Kind::ComponentType,
                Kind::Trait,
                Kind::Workflow,
                Kind::Component,
                Kind::Workload,
                Kind::WorkflowRun,
                Kind::ComponentRelease,
                Kind::ReleaseBinding,
                Kind::Release,
                Kind::Promotion,
                Kind::Role,
                Kind::RoleBinding,
            ],
            Kind::DataPlane | Kind::ClusterDataPlane => &[Kind::Environment, Kind::Release],
            Kind::Environment => &[
                Kind::DeploymentPipeline,
                Kind::ReleaseBinding,
                Kind::Release,
                Kind::Promotion,
            ],
            Kind::DeploymentPipeline => &[Kind::Project],
            Kind::Project => &[Kind::Component, Kind::RoleBinding],
            Kind::ComponentType | Kind::ClusterComponentType | Kind::Trait | Kind::ClusterTrait => {
                &[Kind::Component]
            }
            Kind::Workflow | Kind::ClusterWorkflow => &[Kind::Component, Kind::WorkflowRun],
            Kind::Component => &[
                Kind::Workload,
                Kind::WorkflowRun,
                Kind::ComponentRelease,
                Kind::ReleaseBinding,
                Kind::Release,
                Kind::Promotion,
                Kind::RoleBinding,
            ],
            Kind::ComponentRelease => &[Kind::ReleaseBinding, Kind::Promotion],
            Kind::ReleaseBinding => &[Kind::Release],
            Kind::Workload | Kind::WorkflowRun | Kind::Release | Kind::Promotion => &[],
            Kind::Role => &[Kind::RoleBinding],
            Kind::ClusterRole => &[Kind::RoleBinding, Kind::ClusterRoleBinding],
            Kind::RoleBinding | Kind::ClusterRoleBinding => &[],
        }
    }

    #[test]
    fn referrer_kinds_follow_what_each_kind_refers_to() {
        for kind in Kind::ALL {
            assert_eq!(
                referrer_kinds(kind),
                mk_expected(kind),
                "referrers of {kind}"
            );
        }
    }

    #[test]
    fn the_table_lists_every_kind_once() {
        let mut listed = ORDER.to_vec();
        listed.sort();
        let mut all = Kind::ALL.to_vec();
        all.sort();
        assert_eq!(listed, all);
    }

    #[test]
    fn content_is_read_of_owning_components_and_of_what_a_kind_looks_into() {
        assert!(needs_content(Kind::Workload, Kind::Component));
        assert!(needs_content(Kind::Component, Kind::ClusterTrait));
        assert!(needs_content(Kind::ReleaseBinding, Kind::ComponentRelease));
        assert!(!needs_content(Kind::Promotion, Kind::ComponentRelease));
        assert!(!needs_content(Kind::Component, Kind::Project));
    }
}

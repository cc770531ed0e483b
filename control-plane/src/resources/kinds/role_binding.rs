//! RoleBinding and ClusterRoleBinding: a role granted to users, groups or tokens. A
//! RoleBinding grants a Role of its namespace or a ClusterRole, within its namespace or
//! narrowed to one project or one component; a ClusterRoleBinding grants a ClusterRole
//! everywhere. The role and the scope are references like any other: they must exist when the
//! binding is written, and what a binding names cannot be deleted while it does (delete or
//! change the binding first), so a binding never silently outlives its role or its project.
//! The role a binding grants is immutable, as in Kubernetes: granting another role is another
//! binding, so no one holding `apply` on a binding can widen what it grants in place.

use troupe_common::access::SubjectKind;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Ctx, Error, Reference, Resolved, Resources, Rules, kind_or, unchanged_fields};
use crate::resources::references::scoped_kind;

impl Rules for pb::RoleBinding {
    const REFERS_TO: &'static [Kind] = &[
        Kind::Role,
        Kind::ClusterRole,
        Kind::Project,
        Kind::Component,
    ];

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(key, old, self, "spec.roleRef" => role_ref)
    }

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        let role = ctx.required("spec.roleRef", spec.role_ref.as_ref())?;
        ctx.ref_kind(
            "spec.roleRef.kind",
            &role.kind,
            Kind::Role,
            Kind::ClusterRole,
        )?;
        ctx.dns("spec.roleRef.name", &role.name)?;
        check_subjects(ctx, &spec.subjects)?;
        let Some(scope) = &spec.scope else {
            return Ok(());
        };
        if !scope.project.is_empty() {
            ctx.dns("spec.scope.project", &scope.project)?;
        }
        if !scope.component.is_empty() {
            if scope.project.is_empty() {
                return Err(ctx.invalid(
                    "spec.scope.component",
                    "requires spec.scope.project (the component's project)",
                ));
            }
            ctx.dns("spec.scope.component", &scope.component)?;
        }
        Ok(())
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        let Some(spec) = &self.spec else { return };
        if let Some(role) = &spec.role_ref
            && let Some(kind) = scoped_kind(&role.kind, Kind::Role, Kind::ClusterRole)
        {
            out.push(Reference::to(
                "spec.roleRef",
                ObjectKey::scoped(kind, namespace, &role.name),
            ));
        }
        let Some(scope) = &spec.scope else { return };
        if !scope.project.is_empty() {
            out.push(Reference::to(
                "spec.scope.project",
                ObjectKey::new(Kind::Project, namespace, &scope.project),
            ));
        }
        if !scope.component.is_empty() {
            out.push(Reference::to(
                "spec.scope.component",
                ObjectKey::new(Kind::Component, namespace, &scope.component),
            ));
        }
    }

    /// The scope's component belongs to the scope's project: a binding that named another
    /// project's component would grant something other than what it reads as.
    fn check_resolved(
        &self,
        _resources: &Resources,
        key: &ObjectKey,
        resolved: &Resolved,
    ) -> Result<(), Error> {
        let project = self
            .spec
            .as_ref()
            .and_then(|s| s.scope.as_ref())
            .map_or("", |s| s.project.as_str());
        for (reference, target) in resolved {
            let troupe_common::Object::Component(component) = &**target else {
                continue;
            };
            let owner = component
                .spec
                .as_ref()
                .and_then(|s| s.owner.as_ref())
                .map_or("", |o| o.project_name.as_str());
            if owner != project {
                return Err(Error::BadReference {
                    object: key.clone(),
                    field: "spec.scope.component".into(),
                    message: format!(
                        "{} belongs to project {owner:?}, not {project:?}",
                        reference.target
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Rules for pb::ClusterRoleBinding {
    const REFERS_TO: &'static [Kind] = &[Kind::ClusterRole];

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(key, old, self, "spec.roleRef" => role_ref)
    }

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        let role = ctx.required("spec.roleRef", spec.role_ref.as_ref())?;
        if kind_or(&role.kind, Kind::ClusterRole) != Kind::ClusterRole.name() {
            return Err(ctx.invalid(
                "spec.roleRef.kind",
                format!(
                    "a ClusterRoleBinding grants a ClusterRole, not a {:?} (a RoleBinding grants a Role)",
                    role.kind
                ),
            ));
        }
        ctx.dns("spec.roleRef.name", &role.name)?;
        check_subjects(ctx, &spec.subjects)
    }

    fn references(&self, _namespace: &str, out: &mut Vec<Reference>) {
        if let Some(role) = self.spec.as_ref().and_then(|s| s.role_ref.as_ref())
            && kind_or(&role.kind, Kind::ClusterRole) == Kind::ClusterRole.name()
        {
            out.push(Reference::to(
                "spec.roleRef",
                ObjectKey::new(Kind::ClusterRole, "", &role.name),
            ));
        }
    }
}

/// At least one subject, each of a known kind and with a name. User and group names come
/// from identity providers (e-mail addresses, OIDC subjects), so they are not held to the DNS
/// rules object names follow; only blank or padded names, which nobody authenticates as, are
/// refused.
fn check_subjects(ctx: &Ctx<'_>, subjects: &[pb::Subject]) -> Result<(), Error> {
    if subjects.is_empty() {
        return Err(ctx.invalid(
            "spec.subjects",
            "required: at least one User, Group or Token",
        ));
    }
    for (i, subject) in subjects.iter().enumerate() {
        if SubjectKind::parse(&subject.kind).is_none() {
            return Err(ctx.invalid(
                format!("spec.subjects[{i}].kind"),
                format!(
                    "{:?} is not one of {}",
                    subject.kind,
                    SubjectKind::ALL.map(SubjectKind::as_str).join(", ")
                ),
            ));
        }
        if subject.name.is_empty() {
            return Err(ctx.invalid(format!("spec.subjects[{i}].name"), "required"));
        }
        if subject.name.trim() != subject.name {
            return Err(ctx.invalid(
                format!("spec.subjects[{i}].name"),
                format!("{:?} has leading or trailing whitespace", subject.name),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use troupe_common::Object;
    use troupe_common::pb::v1alpha1 as pb;

    use crate::render::template::{Engine, Limits};
    use crate::resources::validate::check;

    fn mk_check(object: impl Into<Object>) -> Result<(), String> {
        check(&object.into(), &Engine::new(Limits::default())).map_err(|e| e.to_string())
    }

    fn mk_meta(namespace: &str) -> Option<pb::ObjectMeta> {
        Some(pb::ObjectMeta {
            name: "b".into(),
            namespace: namespace.into(),
            ..Default::default()
        })
    }

    fn mk_spec(
        kind: &str,
        subjects: &[(&str, &str)],
        scope: Option<(&str, &str)>,
    ) -> pb::RoleBindingSpec {
        pb::RoleBindingSpec {
            role_ref: Some(pb::RoleRef {
                kind: kind.into(),
                name: "developer".into(),
            }),
            subjects: subjects
                .iter()
                .map(|(kind, name)| pb::Subject {
                    kind: kind.to_string(),
                    name: name.to_string(),
                })
                .collect(),
            scope: scope.map(|(project, component)| pb::AccessScope {
                project: project.into(),
                component: component.into(),
            }),
        }
    }

    fn mk_binding(
        kind: &str,
        subjects: &[(&str, &str)],
        scope: Option<(&str, &str)>,
    ) -> pb::RoleBinding {
        pb::RoleBinding {
            metadata: mk_meta("acme"),
            spec: Some(mk_spec(kind, subjects, scope)),
            ..Default::default()
        }
    }

    fn mk_cluster_binding(kind: &str) -> pb::ClusterRoleBinding {
        let spec = mk_spec(kind, &[("User", "alice")], None);
        pb::ClusterRoleBinding {
            metadata: mk_meta(""),
            spec: Some(pb::ClusterRoleBindingSpec {
                role_ref: spec.role_ref,
                subjects: spec.subjects,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn bindings_name_a_role_kind_subjects_and_a_whole_scope() {
        let alice = [("User", "alice@example.com")];
        assert_eq!(
            mk_check(mk_binding("ClusterRole", &alice, Some(("shop", "api")))),
            Ok(())
        );
        assert_eq!(
            mk_check(mk_binding("", &[("Group", "g"), ("Token", "ci")], None)),
            Ok(())
        );
        assert_eq!(
            mk_check(mk_binding("ClusterRole", &alice, Some(("", "api")))),
            Err(
                "RoleBinding acme/b: spec.scope.component: requires spec.scope.project (the \
                 component's project)"
                    .into()
            )
        );
        assert_eq!(
            mk_check(mk_binding("Roles", &alice, None)),
            Err(
                "RoleBinding acme/b: spec.roleRef.kind: \"Roles\" is not one of Role, ClusterRole"
                    .into()
            )
        );
        assert_eq!(
            mk_check(mk_binding(
                "Role",
                &[("User", "a"), ("ServiceAccount", "b")],
                None
            )),
            Err(
                "RoleBinding acme/b: spec.subjects[1].kind: \"ServiceAccount\" is not one of \
                 User, Group, Token"
                    .into()
            )
        );
        assert_eq!(
            mk_check(mk_binding("Role", &[("Group", " ops")], None)),
            Err(
                "RoleBinding acme/b: spec.subjects[0].name: \" ops\" has leading or trailing \
                 whitespace"
                    .into()
            )
        );
        assert_eq!(
            mk_check(mk_binding("Role", &[], None)),
            Err(
                "RoleBinding acme/b: spec.subjects: required: at least one User, Group or Token"
                    .into()
            )
        );
    }

    #[test]
    fn a_cluster_role_binding_grants_a_cluster_role() {
        assert_eq!(mk_check(mk_cluster_binding("")), Ok(()));
        assert_eq!(mk_check(mk_cluster_binding("ClusterRole")), Ok(()));
        assert_eq!(
            mk_check(mk_cluster_binding("Role")),
            Err(
                "ClusterRoleBinding b: spec.roleRef.kind: a ClusterRoleBinding grants a \
                 ClusterRole, not a \"Role\" (a RoleBinding grants a Role)"
                    .into()
            )
        );
    }
}

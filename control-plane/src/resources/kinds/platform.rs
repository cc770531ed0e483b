//! Namespaces and data planes. A data plane's resource policy (which Kubernetes kinds its
//! releases may contain) must be well formed; otherwise no rules beyond the metadata every
//! kind shares. Data planes are referred to by Environments and Releases (see
//! `environment.rs`, `release.rs`).

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Policy, k8s_names};

use super::{Ctx, Error, Rules};
use crate::render::network::Provider;

impl Rules for pb::Namespace {}

impl Rules for pb::DataPlane {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        check_resource_policy(ctx, self.spec.as_ref())?;
        check_network(ctx, self.spec.as_ref())
    }
}

impl Rules for pb::ClusterDataPlane {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        check_resource_policy(ctx, self.spec.as_ref())?;
        check_network(ctx, self.spec.as_ref())
    }
}

/// `spec.networkPolicy.provider` is one Troupe renders for, and the gateways' pod selectors
/// are valid Kubernetes labels.
fn check_network(ctx: &Ctx<'_>, spec: Option<&pb::DataPlaneSpec>) -> Result<(), Error> {
    let Some(spec) = spec else { return Ok(()) };
    if let Some(network) = &spec.network_policy
        && Provider::parse(&network.provider).is_none()
    {
        return Err(ctx.invalid(
            "spec.networkPolicy.provider",
            format!(
                "{:?} is not a provider: use kubernetes (the default), cilium or none",
                network.provider
            ),
        ));
    }
    let gateways = spec.gateway.clone().unwrap_or_default();
    for (name, gateway) in [
        ("external", gateways.external),
        ("internal", gateways.internal),
    ] {
        for (key, value) in gateway.unwrap_or_default().pod_selector {
            k8s_names::check_qualified_name(&key)
                .and_then(|()| k8s_names::check_label_value(&value))
                .map_err(|why| {
                    ctx.invalid(format!("spec.gateway.{name}.podSelector[{key}]"), why)
                })?;
        }
    }
    Ok(())
}

/// `spec.resourcePolicy`, when set, names valid kinds, each once, and cluster-scoped kinds
/// only where they are allowed.
fn check_resource_policy(ctx: &Ctx<'_>, spec: Option<&pb::DataPlaneSpec>) -> Result<(), Error> {
    let Some(policy) = spec.and_then(|s| s.resource_policy.as_ref()) else {
        return Ok(());
    };
    Policy::check_spec(policy)
        .map_err(|(field, message)| ctx.invalid(format!("spec.resourcePolicy.{field}"), message))
}

#[cfg(test)]
mod tests {
    use troupe_common::Object;
    use troupe_common::pb::v1alpha1 as pb;

    use crate::render::template::{Engine, Limits};
    use crate::resources::validate::check;

    fn mk_data_plane(allowed: &[(&str, &str)], cluster: &[(&str, &str)]) -> Object {
        let gks = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(group, kind)| pb::GroupKind {
                    group: group.to_string(),
                    kind: kind.to_string(),
                })
                .collect()
        };
        Object::DataPlane(pb::DataPlane {
            metadata: Some(pb::ObjectMeta {
                name: "local".into(),
                namespace: "acme".into(),
                ..Default::default()
            }),
            spec: Some(pb::DataPlaneSpec {
                resource_policy: Some(pb::ResourcePolicy {
                    allowed_kinds: gks(allowed),
                    allowed_cluster_kinds: gks(cluster),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn a_resource_policy_names_valid_kinds_and_its_errors_name_the_field() {
        let engine = Engine::new(Limits::default());
        let ok = mk_data_plane(
            &[("apps", "Deployment"), ("example.com", "*")],
            &[("", "Namespace")],
        );
        assert!(check(&ok, &engine).is_ok());
        let err = check(&mk_data_plane(&[("apps", "../etc")], &[]), &engine).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("DataPlane acme/local: spec.resourcePolicy.allowedKinds[0].kind: "),
            "{err}"
        );
        let err = check(
            &mk_data_plane(&[("rbac.authorization.k8s.io", "ClusterRoleBinding")], &[]),
            &engine,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "DataPlane acme/local: spec.resourcePolicy.allowedKinds[0]: ClusterRoleBinding \
             (rbac.authorization.k8s.io) is cluster-scoped: list it in allowedClusterKinds"
        );
        let err = check(&mk_data_plane(&[], &[("example.com", "*")]), &engine).unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.resourcePolicy.allowedClusterKinds[0].kind"),
            "{err}"
        );
    }
}

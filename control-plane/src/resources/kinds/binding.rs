//! ReleaseBinding: a component's release bound to an environment, with that environment's
//! overrides. Against its release: the same component, and overrides valid against the
//! schemas captured in the release. Deleting an environment takes its bindings with it (and
//! waits for their Releases to be pruned).
//!
//! Which release a binding points at is governed by the project's pipeline (DESIGN §9,
//! "Governance holds"): a user's apply may set or change `spec.releaseName` only where that
//! bypasses nothing, that is in the pipeline's first environment, in an environment no edge
//! leads to, or in one whose every incoming edge has no approval and no gate. Elsewhere the
//! release moves only by promotion or rollback, which the control plane writes. Overrides and
//! `spec.state` stay the user's everywhere.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::BindingState;
use troupe_common::{Kind, Object, ObjectKey, Pipeline};

use super::{Ctx, Error, Reference, Resolved, Rules, kind_or, unchanged_fields};
use crate::resources::Resources;
use crate::resources::references::component_owner;
use crate::store::Revision;

impl Rules for pb::ReleaseBinding {
    const REFERS_TO: &'static [Kind] =
        &[Kind::Component, Kind::Environment, Kind::ComponentRelease];
    const CHECKS_CONTENT_OF: &'static [Kind] = &[Kind::ComponentRelease];

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        ctx.component_owner(spec.owner.as_ref())?;
        ctx.dns("spec.environment", &spec.environment)?;
        if !spec.release_name.is_empty() {
            ctx.dns("spec.releaseName", &spec.release_name)?;
        }
        if let Some(c) = spec
            .workload_overrides
            .as_ref()
            .and_then(|o| o.container.as_ref())
        {
            ctx.container_vars("spec.workloadOverrides.container", &c.env, &c.files)?;
        }
        if BindingState::of_spec(&spec.state).is_err() {
            return Err(ctx.invalid(
                "spec.state",
                format!("{:?} is not one of Active, Undeploy", spec.state),
            ));
        }
        Ok(())
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        let Some(spec) = &self.spec else { return };
        if let Some(owner) = &spec.owner {
            component_owner(namespace, owner, out);
        }
        out.push(Reference::owned_by(
            "spec.environment",
            ObjectKey::new(Kind::Environment, namespace, &spec.environment),
        ));
        if !spec.release_name.is_empty() {
            out.push(Reference::to(
                "spec.releaseName",
                ObjectKey::new(Kind::ComponentRelease, namespace, &spec.release_name),
            ));
        }
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(key, old, self, "spec.owner" => owner, "spec.environment" => environment)
    }

    fn owner(&self) -> Option<&pb::ComponentOwner> {
        self.spec.as_ref().and_then(|s| s.owner.as_ref())
    }

    fn check_user_apply(
        &self,
        old: Option<&Self>,
        resources: &Resources,
        key: &ObjectKey,
    ) -> Result<Vec<(ObjectKey, Option<Revision>)>, Error> {
        let spec = self.spec.clone().unwrap_or_default();
        let was = old
            .and_then(|o| o.spec.as_ref())
            .map(|s| s.release_name.as_str())
            .unwrap_or_default();
        // Clearing the release or keeping it moves nothing into the environment.
        if spec.release_name.is_empty() || spec.release_name == was {
            return Ok(Vec::new());
        }
        let owner = spec.owner.clone().unwrap_or_default();
        let mut read = Vec::new();
        let pipeline = pipeline_of(resources, &key.namespace, &owner.project_name, &mut read)?;
        if let Some((name, pipeline)) = pipeline {
            check_route(key, &name, &pipeline, &spec, was)?;
        }
        Ok(read)
    }

    fn check_resolved(
        &self,
        resources: &Resources,
        key: &ObjectKey,
        resolved: &Resolved,
    ) -> Result<(), Error> {
        let default_release = pb::ComponentReleaseSpec::default();
        let Some((release_ref, release)) = resolved.iter().find_map(|(r, o)| match &**o {
            Object::ComponentRelease(cr) => Some((r, cr.spec.as_ref().unwrap_or(&default_release))),
            _ => None,
        }) else {
            return Ok(());
        };
        let default_spec = pb::ReleaseBindingSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&default_spec);
        if spec.owner != release.owner {
            return Err(Error::BadReference {
                object: key.clone(),
                field: release_ref.field.clone(),
                message: format!("{} belongs to another component", release_ref.target),
            });
        }
        let type_schema = release
            .component_type
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.environment_configs.as_ref());
        resources.check_values(
            key,
            "spec.componentTypeEnvironmentConfigs",
            None,
            type_schema,
            spec.component_type_environment_configs.as_ref(),
        )?;
        check_trait_configs(resources, key, spec, release)
    }
}

/// Each trait instance's environment configs: an instance the release has, values valid
/// against that trait's schema as captured in the release.
fn check_trait_configs(
    resources: &Resources,
    key: &ObjectKey,
    spec: &pb::ReleaseBindingSpec,
    release: &pb::ComponentReleaseSpec,
) -> Result<(), Error> {
    let default_profile = pb::ComponentProfile::default();
    let profile = release
        .component_profile
        .as_ref()
        .unwrap_or(&default_profile);
    let mut instances: Vec<&String> = spec.trait_environment_configs.keys().collect();
    instances.sort();
    for instance in instances {
        let field = format!("spec.traitEnvironmentConfigs.{instance}");
        let Some(used) = profile.traits.iter().find(|t| &t.instance_name == instance) else {
            let known: Vec<&str> = profile
                .traits
                .iter()
                .map(|t| t.instance_name.as_str())
                .collect();
            return Err(Error::invalid(
                key,
                field,
                format!(
                    "the release has no trait instance {instance:?} (it has: {})",
                    known.join(", ")
                ),
            ));
        };
        let trait_schema = release
            .traits
            .iter()
            .find(|t| {
                t.name == used.name
                    && kind_or(&t.kind, Kind::Trait) == kind_or(&used.kind, Kind::Trait)
            })
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.environment_configs.as_ref());
        resources.check_values(
            key,
            &field,
            None,
            trait_schema,
            spec.trait_environment_configs.get(instance),
        )?;
    }
    Ok(())
}

/// The pipeline of `project` with its name; `None` when the project or its pipeline is gone
/// (a binding's references are checked before, so only in a race with a cascade): without a
/// pipeline there is no approval or gate to go around. Adds what it read to `read`.
fn pipeline_of(
    resources: &Resources,
    namespace: &str,
    project: &str,
    read: &mut Vec<(ObjectKey, Option<Revision>)>,
) -> Result<Option<(String, Pipeline)>, Error> {
    let key = ObjectKey::new(Kind::Project, namespace, project);
    let Some((project, revision)) = resources.read_as::<pb::Project>(&key)? else {
        read.push((key, None));
        return Ok(None);
    };
    read.push((key, Some(revision)));
    let name = project.spec.unwrap_or_default().deployment_pipeline_ref;
    let key = ObjectKey::new(Kind::DeploymentPipeline, namespace, &name);
    let Some((pipeline, revision)) = resources.read_as::<pb::DeploymentPipeline>(&key)? else {
        read.push((key, None));
        return Ok(None);
    };
    read.push((key, Some(revision)));
    Ok(Some((
        name,
        Pipeline::new(&pipeline.spec.unwrap_or_default()),
    )))
}

/// Refuses pointing binding `key` at `spec.releaseName` (it pointed at `was`, empty when
/// none) when releases reach its environment only through edges of `pipeline` (named
/// `name`) with an approval or a gate: every such edge is named, with what it requires.
fn check_route(
    key: &ObjectKey,
    name: &str,
    pipeline: &Pipeline,
    spec: &pb::ReleaseBindingSpec,
    was: &str,
) -> Result<(), Error> {
    let env = spec.environment.as_str();
    if pipeline.first() == Some(env) {
        return Ok(());
    }
    let gated: Vec<String> = pipeline
        .sources_of(env)
        .into_iter()
        .filter_map(|from| {
            let edge = pipeline.edge(from, env)?;
            let requires = requirements(edge)?;
            Some(format!("{from} → {env}, which requires {requires}"))
        })
        .collect();
    if gated.is_empty() {
        return Ok(());
    }
    let new = &spec.release_name;
    let change = if was.is_empty() {
        format!("be set to {new}")
    } else {
        format!("change from {was} to {new}")
    };
    let edges = match gated.as_slice() {
        [one] => format!("edge {one}"),
        many => format!("edges {}", many.join(", and ")),
    };
    let component = spec
        .owner
        .as_ref()
        .map(|o| o.component_name.as_str())
        .unwrap_or_default();
    let ns = &key.namespace;
    Err(Error::BypassesPipeline {
        object: key.clone(),
        field: "spec.releaseName",
        message: format!(
            "cannot {change} by an apply: {env} gets its releases through pipeline {name}'s {edges}; use `troupe promote {component} -n {ns} --to {env}`, or `troupe rollback {component} -n {ns} --env {env}` to go back to a release {env} ran"
        ),
    })
}

/// What an edge requires of a release before it moves (`an approval and the gate x`), or
/// `None` when it requires nothing.
fn requirements(edge: &pb::PromotionTarget) -> Option<String> {
    let mut parts = Vec::new();
    if edge.requires_approval {
        parts.push(match edge.required_approvals {
            ..=1 => "an approval".to_string(),
            n => format!("{n} approvals"),
        });
    }
    match edge.gates.as_slice() {
        [] => {}
        [gate] => parts.push(format!("the gate {}", gate.name)),
        gates => {
            let names: Vec<&str> = gates.iter().map(|g| g.name.as_str()).collect();
            parts.push(format!("the gates {}", names.join(", ")));
        }
    }
    (!parts.is_empty()).then(|| parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::MemoryStore;

    /// The example pipeline: development → staging (nothing required) → production (an
    /// approval and a healthy gate), and a fan-in `qa`, `perf` → `prod` with one gated edge.
    fn mk_pipeline() -> Pipeline {
        let edge = |env: &str, approval: bool, gates: &[&str]| pb::PromotionTarget {
            environment: env.into(),
            requires_approval: approval,
            gates: gates
                .iter()
                .map(|g| pb::PromotionGate {
                    name: g.to_string(),
                    r#type: "healthy".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let path = |source: &str, targets| pb::PromotionPath {
            source_environment: source.into(),
            targets,
        };
        Pipeline::new(&pb::DeploymentPipelineSpec {
            promotion_paths: vec![
                path("development", vec![edge("staging", false, &[])]),
                path(
                    "staging",
                    vec![edge("production", true, &["healthy-in-staging"])],
                ),
                path("qa", vec![edge("prod", false, &[])]),
                path("perf", vec![edge("prod", false, &["soak", "e2e"])]),
            ],
        })
    }

    fn mk_binding(env: &str, release: &str) -> pb::ReleaseBinding {
        pb::ReleaseBinding {
            spec: Some(pb::ReleaseBindingSpec {
                owner: Some(pb::ComponentOwner {
                    project_name: "shop".into(),
                    component_name: "api".into(),
                }),
                environment: env.into(),
                release_name: release.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn route(env: &str, release: &str, was: &str) -> Result<(), Error> {
        let key = ObjectKey::new(Kind::ReleaseBinding, "acme", format!("api-{env}"));
        let spec = mk_binding(env, release).spec.unwrap();
        check_route(&key, "default", &mk_pipeline(), &spec, was)
    }

    #[test]
    fn a_release_is_set_directly_only_where_no_approval_or_gate_is_skipped() {
        assert!(route("development", "api-2", "api-1").is_ok());
        assert!(route("staging", "api-2", "").is_ok());
        assert!(
            route("edge", "api-2", "api-1").is_ok(),
            "no edge leads there"
        );
        let err = route("production", "api-2", "").unwrap_err();
        assert!(matches!(err, Error::BypassesPipeline { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "ReleaseBinding acme/api-production: spec.releaseName: cannot be set to api-2 by an apply: production gets its releases through pipeline default's edge staging → production, which requires an approval and the gate healthy-in-staging; use `troupe promote api -n acme --to production`, or `troupe rollback api -n acme --env production` to go back to a release production ran"
        );
        let err = route("production", "api-2", "api-1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot change from api-1 to api-2 by an apply"),
            "{err}"
        );
    }

    #[test]
    fn one_gated_edge_into_an_environment_is_enough_to_refuse() {
        let err = route("prod", "api-2", "").unwrap_err().to_string();
        assert!(
            err.contains(
                "prod gets its releases through pipeline default's edge perf → prod, which requires the gates soak, e2e;"
            ),
            "{err}"
        );
    }

    #[test]
    fn what_an_edge_requires_is_spelled_out() {
        let mut edge = pb::PromotionTarget::default();
        assert_eq!(requirements(&edge), None);
        edge.requires_approval = true;
        assert_eq!(requirements(&edge).unwrap(), "an approval");
        edge.required_approvals = 2;
        assert_eq!(requirements(&edge).unwrap(), "2 approvals");
    }

    #[test]
    fn clearing_or_keeping_the_release_or_having_no_pipeline_skips_nothing() {
        let resources = Resources::new(Arc::new(MemoryStore::new()));
        let key = ObjectKey::new(Kind::ReleaseBinding, "acme", "api-production");
        let bound = mk_binding("production", "api-1");
        for (new, old) in [
            (mk_binding("production", ""), Some(&bound)),
            (mk_binding("production", "api-1"), Some(&bound)),
            // No Project shop (so no pipeline) in this store.
            (mk_binding("production", "api-2"), Some(&bound)),
            (mk_binding("production", "api-2"), None),
        ] {
            assert!(new.check_user_apply(old, &resources, &key).is_ok());
        }
    }
}

//! ReleaseBinding: a component's release bound to an environment, with that environment's
//! overrides. Against its release: the same component, and overrides valid against the
//! schemas captured in the release. Deleting an environment takes its bindings with it (and
//! waits for their Releases to be pruned).

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::BindingState;
use troupe_common::{Kind, Object, ObjectKey};

use super::{Ctx, Error, Reference, Resolved, Rules, kind_or, unchanged_fields};
use crate::resources::Resources;
use crate::resources::references::component_owner;

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

    fn check_resolved(
        &self,
        resources: &Resources,
        key: &ObjectKey,
        resolved: &Resolved,
    ) -> Result<(), Error> {
        let Some((release_ref, release)) = resolved.iter().find_map(|(r, o)| match o {
            Object::ComponentRelease(cr) => Some((r, cr.spec.clone().unwrap_or_default())),
            _ => None,
        }) else {
            return Ok(());
        };
        let spec = self.spec.clone().unwrap_or_default();
        if spec.owner != release.owner {
            return Err(Error::BadReference {
                object: key.clone(),
                field: release_ref.field.clone(),
                message: format!("{} belongs to another component", release_ref.target),
            });
        }
        let type_spec = release
            .component_type
            .clone()
            .and_then(|t| t.spec)
            .unwrap_or_default();
        resources.check_values(
            key,
            "spec.componentTypeEnvironmentConfigs",
            None,
            type_spec.environment_configs.as_ref(),
            spec.component_type_environment_configs.as_ref(),
        )?;
        check_trait_configs(resources, key, &spec, &release)
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
    let profile = release.component_profile.clone().unwrap_or_default();
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
        let trait_spec = release
            .traits
            .iter()
            .find(|t| {
                t.name == used.name
                    && kind_or(&t.kind, Kind::Trait) == kind_or(&used.kind, Kind::Trait)
            })
            .and_then(|t| t.spec.clone())
            .unwrap_or_default();
        resources.check_values(
            key,
            &field,
            None,
            trait_spec.environment_configs.as_ref(),
            spec.trait_environment_configs.get(instance),
        )?;
    }
    Ok(())
}

//! Pointing a component's ReleaseBinding in one environment at a release: what autoDeploy,
//! promotion and rollback all do in the end.

use std::sync::Arc;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use crate::resources::{Error, Origin, Resources};

/// The name a binding gets when Troupe creates it: `{component}-{environment}`.
pub fn binding_name(component: &str, environment: &str) -> String {
    format!("{component}-{environment}")
}

/// How to look for a component's binding in an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// By the name Troupe gives bindings only: one read, for paths that run per component at
    /// scale (autoDeploy).
    ByName,
    /// By name, then through the namespace's bindings for one a user named otherwise.
    Anywhere,
}

/// The component's binding in `environment`, if it has one.
pub async fn find_binding(
    resources: &Arc<Resources>,
    namespace: &str,
    component: &str,
    environment: &str,
    lookup: Lookup,
) -> Result<Option<pb::ReleaseBinding>, Error> {
    let is_it = |b: &pb::ReleaseBinding| {
        b.spec.as_ref().is_some_and(|s| {
            s.environment == environment
                && s.owner
                    .as_ref()
                    .is_some_and(|o| o.component_name == component)
        })
    };
    let key = ObjectKey::new(
        Kind::ReleaseBinding,
        namespace,
        binding_name(component, environment),
    );
    match resources.get_as::<pb::ReleaseBinding>(&key) {
        Ok(b) if is_it(&b) => return Ok(Some(b)),
        Ok(_) | Err(Error::NotFound(_)) if lookup == Lookup::ByName => return Ok(None),
        Ok(_) | Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let bindings: Vec<pb::ReleaseBinding> =
        resources.list_as(namespace, &Default::default()).await?;
    Ok(bindings.into_iter().find(is_it))
}

/// Points the component's binding in `environment` at `release`, creating the binding if
/// there is none; its overrides and state stay as they are. Returns the release it pointed at
/// before (empty if none; `release` itself when nothing changed).
pub async fn bind(
    resources: &Arc<Resources>,
    namespace: &str,
    owner: &pb::ComponentOwner,
    environment: &str,
    release: &str,
    lookup: Lookup,
) -> Result<String, Error> {
    // Each write is made against the version read, so a concurrent change to the binding (a
    // user editing its overrides) is read again instead of overwritten.
    let mut attempts = 0;
    loop {
        let mut binding = find_binding(
            resources,
            namespace,
            &owner.component_name,
            environment,
            lookup,
        )
        .await?
        .unwrap_or_else(|| pb::ReleaseBinding {
            metadata: Some(pb::ObjectMeta {
                name: binding_name(&owner.component_name, environment),
                namespace: namespace.to_string(),
                ..Default::default()
            }),
            spec: Some(pb::ReleaseBindingSpec {
                owner: Some(owner.clone()),
                environment: environment.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let spec = binding.spec.get_or_insert_default();
        let previous = std::mem::replace(&mut spec.release_name, release.to_string());
        if previous == release {
            return Ok(previous);
        }
        match resources
            .apply(Object::ReleaseBinding(binding), Origin::ControlPlane, false)
            .await
        {
            Ok(_) => return Ok(previous),
            Err(Error::Stale { .. }) if attempts < 8 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

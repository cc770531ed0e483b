//! Rolling an environment back to an earlier release of the component: the one it ran
//! before, or one named.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Promotions, owner_of};
use crate::releases::bind::{Lookup, find_binding};
use crate::resources::Error;

/// What a user asks to roll back.
#[derive(Debug, Clone, Default)]
pub struct RollbackRequest {
    /// Namespace of the component.
    pub namespace: String,
    /// The component.
    pub component: String,
    /// The environment.
    pub environment: String,
    /// The release to go back to; empty means the one the environment ran before.
    pub release: String,
    /// Who asks.
    pub requested_by: String,
    /// Why.
    pub message: String,
}

impl Promotions {
    /// Points an environment back at an earlier release; see `PromotionService.Rollback`.
    pub async fn rollback(&self, request: RollbackRequest) -> Result<pb::Promotion, Error> {
        let what = "RollbackRequest";
        if request.component.is_empty() {
            return Err(Error::invalid(what, "component", "required"));
        }
        if request.environment.is_empty() {
            return Err(Error::invalid(what, "environment", "required"));
        }
        let ns = request.namespace.as_str();
        let component = self.component(ns, &request.component)?;
        let owner = owner_of(&component);
        let component_key = ObjectKey::new(Kind::Component, ns, &owner.component_name);
        let env = request.environment.as_str();
        let _guard = self.lock.lock().await;
        let Some(binding) = find_binding(
            &self.resources,
            ns,
            &owner.component_name,
            env,
            Lookup::Anywhere,
        )
        .await?
        else {
            return Err(Error::Refused {
                object: component_key,
                message: format!("not deployed in {env}: nothing to roll back"),
            });
        };
        let current = binding
            .spec
            .as_ref()
            .map(|s| s.release_name.clone())
            .unwrap_or_default();
        let release = if request.release.is_empty() {
            self.earlier_release(&binding, &current)
                .ok_or_else(|| Error::Refused {
                    object: component_key.clone(),
                    message: format!(
                        "{env} has no earlier release to go back to; name one (`--to RELEASE`)"
                    ),
                })?
        } else {
            let key = ObjectKey::new(Kind::ComponentRelease, ns, &request.release);
            let r: pb::ComponentRelease = self.resources.get_as(&key)?;
            let of = r
                .spec
                .and_then(|s| s.owner)
                .unwrap_or_default()
                .component_name;
            if of != owner.component_name {
                return Err(Error::invalid(
                    what,
                    "release",
                    format!(
                        "{} is a release of {of}, not of {}",
                        request.release, owner.component_name
                    ),
                ));
            }
            request.release.clone()
        };
        if release == current {
            return Err(Error::Refused {
                object: component_key,
                message: format!("{env} already runs {release}"),
            });
        }
        let spec = pb::PromotionSpec {
            owner: Some(owner),
            action: "Rollback".into(),
            source_environment: String::new(),
            target_environment: env.to_string(),
            release_name: release,
            requested_by: request.requested_by,
            message: request.message,
        };
        self.start(ns, spec).await
    }

    /// The newest release in the binding's history, other than `current`, that still exists.
    fn earlier_release(&self, binding: &pb::ReleaseBinding, current: &str) -> Option<String> {
        let namespace = binding.metadata.as_ref()?.namespace.clone();
        binding
            .status
            .as_ref()?
            .release_history
            .iter()
            .map(|d| d.release_name.as_str())
            .filter(|name| *name != current)
            .find(|name| {
                self.resources
                    .get(&ObjectKey::new(Kind::ComponentRelease, &namespace, *name))
                    .is_ok()
            })
            .map(str::to_string)
    }
}

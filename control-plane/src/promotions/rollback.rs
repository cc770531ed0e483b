//! Rolling an environment back to an earlier release of the component: the one it ran
//! before, or one named. Either way it is a release the environment ran (its binding's
//! `status.releaseHistory`): that is what lets a rollback skip the edge's approvals and
//! gates. Any other release reaches the environment by promotion.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey};

use super::{Actor, Promotions, owner_of};
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
    pub requested_by: Actor,
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
        if !ran_before(&binding, &release) {
            return Err(Error::Refused {
                object: component_key,
                message: never_ran(&binding, env, &release),
            });
        }
        let spec = pb::PromotionSpec {
            owner: Some(owner),
            action: "Rollback".into(),
            source_environment: String::new(),
            target_environment: env.to_string(),
            release_name: release,
            requested_by: request.requested_by.user,
            message: request.message,
            impersonated_by: request.requested_by.impersonated_by,
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

/// True when the binding's environment ran `release` (it is in the binding's history).
pub(super) fn ran_before(binding: &pb::ReleaseBinding, release: &str) -> bool {
    binding
        .status
        .as_ref()
        .is_some_and(|s| s.release_history.iter().any(|d| d.release_name == release))
}

/// Why a rollback to `release`, which `env` never ran, is refused, and what to do instead.
pub(super) fn never_ran(binding: &pb::ReleaseBinding, env: &str, release: &str) -> String {
    let mut ran: Vec<&str> = binding
        .status
        .as_ref()
        .map(|s| {
            s.release_history
                .iter()
                .map(|d| d.release_name.as_str())
                .collect()
        })
        .unwrap_or_default();
    ran.dedup();
    let ran = if ran.is_empty() {
        "none yet".to_string()
    } else {
        ran.join(", ")
    };
    format!(
        "{env} never ran {release}: a rollback goes back only to a release {env} ran before ({ran}); use `troupe promote` to bring another release to {env} through its approvals and gates"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_binding(history: &[&str]) -> pb::ReleaseBinding {
        pb::ReleaseBinding {
            status: Some(pb::ReleaseBindingStatus {
                release_history: history
                    .iter()
                    .map(|name| pb::DeployedRelease {
                        release_name: name.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_release_the_environment_ran_is_a_rollback() {
        let binding = mk_binding(&["api-2", "api-1"]);
        assert!(ran_before(&binding, "api-1"));
        assert!(!ran_before(&binding, "api-3"));
        assert!(!ran_before(&mk_binding(&[]), "api-1"));
        assert_eq!(
            never_ran(&binding, "production", "api-3"),
            "production never ran api-3: a rollback goes back only to a release production ran before (api-2, api-1); use `troupe promote` to bring another release to production through its approvals and gates"
        );
        assert!(never_ran(&mk_binding(&[]), "production", "api-3").contains("(none yet)"));
    }
}

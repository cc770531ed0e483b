//! Advancing a promotion: refused when the pipeline (as it is now) has no such edge (or, for a
//! rollback, when the environment never ran the release), still pending while approvals or
//! gates are missing, otherwise the target binding points at the release and the promotion
//! ends `Succeeded`.

use std::time::Duration;

use troupe_common::ObjectKey;
use troupe_common::pb::v1alpha1 as pb;

use super::gates::{self, Evaluation};
use super::rollback::{never_ran, ran_before};
use super::{Promotions, is_pending, phase};
use crate::releases::bind::{Lookup, bind, find_binding};
use crate::resources::Error;

impl Promotions {
    /// Takes a promotion as far as it can go now. Returns it, and when a pending one should be
    /// looked at again even if nothing changes (a soak period ending).
    pub async fn advance(
        &self,
        key: &ObjectKey,
    ) -> Result<(pb::Promotion, Option<Duration>), Error> {
        let _guard = self.lock.lock().await;
        self.advance_locked(key).await
    }

    /// [`Promotions::advance`], with the promotion lock already held.
    pub(super) async fn advance_locked(
        &self,
        key: &ObjectKey,
    ) -> Result<(pb::Promotion, Option<Duration>), Error> {
        let promotion = self.promotion(key)?;
        if !is_pending(&promotion) {
            return Ok((promotion, None));
        }
        let status = promotion.status.clone().unwrap_or_default();
        let spec = promotion.spec.clone().unwrap_or_default();
        if spec.release_name.is_empty() {
            self.finish(key, phase::REFUSED, "names no release to promote", "")
                .await?;
            return Ok((self.promotion(key)?, None));
        }
        if spec.action == "Promote" {
            let evaluation = match self.edge_of(key, &spec) {
                Ok(edge) => gates::evaluate(&self.resources, key, &spec, &status, &edge).await?,
                Err(Error::Refused { message, .. }) => {
                    self.finish(key, phase::REFUSED, &message, "").await?;
                    return Ok((self.promotion(key)?, None));
                }
                Err(e) => return Err(e),
            };
            if !evaluation.ready() {
                let Evaluation {
                    gates,
                    message,
                    recheck,
                    ..
                } = evaluation;
                self.resources
                    .update_status(key, move |_, object| {
                        if let Some(p) = object.typed_mut::<pb::Promotion>() {
                            let status = p.status.get_or_insert_default();
                            status.phase = phase::PENDING.into();
                            status.message = message.clone();
                            status.gates = gates.clone();
                        }
                    })
                    .await?;
                return Ok((self.promotion(key)?, recheck));
            }
            let gates = evaluation.gates;
            self.resources
                .update_status(key, move |_, object| {
                    if let Some(p) = object.typed_mut::<pb::Promotion>() {
                        p.status.get_or_insert_default().gates = gates.clone();
                    }
                })
                .await?;
        }
        let owner = spec.owner.clone().unwrap_or_default();
        let env = &spec.target_environment;
        if spec.action == "Rollback"
            && let Some(message) = self
                .not_in_history(key, &owner, env, &spec.release_name)
                .await?
        {
            self.finish(key, phase::REFUSED, &message, "").await?;
            return Ok((self.promotion(key)?, None));
        }
        match bind(
            &self.resources,
            &key.namespace,
            &owner,
            env,
            &spec.release_name,
            Lookup::Anywhere,
        )
        .await
        {
            Ok(previous) => {
                let message = if previous.is_empty() || previous == spec.release_name {
                    format!("{env} runs {}", spec.release_name)
                } else {
                    format!("{env} runs {} (was {previous})", spec.release_name)
                };
                self.finish(key, phase::SUCCEEDED, &message, &previous)
                    .await?;
            }
            Err(
                e @ (Error::Invalid { .. }
                | Error::BadReference { .. }
                | Error::MissingReference { .. }
                | Error::Refused { .. }),
            ) => {
                let message = format!("could not bind {}: {e}", spec.release_name);
                self.finish(key, phase::REFUSED, &message, "").await?;
            }
            Err(e) => return Err(e),
        }
        Ok((self.promotion(key)?, None))
    }
}

impl Promotions {
    /// Why a rollback of `env` to `release` may not go ahead, if it may not: the environment
    /// never ran it (a rollback passes no approvals or gates, so it only goes back).
    async fn not_in_history(
        &self,
        key: &ObjectKey,
        owner: &pb::ComponentOwner,
        env: &str,
        release: &str,
    ) -> Result<Option<String>, Error> {
        let binding = find_binding(
            &self.resources,
            &key.namespace,
            &owner.component_name,
            env,
            Lookup::Anywhere,
        )
        .await?;
        Ok(match binding {
            Some(b) if ran_before(&b, release) => None,
            Some(b) => Some(never_ran(&b, env, release)),
            None => Some(format!("{env} never ran {release}: nothing to roll back")),
        })
    }
}

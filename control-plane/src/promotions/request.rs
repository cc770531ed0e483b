//! Asking for a promotion: which environment it comes from, which release that runs, and
//! whether the pipeline allows the edge. A refused request is recorded too.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::BindingState;
use troupe_common::{Kind, ObjectKey, Pipeline};

use super::{Actor, Promotions, owner_of, phase, refused};
use crate::releases::bind::{Lookup, find_binding};
use crate::resources::Error;

/// What a user asks to promote.
#[derive(Debug, Clone, Default)]
pub struct PromoteRequest {
    /// Namespace of the component.
    pub namespace: String,
    /// The component.
    pub component: String,
    /// Source environment; empty means the one whose edge leads to `to`.
    pub from: String,
    /// Target environment.
    pub to: String,
    /// Who asks.
    pub requested_by: Actor,
    /// Why.
    pub message: String,
}

impl Promotions {
    /// Asks for a promotion; see `PromotionService.Promote`. A refusal is recorded, then
    /// returned as [`Error::Refused`].
    pub async fn promote(&self, request: PromoteRequest) -> Result<pb::Promotion, Error> {
        let what = "PromoteRequest";
        if request.component.is_empty() {
            return Err(Error::invalid(what, "component", "required"));
        }
        if request.to.is_empty() {
            return Err(Error::invalid(what, "toEnvironment", "required"));
        }
        let ns = request.namespace.as_str();
        let component = self.component(ns, &request.component)?;
        let owner = owner_of(&component);
        let (pipeline_key, pipeline) = self.pipeline(ns, &owner.project_name)?;
        let _guard = self.lock.lock().await;
        let from = if request.from.is_empty() {
            previous_environment(&pipeline_key, &pipeline, &request.to)?
        } else {
            request.from.clone()
        };
        let source = find_binding(
            &self.resources,
            ns,
            &owner.component_name,
            &from,
            Lookup::Anywhere,
        )
        .await?;
        let release = source
            .as_ref()
            .filter(|b| active(b))
            .and_then(|b| b.spec.as_ref())
            .map(|s| s.release_name.clone())
            .unwrap_or_default();
        if !release.is_empty()
            && let Some(target) = find_binding(
                &self.resources,
                ns,
                &owner.component_name,
                &request.to,
                Lookup::Anywhere,
            )
            .await?
            && target
                .spec
                .as_ref()
                .is_some_and(|s| s.release_name == release)
        {
            return Err(Error::Refused {
                object: ObjectKey::new(Kind::Component, ns, &owner.component_name),
                message: format!("{} already runs {release}", request.to),
            });
        }
        let spec = pb::PromotionSpec {
            owner: Some(owner.clone()),
            action: "Promote".into(),
            source_environment: from.clone(),
            target_environment: request.to.clone(),
            release_name: release.clone(),
            requested_by: request.requested_by.user.clone(),
            message: request.message.clone(),
            impersonated_by: request.requested_by.impersonated_by.clone(),
        };
        // Refusals are recorded, but supersede nothing.
        let refusal = if release.is_empty() {
            Some(format!(
                "{} is not deployed in {from}: nothing to promote",
                owner.component_name
            ))
        } else {
            let component_key = ObjectKey::new(Kind::Component, ns, &owner.component_name);
            match self.edge_of(&component_key, &spec) {
                Ok(_) => None,
                Err(Error::Refused { message, .. }) => Some(message),
                Err(e) => return Err(e),
            }
        };
        if let Some(message) = refusal {
            let record = self.record(ns, spec, phase::REFUSED, &message).await?;
            return Err(refused(&record, message));
        }
        self.start(ns, spec).await
    }
}

/// True when the binding deploys its release (not `Undeploy`).
fn active(binding: &pb::ReleaseBinding) -> bool {
    binding.spec.as_ref().is_some_and(|s| {
        BindingState::of_spec(&s.state).is_ok_and(|state| state == BindingState::Active)
    })
}

/// The environment whose edge leads to `to`.
fn previous_environment(key: &ObjectKey, pipeline: &Pipeline, to: &str) -> Result<String, Error> {
    match pipeline.sources_of(to).as_slice() {
        [one] => Ok(one.to_string()),
        [] if pipeline.is_source(to) => Err(Error::Refused {
            object: key.clone(),
            message: format!(
                "{to} is the pipeline's first environment: releases reach it by autoDeploy or a binding, not by promotion"
            ),
        }),
        [] => Err(Error::Refused {
            object: key.clone(),
            message: format!("the pipeline has no environment {to}"),
        }),
        many => Err(Error::invalid(
            "PromoteRequest",
            "fromEnvironment",
            format!(
                "required: {} all promote to {to}; say which",
                many.join(", ")
            ),
        )),
    }
}

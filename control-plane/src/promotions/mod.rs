//! Promotion: moving a component's ComponentRelease along its project's pipeline, and rolling
//! an environment back.
//!
//! Every request is a Promotion object (DESIGN §2): created `Pending`, it records who asked,
//! from where, to where and which release; its status collects approvals and check results and
//! shows each gate of the edge as last evaluated. [`Promotions::advance`] decides: refused when
//! the pipeline (as it is now) has no such edge, still pending while approvals or gates are
//! missing, otherwise it points the target binding at the *same* release and ends `Succeeded`.
//! Advancing is idempotent and re-run by the promotion controller whenever the source binding
//! changes, a soak period ends, or the control plane restarts, so a crash between binding and
//! recording is finished on the next pass.

mod gates;

use std::sync::Arc;
use std::time::Duration;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::selector::LabelSelector;
use troupe_common::{Kind, Object, ObjectKey};

use crate::releases::bind::{Lookup, bind, find_binding};
use crate::releases::{LABEL_COMPONENT, LABEL_PROJECT};
use crate::resources::{Error, Resources};
use gates::Evaluation;

/// Label naming the environment a promotion goes to.
pub const LABEL_ENVIRONMENT: &str = "troupe.dev/environment";

/// Phases of a promotion.
pub mod phase {
    /// Waiting for approvals or gates.
    pub const PENDING: &str = "Pending";
    /// The target environment runs the release.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Not allowed by the pipeline, rejected, or the release could not be bound.
    pub const REFUSED: &str = "Refused";
    /// A newer promotion or rollback to the same environment replaced it.
    pub const SUPERSEDED: &str = "Superseded";
}

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
    pub requested_by: String,
    /// Why.
    pub message: String,
}

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

/// The promotion service.
pub struct Promotions {
    resources: Arc<Resources>,
    /// One promotion action at a time: names are numbered per component, and an advance
    /// reads, decides and writes with nothing in between. Promotions are people-paced.
    lock: tokio::sync::Mutex<()>,
}

impl Promotions {
    /// Promotions over `resources`.
    pub fn new(resources: Arc<Resources>) -> Self {
        Self {
            resources,
            lock: tokio::sync::Mutex::new(()),
        }
    }

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
        let pipeline = self.pipeline(ns, &owner.project_name)?;
        let _guard = self.lock.lock().await;
        let from = if request.from.is_empty() {
            previous_environment(&pipeline, &request.to)?
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
            requested_by: request.requested_by.clone(),
            message: request.message.clone(),
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
            let Object::ComponentRelease(r) = self.resources.get(&key)? else {
                unreachable!("the store keeps objects under their own kind")
            };
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

    /// Adds `user`'s approval to a pending promotion, or (`reject`) ends it as refused.
    pub async fn approve(
        &self,
        key: &ObjectKey,
        user: &str,
        comment: &str,
        reject: bool,
    ) -> Result<pb::Promotion, Error> {
        if user.is_empty() {
            return Err(Error::invalid("ApproveRequest", "user", "required"));
        }
        let _guard = self.lock.lock().await;
        let promotion = self.pending(key)?;
        let spec = promotion.spec.clone().unwrap_or_default();
        let edge = self.edge_of(key, &spec)?;
        let verb = if reject { "reject" } else { "approve" };
        if !edge.requires_approval && !reject {
            return Err(Error::Refused {
                object: key.clone(),
                message: format!(
                    "the edge {} → {} needs no approval",
                    spec.source_environment, spec.target_environment
                ),
            });
        }
        let requester = user == spec.requested_by;
        if !edge.approvers.is_empty() && !edge.approvers.iter().any(|a| a == user) && !requester {
            return Err(Error::Forbidden {
                object: key.clone(),
                message: format!(
                    "{user} may not {verb} promotions to {} (approvers: {})",
                    spec.target_environment,
                    edge.approvers.join(", ")
                ),
            });
        }
        if reject {
            let by = if requester { "withdrawn" } else { "rejected" };
            let message = if comment.is_empty() {
                format!("{by} by {user}")
            } else {
                format!("{by} by {user}: {comment}")
            };
            self.finish(key, phase::REFUSED, &message, "").await?;
            return self.promotion(key);
        }
        if requester {
            return Err(Error::Forbidden {
                object: key.clone(),
                message: format!(
                    "{user} asked for this promotion; another approver must approve it"
                ),
            });
        }
        let approval = pb::Approval {
            user: user.to_string(),
            time: Some(troupe_common::timestamp::now_seconds()),
            comment: comment.to_string(),
        };
        self.resources
            .update_status(key, move |_, object| {
                if let Object::Promotion(p) = object {
                    let status = p.status.get_or_insert_default();
                    if !status.approvals.iter().any(|a| a.user == approval.user) {
                        status.approvals.push(approval);
                    }
                }
            })
            .await?;
        Ok(self.advance_locked(key).await?.0)
    }

    /// Records an external check's result on a pending promotion.
    pub async fn report_check(
        &self,
        key: &ObjectKey,
        result: pb::CheckResult,
    ) -> Result<pb::Promotion, Error> {
        if result.name.is_empty() {
            return Err(Error::invalid("ReportCheckRequest", "check", "required"));
        }
        let _guard = self.lock.lock().await;
        let promotion = self.pending(key)?;
        let spec = promotion.spec.unwrap_or_default();
        let edge = self.edge_of(key, &spec)?;
        let checks: Vec<&str> = edge
            .gates
            .iter()
            .filter(|g| g.r#type == "check")
            .map(|g| g.name.as_str())
            .collect();
        if !checks.contains(&result.name.as_str()) {
            return Err(Error::invalid(
                "ReportCheckRequest",
                "check",
                format!(
                    "the edge {} → {} has no check gate {:?} (its checks: {})",
                    spec.source_environment,
                    spec.target_environment,
                    result.name,
                    if checks.is_empty() {
                        "none".into()
                    } else {
                        checks.join(", ")
                    }
                ),
            ));
        }
        let result = pb::CheckResult {
            time: Some(troupe_common::timestamp::now_seconds()),
            ..result
        };
        self.resources
            .update_status(key, move |_, object| {
                if let Object::Promotion(p) = object {
                    let checks = &mut p.status.get_or_insert_default().checks;
                    checks.retain(|c| c.name != result.name);
                    checks.push(result);
                }
            })
            .await?;
        Ok(self.advance_locked(key).await?.0)
    }

    /// Takes a promotion as far as it can go now. Returns it, and when a pending one should be
    /// looked at again even if nothing changes (a soak period ending).
    pub async fn advance(
        &self,
        key: &ObjectKey,
    ) -> Result<(pb::Promotion, Option<Duration>), Error> {
        let _guard = self.lock.lock().await;
        self.advance_locked(key).await
    }

    async fn advance_locked(
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
                        if let Object::Promotion(p) = object {
                            let status = p.status.get_or_insert_default();
                            status.phase = phase::PENDING.into();
                            status.message = message;
                            status.gates = gates;
                        }
                    })
                    .await?;
                return Ok((self.promotion(key)?, recheck));
            }
            let gates = evaluation.gates;
            self.resources
                .update_status(key, move |_, object| {
                    if let Object::Promotion(p) = object {
                        p.status.get_or_insert_default().gates = gates;
                    }
                })
                .await?;
        }
        let owner = spec.owner.clone().unwrap_or_default();
        let env = &spec.target_environment;
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

    /// Promotions of a component, oldest first.
    pub async fn history(
        &self,
        namespace: &str,
        component: &str,
    ) -> Result<Vec<pb::Promotion>, Error> {
        let selector = LabelSelector::parse(&format!("{LABEL_COMPONENT}={component}"))
            .map_err(|e| Error::invalid("HistoryRequest", "component", e.to_string()))?;
        let page = self
            .resources
            .list(Kind::Promotion, namespace, &selector, 0, "")
            .await?;
        let mut out: Vec<pb::Promotion> = page
            .items
            .into_iter()
            .filter_map(|o| match o {
                Object::Promotion(p) => Some(p),
                _ => None,
            })
            .collect();
        out.sort_by_key(|p| {
            let meta = p.metadata.clone().unwrap_or_default();
            let created = meta.create_time.map(|t| (t.seconds, t.nanos));
            (created, meta.name)
        });
        Ok(out)
    }

    /// Stores a new promotion (superseding pending ones to the same environment) and takes it
    /// as far as it goes now; one refused on the way is returned as [`Error::Refused`].
    async fn start(
        &self,
        namespace: &str,
        spec: pb::PromotionSpec,
    ) -> Result<pb::Promotion, Error> {
        let key = self.create(namespace, spec, true).await?;
        let (promotion, _) = self.advance_locked(&key).await?;
        let status = promotion.status.clone().unwrap_or_default();
        if status.phase == phase::REFUSED {
            return Err(refused(&promotion, status.message));
        }
        Ok(promotion)
    }

    /// Stores a new promotion; with `supersede`, pending ones to the same environment end.
    async fn create(
        &self,
        namespace: &str,
        spec: pb::PromotionSpec,
        supersede: bool,
    ) -> Result<ObjectKey, Error> {
        let owner = spec.owner.clone().unwrap_or_default();
        let earlier = self.history(namespace, &owner.component_name).await?;
        let name = next_name(&owner.component_name, &spec.target_environment, &earlier);
        let key = ObjectKey::new(Kind::Promotion, namespace, &name);
        for p in &earlier {
            let pending = is_pending(p);
            let same_target = p
                .spec
                .as_ref()
                .is_some_and(|s| s.target_environment == spec.target_environment);
            if supersede && pending && same_target {
                let old = ObjectKey::new(
                    Kind::Promotion,
                    namespace,
                    p.metadata.clone().unwrap_or_default().name,
                );
                self.finish(
                    &old,
                    phase::SUPERSEDED,
                    &format!("superseded by {name}"),
                    "",
                )
                .await?;
            }
        }
        let metadata = pb::ObjectMeta {
            name,
            namespace: namespace.to_string(),
            labels: [
                (LABEL_PROJECT.to_string(), owner.project_name.clone()),
                (LABEL_COMPONENT.to_string(), owner.component_name.clone()),
                (
                    LABEL_ENVIRONMENT.to_string(),
                    spec.target_environment.clone(),
                ),
            ]
            .into(),
            ..Default::default()
        };
        let promotion = pb::Promotion {
            metadata: Some(metadata),
            spec: Some(spec),
            ..Default::default()
        };
        self.resources
            .apply(Object::Promotion(promotion), false)
            .await?;
        Ok(key)
    }

    /// Stores a promotion that ended before it began (refused on request).
    async fn record(
        &self,
        namespace: &str,
        spec: pb::PromotionSpec,
        phase: &str,
        message: &str,
    ) -> Result<pb::Promotion, Error> {
        let key = self.create(namespace, spec, false).await?;
        self.finish(&key, phase, message, "").await?;
        self.promotion(&key)
    }

    /// Ends a promotion in `phase`.
    async fn finish(
        &self,
        key: &ObjectKey,
        phase: &str,
        message: &str,
        previous: &str,
    ) -> Result<(), Error> {
        let (phase, message, previous) =
            (phase.to_string(), message.to_string(), previous.to_string());
        self.resources
            .update_status(key, move |_, object| {
                if let Object::Promotion(p) = object {
                    let status = p.status.get_or_insert_default();
                    status.phase = phase;
                    status.message = message;
                    if !previous.is_empty() {
                        status.previous_release = previous;
                    }
                    status.completion_time = Some(troupe_common::timestamp::now_seconds());
                }
            })
            .await?;
        Ok(())
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

    /// The edge a promotion takes, in the pipeline as it is now.
    fn edge_of(
        &self,
        key: &ObjectKey,
        spec: &pb::PromotionSpec,
    ) -> Result<pb::PromotionTarget, Error> {
        let owner = spec.owner.clone().unwrap_or_default();
        let pipeline = self.pipeline(&key.namespace, &owner.project_name)?;
        let name = pipeline.metadata.clone().unwrap_or_default().name;
        let paths = pipeline.spec.unwrap_or_default().promotion_paths;
        let from = &spec.source_environment;
        let to = &spec.target_environment;
        let Some(path) = paths.iter().find(|p| &p.source_environment == from) else {
            return Err(Error::Refused {
                object: key.clone(),
                message: format!("pipeline {name} has no promotion path from {from}"),
            });
        };
        path.targets
            .iter()
            .find(|t| &t.environment == to)
            .cloned()
            .ok_or_else(|| {
                let targets: Vec<&str> = path
                    .targets
                    .iter()
                    .map(|t| t.environment.as_str())
                    .collect();
                Error::Refused {
                    object: key.clone(),
                    message: format!(
                        "pipeline {name} does not promote {from} to {to} ({from} promotes to {})",
                        if targets.is_empty() {
                            "nothing".into()
                        } else {
                            targets.join(", ")
                        }
                    ),
                }
            })
    }

    fn component(&self, namespace: &str, name: &str) -> Result<pb::Component, Error> {
        match self
            .resources
            .get(&ObjectKey::new(Kind::Component, namespace, name))?
        {
            Object::Component(c) => Ok(c),
            _ => unreachable!("the store keeps objects under their own kind"),
        }
    }

    fn pipeline(&self, namespace: &str, project: &str) -> Result<pb::DeploymentPipeline, Error> {
        let Object::Project(p) =
            self.resources
                .get(&ObjectKey::new(Kind::Project, namespace, project))?
        else {
            unreachable!("the store keeps objects under their own kind")
        };
        let name = p.spec.unwrap_or_default().deployment_pipeline_ref;
        match self
            .resources
            .get(&ObjectKey::new(Kind::DeploymentPipeline, namespace, name))?
        {
            Object::DeploymentPipeline(p) => Ok(p),
            _ => unreachable!("the store keeps objects under their own kind"),
        }
    }

    fn promotion(&self, key: &ObjectKey) -> Result<pb::Promotion, Error> {
        match self.resources.get(key)? {
            Object::Promotion(p) => Ok(p),
            _ => unreachable!("the store keeps objects under their own kind"),
        }
    }

    /// The promotion, if it is still pending.
    fn pending(&self, key: &ObjectKey) -> Result<pb::Promotion, Error> {
        let promotion = self.promotion(key)?;
        if !is_pending(&promotion) {
            let phase = promotion.status.map(|s| s.phase).unwrap_or_default();
            return Err(Error::Refused {
                object: key.clone(),
                message: format!("the promotion is {phase}; only a Pending one can change"),
            });
        }
        Ok(promotion)
    }
}

/// True for a promotion still waiting (a new one has no phase yet).
pub fn is_pending(promotion: &pb::Promotion) -> bool {
    promotion
        .status
        .as_ref()
        .is_none_or(|s| s.phase.is_empty() || s.phase == phase::PENDING)
}

/// The component's owner reference (project and component name).
fn owner_of(component: &pb::Component) -> pb::ComponentOwner {
    let meta = component.metadata.clone().unwrap_or_default();
    pb::ComponentOwner {
        project_name: component
            .spec
            .as_ref()
            .and_then(|s| s.owner.as_ref())
            .map(|o| o.project_name.clone())
            .unwrap_or_default(),
        component_name: meta.name,
    }
}

/// True when the binding deploys its release (not `Undeploy`).
fn active(binding: &pb::ReleaseBinding) -> bool {
    binding.spec.as_ref().is_some_and(|s| {
        s.state.is_empty() || s.state == troupe_common::status::BindingState::Active
    })
}

/// The environment whose edge leads to `to`.
fn previous_environment(pipeline: &pb::DeploymentPipeline, to: &str) -> Result<String, Error> {
    let meta = pipeline.metadata.clone().unwrap_or_default();
    let key = ObjectKey::new(Kind::DeploymentPipeline, &meta.namespace, &meta.name);
    let paths = &pipeline
        .spec
        .as_ref()
        .map(|s| s.promotion_paths.clone())
        .unwrap_or_default();
    let sources: Vec<&str> = paths
        .iter()
        .filter(|p| p.targets.iter().any(|t| t.environment == to))
        .map(|p| p.source_environment.as_str())
        .collect();
    match sources.as_slice() {
        [one] => Ok(one.to_string()),
        [] if paths.iter().any(|p| p.source_environment == to) => Err(Error::Refused {
            object: key,
            message: format!(
                "{to} is the pipeline's first environment: releases reach it by autoDeploy or a binding, not by promotion"
            ),
        }),
        [] => Err(Error::Refused {
            object: key,
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

/// `{component}-{environment}-{n}`, numbered after every earlier promotion of the component.
fn next_name(component: &str, environment: &str, earlier: &[pb::Promotion]) -> String {
    let highest = earlier
        .iter()
        .filter_map(|p| {
            p.metadata
                .as_ref()?
                .name
                .rsplit('-')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let n = highest.max(earlier.len()) + 1;
    let name = format!("{component}-{environment}-{n}");
    if name.len() <= 63 {
        return name;
    }
    let suffix = format!("-{n}");
    let keep = 63 - suffix.len();
    format!(
        "{}{suffix}",
        &component[..keep.min(component.len())].trim_end_matches('-')
    )
}

/// [`Error::Refused`] for a recorded promotion.
fn refused(promotion: &pb::Promotion, message: String) -> Error {
    let meta = promotion.metadata.clone().unwrap_or_default();
    Error::Refused {
        object: ObjectKey::new(Kind::Promotion, meta.namespace, meta.name),
        message,
    }
}

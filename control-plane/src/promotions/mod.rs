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
//!
//! One file per concern: `request` (asking for a promotion), `rollback`, `approvals`
//! (approvals and check reports), `advance` (deciding), `gates` (evaluating an edge's gates),
//! `record` (creating, ending and listing the records). This file holds the service and what
//! they share: the pipeline's edge a promotion takes, and typed reads.

mod advance;
mod approvals;
mod gates;
mod record;
mod request;
mod rollback;

use std::sync::Arc;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey, Pipeline};

use crate::resources::{Error, Resources};

pub use request::PromoteRequest;
pub use rollback::RollbackRequest;

/// Who acts on a promotion: the authenticated caller, or the user it impersonates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// The user name records keep and approvers match.
    pub user: String,
    /// The user's groups; an approver written `group:NAME` matches a member.
    pub groups: Vec<String>,
    /// When impersonated: the caller who really acts; empty otherwise.
    pub impersonated_by: String,
}

impl Actor {
    /// Whether an `approvers` entry names this actor: its user name, or `group:NAME` for one
    /// of its groups.
    pub fn is(&self, approver: &str) -> bool {
        match approver.strip_prefix("group:") {
            Some(group) => self.groups.iter().any(|g| g == group),
            None => self.user == approver,
        }
    }

    /// `alice`, or `alice (impersonated by admin)`.
    pub fn display(&self) -> String {
        if self.impersonated_by.is_empty() {
            self.user.clone()
        } else {
            format!("{} (impersonated by {})", self.user, self.impersonated_by)
        }
    }
}

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

    /// The edge a promotion takes, in the pipeline as it is now.
    fn edge_of(
        &self,
        key: &ObjectKey,
        spec: &pb::PromotionSpec,
    ) -> Result<pb::PromotionTarget, Error> {
        let owner = spec.owner.clone().unwrap_or_default();
        let (pipeline_key, pipeline) = self.pipeline(&key.namespace, &owner.project_name)?;
        let name = &pipeline_key.name;
        let from = &spec.source_environment;
        let to = &spec.target_environment;
        let Some(targets) = pipeline.targets_of(from) else {
            return Err(Error::Refused {
                object: key.clone(),
                message: format!("pipeline {name} has no promotion path from {from}"),
            });
        };
        pipeline.edge(from, to).cloned().ok_or_else(|| {
            let targets: Vec<&str> = targets.iter().map(|t| t.environment.as_str()).collect();
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
        self.resources
            .get_as(&ObjectKey::new(Kind::Component, namespace, name))
    }

    /// The pipeline of `project`, with its key.
    fn pipeline(&self, namespace: &str, project: &str) -> Result<(ObjectKey, Pipeline), Error> {
        let project: pb::Project =
            self.resources
                .get_as(&ObjectKey::new(Kind::Project, namespace, project))?;
        let name = project.spec.unwrap_or_default().deployment_pipeline_ref;
        let key = ObjectKey::new(Kind::DeploymentPipeline, namespace, name);
        let pipeline: pb::DeploymentPipeline = self.resources.get_as(&key)?;
        Ok((key, Pipeline::new(&pipeline.spec.unwrap_or_default())))
    }

    fn promotion(&self, key: &ObjectKey) -> Result<pb::Promotion, Error> {
        self.resources.get_as(key)
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

/// [`Error::Refused`] for a recorded promotion.
fn refused(promotion: &pb::Promotion, message: String) -> Error {
    let meta = promotion.metadata.clone().unwrap_or_default();
    Error::Refused {
        object: ObjectKey::new(Kind::Promotion, meta.namespace, meta.name),
        message,
    }
}

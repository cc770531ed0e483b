//! Starting a component's build: a new WorkflowRun of the component's `spec.workflow`, with
//! its parameters checked against the workflow's schema before anything is stored.

use std::collections::BTreeMap;

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::{Builds, inputs};
use crate::resources::{Error, Origin, Outcome};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// Namespace of the component.
    pub namespace: String,
    /// The component.
    pub component: String,
    /// The commit; may be empty.
    pub commit: String,
    /// Parameter values over the component's, by dotted path.
    pub set: BTreeMap<String, String>,
    /// The source repository, for the record; empty takes the component's
    /// `spec.workflow.repository`.
    pub repository: String,
    /// The git ref, for the record.
    pub r#ref: String,
    /// What started it.
    pub trigger: pb::WorkflowRunTrigger,
    /// The run's name; a new random one when `None`. A run of that name that exists already
    /// is returned as it is (a webhook delivered twice starts one run).
    pub name: Option<String>,
}

impl Builds {
    /// Creates the run `request` asks for, as `origin`; returns it, and whether it is new.
    pub async fn start_build(
        &self,
        request: BuildRequest,
        origin: Origin,
    ) -> Result<(pb::WorkflowRun, bool), Error> {
        let key = ObjectKey::new(Kind::Component, &request.namespace, &request.component);
        let component: pb::Component = self.resources.get_as(&key)?;
        let spec = component.spec.clone().unwrap_or_default();
        let Some(workflow) = spec.workflow.clone() else {
            return Err(Error::Refused {
                object: key,
                message: "spec.workflow is not set: name the Workflow that builds the component"
                    .into(),
            });
        };
        // The type may have stopped allowing the workflow since the component was written.
        self.resources
            .check_references(&Object::Component(component.clone()))?;
        let parameters = inputs::start_parameters(&self.resources, &key, &workflow, &request.set)?;
        let name = request
            .name
            .clone()
            .unwrap_or_else(|| run_name(&request.component, &random_suffix()));
        let run_key = ObjectKey::new(Kind::WorkflowRun, &request.namespace, &name);
        if request.name.is_some()
            && let Ok(existing) = self.resources.get_as::<pb::WorkflowRun>(&run_key)
        {
            let spec = existing.spec.clone().unwrap_or_default();
            let same = spec.commit == request.commit
                && spec
                    .owner
                    .is_some_and(|o| o.component_name == request.component);
            if !same {
                return Err(Error::Refused {
                    object: run_key,
                    message: format!(
                        "a run of that name exists for another component or commit; this build of {} at {:?} is not started",
                        request.component, request.commit
                    ),
                });
            }
            return Ok((existing, false));
        }
        let project = spec.owner.map(|o| o.project_name).unwrap_or_default();
        let workflow_repository = workflow.repository.clone();
        let run = pb::WorkflowRun {
            metadata: Some(pb::ObjectMeta {
                name,
                namespace: request.namespace.clone(),
                labels: [
                    ("troupe.dev/project".to_string(), project.clone()),
                    (
                        "troupe.dev/component".to_string(),
                        request.component.clone(),
                    ),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
            spec: Some(pb::WorkflowRunSpec {
                owner: Some(pb::ComponentOwner {
                    project_name: project,
                    component_name: request.component.clone(),
                }),
                workflow: Some(pb::WorkflowRunWorkflow {
                    kind: workflow.kind,
                    name: workflow.name,
                    parameters: Some(parameters),
                }),
                commit: request.commit,
                trigger: Some(request.trigger),
                source: Some(pb::WorkflowRunSource {
                    repository: if request.repository.is_empty() {
                        workflow_repository
                    } else {
                        request.repository
                    },
                    r#ref: request.r#ref,
                }),
            }),
            ..Default::default()
        };
        let (stored, outcome) = self
            .resources
            .apply(Object::WorkflowRun(run), origin, false)
            .await?;
        self.wake();
        let Object::WorkflowRun(run) = stored else {
            unreachable!("a WorkflowRun was applied")
        };
        Ok((run, outcome == Outcome::Created))
    }
}

/// A run name for `component`: the component's name, cut to fit, a dash and `suffix`.
pub fn run_name(component: &str, suffix: &str) -> String {
    let stem: String = component.chars().take(62 - suffix.len()).collect();
    format!("{}-{suffix}", stem.trim_end_matches('-'))
}

fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

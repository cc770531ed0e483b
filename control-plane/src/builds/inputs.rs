//! A run's inputs from the store: the workflow it names, the parameters a new build starts
//! with (the component's, `--set` over them, the schema's defaults, checked), and the plan of
//! its first attempt.

use std::collections::BTreeMap;

use troupe_common::kind::scoped_kind;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::plan::{self, Plan, PlanError};
use crate::resources::{Error, Resources};

/// The spec of workflow `kind`/`name` as seen from `namespace`.
pub(super) fn workflow(
    resources: &Resources,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<pb::WorkflowSpec, String> {
    let kind = scoped_kind(kind, Kind::Workflow, Kind::ClusterWorkflow)
        .ok_or_else(|| format!("{kind:?} is not a workflow kind"))?;
    let key = ObjectKey::scoped(kind, namespace, name);
    match resources.get(&key) {
        Ok(Object::Workflow(w)) => Ok(w.spec.unwrap_or_default()),
        Ok(Object::ClusterWorkflow(w)) => Ok(w.spec.unwrap_or_default()),
        _ => Err(format!("{} {name} does not exist", kind.name())),
    }
}

/// The parameters a new build of `component` (at `key`) starts with, as stored on its run.
pub(super) fn start_parameters(
    resources: &Resources,
    key: &ObjectKey,
    workflow: &pb::ComponentWorkflow,
    set: &BTreeMap<String, String>,
) -> Result<pbjson_types::Struct, Error> {
    let spec = self::workflow(resources, &key.namespace, &workflow.kind, &workflow.name).map_err(
        |message| Error::Refused {
            object: key.clone(),
            message: format!("spec.workflow: {message}"),
        },
    )?;
    if spec.steps.is_empty() {
        return Err(Error::Refused {
            object: key.clone(),
            message: format!(
                "spec.workflow: Workflow {} has no steps for a build agent to run",
                workflow.name
            ),
        });
    }
    let value = plan::parameters(
        resources.schemas(),
        &spec,
        workflow.parameters.as_ref(),
        set,
    )
    .map_err(|e| invalid(key, e))?;
    serde_json::from_value(value)
        .map_err(|e| Error::invalid(key, "spec.workflow.parameters", e.to_string()))
}

/// Whether the type of the component `run` builds allows the run's workflow, as it would
/// on the component itself: a run written by hand is held to what `troupe build` is.
pub(super) fn check_allowed(resources: &Resources, run: &pb::WorkflowRun) -> Result<(), String> {
    let Some(spec) = run.spec.as_ref() else {
        return Ok(());
    };
    let Some(owner) = spec.owner.as_ref().filter(|o| !o.component_name.is_empty()) else {
        return Ok(());
    };
    let namespace = run
        .metadata
        .as_ref()
        .map(|m| m.namespace.as_str())
        .unwrap_or_default();
    let key = ObjectKey::new(Kind::Component, namespace, &owner.component_name);
    let mut component: pb::Component = resources.get_as(&key).map_err(|e| e.to_string())?;
    let workflow = spec.workflow.clone().unwrap_or_default();
    let component_spec = component.spec.get_or_insert_default();
    let mut chosen = component_spec.workflow.clone().unwrap_or_default();
    chosen.kind = workflow.kind;
    chosen.name = workflow.name;
    component_spec.workflow = Some(chosen);
    resources
        .check_references(&Object::Component(component))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The plan of `run`'s first attempt: its parameters checked again (the workflow may have
/// changed since the run was created), then its steps resolved.
pub(super) fn first_plan(
    resources: &Resources,
    workflow: &pb::WorkflowSpec,
    run: &pb::WorkflowRun,
) -> Result<Plan, PlanError> {
    let given = run
        .spec
        .as_ref()
        .and_then(|s| s.workflow.as_ref())
        .and_then(|w| w.parameters.as_ref());
    let parameters = plan::parameters(resources.schemas(), workflow, given, &BTreeMap::new())?;
    plan::resolve(resources.engine(), workflow, run, &parameters)
}

fn invalid(key: &ObjectKey, error: PlanError) -> Error {
    match error {
        PlanError::Parameters(fields) if !fields.is_empty() => {
            let field = fields[0].field.clone();
            let message = fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ");
            Error::invalid(key, field, message)
        }
        other => Error::Refused {
            object: key.clone(),
            message: other.to_string(),
        },
    }
}

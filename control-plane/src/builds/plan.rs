//! TEMPORARY stand-in until the plan module lands.
use troupe_common::pb::v1alpha1 as pb;

pub struct Plan {
    pub steps: Vec<pb::BuildStep>,
    pub timeout_seconds: i64,
    pub outputs: Vec<String>,
}

pub fn for_run(
    _resources: &crate::resources::Resources,
    spec: &pb::WorkflowSpec,
    run: &pb::WorkflowRun,
) -> Result<Plan, String> {
    let steps = spec
        .steps
        .iter()
        .map(|s| pb::BuildStep {
            name: s.name.clone(),
            command: if s.script.is_empty() {
                s.command.iter().chain(&s.args).cloned().collect()
            } else {
                vec![
                    "/bin/sh".into(),
                    "-eu".into(),
                    "-c".into(),
                    s.script.clone(),
                ]
            },
            env: s.env.clone(),
            ..Default::default()
        })
        .collect();
    Ok(Plan {
        steps,
        timeout_seconds: 3600,
        outputs: outputs(spec, run),
    })
}

pub fn outputs(spec: &pb::WorkflowSpec, run: &pb::WorkflowRun) -> Vec<String> {
    let mut outputs = spec.outputs.clone();
    if run.spec.as_ref().and_then(|s| s.owner.as_ref()).is_some()
        && !outputs.iter().any(|o| o == "image")
    {
        outputs.push("image".into());
    }
    outputs
}

pub fn parameters(
    _resources: &crate::resources::Resources,
    _namespace: &str,
    workflow: &pb::ComponentWorkflow,
    _set: &std::collections::BTreeMap<String, String>,
) -> Result<pbjson_types::Struct, crate::resources::Error> {
    Ok(workflow.parameters.clone().unwrap_or_default())
}

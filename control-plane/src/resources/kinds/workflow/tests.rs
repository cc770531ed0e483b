//! Workflow steps as a platform engineer writes them: what is refused at write, with the
//! field named, and what stays valid.

use serde_json::{Value, json};
use troupe_common::document::from_json_document;

use crate::render::template::{Engine, Limits};
use crate::resources::validate::check;

/// A Workflow `ci/build` whose spec is `spec`, checked; the error as the API prints it.
fn mk_check(kind: &str, spec: Value) -> Result<(), String> {
    let namespace = if kind == "Workflow" { "ci" } else { "" };
    let doc = json!({
        "apiVersion": "troupe.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "build", "namespace": namespace},
        "spec": spec,
    });
    let object = from_json_document(doc, 0).map_err(|e| e.to_string())?;
    check(&object, &Engine::new(Limits::default())).map_err(|e| e.to_string())
}

/// A valid spec with one script step and one command step.
fn mk_spec() -> Value {
    json!({
        "parameters": {"type": "object", "properties": {"version": {"type": "string", "default": "1"}}},
        "timeout": "30m",
        "retries": 2,
        "outputs": ["image", "digest"],
        "buildPlaneSelector": {"troupe.dev/arch": "amd64", "pool": ""},
        "ttlAfterCompletion": "7d",
        "steps": [
            {
                "name": "build",
                "script": "echo \"image=registry.local/app:$COMMIT\" >> \"$TROUPE_OUTPUTS\"",
                "env": {"COMMIT": "${{ source.commit }}", "PLAIN": "x"},
                "timeout": "5m",
            },
            {
                "name": "push",
                "command": ["crane", "push", "--tag=${{ parameters.version }}"],
                "args": ["${{ component.name }}"],
                "workingDir": "out/${{ run.name }}",
            },
        ],
    })
}

/// `mk_spec()` with `edit` applied to it.
fn mk_edited(edit: impl FnOnce(&mut Value)) -> Value {
    let mut spec = mk_spec();
    edit(&mut spec);
    spec
}

/// The error of a Workflow with `edit` applied; panics when it is accepted.
fn refused(edit: impl FnOnce(&mut Value)) -> String {
    match mk_check("Workflow", mk_edited(edit)) {
        Ok(()) => panic!("the edited workflow was accepted"),
        Err(e) => e,
    }
}

#[test]
fn a_workflow_with_steps_is_valid_as_written_and_old_workflows_stay_valid() {
    mk_check("Workflow", mk_spec()).unwrap();
    mk_check("ClusterWorkflow", mk_spec()).unwrap();
    // What workflows looked like before steps: a schema, resources and a TTL.
    let old = json!({
        "parameters": {"type": "object"},
        "ttlAfterCompletion": "1d12h30m",
    });
    mk_check("Workflow", old).unwrap();
    mk_check("Workflow", json!({})).unwrap();
}

#[test]
fn step_names_are_dns_labels_used_once() {
    let err = refused(|s| s["steps"][1]["name"] = json!("build"));
    assert!(
        err.contains("spec.steps[1].name: \"build\" is the name of an earlier step"),
        "{err}"
    );
    let err = refused(|s| s["steps"][0]["name"] = json!("Build_It"));
    assert!(err.contains("spec.steps[0].name"), "{err}");
    let err = refused(|s| s["steps"][0]["name"] = json!(""));
    assert!(err.contains("spec.steps[0].name: required"), "{err}");
}

#[test]
fn a_step_has_a_command_or_a_script_but_not_both() {
    let err = refused(|s| s["steps"][1]["script"] = json!("make"));
    assert!(
        err.contains("spec.steps[1]: set command or script, not both"),
        "{err}"
    );
    let err = refused(|s| {
        s["steps"][0]["script"] = json!("");
    });
    assert!(err.contains("spec.steps[0].command: required"), "{err}");
    let err = refused(|s| s["steps"][1]["command"] = json!(["", "x"]));
    assert!(err.contains("spec.steps[1].command[0]"), "{err}");
}

#[test]
fn a_script_takes_no_expressions_and_no_args() {
    let err =
        refused(|s| s["steps"][0]["script"] = json!("make VERSION=${{ parameters.version }}"));
    assert!(err.contains("spec.steps[0].script"), "{err}");
    assert!(
        err.contains("a script reads parameters from its environment; put ${{ }} in env"),
        "{err}"
    );
    let err = refused(|s| s["steps"][0]["args"] = json!(["x"]));
    assert!(
        err.contains("spec.steps[0].args: args go with command"),
        "{err}"
    );
}

#[test]
fn every_expression_of_a_step_must_compile_and_names_its_field() {
    let err = refused(|s| s["steps"][1]["args"][0] = json!("${{ component.name ) }}"));
    assert!(
        err.contains("spec.steps[1].args[0]: `component.name )`"),
        "{err}"
    );
    let err = refused(|s| s["steps"][1]["command"][2] = json!("--tag=${{ }}"));
    assert!(err.contains("spec.steps[1].command[2]"), "{err}");
    let err = refused(|s| s["steps"][0]["env"]["COMMIT"] = json!("${{ source.commit | }}"));
    assert!(err.contains("spec.steps[0].env.COMMIT"), "{err}");
    let err = refused(|s| s["steps"][1]["workingDir"] = json!("${{ run.name ( }}"));
    assert!(err.contains("spec.steps[1].workingDir"), "{err}");
    // `$${{` is the literal text, not an expression.
    mk_check(
        "Workflow",
        mk_edited(|s| s["steps"][1]["args"][0] = json!("$${{ not an expression")),
    )
    .unwrap();
}

#[test]
fn env_names_are_identifiers_outside_troupes_own() {
    let err = refused(|s| s["steps"][0]["env"]["TROUPE_OUTPUTS"] = json!("/tmp/x"));
    assert!(err.contains("spec.steps[0].env.TROUPE_OUTPUTS"), "{err}");
    assert!(err.contains("reserved"), "{err}");
    let err = refused(|s| s["steps"][0]["env"]["MY-VAR"] = json!("x"));
    assert!(
        err.contains("spec.steps[0].env.MY-VAR: \"MY-VAR\" is not an environment variable name"),
        "{err}"
    );
    let err = refused(|s| s["steps"][0]["env"]["9LIVES"] = json!("x"));
    assert!(err.contains("spec.steps[0].env.9LIVES"), "{err}");
}

#[test]
fn the_working_directory_stays_in_the_work_directory() {
    let err = refused(|s| s["steps"][1]["workingDir"] = json!("/etc"));
    assert!(
        err.contains("spec.steps[1].workingDir: \"/etc\" is an absolute path"),
        "{err}"
    );
    let err = refused(|s| s["steps"][1]["workingDir"] = json!("src/../../x"));
    assert!(err.contains("spec.steps[1].workingDir"), "{err}");
    assert!(err.contains("`..`"), "{err}");
}

#[test]
fn timeouts_are_positive_durations() {
    let err = refused(|s| s["timeout"] = json!("30"));
    assert!(
        err.contains("spec.timeout: \"30\" is not a duration"),
        "{err}"
    );
    let err = refused(|s| s["timeout"] = json!("0s"));
    assert!(
        err.contains("spec.timeout: \"0s\" must be longer than zero"),
        "{err}"
    );
    let err = refused(|s| s["steps"][0]["timeout"] = json!("5 minutes"));
    assert!(err.contains("spec.steps[0].timeout"), "{err}");
    let err = refused(|s| s["ttlAfterCompletion"] = json!("1w"));
    assert!(
        err.contains("spec.ttlAfterCompletion: \"1w\" is not a duration"),
        "{err}"
    );
}

#[test]
fn retries_outputs_and_the_selector_are_bounded_and_well_formed() {
    let err = refused(|s| s["retries"] = json!(11));
    assert!(
        err.contains("spec.retries: must be between 0 and 10, not 11"),
        "{err}"
    );
    let err = refused(|s| s["retries"] = json!(-1));
    assert!(err.contains("spec.retries"), "{err}");
    let err = refused(|s| s["outputs"] = json!(["image", "image"]));
    assert!(
        err.contains("spec.outputs[1]: \"image\" is listed twice"),
        "{err}"
    );
    let err = refused(|s| s["outputs"] = json!(["image-ref"]));
    assert!(
        err.contains("spec.outputs[0]: \"image-ref\" is not an output name"),
        "{err}"
    );
    let err = refused(|s| s["buildPlaneSelector"] = json!({"bad key!": "x"}));
    assert!(
        err.contains("spec.buildPlaneSelector[\"bad key!\"]: the key"),
        "{err}"
    );
    let err = refused(|s| s["buildPlaneSelector"] = json!({"pool": "not valid"}));
    assert!(
        err.contains("spec.buildPlaneSelector[\"pool\"]: the value \"not valid\""),
        "{err}"
    );
}

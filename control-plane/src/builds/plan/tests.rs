//! Plans as an agent receives them: what each step runs, with which arguments and environment,
//! and the errors a platform engineer sees when a run cannot be planned.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use troupe_common::pb::v1alpha1 as pb;

use super::*;
use crate::render::schema::SchemaCache;
use crate::render::template::{Engine, Limits};

/// The value a hostile user puts in a parameter: command substitution, a second command,
/// both kinds of quote, a literal backslash-n and a real newline.
const HOSTILE: &str = "$(touch /tmp/x); rm -rf / ; \"quoted\" 'q' \\n\nnext line";

fn mk_workflow(spec: Value) -> pb::WorkflowSpec {
    serde_json::from_value(spec).unwrap()
}

/// Run `ci/api-build-1` of component `shop/api` at commit `abc123`.
fn mk_run() -> pb::WorkflowRun {
    serde_json::from_value(json!({
        "metadata": {"name": "api-build-1", "namespace": "ci"},
        "spec": {
            "owner": {"projectName": "shop", "componentName": "api"},
            "workflow": {"kind": "Workflow", "name": "build"},
            "commit": "abc123",
            "source": {"repository": "https://git.example/shop/api", "ref": "refs/heads/main"},
        },
    }))
    .unwrap()
}

fn mk_resolve(spec: Value, parameters: Value) -> Result<Plan, PlanError> {
    let engine = Engine::new(Limits::default());
    resolve(&engine, &mk_workflow(spec), &mk_run(), &parameters)
}

fn mk_step(plan: &Plan, i: usize) -> &pb::BuildStep {
    &plan.steps[i]
}

#[test]
fn steps_expand_over_parameters_component_source_and_run() {
    let plan = mk_resolve(
        json!({
            "timeout": "1h30m",
            "outputs": ["digest"],
            "steps": [{
                "name": "push",
                "image": "gcr.io/go-containerregistry/crane",
                "command": ["crane", "push", "--tag=${{ source.commit }}"],
                "args": ["${{ component.project }}/${{ component.name }}", "${{ run.name }}"],
                "env": {"REPO": "${{ source.repository }}", "REF": "${{ source.ref }}", "NS": "${{ component.namespace }}-${{ run.namespace }}", "V": "${{ parameters.version }}"},
                "workingDir": "src/${{ component.name }}",
                "timeout": "5m",
            }],
        }),
        json!({"version": "1.2"}),
    )
    .unwrap();
    let step = mk_step(&plan, 0);
    assert_eq!(step.name, "push");
    assert_eq!(step.image, "gcr.io/go-containerregistry/crane");
    assert_eq!(
        step.command,
        ["crane", "push", "--tag=abc123", "shop/api", "api-build-1"]
    );
    assert_eq!(step.env["REPO"], "https://git.example/shop/api");
    assert_eq!(step.env["REF"], "refs/heads/main");
    assert_eq!(step.env["NS"], "ci-ci");
    assert_eq!(step.env["V"], "1.2");
    assert_eq!(step.working_dir, "src/api");
    assert_eq!(step.timeout_seconds, 300);
    assert_eq!(plan.timeout_seconds, 5_400);
    assert_eq!(
        plan.outputs,
        ["digest", "image"],
        "a component's build must report its image"
    );
}

#[test]
fn a_script_runs_in_sh_unexpanded_and_defaults_apply() {
    let script = "echo \"image=registry.local/app:$COMMIT\" >> \"$TROUPE_OUTPUTS\"";
    let plan = mk_resolve(
        json!({
            "outputs": ["image"],
            "steps": [{"name": "build", "script": script, "env": {"COMMIT": "${{ source.commit }}"}}],
        }),
        json!({}),
    )
    .unwrap();
    let step = mk_step(&plan, 0);
    assert_eq!(step.command, ["/bin/sh", "-eu", "-c", script]);
    assert_eq!(step.env["COMMIT"], "abc123");
    assert_eq!(
        step.timeout_seconds, 0,
        "no step timeout: the attempt's bounds it"
    );
    assert_eq!(plan.timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
    assert_eq!(plan.outputs, ["image"], "image is not listed twice");
}

#[test]
fn a_typed_result_is_one_argument_of_compact_json_never_split() {
    let plan = mk_resolve(
        json!({"steps": [{
            "name": "s",
            "command": ["tool", "${{ parameters.count }}", "${{ parameters.tags }}", "${{ parameters.limits }}", "${{ parameters.none }}", "--flag=${{ parameters.tags }}", "$${{ literal }}"],
            "env": {"TAGS": "${{ parameters.tags }}", "ON": "${{ parameters.on }}"},
        }]}),
        json!({"count": 3, "tags": ["a b", "c"], "limits": {"cpu": "1", "mem": 2}, "none": null, "on": true}),
    )
    .unwrap();
    let step = mk_step(&plan, 0);
    assert_eq!(
        step.command,
        [
            "tool",
            "3",
            r#"["a b","c"]"#,
            r#"{"cpu":"1","mem":2}"#,
            "",
            r#"--flag=["a b","c"]"#,
            "${{ literal }}",
        ]
    );
    assert_eq!(step.env["TAGS"], r#"["a b","c"]"#);
    assert_eq!(step.env["ON"], "true");
}

#[test]
fn a_hostile_parameter_is_one_literal_argument_and_one_literal_env_value() {
    let plan = mk_resolve(
        json!({"steps": [{
            "name": "s",
            "command": ["echo", "${{ parameters.msg }}", "--message=${{ parameters.msg }}"],
            "env": {"MSG": "${{ parameters.msg }}"},
        }]}),
        json!({"msg": HOSTILE}),
    )
    .unwrap();
    let step = mk_step(&plan, 0);
    assert_eq!(step.command.len(), 3, "{:?}", step.command);
    assert_eq!(step.command[1], HOSTILE);
    assert_eq!(step.command[2], format!("--message={HOSTILE}"));
    assert_eq!(step.env["MSG"], HOSTILE);
    assert_eq!(step.env.len(), 1);
}

/// The plan's steps run as real processes (argv as given, no shell but the script's own):
/// the hostile value comes out byte for byte and none of its commands ran.
#[test]
fn a_hostile_parameter_runs_nothing_when_the_steps_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let keep = dir.path().join("keep");
    std::fs::write(&keep, "still here").unwrap();
    let hostile = format!(
        "$(touch {m}); touch {m} ; rm -f {k}; `touch {m}` \"quoted\" 'q' \\n\nnext line",
        m = marker.display(),
        k = keep.display()
    );
    let plan = mk_resolve(
        json!({"steps": [
            {"name": "argv", "command": ["printf", "%s", "${{ parameters.msg }}"]},
            {"name": "env", "script": "printf '%s' \"$MSG\"", "env": {"MSG": "${{ parameters.msg }}"}},
        ]}),
        json!({"msg": hostile}),
    )
    .unwrap();
    for step in &plan.steps {
        let output = std::process::Command::new(&step.command[0])
            .args(&step.command[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&step.env)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}: {output:?}", step.name);
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            hostile,
            "step {}",
            step.name
        );
    }
    assert!(!marker.exists(), "a command inside the parameter ran");
    assert!(keep.exists(), "a command inside the parameter ran");
}

#[test]
fn errors_name_the_step_and_the_field() {
    let spec = |args: Value| {
        json!({"steps": [
            {"name": "build", "script": "make"},
            {"name": "push", "command": ["crane"], "args": args},
        ]})
    };
    let err = mk_resolve(
        spec(json!(["ok", "${{ parameters.nope.deeper }}"])),
        json!({}),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("step \"push\": spec.steps[1].args[1]: `parameters.nope.deeper`"),
        "{err}"
    );
    assert!(err.contains("undefined"), "{err}");
    let err = mk_resolve(spec(json!(["${{ omit() }}"])), json!({}))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("step \"push\": spec.steps[1].args[0]"),
        "{err}"
    );
    assert!(err.contains("omit()"), "{err}");
    let err = mk_resolve(
        json!({"steps": [{"name": "b", "command": ["x"], "env": {"V": "${{ fromjson('{') }}"}}]}),
        json!({}),
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("step \"b\": spec.steps[0].env.V"), "{err}");
}

#[test]
fn a_working_directory_that_expands_outside_the_work_directory_is_refused() {
    let spec = json!({"steps": [{"name": "b", "command": ["make"], "workingDir": "${{ parameters.dir }}"}]});
    for dir in ["../../etc", "/etc", "a/../.."] {
        let err = mk_resolve(spec.clone(), json!({ "dir": dir }))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "step \"b\": spec.steps[0].workingDir: {dir:?} (as expanded)"
            )),
            "{err}"
        );
    }
    let plan = mk_resolve(spec, json!({"dir": "sub/dir"})).unwrap();
    assert_eq!(plan.steps[0].working_dir, "sub/dir");
}

#[test]
fn a_workflow_without_steps_or_with_a_bad_timeout_cannot_be_planned() {
    let err = mk_resolve(json!({}), json!({})).unwrap_err().to_string();
    assert!(
        err.starts_with("spec.steps: the workflow has no steps"),
        "{err}"
    );
    let steps = json!([{"name": "b", "command": ["make"]}]);
    let err = mk_resolve(json!({"steps": steps, "timeout": "0s"}), json!({}))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("spec.timeout: \"0s\" must be longer"),
        "{err}"
    );
    let err = mk_resolve(
        json!({"steps": [{"name": "b", "command": ["make"], "script": "make"}]}),
        json!({}),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "step \"b\": spec.steps[0]: set command or script, not both"
    );
}

#[test]
fn a_standalone_run_has_no_component_and_no_image_output() {
    let mut run = mk_run();
    run.spec.as_mut().unwrap().owner = None;
    let engine = Engine::new(Limits::default());
    let spec =
        mk_workflow(json!({"steps": [{"name": "b", "command": ["echo", "${{ run.name }}"]}]}));
    let plan = resolve(&engine, &spec, &run, &json!({})).unwrap();
    assert_eq!(plan.steps[0].command, ["echo", "api-build-1"]);
    assert!(plan.outputs.is_empty(), "{:?}", plan.outputs);
    let spec = mk_workflow(
        json!({"steps": [{"name": "b", "command": ["echo", "${{ component.name }}"]}]}),
    );
    let err = resolve(&engine, &spec, &run, &json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`component.name`"), "{err}");
}

fn mk_schema_workflow() -> pb::WorkflowSpec {
    mk_workflow(json!({
        "parameters": {
            "type": "object",
            "properties": {
                "version": {"type": "string"},
                "replicas": {"type": "integer", "default": 1},
                "resources": {
                    "type": "object",
                    "default": {},
                    "properties": {"cpu": {"type": "string", "default": "100m"}, "memory": {"type": "string"}},
                },
                "flags": {"type": "array", "items": {"type": "string"}},
                "debug": {"type": "boolean", "default": false},
            },
        },
        "steps": [{"name": "b", "command": ["make"]}],
    }))
}

fn mk_struct(value: Value) -> pbjson_types::Struct {
    serde_json::from_value(value).unwrap()
}

fn mk_set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parameters_merge_the_component_then_set_then_defaults() {
    let schemas = SchemaCache::default();
    let component = mk_struct(json!({"version": "1.0", "resources": {"memory": "1Gi"}}));
    let set = mk_set(&[
        ("version", "1.10"),
        ("resources.cpu", "500m"),
        ("flags", r#"["-v", "x"]"#),
        ("debug", "true"),
    ]);
    let value = parameters(&schemas, &mk_schema_workflow(), Some(&component), &set).unwrap();
    assert_eq!(
        value,
        json!({
            "version": "1.10",
            "replicas": 1,
            "resources": {"cpu": "500m", "memory": "1Gi"},
            "flags": ["-v", "x"],
            "debug": true,
        }),
        "a string field keeps the text given; JSON elsewhere"
    );
    let value = parameters(&schemas, &mk_schema_workflow(), None, &BTreeMap::new()).unwrap();
    assert_eq!(
        value,
        json!({"replicas": 1, "resources": {"cpu": "100m"}, "debug": false})
    );
}

#[test]
fn parameter_errors_name_the_field_under_spec_workflow_parameters() {
    let schemas = SchemaCache::default();
    let wf = mk_schema_workflow();
    let err = parameters(&schemas, &wf, None, &mk_set(&[("replicas", "many")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("spec.workflow.parameters.replicas: \"many\" is not of type \"integer\""),
        "{err}"
    );
    let err = parameters(&schemas, &wf, None, &mk_set(&[("colour", "red")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("spec.workflow.parameters.colour: unknown field"),
        "{err}"
    );
    let err = parameters(&schemas, &wf, None, &mk_set(&[("version.major", "1")]));
    let err = err.unwrap_err().to_string();
    assert!(
        err.starts_with(
            "spec.workflow.parameters.version: {\"major\":1} is not of type \"string\""
        ),
        "{err}"
    );
    let component = mk_struct(json!({"version": "1.0"}));
    let err = parameters(
        &schemas,
        &wf,
        Some(&component),
        &mk_set(&[("version.major", "1")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot set a field inside \"version\", which is a string"),
        "{err}"
    );
    let err = parameters(&schemas, &wf, None, &mk_set(&[("resources..cpu", "1")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a dotted path"), "{err}");
}

#[test]
fn without_a_schema_parameters_are_taken_as_given() {
    let schemas = SchemaCache::default();
    let wf = mk_workflow(json!({"steps": [{"name": "b", "command": ["make"]}]}));
    let value = parameters(
        &schemas,
        &wf,
        Some(&mk_struct(json!({"a": 1}))),
        &mk_set(&[("b.c", "x y"), ("n", "2")]),
    )
    .unwrap();
    assert_eq!(value, json!({"a": 1, "b": {"c": "x y"}, "n": 2}));
}

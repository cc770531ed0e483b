//! A run's plan: its workflow's steps resolved once, when the run starts, into the
//! [`pb::BuildStep`]s an agent runs (stored in `status.plan`, so every attempt and every retry
//! runs the same thing).
//!
//! Two steps, both pure:
//!
//! 1. [`parameters`] works out the run's parameters: the component's
//!    `spec.workflow.parameters`, then `--set` values by dotted path, then the workflow's schema
//!    defaults, then validation against that schema.
//! 2. [`resolve`] expands the `${{ }}` expressions of every step over [`context`]
//!    (`parameters`, `component`, `source`, `run`). Each `command`/`args` item expands to
//!    exactly one argv string and each env value to one value: a typed result (number, list,
//!    map) becomes its compact JSON text and is never split, so a parameter can never become
//!    two arguments or reach a shell as code. A `script` is not expanded: it becomes
//!    `["/bin/sh", "-eu", "-c", SCRIPT]` and reads its inputs from its environment.
//!
//! Every error names the field (`spec.steps[1].args[0]`, `spec.workflow.parameters.cpu`) and,
//! for a step, the step.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use troupe_common::build_step::{check_env_name, check_working_dir};
use troupe_common::duration;
use troupe_common::pb::v1alpha1 as pb;

use crate::render::schema::SchemaCache;
use crate::render::template::{Context, Engine, TemplateError};

/// What opens a `${{ }}` expression.
const OPEN: &str = "${{";

/// How long an attempt may take when the workflow sets no `timeout` (one hour).
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 3_600;

/// The output every run that builds a component must report.
pub const IMAGE_OUTPUT: &str = "image";

/// The program a `script` step runs, before the script itself: `-e` stops at the first
/// failing command, `-u` at the first unset variable (a misspelt parameter name fails the
/// step rather than building with an empty value).
pub const SCRIPT_SHELL: [&str; 3] = ["/bin/sh", "-eu", "-c"];

/// What a run's agent is given: the resolved steps, the attempt's timeout and the outputs it
/// must report.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The steps in order, expressions expanded, scripts turned into their shell command.
    pub steps: Vec<pb::BuildStep>,
    /// The longest one attempt may take, in seconds.
    pub timeout_seconds: i64,
    /// Outputs the run must report: the workflow's, plus `image` for a component's build.
    pub outputs: Vec<String>,
}

/// One field that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, e.g. `spec.workflow.parameters.resources.cpu`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Why a run cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The run's parameters break the workflow's schema, or a `--set` cannot be applied.
    #[error("{}", describe(.0))]
    Parameters(Vec<FieldError>),
    /// A step cannot be resolved: an expression failed, or what it expanded to is not allowed.
    #[error("step {step:?}: {field}: {message}")]
    Step {
        /// The step's name.
        step: String,
        /// The field, e.g. `spec.steps[1].env.VERSION`.
        field: String,
        /// What went wrong.
        message: String,
    },
    /// The workflow itself cannot be run (no steps, a timeout that does not parse, a schema
    /// that does not compile).
    #[error("{field}: {message}")]
    Workflow {
        /// The workflow's field, e.g. `spec.timeout`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The variables a run's expressions see: `parameters`; `component` (`name`, `project`,
/// `namespace`) for a run that builds a component (absent otherwise, so a workflow that needs
/// it fails with `component` undefined); `source` (`repository`, `ref`, `commit`); `run`
/// (`name`, `namespace`).
pub fn context(run: &pb::WorkflowRun, parameters: &Value) -> Value {
    let meta = run.metadata.clone().unwrap_or_default();
    let spec = run.spec.clone().unwrap_or_default();
    let source = spec.source.unwrap_or_default();
    let mut context = json!({
        "parameters": parameters,
        "source": {"repository": source.repository, "ref": source.r#ref, "commit": spec.commit},
        "run": {"name": meta.name, "namespace": meta.namespace},
    });
    if let Some(owner) = component_owner(run) {
        context["component"] = json!({
            "name": owner.component_name,
            "project": owner.project_name,
            "namespace": meta.namespace,
        });
    }
    context
}

/// The run's owning component, when it builds one.
fn component_owner(run: &pb::WorkflowRun) -> Option<&pb::ComponentOwner> {
    run.spec
        .as_ref()
        .and_then(|s| s.owner.as_ref())
        .filter(|o| !o.component_name.is_empty())
}

/// Resolves `workflow`'s steps for `run`, whose parameters (already defaulted and validated
/// by [`parameters`]) are `parameters`.
pub fn resolve(
    engine: &Engine,
    workflow: &pb::WorkflowSpec,
    run: &pb::WorkflowRun,
    parameters: &Value,
) -> Result<Plan, PlanError> {
    if workflow.steps.is_empty() {
        return Err(PlanError::Workflow {
            field: "spec.steps".into(),
            message: "the workflow has no steps: there is nothing for a build agent to run".into(),
        });
    }
    let timeout_seconds = match workflow.timeout.as_str() {
        "" => DEFAULT_TIMEOUT_SECONDS,
        text => positive_seconds(text).map_err(|message| PlanError::Workflow {
            field: "spec.timeout".into(),
            message,
        })?,
    };
    // One context, converted once, so the whole plan shares one render budget.
    let context = engine
        .context(&context(run, parameters))
        .map_err(|e| PlanError::Workflow {
            field: "spec.steps".into(),
            message: e.message,
        })?;
    let steps = workflow
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            Resolver {
                engine,
                context: &context,
                step: &step.name,
                at: format!("spec.steps[{i}]"),
            }
            .step(step)
        })
        .collect::<Result<_, _>>()?;
    Ok(Plan {
        steps,
        timeout_seconds,
        outputs: outputs(workflow, run),
    })
}

/// The outputs a run of `workflow` must report: the workflow's, plus `image` when the run
/// builds a component.
pub fn outputs(workflow: &pb::WorkflowSpec, run: &pb::WorkflowRun) -> Vec<String> {
    let mut outputs = workflow.outputs.clone();
    if component_owner(run).is_some() && !outputs.iter().any(|o| o == IMAGE_OUTPUT) {
        outputs.push(IMAGE_OUTPUT.to_string());
    }
    outputs
}

/// `text` as a duration of at least one second, in seconds.
fn positive_seconds(text: &str) -> Result<i64, String> {
    let parsed = duration::parse(text).map_err(|e| e.to_string())?;
    let seconds = i64::try_from(parsed.as_secs()).map_err(|_| format!("{text:?} is too long"))?;
    if seconds == 0 {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(seconds)
}

/// Resolves one step.
struct Resolver<'a> {
    engine: &'a Engine,
    context: &'a Context,
    step: &'a str,
    /// `spec.steps[i]`.
    at: String,
}

impl Resolver<'_> {
    fn step(&self, step: &pb::WorkflowStep) -> Result<pb::BuildStep, PlanError> {
        let command = match (step.command.is_empty(), step.script.is_empty()) {
            (false, true) => step
                .command
                .iter()
                .chain(&step.args)
                .enumerate()
                .map(|(j, item)| self.expand(&self.argv_field(step, j), item))
                .collect::<Result<Vec<_>, _>>()?,
            (true, false) if step.args.is_empty() => SCRIPT_SHELL
                .iter()
                .map(|s| s.to_string())
                .chain([step.script.clone()])
                .collect(),
            (true, false) => return Err(self.fail("args", "args go with command, not script")),
            (false, false) => return Err(self.fail("", "set command or script, not both")),
            (true, true) => return Err(self.fail("command", "set command or script")),
        };
        let mut env = HashMap::with_capacity(step.env.len());
        for (name, value) in &step.env {
            let field = format!("env.{name}");
            check_env_name(name).map_err(|why| self.fail(&field, format!("{name:?} {why}")))?;
            env.insert(name.clone(), self.expand(&field, value)?);
        }
        let working_dir = self.expand("workingDir", &step.working_dir)?;
        check_working_dir(&working_dir).map_err(|why| {
            self.fail("workingDir", format!("{working_dir:?} (as expanded) {why}"))
        })?;
        let timeout_seconds = match step.timeout.as_str() {
            "" => 0,
            text => positive_seconds(text).map_err(|why| self.fail("timeout", why))?,
        };
        Ok(pb::BuildStep {
            name: step.name.clone(),
            image: step.image.clone(),
            command,
            env,
            working_dir,
            timeout_seconds,
        })
    }

    /// The field of item `j` of `command` followed by `args`.
    fn argv_field(&self, step: &pb::WorkflowStep, j: usize) -> String {
        match j.checked_sub(step.command.len()) {
            None => format!("command[{j}]"),
            Some(k) => format!("args[{k}]"),
        }
    }

    /// `text` with its expressions expanded into exactly one string: a string result as is,
    /// `null` as nothing, any other value as its compact JSON.
    fn expand(&self, field: &str, text: &str) -> Result<String, PlanError> {
        // The escape `$` + OPEN contains OPEN too, so text without OPEN has nothing to
        // expand or unescape.
        if !text.contains(OPEN) {
            return Ok(text.to_string());
        }
        let rendered = self
            .engine
            .render("", &Value::String(text.to_string()), self.context)
            .map_err(|e| self.fail(field, expression_error(&e)))?;
        Ok(match rendered {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        })
    }

    fn fail(&self, field: &str, message: impl Into<String>) -> PlanError {
        let field = if field.is_empty() {
            self.at.clone()
        } else {
            format!("{}.{field}", self.at)
        };
        PlanError::Step {
            step: self.step.to_string(),
            field,
            message: message.into(),
        }
    }
}

fn expression_error(e: &TemplateError) -> String {
    if e.expression.is_empty() {
        e.message.clone()
    } else {
        format!("`{}`: {}", e.expression, e.message)
    }
}

/// Where parameter errors point: `spec.workflow.parameters.<field>`.
const PARAMETERS_FIELD: &str = "spec.workflow.parameters";

/// The parameters of a run of `workflow` for a component: the component's
/// `spec.workflow.parameters`, then each `set` value at its dotted path (`resources.cpu`), then
/// the schema's defaults; then the whole is validated against the schema.
///
/// A `set` value is read as JSON when it parses (`3`, `true`, `["a"]`, `"quoted"`), else as a
/// string, except where the schema says the field is a string: there it is always the text
/// given, so `--set version=1.10` stays `"1.10"`.
pub fn parameters(
    schemas: &SchemaCache,
    workflow: &pb::WorkflowSpec,
    component: Option<&pbjson_types::Struct>,
    set: &BTreeMap<String, String>,
) -> Result<Value, PlanError> {
    let schema = workflow.parameters.as_ref().map(to_json);
    let mut value = component
        .map(to_json)
        .unwrap_or_else(|| Value::Object(Map::new()));
    for (path, text) in set {
        set_path(&mut value, schema.as_ref(), path, text).map_err(|message| {
            PlanError::Parameters(vec![FieldError {
                field: format!("{PARAMETERS_FIELD}.{path}"),
                message,
            }])
        })?;
    }
    let Some(schema) = schema else {
        return Ok(value);
    };
    let compiled = schemas.get(&schema).map_err(|v| PlanError::Workflow {
        field: format!("spec.parameters{}", pointer_suffix(&v.pointer)),
        message: v.message,
    })?;
    compiled.apply(Some(&value)).map_err(|violations| {
        PlanError::Parameters(
            violations
                .into_iter()
                .map(|v| FieldError {
                    field: format!("{PARAMETERS_FIELD}{}", pointer_suffix(&v.pointer)),
                    message: v.message,
                })
                .collect(),
        )
    })
}

/// Sets `text` at the dotted `path` of `value`, making the objects on the way.
fn set_path(
    value: &mut Value,
    schema: Option<&Value>,
    path: &str,
    text: &str,
) -> Result<(), String> {
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "{path:?} is not a dotted path (write e.g. resources.cpu)"
        ));
    }
    let typed = if is_string_field(schema, &segments) {
        Value::String(text.to_string())
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
    };
    let (last, parents) = segments.split_last().expect("split yields a segment");
    let mut at = value;
    let mut walked = String::new();
    for segment in parents {
        let map = as_object(at, &walked)?;
        at = map
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        walked = if walked.is_empty() {
            segment.to_string()
        } else {
            format!("{walked}.{segment}")
        };
    }
    as_object(at, &walked)?.insert(last.to_string(), typed);
    Ok(())
}

/// `value` as an object, or why a path cannot go through it.
fn as_object<'v>(value: &'v mut Value, walked: &str) -> Result<&'v mut Map<String, Value>, String> {
    let kind = kind_of(value);
    value.as_object_mut().ok_or_else(|| {
        format!("cannot set a field inside {walked:?}, which is {kind}, not an object")
    })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// True when `schema` declares the field at `segments` (through `properties`) as a string.
fn is_string_field(schema: Option<&Value>, segments: &[&str]) -> bool {
    let mut at = schema;
    for segment in segments {
        at = at
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.get(*segment));
    }
    at.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("string")
}

/// A `google.protobuf.Struct` as JSON, with integral numbers as integers.
fn to_json(value: &pbjson_types::Struct) -> Value {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    troupe_common::document::integral_numbers(&mut v);
    v
}

/// `/resources/cpu` → `.resources.cpu`, for field paths in messages.
fn pointer_suffix(pointer: &str) -> String {
    pointer
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| format!(".{}", s.replace("~1", "/").replace("~0", "~")))
        .collect()
}

#[cfg(test)]
mod tests;

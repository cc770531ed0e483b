//! Workflow and ClusterWorkflow (build or automation templates: a parameter schema that must
//! compile, and the steps a build agent runs, checked here so a bad step is refused when it is
//! written rather than when a build starts) and WorkflowRun (one execution, fixed once
//! started).
//!
//! Steps never pass a parameter through a shell: `${{ }}` expressions may appear in `command`,
//! `args`, `env` values and `workingDir`, each expanding to exactly one argument or value; a
//! `script` takes none and reads what it needs from its environment.

use std::collections::BTreeSet;

use troupe_common::build_step::{check_env_name, check_output_name, check_working_dir};
use troupe_common::k8s_names::{check_label_value, check_qualified_name};
use troupe_common::kind::scoped_kind;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, ObjectKey, duration};

use super::{Ctx, Error, Reference, Rules, unchanged_fields};
use crate::resources::references::component_owner;

/// What opens a `${{ }}` expression.
const OPEN: &str = "${{";

/// Most further attempts a workflow may give a run whose attempt was lost.
pub const MAX_RETRIES: i32 = 10;

impl Rules for pb::Workflow {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        workflow(ctx, self.spec.as_ref())
    }
}

impl Rules for pb::ClusterWorkflow {
    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        workflow(ctx, self.spec.as_ref())
    }
}

/// What Workflow and ClusterWorkflow share: the parameter schema, the durations, the retry
/// budget, outputs, the build-plane selector and every step.
fn workflow(ctx: &Ctx<'_>, spec: Option<&pb::WorkflowSpec>) -> Result<(), Error> {
    let Some(spec) = spec else { return Ok(()) };
    ctx.schema("spec.parameters", spec.parameters.as_ref())?;
    positive_duration(ctx, "spec.timeout", &spec.timeout)?;
    positive_duration(ctx, "spec.ttlAfterCompletion", &spec.ttl_after_completion)?;
    if !(0..=MAX_RETRIES).contains(&spec.retries) {
        return Err(ctx.invalid(
            "spec.retries",
            format!("must be between 0 and {MAX_RETRIES}, not {}", spec.retries),
        ));
    }
    let mut outputs = BTreeSet::new();
    for (i, name) in spec.outputs.iter().enumerate() {
        let field = format!("spec.outputs[{i}]");
        check_output_name(name).map_err(|why| {
            ctx.invalid(&field, format!("{name:?} is not an output name: it {why}"))
        })?;
        if !outputs.insert(name.as_str()) {
            return Err(ctx.invalid(field, format!("{name:?} is listed twice")));
        }
    }
    let mut selector: Vec<_> = spec.build_plane_selector.iter().collect();
    selector.sort();
    for (key, value) in selector {
        let field = || format!("spec.buildPlaneSelector[{key:?}]");
        check_qualified_name(key).map_err(|why| ctx.invalid(field(), format!("the key {why}")))?;
        check_label_value(value)
            .map_err(|why| ctx.invalid(field(), format!("the value {value:?} {why}")))?;
    }
    let mut names = BTreeSet::new();
    for (i, s) in spec.steps.iter().enumerate() {
        let at = format!("spec.steps[{i}]");
        ctx.dns(&format!("{at}.name"), &s.name)?;
        if !names.insert(s.name.as_str()) {
            return Err(ctx.invalid(
                format!("{at}.name"),
                format!("{:?} is the name of an earlier step", s.name),
            ));
        }
        step(ctx, &at, s)?;
    }
    Ok(())
}

/// One step: a command or a script, expressions that compile where they may appear, env names
/// a shell can read and the agent does not own, a working directory inside the work directory,
/// a timeout.
fn step(ctx: &Ctx<'_>, at: &str, s: &pb::WorkflowStep) -> Result<(), Error> {
    let script = !s.script.is_empty();
    match (s.command.is_empty(), script) {
        (false, true) => {
            return Err(ctx.invalid(at, "set command or script, not both"));
        }
        (true, false) => {
            return Err(ctx.invalid(
                format!("{at}.command"),
                "required: set command (the program and its arguments) or script",
            ));
        }
        _ => {}
    }
    if script {
        if s.script.contains(OPEN) {
            return Err(ctx.invalid(
                format!("{at}.script"),
                "a script takes no ${{ }} expressions: a script reads parameters from its \
                 environment; put ${{ }} in env (e.g. VERSION: \"${{ parameters.version }}\") \
                 and use \"$VERSION\" in the script",
            ));
        }
        if !s.args.is_empty() {
            return Err(ctx.invalid(
                format!("{at}.args"),
                "args go with command; a script reads its inputs from its environment (put \
                 ${{ }} in env)",
            ));
        }
    } else if s.command[0].trim().is_empty() {
        return Err(ctx.invalid(format!("{at}.command[0]"), "the program must not be empty"));
    }
    for (j, arg) in s.command.iter().enumerate() {
        expressions(ctx, &format!("{at}.command[{j}]"), arg)?;
    }
    for (j, arg) in s.args.iter().enumerate() {
        expressions(ctx, &format!("{at}.args[{j}]"), arg)?;
    }
    let mut env: Vec<_> = s.env.iter().collect();
    env.sort();
    for (name, value) in env {
        let field = format!("{at}.env.{name}");
        check_env_name(name).map_err(|why| {
            ctx.invalid(
                &field,
                format!("{name:?} is not an environment variable name: it {why}"),
            )
        })?;
        expressions(ctx, &field, value)?;
    }
    let field = format!("{at}.workingDir");
    check_working_dir(&s.working_dir)
        .map_err(|why| ctx.invalid(&field, format!("{:?} {why}", s.working_dir)))?;
    expressions(ctx, &field, &s.working_dir)?;
    positive_duration(ctx, &format!("{at}.timeout"), &s.timeout)
}

/// Every `${{ }}` expression in the string `text` compiles.
fn expressions(ctx: &Ctx<'_>, field: &str, text: &str) -> Result<(), Error> {
    if !text.contains(OPEN) {
        return Ok(());
    }
    ctx.template(field, &serde_json::Value::String(text.to_string()))
}

/// `text`, when set, is a duration longer than zero.
fn positive_duration(ctx: &Ctx<'_>, field: &str, text: &str) -> Result<(), Error> {
    if text.is_empty() {
        return Ok(());
    }
    let parsed = duration::parse(text).map_err(|e| ctx.invalid(field, e.to_string()))?;
    if parsed.is_zero() {
        return Err(ctx.invalid(field, format!("{text:?} must be longer than zero")));
    }
    Ok(())
}

impl Rules for pb::WorkflowRun {
    const REFERS_TO: &'static [Kind] = &[Kind::Workflow, Kind::ClusterWorkflow, Kind::Component];

    fn validate(&self, ctx: &Ctx<'_>) -> Result<(), Error> {
        let spec = self.spec.clone().unwrap_or_default();
        let w = ctx.required("spec.workflow", spec.workflow.as_ref())?;
        ctx.ref_kind(
            "spec.workflow.kind",
            &w.kind,
            Kind::Workflow,
            Kind::ClusterWorkflow,
        )?;
        ctx.dns("spec.workflow.name", &w.name)?;
        if let Some(owner) = &spec.owner
            && (!owner.project_name.is_empty() || !owner.component_name.is_empty())
        {
            ctx.component_owner(Some(owner))?;
        }
        Ok(())
    }

    fn references(&self, namespace: &str, out: &mut Vec<Reference>) {
        let Some(spec) = &self.spec else { return };
        if let Some(owner) = &spec.owner
            && !owner.component_name.is_empty()
        {
            component_owner(namespace, owner, out);
        }
        if let Some(w) = &spec.workflow
            && let Some(kind) = scoped_kind(&w.kind, Kind::Workflow, Kind::ClusterWorkflow)
        {
            out.push(Reference::to(
                "spec.workflow.name",
                ObjectKey::scoped(kind, namespace, &w.name),
            ));
        }
    }

    fn immutable(&self, old: &Self, key: &ObjectKey) -> Result<(), Error> {
        unchanged_fields!(
            key, old, self,
            "spec.owner" => owner, "spec.workflow" => workflow, "spec.commit" => commit
        )
    }

    fn owner(&self) -> Option<&pb::ComponentOwner> {
        self.spec.as_ref().and_then(|s| s.owner.as_ref())
    }
}

#[cfg(test)]
mod tests;

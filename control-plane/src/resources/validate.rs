//! Checks that need nothing but the object (and, for updates, its stored version): names,
//! scope, required fields, allowed values, embedded JSON Schemas, immutable fields. Every error
//! names the object and the field path.

use serde::Serialize;
use troupe_common::names::check_dns_label;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::Error;
use super::references::scoped_kind;
use crate::render::patch::{Op, Path};
use crate::render::schema::Schema;
use crate::render::template::{Engine, TemplateError};

/// Workload types a ComponentType may declare.
pub const WORKLOAD_TYPES: [&str; 5] = ["deployment", "statefulset", "cronjob", "job", "proxy"];

/// Checks everything about `object` that can be checked without reading other objects.
pub fn check(object: &Object, engine: &Engine) -> Result<(), Error> {
    let key = object.key();
    let ctx = Ctx { key: &key, engine };
    let (api_version, kind) = object.type_meta();
    if !api_version.is_empty() && api_version != troupe_common::API_VERSION {
        return Err(ctx.invalid(
            "apiVersion",
            format!(
                "must be {:?}, not {api_version:?}",
                troupe_common::API_VERSION
            ),
        ));
    }
    if !kind.is_empty() && kind != key.kind.name() {
        return Err(ctx.invalid(
            "kind",
            format!("must be {:?}, not {kind:?}", key.kind.name()),
        ));
    }
    ctx.dns("metadata.name", &key.name)?;
    if key.kind.is_cluster_scoped() {
        if !key.namespace.is_empty() {
            return Err(ctx.invalid(
                "metadata.namespace",
                format!("must be empty: {} is cluster-scoped", key.kind),
            ));
        }
    } else {
        ctx.dns("metadata.namespace", &key.namespace)?;
    }
    for label in object.meta().labels.keys() {
        if label.is_empty() || label.len() > 253 || label.contains(char::is_whitespace) {
            return Err(ctx.invalid(
                format!("metadata.labels[{label:?}]"),
                "label keys must be 1-253 characters without whitespace",
            ));
        }
    }
    match object {
        Object::Environment(env) => {
            let spec = env.spec.clone().unwrap_or_default();
            let r = ctx.required("spec.dataPlaneRef", spec.data_plane_ref.as_ref())?;
            ctx.ref_kind(
                "spec.dataPlaneRef.kind",
                &r.kind,
                Kind::DataPlane,
                Kind::ClusterDataPlane,
            )?;
            ctx.dns("spec.dataPlaneRef.name", &r.name)?;
        }
        Object::DeploymentPipeline(p) => ctx.pipeline(&p.spec.clone().unwrap_or_default())?,
        Object::Promotion(p) => {
            let spec = p.spec.clone().unwrap_or_default();
            ctx.component_owner(spec.owner.as_ref())?;
            ctx.dns("spec.targetEnvironment", &spec.target_environment)?;
            if !spec.release_name.is_empty() {
                ctx.dns("spec.releaseName", &spec.release_name)?;
            }
            match spec.action.as_str() {
                "Promote" => ctx.dns("spec.sourceEnvironment", &spec.source_environment)?,
                "Rollback" if spec.source_environment.is_empty() => {}
                "Rollback" => {
                    return Err(
                        ctx.invalid("spec.sourceEnvironment", "must be empty for a Rollback")
                    );
                }
                other => {
                    return Err(ctx.invalid(
                        "spec.action",
                        format!("{other:?} is not one of Promote, Rollback"),
                    ));
                }
            }
        }
        Object::Project(p) => {
            let spec = p.spec.clone().unwrap_or_default();
            ctx.dns("spec.deploymentPipelineRef", &spec.deployment_pipeline_ref)?;
        }
        Object::ComponentType(t) => ctx.component_type(&t.spec.clone().unwrap_or_default())?,
        Object::ClusterComponentType(t) => {
            ctx.component_type(&t.spec.clone().unwrap_or_default())?
        }
        Object::Trait(t) => ctx.trait_spec(&t.spec.clone().unwrap_or_default())?,
        Object::ClusterTrait(t) => ctx.trait_spec(&t.spec.clone().unwrap_or_default())?,
        Object::Workflow(w) => ctx.schema(
            "spec.parameters",
            w.spec.as_ref().and_then(|s| s.parameters.as_ref()),
        )?,
        Object::ClusterWorkflow(w) => ctx.schema(
            "spec.parameters",
            w.spec.as_ref().and_then(|s| s.parameters.as_ref()),
        )?,
        Object::Component(c) => {
            let spec = c.spec.clone().unwrap_or_default();
            let owner = spec.owner.unwrap_or_default();
            ctx.dns("spec.owner.projectName", &owner.project_name)?;
            let ct = ctx.required("spec.componentType", spec.component_type.as_ref())?;
            ctx.ref_kind(
                "spec.componentType.kind",
                &ct.kind,
                Kind::ComponentType,
                Kind::ClusterComponentType,
            )?;
            let (workload_type, type_name) = ct.name.split_once('/').ok_or_else(|| {
                ctx.invalid(
                    "spec.componentType.name",
                    format!("{:?} must have the form {{workloadType}}/{{name}}, e.g. deployment/service", ct.name),
                )
            })?;
            if !WORKLOAD_TYPES.contains(&workload_type) {
                return Err(ctx.invalid(
                    "spec.componentType.name",
                    format!(
                        "workload type {workload_type:?} is not one of {}",
                        WORKLOAD_TYPES.join(", ")
                    ),
                ));
            }
            ctx.dns("spec.componentType.name", type_name)?;
            let mut instances = std::collections::BTreeSet::new();
            for (i, t) in spec.traits.iter().enumerate() {
                ctx.ref_kind(
                    &format!("spec.traits[{i}].kind"),
                    &t.kind,
                    Kind::Trait,
                    Kind::ClusterTrait,
                )?;
                ctx.dns(&format!("spec.traits[{i}].name"), &t.name)?;
                ctx.dns(&format!("spec.traits[{i}].instanceName"), &t.instance_name)?;
                if !instances.insert(t.instance_name.as_str()) {
                    return Err(ctx.invalid(
                        format!("spec.traits[{i}].instanceName"),
                        format!(
                            "{:?} is used by more than one trait instance",
                            t.instance_name
                        ),
                    ));
                }
            }
            if let Some(w) = &spec.workflow {
                ctx.ref_kind(
                    "spec.workflow.kind",
                    &w.kind,
                    Kind::Workflow,
                    Kind::ClusterWorkflow,
                )?;
                ctx.dns("spec.workflow.name", &w.name)?;
            }
        }
        Object::Workload(w) => {
            let spec = w.spec.clone().unwrap_or_default();
            ctx.component_owner(spec.owner.as_ref())?;
            let component = spec
                .owner
                .as_ref()
                .map_or("", |o| o.component_name.as_str());
            if w.metadata.as_ref().is_some_and(|m| m.name != component) {
                return Err(ctx.invalid(
                    "metadata.name",
                    format!("a Workload is named after its component: expected {component:?}"),
                ));
            }
            let container = ctx.required("spec.container", spec.container.as_ref())?;
            if container.image.trim().is_empty() {
                return Err(ctx.invalid("spec.container.image", "required"));
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, e) in spec.endpoints.iter().enumerate() {
                ctx.dns(&format!("spec.endpoints[{i}].name"), &e.name)?;
                if !names.insert(e.name.as_str()) {
                    return Err(ctx.invalid(
                        format!("spec.endpoints[{i}].name"),
                        format!("{:?} is declared twice", e.name),
                    ));
                }
                if !(1..=65535).contains(&e.port) {
                    return Err(ctx.invalid(
                        format!("spec.endpoints[{i}].port"),
                        format!("{} is not a port (1-65535)", e.port),
                    ));
                }
            }
            for (i, c) in spec.connections.iter().enumerate() {
                let at = format!("spec.connections[{i}]");
                if !c.project.is_empty() {
                    ctx.dns(&format!("{at}.project"), &c.project)?;
                }
                ctx.dns(&format!("{at}.component"), &c.component)?;
                ctx.dns(&format!("{at}.endpoint"), &c.endpoint)?;
                if !matches!(c.visibility.as_str(), "" | "project" | "namespace") {
                    return Err(ctx.invalid(
                        format!("{at}.visibility"),
                        format!("{:?} is not one of project, namespace", c.visibility),
                    ));
                }
            }
            ctx.container_vars("spec.container", &container.env, &container.files)?;
        }
        Object::WorkflowRun(run) => {
            let spec = run.spec.clone().unwrap_or_default();
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
        }
        Object::ComponentRelease(r) => {
            ctx.component_owner(r.spec.as_ref().and_then(|s| s.owner.as_ref()))?;
        }
        Object::ReleaseBinding(b) => {
            let spec = b.spec.clone().unwrap_or_default();
            ctx.component_owner(spec.owner.as_ref())?;
            ctx.dns("spec.environment", &spec.environment)?;
            if !spec.release_name.is_empty() {
                ctx.dns("spec.releaseName", &spec.release_name)?;
            }
            if let Some(c) = spec
                .workload_overrides
                .as_ref()
                .and_then(|o| o.container.as_ref())
            {
                ctx.container_vars("spec.workloadOverrides.container", &c.env, &c.files)?;
            }
            if !matches!(spec.state.as_str(), "" | "Active" | "Undeploy") {
                return Err(ctx.invalid(
                    "spec.state",
                    format!("{:?} is not one of Active, Undeploy", spec.state),
                ));
            }
        }
        Object::Release(r) => {
            let spec = r.spec.clone().unwrap_or_default();
            ctx.component_owner(spec.owner.as_ref())?;
            ctx.dns("spec.environment", &spec.environment)?;
            if let Some(dp) = &spec.data_plane_ref {
                ctx.ref_kind(
                    "spec.dataPlaneRef.kind",
                    &dp.kind,
                    Kind::DataPlane,
                    Kind::ClusterDataPlane,
                )?;
                ctx.dns("spec.dataPlaneRef.name", &dp.name)?;
            }
        }
        Object::Namespace(_) | Object::DataPlane(_) | Object::ClusterDataPlane(_) => {}
    }
    Ok(())
}

/// Refuses changes to fields that must never change once written.
pub fn check_immutable(old: &Object, new: &Object) -> Result<(), Error> {
    let key = new.key();
    let same = |field: &str, a: &dyn erased::Json, b: &dyn erased::Json| -> Result<(), Error> {
        let (a, b) = (a.to_json(), b.to_json());
        if a == b {
            Ok(())
        } else {
            Err(Error::Immutable {
                object: key.clone(),
                field: field.into(),
                change: format!("was {a}, now {b}"),
            })
        }
    };
    // `fields!(a, b, "spec.x" => x, …)`: each named spec field must be equal in `a` and `b`.
    macro_rules! fields {
        ($a:expr, $b:expr, $($path:literal => $field:ident),+) => {{
            $(same(
                $path,
                &$a.spec.as_ref().map(|s| s.$field.clone()),
                &$b.spec.as_ref().map(|s| s.$field.clone()),
            )?;)+
            Ok(())
        }};
    }
    match (old, new) {
        (Object::Environment(a), Object::Environment(b)) => {
            fields!(a, b, "spec.dataPlaneRef" => data_plane_ref)
        }
        (Object::ComponentType(a), Object::ComponentType(b)) => {
            fields!(a, b, "spec.workloadType" => workload_type)
        }
        (Object::ClusterComponentType(a), Object::ClusterComponentType(b)) => {
            fields!(a, b, "spec.workloadType" => workload_type)
        }
        (Object::Component(a), Object::Component(b)) => {
            fields!(a, b, "spec.owner" => owner, "spec.componentType" => component_type)
        }
        (Object::Workload(a), Object::Workload(b)) => fields!(a, b, "spec.owner" => owner),
        (Object::WorkflowRun(a), Object::WorkflowRun(b)) => fields!(
            a, b, "spec.owner" => owner, "spec.workflow" => workflow, "spec.commit" => commit
        ),
        (Object::ComponentRelease(a), Object::ComponentRelease(b)) => {
            if a.spec == b.spec {
                Ok(())
            } else {
                Err(Error::Immutable {
                    object: key.clone(),
                    field: "spec".into(),
                    change: "a release is a snapshot; cut a new release instead".into(),
                })
            }
        }
        (Object::ReleaseBinding(a), Object::ReleaseBinding(b)) => {
            fields!(a, b, "spec.owner" => owner, "spec.environment" => environment)
        }
        (Object::Promotion(a), Object::Promotion(b)) if a.spec != b.spec => Err(Error::Immutable {
            object: key.clone(),
            field: "spec".into(),
            change: "a promotion is a record; ask for a new one instead".into(),
        }),
        (Object::Release(a), Object::Release(b)) => {
            fields!(a, b, "spec.owner" => owner, "spec.environment" => environment)
        }
        _ => Ok(()),
    }
}

/// Object-safe JSON rendering, for error messages that show old and new values.
mod erased {
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            let mut v = serde_json::to_value(self).unwrap_or_default();
            troupe_common::document::integral_numbers(&mut v);
            v.to_string()
        }
    }
}

struct Ctx<'a> {
    key: &'a ObjectKey,
    engine: &'a Engine,
}

impl Ctx<'_> {
    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::invalid(self.key, field, message)
    }

    fn dns(&self, field: &str, value: &str) -> Result<(), Error> {
        check_dns_label(value).map_err(|why| {
            if value.is_empty() {
                self.invalid(field, "required")
            } else {
                self.invalid(field, format!("{value:?} is not a valid name: it {why}"))
            }
        })
    }

    /// A pipeline's edges form a graph with one root and no cycles; each edge's approvals
    /// and gates can be met.
    fn pipeline(&self, spec: &pb::DeploymentPipelineSpec) -> Result<(), Error> {
        use std::collections::{BTreeMap, BTreeSet};
        if spec.promotion_paths.is_empty() {
            return Err(self.invalid(
                "spec.promotionPaths",
                "required: at least one path, whose source is the first environment",
            ));
        }
        let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut targets: BTreeSet<&str> = BTreeSet::new();
        for (i, path) in spec.promotion_paths.iter().enumerate() {
            let at = format!("spec.promotionPaths[{i}]");
            let source = path.source_environment.as_str();
            self.dns(&format!("{at}.sourceEnvironment"), source)?;
            if edges.insert(source, Vec::new()).is_some() {
                return Err(self.invalid(
                    format!("{at}.sourceEnvironment"),
                    format!("{source:?} is the source of an earlier path; list all its targets in one path"),
                ));
            }
            for (j, t) in path.targets.iter().enumerate() {
                let at = format!("{at}.targets[{j}]");
                self.dns(&format!("{at}.environment"), &t.environment)?;
                if t.environment == source {
                    return Err(self.invalid(
                        format!("{at}.environment"),
                        format!("{source:?} cannot promote to itself"),
                    ));
                }
                if path.targets[..j]
                    .iter()
                    .any(|o| o.environment == t.environment)
                {
                    return Err(self.invalid(
                        format!("{at}.environment"),
                        format!("{:?} is listed twice", t.environment),
                    ));
                }
                self.promotion_target(&at, t)?;
                targets.insert(&t.environment);
                edges.entry(source).or_default().push(&t.environment);
            }
        }
        let roots: Vec<&str> = edges
            .keys()
            .copied()
            .filter(|e| !targets.contains(e))
            .collect();
        match roots.as_slice() {
            [_] => {}
            [] => {
                return Err(self.invalid(
                    "spec.promotionPaths",
                    "has no first environment: every source is also a target (a cycle)",
                ));
            }
            many => {
                return Err(self.invalid(
                    "spec.promotionPaths",
                    format!(
                        "must have a single first environment (a source that is no target), found {}",
                        many.join(", ")
                    ),
                ));
            }
        }
        // Depth-first from every node: meeting a node on the current path is a cycle.
        fn visit<'a>(
            node: &'a str,
            edges: &BTreeMap<&'a str, Vec<&'a str>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Option<Vec<&'a str>> {
            if let Some(start) = path.iter().position(|n| *n == node) {
                let mut cycle = path[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            if !done.insert(node) {
                return None;
            }
            path.push(node);
            for next in edges.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(next, edges, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        for node in edges.keys() {
            if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
                return Err(self.invalid(
                    "spec.promotionPaths",
                    format!("has a cycle: {}", cycle.join(" → ")),
                ));
            }
        }
        Ok(())
    }

    /// One edge's approval settings and gates.
    fn promotion_target(&self, at: &str, t: &pb::PromotionTarget) -> Result<(), Error> {
        if t.required_approvals < 0 {
            return Err(self.invalid(format!("{at}.requiredApprovals"), "must not be negative"));
        }
        if !t.requires_approval && (t.required_approvals > 0 || !t.approvers.is_empty()) {
            let field = if t.approvers.is_empty() {
                "requiredApprovals"
            } else {
                "approvers"
            };
            return Err(self.invalid(
                format!("{at}.{field}"),
                "set, but requiresApproval is false",
            ));
        }
        if !t.approvers.is_empty() && t.required_approvals as usize > t.approvers.len() {
            return Err(self.invalid(
                format!("{at}.requiredApprovals"),
                format!(
                    "{} approvals can never come from {} approver(s)",
                    t.required_approvals,
                    t.approvers.len()
                ),
            ));
        }
        for (k, approver) in t.approvers.iter().enumerate() {
            if approver.trim().is_empty() {
                return Err(self.invalid(format!("{at}.approvers[{k}]"), "must not be empty"));
            }
        }
        for (k, gate) in t.gates.iter().enumerate() {
            let at = format!("{at}.gates[{k}]");
            self.dns(&format!("{at}.name"), &gate.name)?;
            if t.gates[..k].iter().any(|g| g.name == gate.name) {
                return Err(self.invalid(
                    format!("{at}.name"),
                    format!("{:?} is used by an earlier gate of this edge", gate.name),
                ));
            }
            match gate.r#type.as_str() {
                "soak" if gate.soak_duration_seconds <= 0 => {
                    return Err(self.invalid(
                        format!("{at}.soakDurationSeconds"),
                        "required for a soak gate: a number of seconds above 0",
                    ));
                }
                "soak" => {}
                "healthy" | "check" if gate.soak_duration_seconds != 0 => {
                    return Err(self.invalid(
                        format!("{at}.soakDurationSeconds"),
                        format!("only soak gates have one, this is a {} gate", gate.r#type),
                    ));
                }
                "healthy" | "check" => {}
                other => {
                    return Err(self.invalid(
                        format!("{at}.type"),
                        format!("{other:?} is not one of healthy, soak, check"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn required<'v, T>(&self, field: &str, value: Option<&'v T>) -> Result<&'v T, Error> {
        value.ok_or_else(|| self.invalid(field, "required"))
    }

    fn ref_kind(
        &self,
        field: &str,
        kind: &str,
        namespaced: Kind,
        cluster: Kind,
    ) -> Result<(), Error> {
        scoped_kind(kind, namespaced, cluster)
            .map(|_| ())
            .ok_or_else(|| {
                self.invalid(
                    field,
                    format!("{kind:?} is not one of {namespaced}, {cluster}"),
                )
            })
    }

    fn component_owner(&self, owner: Option<&pb::ComponentOwner>) -> Result<(), Error> {
        let owner = self.required("spec.owner", owner)?;
        self.dns("spec.owner.projectName", &owner.project_name)?;
        self.dns("spec.owner.componentName", &owner.component_name)
    }

    fn schema(&self, field: &str, schema: Option<&pbjson_types::Struct>) -> Result<(), Error> {
        let Some(schema) = schema else { return Ok(()) };
        Schema::compile(&struct_to_json(schema))
            .map(|_| ())
            .map_err(|v| self.invalid(format!("{field}{}", pointer_suffix(&v.pointer)), v.message))
    }

    fn component_type(&self, spec: &pb::ComponentTypeSpec) -> Result<(), Error> {
        if !WORKLOAD_TYPES.contains(&spec.workload_type.as_str()) {
            return Err(self.invalid(
                "spec.workloadType",
                format!(
                    "{:?} is not one of {}",
                    spec.workload_type,
                    WORKLOAD_TYPES.join(", ")
                ),
            ));
        }
        self.schema("spec.parameters", spec.parameters.as_ref())?;
        self.schema("spec.environmentConfigs", spec.environment_configs.as_ref())?;
        let mut ids = std::collections::BTreeSet::new();
        for (i, r) in spec.resources.iter().enumerate() {
            if r.id.is_empty() {
                return Err(self.invalid(format!("spec.resources[{i}].id"), "required"));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(self.invalid(
                    format!("spec.resources[{i}].id"),
                    format!("{:?} is used twice", r.id),
                ));
            }
            self.resource_template(&format!("spec.resources[{i}]"), r)?;
        }
        self.rules(&spec.validations)?;
        self.output_rules(&spec.output_validations)?;
        for (i, t) in spec.allowed_traits.iter().enumerate() {
            self.ref_kind(
                &format!("spec.allowedTraits[{i}].kind"),
                &t.kind,
                Kind::Trait,
                Kind::ClusterTrait,
            )?;
            self.dns(&format!("spec.allowedTraits[{i}].name"), &t.name)?;
        }
        for (i, w) in spec.allowed_workflows.iter().enumerate() {
            self.ref_kind(
                &format!("spec.allowedWorkflows[{i}].kind"),
                &w.kind,
                Kind::Workflow,
                Kind::ClusterWorkflow,
            )?;
            self.dns(&format!("spec.allowedWorkflows[{i}].name"), &w.name)?;
        }
        Ok(())
    }

    fn trait_spec(&self, spec: &pb::TraitSpec) -> Result<(), Error> {
        self.schema("spec.parameters", spec.parameters.as_ref())?;
        self.schema("spec.environmentConfigs", spec.environment_configs.as_ref())?;
        for (i, c) in spec.creates.iter().enumerate() {
            self.resource_template(&format!("spec.creates[{i}]"), c)?;
        }
        self.rules(&spec.validations)?;
        self.output_rules(&spec.output_validations)?;
        for (i, p) in spec.patches.iter().enumerate() {
            let at = format!("spec.patches[{i}]");
            if p.target.as_ref().is_none_or(|t| t.kind.is_empty()) {
                return Err(self.invalid(format!("{at}.target.kind"), "required"));
            }
            self.expression(&format!("{at}.forEach"), &p.for_each)?;
            if !p.for_each.is_empty() && p.var.is_empty() {
                return Err(self.invalid(format!("{at}.var"), "required with forEach"));
            }
            if let Some(target) = &p.target {
                self.expression(&format!("{at}.target.where"), &target.r#where)?;
            }
            for (j, op) in p.operations.iter().enumerate() {
                let at = format!("{at}.operations[{j}]");
                Op::parse(&op.op).map_err(|e| self.invalid(format!("{at}.op"), e.to_string()))?;
                Path::parse(&op.path)
                    .map_err(|e| self.invalid(format!("{at}.path"), e.to_string()))?;
                if let Some(value) = &op.value {
                    self.template(&format!("{at}.value"), &struct_to_json(value))?;
                }
            }
        }
        Ok(())
    }

    /// Validation rules are `${{ }}` expressions that compile, each with a message.
    fn rules(&self, rules: &[pb::ValidationRule]) -> Result<(), Error> {
        for (i, rule) in rules.iter().enumerate() {
            if rule.rule.is_empty() {
                return Err(self.invalid(format!("spec.validations[{i}].rule"), "required"));
            }
            self.expression(&format!("spec.validations[{i}].rule"), &rule.rule)?;
        }
        Ok(())
    }

    /// Output rules: a rule that compiles, and a `where` that compiles when set.
    fn output_rules(&self, rules: &[pb::OutputValidationRule]) -> Result<(), Error> {
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("spec.outputValidations[{i}]");
            if rule.rule.is_empty() {
                return Err(self.invalid(format!("{at}.rule"), "required"));
            }
            self.expression(&format!("{at}.rule"), &rule.rule)?;
            if let Some(target) = &rule.target {
                self.expression(&format!("{at}.target.where"), &target.r#where)?;
            }
        }
        Ok(())
    }

    /// Environment variables and files: a key each, used once; a file has an absolute mount
    /// path; a value or a secret reference, not both.
    fn container_vars(
        &self,
        at: &str,
        env: &[pb::EnvVar],
        files: &[pb::FileVar],
    ) -> Result<(), Error> {
        let mut keys = std::collections::BTreeSet::new();
        for (i, e) in env.iter().enumerate() {
            let field = format!("{at}.env[{i}]");
            if e.key.is_empty() {
                return Err(self.invalid(format!("{field}.key"), "required"));
            }
            if !keys.insert(e.key.as_str()) {
                return Err(
                    self.invalid(format!("{field}.key"), format!("{:?} is set twice", e.key))
                );
            }
            if !e.value.is_empty() && e.value_from.is_some() {
                return Err(self.invalid(&field, "set value or valueFrom, not both"));
            }
        }
        let mut keys = std::collections::BTreeSet::new();
        for (i, f) in files.iter().enumerate() {
            let field = format!("{at}.files[{i}]");
            if f.key.is_empty() {
                return Err(self.invalid(format!("{field}.key"), "required"));
            }
            if !keys.insert(f.key.as_str()) {
                return Err(
                    self.invalid(format!("{field}.key"), format!("{:?} is set twice", f.key))
                );
            }
            if !f.mount_path.starts_with('/') {
                return Err(self.invalid(
                    format!("{field}.mountPath"),
                    format!("{:?} is not an absolute path", f.mount_path),
                ));
            }
            if !f.value.is_empty() && f.value_from.is_some() {
                return Err(self.invalid(&field, "set value or valueFrom, not both"));
            }
        }
        Ok(())
    }

    /// A resource entry's control fields and template compile.
    fn resource_template(&self, at: &str, r: &pb::ResourceTemplate) -> Result<(), Error> {
        self.expression(&format!("{at}.includeWhen"), &r.include_when)?;
        self.expression(&format!("{at}.forEach"), &r.for_each)?;
        if !r.for_each.is_empty() && r.var.is_empty() {
            return Err(self.invalid(format!("{at}.var"), "required with forEach"));
        }
        let template = r
            .template
            .as_ref()
            .ok_or_else(|| self.invalid(format!("{at}.template"), "required"))?;
        self.template(&format!("{at}.template"), &struct_to_json(template))
    }

    /// Every `${{ }}` expression in `template` compiles.
    fn template(&self, at: &str, template: &serde_json::Value) -> Result<(), Error> {
        self.engine.check("", template).map_err(|e| {
            self.invalid(
                format!("{at}{}", pointer_suffix(&e.path)),
                expression_error(&e),
            )
        })
    }

    /// A control field, when set, is one `${{ }}` expression that compiles.
    fn expression(&self, at: &str, field: &str) -> Result<(), Error> {
        if field.is_empty() {
            return Ok(());
        }
        self.engine
            .check_field("", field)
            .map_err(|e| self.invalid(at, expression_error(&e)))
    }
}

fn expression_error(e: &TemplateError) -> String {
    if e.expression.is_empty() {
        e.message.clone()
    } else {
        format!("`{}`: {}", e.expression, e.message)
    }
}

/// `/properties/port/type` → `.properties.port.type`, for field paths in messages.
fn pointer_suffix(pointer: &str) -> String {
    pointer
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| format!(".{s}"))
        .collect()
}

/// A `google.protobuf.Struct` as JSON, with integral numbers as integers.
pub fn struct_to_json(value: &impl Serialize) -> serde_json::Value {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    troupe_common::document::integral_numbers(&mut v);
    v
}

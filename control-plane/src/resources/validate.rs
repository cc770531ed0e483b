//! Checks that need nothing but the object (and, for updates, its stored version): names,
//! scope, required fields, allowed values, embedded JSON Schemas, immutable fields. The
//! metadata every kind shares is checked here; each kind's own fields by its rules in
//! `kinds/`, with the field checks of [`Ctx`] and [`unchanged`]. Every error names the object
//! and the field path.

use serde::Serialize;
use troupe_common::k8s_names::{check_label_value, check_qualified_name};
use troupe_common::names::check_dns_label;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::{Kind, Object, ObjectKey};

use super::references::scoped_kind;
use super::{Error, kinds};
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
    // Kubernetes' label syntax: a label that does not follow it could never be named by a
    // selector (`-l`, `labelSelector`), which refuses such keys and values.
    for (key, value) in &object.meta().labels {
        let field = || format!("metadata.labels[{key:?}]");
        check_qualified_name(key).map_err(|why| ctx.invalid(field(), format!("the key {why}")))?;
        check_label_value(value)
            .map_err(|why| ctx.invalid(field(), format!("the value {value:?} {why}")))?;
    }
    kinds::validate(object, &ctx)
}

/// Refuses changes to fields that must never change once written (each kind names its own).
pub fn check_immutable(old: &Object, new: &Object) -> Result<(), Error> {
    kinds::immutable(old, new, &new.key())
}

/// Refuses a change to the immutable `field` of `key`: `old` and `new` must read the same in
/// JSON, which the message shows.
pub(super) fn unchanged(
    key: &ObjectKey,
    field: &str,
    old: &impl Serialize,
    new: &impl Serialize,
) -> Result<(), Error> {
    let (a, b) = (struct_to_json(old), struct_to_json(new));
    if a == b {
        return Ok(());
    }
    Err(Error::Immutable {
        object: key.clone(),
        field: field.into(),
        change: format!("was {a}, now {b}"),
    })
}

/// The object under check, and the field checks every kind's rules use.
pub(super) struct Ctx<'a> {
    key: &'a ObjectKey,
    engine: &'a Engine,
}

impl Ctx<'_> {
    /// An [`Error::Invalid`] about the object's `field`.
    pub(super) fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::invalid(self.key, field, message)
    }

    /// `value` is a DNS label.
    pub(super) fn dns(&self, field: &str, value: &str) -> Result<(), Error> {
        check_dns_label(value).map_err(|why| {
            if value.is_empty() {
                self.invalid(field, "required")
            } else {
                self.invalid(field, format!("{value:?} is not a valid name: it {why}"))
            }
        })
    }

    /// `value` is set.
    pub(super) fn required<'v, T>(
        &self,
        field: &str,
        value: Option<&'v T>,
    ) -> Result<&'v T, Error> {
        value.ok_or_else(|| self.invalid(field, "required"))
    }

    /// A reference's `kind` names `namespaced` (also when empty) or `cluster`.
    pub(super) fn ref_kind(
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

    /// `spec.owner` names a project and a component.
    pub(super) fn component_owner(&self, owner: Option<&pb::ComponentOwner>) -> Result<(), Error> {
        let owner = self.required("spec.owner", owner)?;
        self.dns("spec.owner.projectName", &owner.project_name)?;
        self.dns("spec.owner.componentName", &owner.component_name)
    }

    /// An embedded JSON Schema, when set, compiles.
    pub(super) fn schema(
        &self,
        field: &str,
        schema: Option<&pbjson_types::Struct>,
    ) -> Result<(), Error> {
        let Some(schema) = schema else { return Ok(()) };
        Schema::compile(&struct_to_json(schema))
            .map(|_| ())
            .map_err(|v| self.invalid(format!("{field}{}", pointer_suffix(&v.pointer)), v.message))
    }

    /// Validation rules are `${{ }}` expressions that compile, each with a message.
    pub(super) fn rules(&self, rules: &[pb::ValidationRule]) -> Result<(), Error> {
        for (i, rule) in rules.iter().enumerate() {
            if rule.rule.is_empty() {
                return Err(self.invalid(format!("spec.validations[{i}].rule"), "required"));
            }
            self.expression(&format!("spec.validations[{i}].rule"), &rule.rule)?;
        }
        Ok(())
    }

    /// Output rules: a rule that compiles, and a `where` that compiles when set.
    pub(super) fn output_rules(&self, rules: &[pb::OutputValidationRule]) -> Result<(), Error> {
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
    pub(super) fn container_vars(
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
    pub(super) fn resource_template(
        &self,
        at: &str,
        r: &pb::ResourceTemplate,
    ) -> Result<(), Error> {
        self.expression(&format!("{at}.includeWhen"), &r.include_when)?;
        self.expression(&format!("{at}.forEach"), &r.for_each)?;
        if !r.for_each.is_empty() && r.var.is_empty() {
            return Err(self.invalid(format!("{at}.var"), "required with forEach"));
        }
        let template = r
            .template
            .as_ref()
            .ok_or_else(|| self.invalid(format!("{at}.template"), "required"))?;
        let template = struct_to_json(template);
        self.object_identity(&format!("{at}.template"), &r.id, &template)?;
        self.template(&format!("{at}.template"), &template)
    }

    /// A resource template makes Kubernetes objects: it says which, with an `apiVersion` and
    /// a `kind` that are each a string or a `${{ }}` expression. An empty template (some
    /// clients send an unset one as `{}`) is refused here rather than when it renders.
    fn object_identity(
        &self,
        at: &str,
        id: &str,
        template: &serde_json::Value,
    ) -> Result<(), Error> {
        let empty = template.as_object().is_none_or(|o| o.is_empty());
        for field in ["apiVersion", "kind"] {
            let set = template
                .get(field)
                .and_then(serde_json::Value::as_str)
                .is_some_and(|v| !v.trim().is_empty());
            if set {
                continue;
            }
            let which = if id.is_empty() {
                String::new()
            } else {
                format!(" of resource {id:?}")
            };
            let why = if empty {
                format!("the template{which} is empty")
            } else {
                format!("the template{which} must name the Kubernetes object it makes")
            };
            return Err(self.invalid(
                format!("{at}.{field}"),
                format!("required: {why} (a string, or a ${{{{ }}}} expression)"),
            ));
        }
        Ok(())
    }

    /// Every `${{ }}` expression in `template` compiles.
    pub(super) fn template(&self, at: &str, template: &serde_json::Value) -> Result<(), Error> {
        self.engine.check("", template).map_err(|e| {
            self.invalid(
                format!("{at}{}", pointer_suffix(&e.path)),
                expression_error(&e),
            )
        })
    }

    /// A control field, when set, is one `${{ }}` expression that compiles.
    pub(super) fn expression(&self, at: &str, field: &str) -> Result<(), Error> {
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

#[cfg(test)]
mod props;

//! Resource entries: `includeWhen`, then `forEach`/`var`, then the template.

use minijinja::value::{Value, ValueKind};
use serde_json::Value as Json;

use super::parse::{Parsed, parse};
use super::value::is_omit;
use super::walk::{Call, Loc, error};
use super::{AsContext, Engine, ResourceEntry, TemplateError};

impl Engine {
    /// Checks a resource entry: its control fields, `var`, and its template. Error paths are
    /// `{path}/includeWhen`, `{path}/forEach`, `{path}/var` and `{path}/template/…`.
    pub fn check_resource(
        &self,
        path: &str,
        resource: &ResourceEntry<'_>,
    ) -> Result<(), TemplateError> {
        if !resource.include_when.is_empty() {
            self.check_field(&format!("{path}/includeWhen"), resource.include_when)?;
        }
        if !resource.for_each.is_empty() {
            self.check_field(&format!("{path}/forEach"), resource.for_each)?;
        }
        check_var(path, resource)?;
        self.check(&format!("{path}/template"), resource.template)
    }

    /// Renders one resource entry: `includeWhen`, then `forEach`/`var`, then the template;
    /// returns 0..n objects. `path` is the entry's path; errors point below it (see
    /// [`Engine::check_resource`]). Each object, each forEach item, the fuel spent and the
    /// bytes built are charged to the context's render budget as they come.
    pub fn render_resource(
        &self,
        path: &str,
        resource: &ResourceEntry<'_>,
        context: impl AsContext,
    ) -> Result<Vec<Json>, TemplateError> {
        check_var(path, resource)?;
        let entry = Loc::Root(path);
        let call = self.call(&entry, context)?;
        let root = call.scope(vec![]);
        if !resource.include_when.is_empty() {
            let loc = entry.key("includeWhen");
            let expr = control_expression(&loc, resource.include_when)?;
            let value = self
                .evaluate(&root, expr)
                .map_err(|m| error(&loc, expr, m))?;
            if value.kind() != ValueKind::Bool {
                let message = format!("includeWhen must evaluate to a bool, got {}", value.kind());
                return Err(error(&loc, expr, message));
            }
            if !value.is_true() {
                return Ok(Vec::new());
            }
        }
        let loc = entry.key("template");
        let depth = self.limits.recursion;
        if resource.for_each.is_empty() {
            call.budget()
                .count_object()
                .map_err(|m| error(&loc, "", m))?;
            return Ok(vec![self.render_object(
                &call,
                &root,
                &loc,
                resource.template,
                depth,
            )?]);
        }
        let each_loc = entry.key("forEach");
        let expr = control_expression(&each_loc, resource.for_each)?;
        let items = self
            .evaluate(&root, expr)
            .and_then(|v| loop_items(&v))
            .map_err(|m| error(&each_loc, expr, m))?;
        call.budget()
            .count_iterations(items.len())
            .map_err(|m| error(&each_loc, expr, m))?;
        let mut objects = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let scope = call.scope(vec![(resource.var.to_owned(), item)]);
            let object = call
                .budget()
                .count_object()
                .map_err(|m| error(&loc, "", m))
                .and_then(|()| self.render_object(&call, &scope, &loc, resource.template, depth))
                .map_err(|mut e| {
                    e.message = format!("forEach item {i}: {}", e.message);
                    e
                })?;
            objects.push(object);
        }
        Ok(objects)
    }

    /// Renders a resource template, which must produce a map.
    fn render_object(
        &self,
        call: &Call,
        scope: &Value,
        loc: &Loc<'_>,
        template: &Json,
        depth: usize,
    ) -> Result<Json, TemplateError> {
        match self.render_node(call, scope, loc, template, depth)? {
            Some(object @ Json::Object(_)) => Ok(object),
            Some(other) => Err(error(
                loc,
                "",
                format!(
                    "a resource template must render to a map, got {}",
                    json_kind(&other)
                ),
            )),
            None => Err(error(
                loc,
                "",
                "a resource template cannot evaluate to omit()",
            )),
        }
    }
}

/// The expression of a control field, which must be exactly one `${{ expr }}`.
pub(super) fn control_expression<'f>(
    loc: &Loc<'_>,
    field: &'f str,
) -> Result<&'f str, TemplateError> {
    match parse(field).map_err(|e| error(loc, &e.expression, e.message))? {
        Parsed::Standalone(expr) => Ok(expr),
        _ => Err(error(
            loc,
            "",
            format!("must be exactly one `${{{{ expression }}}}`, got {field:?}"),
        )),
    }
}

/// `var` is required with `forEach`, meaningless without it, and must be an identifier.
fn check_var(path: &str, resource: &ResourceEntry<'_>) -> Result<(), TemplateError> {
    let loc = Loc::Root(path);
    let loc = loc.key("var");
    let var = resource.var;
    if resource.for_each.is_empty() {
        if !var.is_empty() {
            return Err(error(&loc, "", "var is set but forEach is not"));
        }
        return Ok(());
    }
    let mut chars = var.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if var.is_empty() {
        Err(error(&loc, "", "var is required when forEach is set"))
    } else if !identifier {
        Err(error(
            &loc,
            "",
            format!(
                "var {var:?} is not a valid name (letters, digits and '_', not starting with a digit)"
            ),
        ))
    } else {
        Ok(())
    }
}

/// The items a forEach value iterates: a list's items, or a map's `{key, value}` entries in
/// key order. `omit()` items are skipped.
fn loop_items(value: &Value) -> Result<Vec<Value>, String> {
    let items: Vec<Value> = match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            value.try_iter().map_err(|e| e.to_string())?.collect()
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter().map_err(|e| e.to_string())?.collect();
            keys.sort();
            keys.into_iter()
                .map(|key| {
                    let item = value.get_item(&key).map_err(|e| e.to_string())?;
                    Ok(Value::from_pairs([("key", key), ("value", item)]))
                })
                .collect::<Result<_, String>>()?
        }
        kind => {
            return Err(format!(
                "forEach must evaluate to a list or a map, got {kind}"
            ));
        }
    };
    Ok(items.into_iter().filter(|item| !is_omit(item)).collect())
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a bool",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a map",
    }
}

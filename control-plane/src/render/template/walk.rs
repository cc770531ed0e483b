//! Walking a template tree: rendering each node against a scope, and checking each
//! expression without evaluating it. Paths are built lazily ([`Loc`]) so a render pays for a
//! JSON pointer only when it reports an error.

use minijinja::value::Value;
use serde_json::{Map, Value as Json};

use super::parse::{Parsed, Segment, parse};
use super::value::{Scope, Sizer, interpolate, is_omit, to_json, to_key};
use super::{Budget, Context, Engine, TemplateError, bind};

impl Engine {
    /// Renders one node; `None` when it evaluated to `omit()`.
    pub(super) fn render_node(
        &self,
        call: &Call,
        scope: &Value,
        loc: &Loc<'_>,
        node: &Json,
        depth: usize,
    ) -> Result<Option<Json>, TemplateError> {
        if depth == 0 {
            return Err(too_deep(loc, self.limits.recursion));
        }
        match node {
            Json::String(s) => self.render_string(call, scope, loc, s, depth),
            Json::Array(items) => {
                call.sizer
                    .charge(2 + items.len())
                    .map_err(|m| error(loc, "", m))?;
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.extend(self.render_node(call, scope, &loc.index(i), item, depth - 1)?);
                }
                Ok(Some(Json::Array(out)))
            }
            Json::Object(map) => {
                call.sizer.charge(2).map_err(|m| error(loc, "", m))?;
                let mut out = Map::new();
                for (key, item) in map {
                    let item_loc = loc.key(key);
                    let Some(rendered_key) = self.render_key(call, scope, &item_loc, key)? else {
                        continue;
                    };
                    let Some(item) = self.render_node(call, scope, &item_loc, item, depth - 1)?
                    else {
                        continue;
                    };
                    call.sizer
                        .charge(rendered_key.len() + 4)
                        .map_err(|m| error(&item_loc, "", m))?;
                    if out.contains_key(&rendered_key) {
                        let message = format!(
                            "the key renders to {rendered_key:?}, which the map already has"
                        );
                        return Err(error(&item_loc, "", message));
                    }
                    out.insert(rendered_key, item);
                }
                Ok(Some(Json::Object(out)))
            }
            scalar => {
                call.sizer
                    .charge_json(scalar)
                    .map_err(|m| error(loc, "", m))?;
                Ok(Some(scalar.clone()))
            }
        }
    }

    fn render_string(
        &self,
        call: &Call,
        scope: &Value,
        loc: &Loc<'_>,
        s: &str,
        depth: usize,
    ) -> Result<Option<Json>, TemplateError> {
        match parse(s).map_err(|e| error(loc, &e.expression, e.message))? {
            Parsed::Literal => {
                call.sizer
                    .charge(s.len() + 2)
                    .map_err(|m| error(loc, "", m))?;
                Ok(Some(Json::String(s.to_owned())))
            }
            Parsed::Standalone(expr) => {
                let value = self
                    .evaluate(scope, expr)
                    .map_err(|m| error(loc, expr, m))?;
                to_json(&value, &call.sizer, depth).map_err(|m| error(loc, expr, m))
            }
            Parsed::Mixed(segments) => {
                let text = self.interpolate(call, scope, loc, &segments)?;
                call.sizer
                    .charge(text.len() + 2)
                    .map_err(|m| error(loc, "", m))?;
                Ok(Some(Json::String(text)))
            }
        }
    }

    /// Renders a key; `None` when it evaluated to `omit()`.
    fn render_key(
        &self,
        call: &Call,
        scope: &Value,
        loc: &Loc<'_>,
        key: &str,
    ) -> Result<Option<String>, TemplateError> {
        match parse(key).map_err(|e| error(loc, &e.expression, e.message))? {
            Parsed::Literal => Ok(Some(key.to_owned())),
            Parsed::Standalone(expr) => {
                let value = self
                    .evaluate(scope, expr)
                    .map_err(|m| error(loc, expr, m))?;
                if is_omit(&value) {
                    return Ok(None);
                }
                to_key(&value).map(Some).map_err(|m| error(loc, expr, m))
            }
            Parsed::Mixed(segments) => self.interpolate(call, scope, loc, &segments).map(Some),
        }
    }

    fn interpolate(
        &self,
        call: &Call,
        scope: &Value,
        loc: &Loc<'_>,
        segments: &[Segment<'_>],
    ) -> Result<String, TemplateError> {
        let mut text = String::new();
        for segment in segments {
            match segment {
                Segment::Text(literal) => text.push_str(literal),
                Segment::Expr(expr) => {
                    let value = self
                        .evaluate(scope, expr)
                        .map_err(|m| error(loc, expr, m))?;
                    // Converted under a scratch bound: only the finished string is output.
                    let scratch = call.sizer.scratch();
                    let json = to_json(&value, &scratch, self.limits.recursion)
                        .map_err(|m| error(loc, expr, m))?
                        .ok_or_else(|| error(loc, expr, "omit() cannot be part of a string"))?;
                    interpolate(&json, &mut text);
                    call.sizer
                        .scratch()
                        .charge(text.len())
                        .map_err(|m| error(loc, expr, m))?;
                }
            }
        }
        Ok(text)
    }

    pub(super) fn check_node(
        &self,
        loc: &Loc<'_>,
        node: &Json,
        depth: usize,
    ) -> Result<(), TemplateError> {
        if depth == 0 {
            return Err(too_deep(loc, self.limits.recursion));
        }
        match node {
            Json::String(s) => self.check_string(loc, s),
            Json::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| self.check_node(&loc.index(i), item, depth - 1)),
            Json::Object(map) => map.iter().try_for_each(|(key, item)| {
                let item_loc = loc.key(key);
                self.check_string(&item_loc, key)?;
                self.check_node(&item_loc, item, depth - 1)
            }),
            _ => Ok(()),
        }
    }

    fn check_string(&self, loc: &Loc<'_>, s: &str) -> Result<(), TemplateError> {
        let exprs = match parse(s).map_err(|e| error(loc, &e.expression, e.message))? {
            Parsed::Literal => return Ok(()),
            Parsed::Standalone(expr) => vec![expr],
            Parsed::Mixed(segments) => segments
                .into_iter()
                .filter_map(|s| match s {
                    Segment::Expr(expr) => Some(expr),
                    Segment::Text(_) => None,
                })
                .collect(),
        };
        exprs.into_iter().try_for_each(|expr| {
            self.compiled(expr)
                .map(drop)
                .map_err(|m| error(loc, expr, m))
        })
    }
}

/// One engine call's state: its render's context (and budget), the render's fuel meter, and
/// the call's output bound, booked to the render's budget when the call ends.
pub(super) struct Call {
    pub context: Context,
    pub meter: Value,
    pub sizer: Sizer,
}

impl Call {
    pub fn new(context: Context) -> Self {
        let budget = context.budget();
        Call {
            meter: budget.meter_value(),
            sizer: budget.sizer(),
            context,
        }
    }

    /// The render's budget.
    pub fn budget(&self) -> &Budget {
        self.context.budget()
    }

    /// A scope with `bound` converted and set on top of the context. Converting copies each
    /// value, so it costs fuel (one per 64 bytes): a patch's `where` or an output rule,
    /// which binds every object it looks at, cannot copy the render's output without bound.
    pub fn bind(&self, bound: &[(&str, &Json)]) -> Result<Value, String> {
        if !bound.is_empty() {
            let sizer = Sizer::new(usize::MAX, usize::MAX);
            for (_, value) in bound {
                sizer.charge_json(value)?;
            }
            self.budget().spend_fuel((sizer.used() / 64) as u64)?;
        }
        Ok(self.scope(bound.iter().map(bind).collect()))
    }

    pub fn scope(&self, bound: Vec<(String, Value)>) -> Value {
        Value::from_object(Scope {
            context: self.context.vars.clone(),
            bound,
            meter: self.meter.clone(),
        })
    }
}

impl Drop for Call {
    /// Books what the call built, whether it succeeded or not: a render that goes on after
    /// a failed call still pays for it.
    fn drop(&mut self) {
        self.context.budget().book_bytes(self.sizer.used());
    }
}

/// Where in the template a node is; turned into a JSON pointer only for errors.
#[derive(Clone, Copy)]
pub(super) enum Loc<'a> {
    Root(&'a str),
    Key(&'a Loc<'a>, &'a str),
    Index(&'a Loc<'a>, usize),
}

impl<'a> Loc<'a> {
    pub fn key(&'a self, key: &'a str) -> Loc<'a> {
        Loc::Key(self, key)
    }

    pub fn index(&'a self, index: usize) -> Loc<'a> {
        Loc::Index(self, index)
    }

    pub fn pointer(&self) -> String {
        match self {
            Loc::Root(path) => (*path).to_owned(),
            Loc::Key(parent, key) => {
                format!(
                    "{}/{}",
                    parent.pointer(),
                    key.replace('~', "~0").replace('/', "~1")
                )
            }
            Loc::Index(parent, index) => format!("{}/{index}", parent.pointer()),
        }
    }
}

pub(super) fn error(loc: &Loc<'_>, expression: &str, message: impl Into<String>) -> TemplateError {
    TemplateError {
        path: loc.pointer(),
        expression: expression.to_owned(),
        message: message.into(),
    }
}

pub(super) fn too_deep(loc: &Loc<'_>, limit: usize) -> TemplateError {
    error(
        loc,
        "",
        format!("the template nests deeper than the recursion limit ({limit} levels)"),
    )
}

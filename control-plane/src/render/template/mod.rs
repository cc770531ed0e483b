//! Structured templates: JSON trees whose strings may hold `${{ expr }}` minijinja expressions
//! (DESIGN §3). [`Engine::render`] walks a tree and returns a new one; the template is never
//! treated as text, so quoting and indentation cannot break the output.
//!
//! - A string that is exactly one `${{ expr }}` (whitespace around it allowed) becomes the
//!   expression's typed value: `${{ 3 }}` is the integer 3, `${{ labels }}` a map.
//! - A string mixing text and expressions renders to a string: strings are inserted as-is,
//!   `null` as nothing, numbers, bools, lists and maps as compact JSON.
//! - Map keys may hold expressions; a key must evaluate to a string or a number.
//! - A value (or key) that evaluates to `omit()` removes its map entry or list item; `omit()`
//!   inside an expression's list or map result is dropped too.
//! - `$${{` is a literal `${{` (for shell snippets that need the text itself).
//! - Undefined variables are errors naming the expression, e.g. ``undefined value: `foo.bar`
//!   is undefined``.
//!
//! Resource entries add `includeWhen` (a bool expression, evaluated first, without the loop
//! variable) and `forEach` + `var` (a list, or a map iterated in key order as `{key, value}`
//! items) — see [`Engine::render_resource`].
//!
//! # Helpers
//!
//! Besides minijinja's builtin filters and functions (`length`, `default`, `join`, `upper`,
//! `items`, `range`, …), every expression can call:
//!
//! | helper | result |
//! |---|---|
//! | `omit()` | the sentinel that removes its map entry or list item |
//! | `dns_name(part, ...)` | parts joined with `-`, lowercased, other characters → `-`, dashes collapsed and trimmed, cut to fit, plus `-` and 8 hex of sha256(parts joined by NUL): a stable DNS label of at most 63 characters |
//! | `merge(a, b, ...)` | deep merge of maps, later wins; non-maps are replaced; `none` arguments are skipped; a key set to `omit()` is removed |
//! | `sha256(x)` | hex sha256 of a string, or of the compact JSON of any other value |
//! | `hash(x, n=8)` | the first `n` hex characters of `sha256(x)` |
//! | `b64encode(s)`, `b64decode(s)` | standard base64; decoding invalid base64 or non-UTF-8 bytes is an error |
//! | `tojson(x, indent=n)` | compact JSON (pretty with `indent`) |
//! | `fromjson(s)` | the value JSON text describes |
//! | `endpoints \| service_ports` | the workload's endpoints as Kubernetes `ServicePort`s |
//! | `files \| file_mounts(volume)` | one `VolumeMount` per file of `volume`, `subPath` its name |
//! | `items \| to_map(key, value)` | a map from each item's `key` attribute to its `value` attribute |
//!
//! and the test `containing`: `endpoints | selectattr("visibility", "containing", "external")`.
//!
//! The last six also work as filters (`x | sha256`); the `tojson` filter is replaced by the
//! function so both spell JSON the same way. Division `/` yields a float (`10 / 2` is `5.0`);
//! use `//` or `| int` for integers.
//!
//! # Bounds
//!
//! A render is bounded as a whole by a [`Budget`] of [`Limits`]: fuel, output bytes, objects
//! and forEach iterations, shared by every call made with the render's [`Context`] (each
//! error names the budget, its value and the server flag that sets it), plus the recursion
//! limit, which bounds each value. A call given a bare JSON context is a render of its own.
//!
//! minijinja 3 accounts fuel per evaluation: each `Expression::eval` builds a fresh `State`
//! whose tracker starts at `Environment::fuel()`, so nothing carries over between evaluations
//! or calls. To make the budget per render, the environment's fuel is only a ceiling
//! (2^56) and every expression is compiled as `__troupe_meter(__troupe_charge(), (expr))`. The
//! render's meter rides in the evaluation scope; `__troupe_charge` runs first and consumes the
//! ceiling minus what the render has left, so the expression can only spend the remainder, and
//! `__troupe_meter` books what it did spend (meters only ever add, so an expression cannot
//! give fuel back).
//!
//! Output bytes are charged as the JSON is built, before each string is copied, against what
//! the render has left; a call books what it built when it ends. Objects are counted before
//! each is rendered, forEach items before the loop runs.
//!
//! Compiled expressions are cached per engine, keyed by their text; the context is converted
//! to a minijinja value once per call, and a `forEach` iteration binds its variable in a
//! small scope object instead of copying the context.

mod budget;
mod functions;
mod parse;
mod resource;
mod value;
mod walk;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, Expression};
use serde_json::Value as Json;

pub use self::budget::{Budget, Spent};

use self::budget::out_of_fuel;
use self::functions::{CHARGE_FN, ENV_FUEL, METER_FN};
use self::resource::control_expression;
use self::value::{Layer, to_json};
use self::walk::{Call, Loc, error};

/// Evaluation bounds: all but `recursion` are one budget for a whole render (see
/// [`Budget`]); the server sets them with the `--render-*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// minijinja fuel for every expression of one render (about one unit per instruction,
    /// per 64 bytes of data produced, per item visited; one per object a patch visits).
    pub fuel: u64,
    /// How deep templates, values and minijinja's own recursion may nest (minijinja caps
    /// this at 500).
    pub recursion: usize,
    /// Approximate bytes of JSON one render may build: its objects, patch values and control
    /// fields together.
    pub max_output_bytes: usize,
    /// Objects one render's resource entries may produce.
    pub max_objects: usize,
    /// forEach items one render may iterate, resource entries and patches together.
    pub max_iterations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 1_000_000,
            recursion: 64,
            max_output_bytes: 8 << 20,
            max_objects: 1_000,
            max_iterations: 10_000,
        }
    }
}

/// A template error: where, which expression, what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {}{message}", quoted(expression))]
pub struct TemplateError {
    /// JSON pointer of the string (for a key: the map's path plus the key).
    pub path: String,
    /// The expression's source, empty when the error is not about one expression.
    pub expression: String,
    /// What went wrong.
    pub message: String,
}

fn quoted(expression: &str) -> String {
    if expression.is_empty() {
        String::new()
    } else {
        format!("`{expression}`: ")
    }
}

/// One render's context: its variables, converted once ([`Engine::context`]), and its
/// [`Budget`]. Every call made with it, or with a context [`Context::with`] makes from it,
/// draws on that one budget.
#[derive(Debug, Clone)]
pub struct Context {
    vars: Value,
    budget: Arc<Budget>,
}

impl Context {
    /// This context with `vars` set on top, replacing variables of the same name; the
    /// context itself is shared, not copied or converted again, and so is the budget.
    pub fn with(&self, vars: &[(&str, &Json)]) -> Context {
        Context {
            vars: Value::from_object(Layer {
                base: self.vars.clone(),
                vars: vars.iter().map(bind).collect(),
            }),
            budget: self.budget.clone(),
        }
    }

    /// The render's budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

/// What the engine accepts as a render context: a JSON object (a render of its own, with a
/// fresh budget), or a [`Context`] (a part of its render).
pub trait AsContext {
    /// The context, with a fresh budget of `limits` if it has none; `None` when it is not a
    /// JSON object.
    fn to_context(&self, limits: Limits) -> Option<Context>;
}

impl AsContext for &Json {
    fn to_context(&self, limits: Limits) -> Option<Context> {
        self.is_object().then(|| Context {
            vars: Value::from(minijinja::value::Serde(*self)),
            budget: Arc::new(Budget::new(limits)),
        })
    }
}

impl AsContext for &Context {
    fn to_context(&self, _: Limits) -> Option<Context> {
        Some((*self).clone())
    }
}

fn bind(&(name, value): &(&str, &Json)) -> (String, Value) {
    (
        name.to_string(),
        Value::from(minijinja::value::Serde(value)),
    )
}

/// The control fields of one resource entry (strings empty when unset).
#[derive(Debug, Clone, Copy)]
pub struct ResourceEntry<'a> {
    /// `${{ bool }}`: no object when false.
    pub include_when: &'a str,
    /// `${{ list-or-map }}`: one object per item.
    pub for_each: &'a str,
    /// The loop variable's name; required with `for_each`.
    pub var: &'a str,
    /// The object's template.
    pub template: &'a Json,
}

/// Compiled expressions kept per engine; the cache is cleared when it reaches this size so
/// templates that come and go cannot grow it without bound.
const CACHE_CAPACITY: usize = 16_384;

type Compiled = Arc<Expression<'static, 'static>>;

/// The template engine: one per process (holds the minijinja environment, the helper
/// functions and the compiled-expression cache). `Send + Sync`.
pub struct Engine {
    env: &'static Environment<'static>,
    limits: Limits,
    cache: Mutex<HashMap<Box<str>, Compiled>>,
}

const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Engine>();
};

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Engine {
    /// An engine with the given bounds (`fuel` is capped at 2^56).
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            fuel: limits.fuel.min(ENV_FUEL),
            ..limits
        };
        Engine {
            env: functions::environment(limits.recursion),
            limits,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The engine's bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles every expression in `template` without evaluating it. `path` is the
    /// JSON-pointer prefix for error paths.
    pub fn check(&self, path: &str, template: &Json) -> Result<(), TemplateError> {
        self.check_node(&Loc::Root(path), template, self.limits.recursion)
    }

    /// Checks a control field (includeWhen, forEach, where, a validation rule): exactly one
    /// `${{ expr }}` that compiles.
    pub fn check_field(&self, path: &str, field: &str) -> Result<(), TemplateError> {
        let expr = control_expression(&Loc::Root(path), field)?;
        self.compiled(expr)
            .map(drop)
            .map_err(|message| error(&Loc::Root(path), expr, message))
    }

    /// Renders a template tree against `context` (a JSON object of the variables).
    pub fn render(
        &self,
        path: &str,
        template: &Json,
        context: impl AsContext,
    ) -> Result<Json, TemplateError> {
        self.render_bound(path, template, context, &[])
    }

    /// [`Engine::render`] with more variables, `(name, value)` pairs, visible on top of the
    /// context (the context itself is not copied).
    pub fn render_bound(
        &self,
        path: &str,
        template: &Json,
        context: impl AsContext,
        bound: &[(&str, &Json)],
    ) -> Result<Json, TemplateError> {
        let loc = Loc::Root(path);
        let call = self.call(&loc, context)?;
        let root = call.bind(bound).map_err(|m| error(&loc, "", m))?;
        self.render_node(&call, &root, &loc, template, self.limits.recursion)?
            .ok_or_else(|| error(&loc, "", "the template root evaluated to omit()"))
    }

    /// Evaluates one `${{ expr }}` control field (includeWhen, forEach, where, validation
    /// rule) to a typed value.
    pub fn eval(
        &self,
        path: &str,
        field: &str,
        context: impl AsContext,
    ) -> Result<Json, TemplateError> {
        self.eval_bound(path, field, context, &[])
    }

    /// [`Engine::eval`] with more variables, `(name, value)` pairs, visible on top of the
    /// context (the context itself is not copied).
    pub fn eval_bound(
        &self,
        path: &str,
        field: &str,
        context: impl AsContext,
        bound: &[(&str, &Json)],
    ) -> Result<Json, TemplateError> {
        let loc = Loc::Root(path);
        let call = self.call(&loc, context)?;
        let expr = control_expression(&loc, field)?;
        let scope = call.bind(bound).map_err(|m| error(&loc, expr, m))?;
        let value = self
            .evaluate(&scope, expr)
            .map_err(|m| error(&loc, expr, m))?;
        to_json(&value, &call.sizer, self.limits.recursion)
            .map_err(|m| error(&loc, expr, m))?
            .ok_or_else(|| error(&loc, expr, "omit() is not a value here"))
    }

    /// Converts a render context once, for the many calls of one render (each call otherwise
    /// converts its JSON context again), with a fresh budget of the engine's limits.
    pub fn context(&self, context: &Json) -> Result<Context, TemplateError> {
        if !context.is_object() {
            return Err(error(
                &Loc::Root(""),
                "",
                "the render context must be a JSON object",
            ));
        }
        Ok(Context {
            vars: Value::from(minijinja::value::Serde(context)),
            budget: Arc::new(Budget::new(self.limits)),
        })
    }

    fn call(&self, loc: &Loc<'_>, context: impl AsContext) -> Result<Call, TemplateError> {
        let context = context
            .to_context(self.limits)
            .ok_or_else(|| error(loc, "", "the render context must be a JSON object"))?;
        Ok(Call::new(context))
    }

    /// Evaluates one expression in `scope`, charging the scope's render meter.
    fn evaluate(&self, scope: &Value, expr: &str) -> Result<Value, String> {
        let compiled = self.compiled(expr)?;
        compiled.eval(scope.clone()).map_err(|e| self.describe(&e))
    }

    /// The compiled, metered form of `expr`, from the cache or compiled now.
    fn compiled(&self, expr: &str) -> Result<Compiled, String> {
        let lock = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(compiled) = lock().get(expr) {
            return Ok(compiled.clone());
        }
        // The bare expression is compiled first: wrapping could make a malformed one (`a), (b`)
        // parse, and its syntax errors point into the user's text.
        self.env
            .compile_expression_owned(expr.to_owned())
            .map_err(|e| self.describe(&e))?;
        let metered = format!("{METER_FN}({CHARGE_FN}(), ({expr}))");
        let compiled = Arc::new(
            self.env
                .compile_expression_owned(metered)
                .map_err(|e| self.describe(&e))?,
        );
        let mut cache = lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(expr.into(), compiled.clone());
        Ok(compiled)
    }

    /// A minijinja error as a message, naming the bound for bound errors.
    fn describe(&self, err: &Error) -> String {
        if err.kind() == ErrorKind::OutOfFuel {
            return out_of_fuel(self.limits.fuel);
        }
        if err
            .detail()
            .is_some_and(|d| d.contains("recursion limit exceeded"))
        {
            return format!(
                "template evaluation exceeded the recursion limit ({} levels)",
                self.limits.recursion
            );
        }
        let mut message = match err.detail() {
            Some(detail) => format!("{}: {detail}", err.kind()),
            None => err.kind().to_string(),
        };
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        message
    }
}

//! The bridge between JSON and minijinja values: the evaluation scope, the `omit()` sentinel,
//! the per-render fuel meter, and the conversion of results back to JSON under the output bound.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use minijinja::value::{Enumerator, Object, ObjectRepr, Value, ValueKind};
use serde_json::{Map, Number, Value as Json};

use super::budget::too_much_output;

/// The context variable under which a render's [`Meter`] is reachable from the fuel
/// functions. Looked up before the loop variable, so a `var` cannot shadow it.
pub(super) const METER_VAR: &str = "__troupe_fuel";

/// What `omit()` returns: removes the map entry or list item it lands in.
#[derive(Debug)]
pub(super) struct Omit;

impl Object for Omit {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
}

/// Whether `value` is the `omit()` sentinel.
pub(super) fn is_omit(value: &Value) -> bool {
    value.downcast_object_ref::<Omit>().is_some()
}

/// A render context with some variables replaced (a trait's `parameters`, say), sharing the
/// rest of the context instead of copying it.
#[derive(Debug)]
pub(super) struct Layer {
    pub base: Value,
    pub vars: Vec<(String, Value)>,
}

impl Layer {
    fn lookup(&self, key: &str) -> Option<Value> {
        if let Some((_, value)) = self.vars.iter().find(|(name, _)| name == key) {
            return Some(value.clone());
        }
        self.base.get_attr(key).ok().filter(|v| !v.is_undefined())
    }
}

impl Object for Layer {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().and_then(|key| self.lookup(key))
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.lookup(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }
}

/// The fuel one render may still spend, shared by all its expression evaluations.
#[derive(Debug)]
pub(super) struct Meter {
    /// The render's budget (`Limits::fuel`).
    limit: u64,
    /// Fuel spent so far.
    spent: AtomicU64,
}

impl Meter {
    /// A meter with `limit` fuel, none spent.
    pub fn new(limit: u64) -> Self {
        Meter {
            limit,
            spent: AtomicU64::new(0),
        }
    }

    /// Fuel the render has left.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.spent())
    }

    /// Fuel spent so far.
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }

    /// Books `fuel` as spent (meters only ever add).
    pub fn book(&self, fuel: u64) {
        self.spent.fetch_add(fuel, Ordering::Relaxed);
    }
}

impl Object for Meter {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
}

/// The root every expression is evaluated against: the call's context, the variables bound
/// on top of it (a forEach loop variable, the object a rule looks at), and the meter. Binding
/// makes a new scope without copying the context.
#[derive(Debug)]
pub(super) struct Scope {
    pub context: Value,
    pub bound: Vec<(String, Value)>,
    pub meter: Value,
}

impl Scope {
    fn lookup(&self, key: &str) -> Option<Value> {
        if key == METER_VAR {
            return Some(self.meter.clone());
        }
        if let Some((_, value)) = self.bound.iter().find(|(name, _)| name == key) {
            return Some(value.clone());
        }
        self.context
            .get_attr(key)
            .ok()
            .filter(|v| !v.is_undefined())
    }
}

impl Object for Scope {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().and_then(|key| self.lookup(key))
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.lookup(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }
}

/// Approximate JSON sizes charged against the output bound.
const SCALAR_SIZE: usize = 8;
const CONTAINER_SIZE: usize = 2;

/// The output bound of one engine call: approximate bytes of rendered JSON, at most what its
/// render has left.
#[derive(Debug)]
pub(super) struct Sizer {
    /// What this call may build.
    max: usize,
    /// The render's whole budget, for the message.
    budget: usize,
    used: Cell<usize>,
}

impl Sizer {
    /// A bound of `max` bytes, out of a render `budget` (named when it is exceeded).
    pub fn new(max: usize, budget: usize) -> Self {
        Sizer {
            max,
            budget,
            used: Cell::new(0),
        }
    }

    /// Bytes charged so far.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// A copy to charge tentatively: same limit, same usage, not committed.
    pub fn scratch(&self) -> Sizer {
        Sizer {
            max: self.max,
            budget: self.budget,
            used: Cell::new(self.used.get()),
        }
    }

    /// Charges `bytes`; fails once the total passes the bound.
    pub fn charge(&self, bytes: usize) -> Result<(), String> {
        let used = self.used.get().saturating_add(bytes);
        if used > self.max {
            return Err(too_much_output(self.budget));
        }
        self.used.set(used);
        Ok(())
    }

    /// Charges the approximate size of a literal JSON value.
    pub fn charge_json(&self, value: &Json) -> Result<(), String> {
        match value {
            Json::String(s) => self.charge(s.len() + 2),
            Json::Array(items) => {
                self.charge(CONTAINER_SIZE + items.len())?;
                items.iter().try_for_each(|item| self.charge_json(item))
            }
            Json::Object(map) => {
                self.charge(CONTAINER_SIZE)?;
                map.iter().try_for_each(|(key, value)| {
                    self.charge(key.len() + 4)?;
                    self.charge_json(value)
                })
            }
            Json::Null | Json::Bool(_) | Json::Number(_) => self.charge(SCALAR_SIZE),
        }
    }
}

/// Converts an evaluation result to JSON. `None` means the value is `omit()`; `omit()` items
/// inside lists and maps are dropped. Integers stay integers. Nesting deeper than `depth`
/// levels is refused.
pub(super) fn to_json(value: &Value, sizer: &Sizer, depth: usize) -> Result<Option<Json>, String> {
    if depth == 0 {
        return Err("value nests too deeply (recursion limit)".into());
    }
    let json = match value.kind() {
        ValueKind::Undefined => {
            return Err("the result is or contains an undefined value \
                 (`a if b` without `else` is undefined when b is false; `else omit()` drops the field)"
                .into());
        }
        ValueKind::None => {
            sizer.charge(SCALAR_SIZE)?;
            Json::Null
        }
        ValueKind::Bool => {
            sizer.charge(SCALAR_SIZE)?;
            Json::Bool(value.is_true())
        }
        ValueKind::Number => {
            sizer.charge(SCALAR_SIZE)?;
            Json::Number(to_number(value)?)
        }
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            sizer.charge(s.len() + 2)?;
            Json::String(s.to_owned())
        }
        ValueKind::Seq | ValueKind::Iterable => {
            sizer.charge(CONTAINER_SIZE)?;
            let mut items = Vec::with_capacity(value.len().unwrap_or(0));
            for item in value.try_iter().map_err(|e| e.to_string())? {
                sizer.charge(1)?;
                items.extend(to_json(&item, sizer, depth - 1)?);
            }
            Json::Array(items)
        }
        ValueKind::Map => {
            sizer.charge(CONTAINER_SIZE)?;
            let mut map = Map::new();
            for key in value.try_iter().map_err(|e| e.to_string())? {
                let item = value.get_item(&key).map_err(|e| e.to_string())?;
                let key = to_key(&key)?;
                sizer.charge(key.len() + 4)?;
                if let Some(item) = to_json(&item, sizer, depth - 1)? {
                    map.insert(key, item);
                }
            }
            Json::Object(map)
        }
        ValueKind::Plain if is_omit(value) => return Ok(None),
        kind => return Err(format!("a {kind} value cannot be rendered")),
    };
    Ok(Some(json))
}

/// A map key as a string: strings as-is, numbers and bools in their JSON spelling.
pub(super) fn to_key(key: &Value) -> Result<String, String> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number => Ok(to_number(key)?.to_string()),
        ValueKind::Bool => Ok(key.is_true().to_string()),
        kind => Err(format!(
            "a map key must be a string or a number, got {kind}"
        )),
    }
}

fn to_number(value: &Value) -> Result<Number, String> {
    if value.is_integer() {
        if let Ok(i) = i64::try_from(value.clone()) {
            return Ok(i.into());
        }
        if let Ok(u) = u64::try_from(value.clone()) {
            return Ok(u.into());
        }
        return Err(format!("integer {value} is out of range"));
    }
    f64::try_from(value.clone())
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| format!("{value} is not a finite number"))
}

/// Formats a value for interpolation into a string: strings as-is, null as nothing, anything
/// else as compact JSON.
pub(super) fn interpolate(value: &Json, out: &mut String) {
    match value {
        Json::String(s) => out.push_str(s),
        Json::Null => {}
        other => out.push_str(&other.to_string()),
    }
}

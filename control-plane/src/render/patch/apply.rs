//! Applying an operation at a parsed [`Path`]: the walk that fans out over selectors, creates
//! what `add` may create, and names the segment that failed.

use serde_json::{Map, Value};

use super::path::{Path, Segment, Selector, escape, index};
use super::{Op, PatchError};

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

const ADD_TO_SELECTOR: &str = "add needs a key, an index or '-' as its last segment; use replace to overwrite selected elements";

/// Applies `op` at every location `path` reaches in `object` and returns how many there were.
///
/// - `add` sets a map key (overwriting it), creating missing (or null) maps along a path of
///   plain keys; on an array it inserts at an index (up to the length) or, with `-` as the last
///   segment, appends, creating the array when its key is missing (or null). A list value
///   appended with `-` becomes one element. It never creates an array to insert at an index.
/// - `replace` overwrites an existing location; with a selector last, every selected element.
/// - `remove` deletes an existing key or element; with a selector last, every selected element.
///
/// `value` is required for add and replace and ignored for remove. Zero locations (a selector
/// that matched nothing) is `Ok(0)`; on error `object` is unchanged.
pub fn apply(
    object: &mut Value,
    op: Op,
    path: &Path,
    value: Option<&Value>,
) -> Result<usize, PatchError> {
    let action = match (op, value) {
        (Op::Add, Some(v)) => Action::Add(v),
        (Op::Replace, Some(v)) => Action::Replace(v),
        (Op::Remove, _) => Action::Remove,
        (Op::Add | Op::Replace, None) => {
            return Err(PatchError::MissingValue {
                op,
                path: path.raw.clone(),
            });
        }
    };
    // Checked before walking so the mistake shows even when nothing is selected.
    let ends_in_selector = path
        .segments
        .last()
        .is_some_and(|s| !matches!(s.selector, Selector::Key(_)));
    if op == Op::Add && ends_in_selector {
        let reason = ADD_TO_SELECTOR;
        return Err(PatchError::Unsupported {
            op,
            path: path.raw.clone(),
            reason,
        });
    }
    // Work on a copy so a failure half-way through a fan-out leaves the object as it was.
    let mut work = object.clone();
    let mut walk = Walk {
        action,
        path,
        loc: String::new(),
    };
    let changed = walk.visit(&mut work, &path.segments)?;
    if changed > 0 {
        *object = work;
    }
    Ok(changed)
}

#[derive(Clone, Copy)]
enum Action<'v> {
    Add(&'v Value),
    Replace(&'v Value),
    Remove,
}

/// One application of a path; `loc` is the concrete pointer of the node being visited.
struct Walk<'p> {
    action: Action<'p>,
    path: &'p Path,
    loc: String,
}

impl Walk<'_> {
    fn op(&self) -> Op {
        match self.action {
            Action::Add(_) => Op::Add,
            Action::Replace(_) => Op::Replace,
            Action::Remove => Op::Remove,
        }
    }

    fn visit(&mut self, node: &mut Value, segments: &[Segment]) -> Result<usize, PatchError> {
        match segments {
            [] => Ok(0),
            [last] => self.last(node, last),
            [segment, rest @ ..] => match (&segment.selector, node) {
                (Selector::Key(key), Value::Object(map)) => {
                    let absent = map.get(key).is_none_or(Value::is_null);
                    if absent && !matches!(rest[0].selector, Selector::Key(_)) {
                        return Ok(0); // a missing or null list has nothing to select
                    }
                    if let Some(created) = absent.then(|| self.created(rest)).flatten() {
                        map.insert(key.clone(), created);
                    }
                    match map.get_mut(key) {
                        Some(child) => self.nested(&escape(key), child, rest),
                        None => Err(self.not_found(segment)),
                    }
                }
                (Selector::Key(key), Value::Array(items)) => {
                    let len = items.len();
                    match index(key) {
                        Some(i) if i < len => self.nested(&i.to_string(), &mut items[i], rest),
                        Some(_) => Err(self.out_of_range(segment, len)),
                        None if key == "-" => Err(self.unsupported(
                            "'-' (the end of an array) can only be the last segment of an add",
                        )),
                        None => Err(self.wrong_type(segment, "a map", "an array")),
                    }
                }
                (Selector::Key(_), other) => {
                    Err(self.wrong_type(segment, "a map or an array", type_of(other)))
                }
                (selector, Value::Array(items)) => {
                    let mut changed = 0;
                    for (i, item) in items.iter_mut().enumerate() {
                        if selector.selects(item) {
                            changed += self.nested(&i.to_string(), item, rest)?;
                        }
                    }
                    Ok(changed)
                }
                (_, other) => Err(self.wrong_type(segment, "an array", type_of(other))),
            },
        }
    }

    /// What add puts at a missing (or null) key followed by `rest`: a map when map keys lead to
    /// the end, or to a final `-` whose array is created in turn; the empty array when `rest`
    /// is that `-` alone, so an optional list can be appended to. Nothing for a selector to find
    /// empty, nor where an array index shows an existing array was meant.
    fn created(&self, rest: &[Segment]) -> Option<Value> {
        fn key(s: &Segment) -> Option<&str> {
            match &s.selector {
                Selector::Key(k) => Some(k),
                _ => None,
            }
        }
        let (keys, appends) = match rest.split_last() {
            Some((last, keys)) if key(last) == Some("-") => (keys, true),
            _ => (rest, false),
        };
        let map_key = |s: &Segment| key(s).is_some_and(|k| k != "-" && index(k).is_none());
        if !matches!(self.action, Action::Add(_)) || !keys.iter().all(map_key) {
            return None;
        }
        Some(if appends && keys.is_empty() {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        })
    }

    fn nested(
        &mut self,
        token: &str,
        child: &mut Value,
        rest: &[Segment],
    ) -> Result<usize, PatchError> {
        let len = self.loc.len();
        self.loc.push('/');
        self.loc.push_str(token);
        let changed = self.visit(child, rest);
        self.loc.truncate(len);
        changed
    }

    fn last(&mut self, node: &mut Value, segment: &Segment) -> Result<usize, PatchError> {
        match (&segment.selector, node) {
            (Selector::Key(key), Value::Object(map)) => match self.action {
                Action::Add(v) => {
                    map.insert(key.clone(), v.clone());
                    Ok(1)
                }
                Action::Replace(v) => match map.get_mut(key) {
                    Some(slot) => {
                        *slot = v.clone();
                        Ok(1)
                    }
                    None => Err(self.not_found(segment)),
                },
                // `retain` keeps the other keys' order even under serde_json's `preserve_order`,
                // where `remove` would swap the last key into the hole.
                Action::Remove if map.contains_key(key) => {
                    map.retain(|k, _| k != key);
                    Ok(1)
                }
                Action::Remove => Err(self.not_found(segment)),
            },
            (Selector::Key(key), Value::Array(items)) => {
                let len = items.len();
                let Some(i) = index(key) else {
                    return match (key.as_str(), self.action) {
                        ("-", Action::Add(v)) => {
                            items.push(v.clone());
                            Ok(1)
                        }
                        ("-", _) => {
                            Err(self.unsupported("'-' (the end of an array) only works with add"))
                        }
                        _ => Err(self.wrong_type(segment, "a map", "an array")),
                    };
                };
                match self.action {
                    Action::Add(v) if i <= len => items.insert(i, v.clone()),
                    Action::Replace(v) if i < len => items[i] = v.clone(),
                    Action::Remove if i < len => drop(items.remove(i)),
                    _ => return Err(self.out_of_range(segment, len)),
                }
                Ok(1)
            }
            (Selector::Key(_), other) => {
                Err(self.wrong_type(segment, "a map or an array", type_of(other)))
            }
            (selector, Value::Array(items)) => {
                let selected: Vec<usize> = (0..items.len())
                    .filter(|&i| selector.selects(&items[i]))
                    .collect();
                match self.action {
                    Action::Add(_) => return Err(self.unsupported(ADD_TO_SELECTOR)),
                    Action::Replace(v) => selected.iter().for_each(|&i| items[i] = v.clone()),
                    // From the highest index down, so the lower indices stay valid.
                    Action::Remove => selected.iter().rev().for_each(|&i| drop(items.remove(i))),
                }
                Ok(selected.len())
            }
            (_, other) => Err(self.wrong_type(segment, "an array", type_of(other))),
        }
    }

    fn not_found(&self, segment: &Segment) -> PatchError {
        PatchError::NotFound {
            op: self.op(),
            path: self.path.raw.clone(),
            at: segment.raw.clone(),
            parent: self.loc.clone(),
        }
    }

    fn out_of_range(&self, segment: &Segment, len: usize) -> PatchError {
        let (op, path, at, parent) = (
            self.op(),
            self.path.raw.clone(),
            segment.raw.clone(),
            self.loc.clone(),
        );
        PatchError::OutOfRange {
            op,
            path,
            at,
            parent,
            len,
        }
    }

    fn wrong_type(
        &self,
        segment: &Segment,
        expected: &'static str,
        found: &'static str,
    ) -> PatchError {
        let (op, path, at, parent) = (
            self.op(),
            self.path.raw.clone(),
            segment.raw.clone(),
            self.loc.clone(),
        );
        PatchError::WrongType {
            op,
            path,
            at,
            parent,
            expected,
            found,
        }
    }

    fn unsupported(&self, reason: &'static str) -> PatchError {
        PatchError::Unsupported {
            op: self.op(),
            path: self.path.raw.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests;

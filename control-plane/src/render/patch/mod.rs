//! Trait patches: the small language traits use to change objects rendered before them
//! (DESIGN §3, "Traits"). Pure functions over `serde_json::Value`.
//!
//! A patch first selects objects by group, version and kind ([`matches`]; the optional `where`
//! expression is the caller's, evaluated with the template engine), then applies operations:
//! an [`Op`] at a [`Path`] with an optional value ([`apply`]).
//!
//! Paths are JSON pointers (RFC 6901: `~0` for `~`, `~1` for `/`) with array selectors, either
//! as their own segment or as a suffix of a key (`/containers/[*]` or `/containers[*]`):
//! - `[*]` selects every element of an array;
//! - `[?(@.a.b=='v')]` selects the elements whose field `a.b` equals the literal (`!=` for the
//!   opposite; a missing field is unequal to everything). Literals are single- or double-quoted
//!   strings, integers, `true` or `false`; `@` alone compares the element itself. One
//!   comparison only: no `&&`, `||` or nested brackets. Strings are taken verbatim (they may
//!   contain `/`), but cannot contain their own quote character.
//!
//! Brackets are reserved for selectors, so a key containing `[` or `]` is rejected (Kubernetes
//! field, label and annotation keys never contain them), which catches `containers[0]`.
//!
//! Selection fans out: every location a path reaches is changed, and [`apply`] says how many.
//! A selector that matches nothing (an empty list, no element passing the filter, or a missing
//! or null list) yields zero locations; whether that is an error is the caller's call. A missing
//! plain segment or a value of the wrong type is an error naming the segment and where it was
//! looked for. A failed [`apply`] leaves the object untouched.
//!
//! [`Path`] and its parser live in `path`, the walk that applies an operation in `apply`.

mod apply;
mod path;
#[cfg(test)]
mod props;

use serde_json::Value;

pub use apply::apply;
pub use path::Path;

/// Which objects a patch applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// API group; `""` is the core group (`apiVersion: v1`).
    pub group: &'a str,
    /// API version; `""` or `"*"` matches any version.
    pub version: &'a str,
    /// Kind, matched exactly.
    pub kind: &'a str,
}

/// Whether `object`'s `apiVersion` and `kind` fall under `target`. An object without an
/// `apiVersion` or `kind` matches nothing.
pub fn matches(target: &Target<'_>, object: &Value) -> bool {
    let Some(api_version) = object.get("apiVersion").and_then(Value::as_str) else {
        return false;
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    !version.is_empty()
        && group == target.group
        && (target.version.is_empty() || target.version == "*" || target.version == version)
        && object.get("kind").and_then(Value::as_str) == Some(target.kind)
}

/// A patch operation (the add / replace / remove subset of RFC 6902).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Sets a map key (creating missing maps on the way), inserts into or appends to an array
    /// (creating a missing one to append to).
    Add,
    /// Overwrites a location that must exist.
    Replace,
    /// Deletes a location that must exist.
    Remove,
}

impl Op {
    /// Parses `add`, `replace` or `remove`.
    pub fn parse(op: &str) -> Result<Op, PatchError> {
        match op {
            "add" => Ok(Op::Add),
            "replace" => Ok(Op::Replace),
            "remove" => Ok(Op::Remove),
            _ => Err(PatchError::UnknownOp { op: op.to_owned() }),
        }
    }

    /// The operation's name as written in a patch.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Replace => "replace",
            Op::Remove => "remove",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a path could not be parsed or a patch could not be applied. `path` is the path as
/// written, `at` the segment where it failed and `parent` the concrete location (array indices
/// resolved) it was looked up in, `""` being the object's root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The path does not start with `/`.
    #[error("invalid patch path {path:?}: it must start with '/' (e.g. /spec/replicas)")]
    MissingSlash {
        /// The path as written.
        path: String,
    },
    /// A segment of the path does not follow the grammar.
    #[error("invalid patch path {path:?} at segment {segment:?}: {reason}")]
    Malformed {
        /// The path as written.
        path: String,
        /// The offending segment as written.
        segment: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The op is not one of add, replace or remove.
    #[error("unknown patch op {op:?}: use add, replace or remove")]
    UnknownOp {
        /// The op as written.
        op: String,
    },
    /// An add or replace without a value.
    #[error("{op} {path} needs a value")]
    MissingValue {
        /// The operation.
        op: Op,
        /// The path as written.
        path: String,
    },
    /// A plain segment names nothing.
    #[error("cannot {op} {path}: {at:?} does not exist under {}{}", shown(.parent), hint(*.op))]
    NotFound {
        /// The operation.
        op: Op,
        /// The path as written.
        path: String,
        /// The missing segment.
        at: String,
        /// Where it was looked up.
        parent: String,
    },
    /// An array index at or past the end (past `len` for an add).
    #[error("cannot {op} {path}: index {at} is out of range for the array at {} (length {len})", shown(.parent))]
    OutOfRange {
        /// The operation.
        op: Op,
        /// The path as written.
        path: String,
        /// The index as written.
        at: String,
        /// Where the array is.
        parent: String,
        /// The array's length.
        len: usize,
    },
    /// A segment met a value it cannot step into, such as a key on a string.
    #[error("cannot {op} {path}: segment {at:?} needs {expected} at {}, found {found}", shown(.parent))]
    WrongType {
        /// The operation.
        op: Op,
        /// The path as written.
        path: String,
        /// The segment as written.
        at: String,
        /// Where the value is.
        parent: String,
        /// What the segment needs.
        expected: &'static str,
        /// What is there.
        found: &'static str,
    },
    /// The operation cannot be expressed at that path.
    #[error("cannot {op} {path}: {reason}")]
    Unsupported {
        /// The operation.
        op: Op,
        /// The path as written.
        path: String,
        /// Why, and what to write instead.
        reason: &'static str,
    },
}

fn shown(parent: &str) -> &str {
    if parent.is_empty() {
        "the root"
    } else {
        parent
    }
}

fn hint(op: Op) -> &'static str {
    match op {
        Op::Add => " (add creates missing maps, and a missing array only to append to it with '-')",
        Op::Replace => " (replace needs an existing location; use add to create one)",
        Op::Remove => "",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn target_matches_core_and_grouped_kinds_and_any_version() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment"});
        let service = json!({"apiVersion": "v1", "kind": "Service"});
        let t = |group, version, kind| Target {
            group,
            version,
            kind,
        };
        assert!(matches(&t("apps", "v1", "Deployment"), &deployment));
        assert!(matches(&t("apps", "*", "Deployment"), &deployment));
        assert!(matches(&t("apps", "", "Deployment"), &deployment));
        assert!(!matches(&t("apps", "v2", "Deployment"), &deployment));
        assert!(
            !matches(&t("", "v1", "Deployment"), &deployment),
            "core group is not apps"
        );
        assert!(!matches(&t("apps", "v1", "StatefulSet"), &deployment));
        assert!(matches(&t("", "v1", "Service"), &service));
        assert!(
            !matches(&t("v1", "v1", "Service"), &service),
            "core is the empty group"
        );
        assert!(
            !matches(&t("", "*", "Service"), &json!({"kind": "Service"})),
            "no apiVersion"
        );
    }

    #[test]
    fn ops_parse() {
        assert_eq!(Op::parse("add"), Ok(Op::Add));
        assert_eq!(Op::parse("replace"), Ok(Op::Replace));
        assert_eq!(Op::parse("remove"), Ok(Op::Remove));
        assert_eq!(
            Op::parse("move"),
            Err(PatchError::UnknownOp { op: "move".into() })
        );
        assert_eq!(Op::Remove.to_string(), "remove");
    }
}

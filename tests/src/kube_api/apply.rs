//! Writes and who owns what they wrote. Server-side apply ([`apply`]) tracks, per object,
//! which manager owns which leaf field (a JSON pointer; an array is one leaf): a field in the
//! body that another manager owns with a different value is a conflict (409, unless forced,
//! when the applier takes it over), and a field the applier owned before and left out goes
//! unless someone else owns it. The other writes ([`create`], [`update`], [`merge`],
//! [`replace`]) are `Update` operations: their manager takes the fields they set without
//! conflicts, as a controller's or kubectl's writes do. Every write ends in [`finish`], which
//! refuses changes to a Job's template or selector and bumps `metadata.generation` when more
//! than metadata and status changed.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::jobs;
use super::kinds::Kind;
use super::store::{Entry, Failure, Key, Later, Manager, Store, key};

/// What a successful write answers: the HTTP code, the stored object, what comes later.
pub(crate) type Written = (u16, Value, Vec<Later>);

/// The leaf fields of `object` a manager can own: everything but `apiVersion`, `kind`,
/// `status` and the server's metadata (labels, annotations, finalizers and owner references
/// are owned).
pub(crate) fn leaves(object: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, value) in object.as_object().into_iter().flatten() {
        match name.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for owned in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(value) = value.get(owned) {
                        collect(value, format!("/metadata/{owned}"), &mut out);
                    }
                }
            }
            _ => collect(value, format!("/{}", escape(name)), &mut out),
        }
    }
    out
}

fn collect(value: &Value, pointer: String, out: &mut BTreeSet<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (name, value) in map {
                collect(value, format!("{pointer}/{}", escape(name)), out);
            }
        }
        _ => {
            out.insert(pointer);
        }
    }
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The unescaped segments of a JSON pointer.
pub(crate) fn segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// A pointer as conflict messages name it: `.spec.replicas`.
fn dotted(pointer: &str) -> String {
    segments(pointer).iter().map(|s| format!(".{s}")).collect()
}

/// Sets `pointer` in `object` to `value`, making the objects on the way.
pub(crate) fn set(object: &mut Value, pointer: &str, value: Value) {
    let mut node = object;
    for segment in segments(pointer) {
        if !node.is_object() {
            *node = json!({});
        }
        node = node
            .as_object_mut()
            .expect("made an object above")
            .entry(segment)
            .or_insert(Value::Null);
    }
    *node = value;
}

/// Removes `pointer` from `object`, and the objects it leaves empty.
fn unset(object: &mut Value, pointer: &str) {
    let segments = segments(pointer);
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let parent_pointer: String = parents.iter().map(|s| format!("/{}", escape(s))).collect();
    if let Some(Value::Object(parent)) = object.pointer_mut(&parent_pointer) {
        parent.remove(last);
        if parent.is_empty() && !parents.is_empty() {
            unset(object, &parent_pointer);
        }
    }
}

/// Whether `a` and `b` overlap: the same field, or one inside the other.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

/// Built-in kinds are decoded into Go structs, where a number with a fraction part (even
/// `2.0`) is refused for an integer field; CRD-defined kinds take any JSON number.
pub(crate) fn check_numbers(kind: &Kind, body: &Value) -> Result<(), Failure> {
    fn float(value: &Value, path: &str) -> Option<(String, String)> {
        match value {
            Value::Number(n) if n.is_f64() => Some((path.to_string(), n.to_string())),
            Value::Object(map) => map
                .iter()
                .find_map(|(k, v)| float(v, &format!("{path}.{k}"))),
            Value::Array(items) => items.iter().find_map(|v| float(v, path)),
            _ => None,
        }
    }
    if !kind.builtin {
        return Ok(());
    }
    match float(body, &kind.kind) {
        None => Ok(()),
        Some((field, number)) => Err(Failure::bad_request(format!(
            "json: cannot unmarshal number {number} into Go struct field {field} of type int32"
        ))),
    }
}

/// The object `body` names must be the one the path names.
fn check_identity(kind: &Kind, namespace: &str, name: &str, body: &Value) -> Result<(), Failure> {
    let body_namespace = body["metadata"]["namespace"].as_str();
    if body["kind"] != kind.kind.as_str()
        || body["apiVersion"] != kind.api_version().as_str()
        || body["metadata"]["name"] != name
        || body_namespace.is_some_and(|ns| ns != namespace)
    {
        return Err(Failure::bad_request(format!(
            "the body ({} {} {}) does not match the path ({} {namespace}/{name})",
            body["apiVersion"],
            body["kind"],
            body["metadata"]["name"],
            kind.api_version()
        )));
    }
    Ok(())
}

/// A new, empty object of `kind` at `namespace/name`.
fn skeleton(kind: &Kind, namespace: &str, name: &str) -> Entry {
    let mut object = json!({"apiVersion": kind.api_version(), "kind": kind.kind,
                            "metadata": {"name": name}});
    if kind.namespaced {
        object["metadata"]["namespace"] = json!(namespace);
    }
    Entry {
        object,
        managers: Vec::new(),
    }
}

/// The existing entry at `key`, or a new one where its namespace exists.
fn existing_or_new(
    store: &Store,
    kind: &Kind,
    namespace: &str,
    name: &str,
) -> Result<(Option<Entry>, Entry), Failure> {
    let old = store.objects.get(&key(kind, namespace, name)).cloned();
    if old.is_none() && kind.namespaced {
        store.check_namespace(namespace)?;
    }
    let entry = old
        .clone()
        .unwrap_or_else(|| skeleton(kind, namespace, name));
    Ok((old, entry))
}

/// Gives `manager` the `fields` (with `operation`), taking them from everyone else.
fn take(
    entry: &mut Entry,
    kind: &Kind,
    manager: &str,
    operation: &'static str,
    fields: &BTreeSet<String>,
) {
    for other in entry.managers.iter_mut().filter(|m| m.name != manager) {
        other
            .fields
            .retain(|f| !fields.iter().any(|p| overlaps(f, p)));
    }
    own(entry, kind, manager, operation, fields.clone(), false);
}

/// Records `manager`'s fields: replacing what it had (`replace`) or adding to it.
fn own(
    entry: &mut Entry,
    kind: &Kind,
    manager: &str,
    operation: &'static str,
    fields: BTreeSet<String>,
    replace: bool,
) {
    match entry
        .managers
        .iter_mut()
        .find(|m| m.name == manager && m.operation == operation)
    {
        Some(m) if replace => m.fields = fields,
        Some(m) => m.fields.extend(fields),
        None => entry.managers.push(Manager {
            name: manager.into(),
            operation,
            api_version: kind.api_version(),
            fields,
        }),
    }
    entry.managers.retain(|m| !m.fields.is_empty());
}

/// Server-side apply of `body` by `manager` (see the module docs).
pub(crate) fn apply(
    store: &mut Store,
    kind: &Kind,
    namespace: &str,
    name: &str,
    manager: &str,
    force: bool,
    body: Value,
) -> Result<Written, Failure> {
    check_identity(kind, namespace, name, &body)?;
    check_numbers(kind, &body)?;
    let (old, mut entry) = existing_or_new(store, kind, namespace, name)?;
    let fields = leaves(&body);

    let mut conflicts: Vec<(String, String, String)> = Vec::new();
    for field in &fields {
        let (wanted, current) = (body.pointer(field), entry.object.pointer(field));
        for other in entry.managers.iter().filter(|m| m.name != manager) {
            if wanted != current && other.fields.iter().any(|f| overlaps(f, field)) {
                conflicts.push((other.name.clone(), other.api_version.clone(), field.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict(kind, name, &conflicts));
    }
    for (other, _, field) in &conflicts {
        for m in entry.managers.iter_mut().filter(|m| &m.name == other) {
            m.fields.retain(|f| !overlaps(f, field));
        }
    }

    let before = entry
        .managers
        .iter()
        .filter(|m| m.name == manager && m.operation == "Apply")
        .flat_map(|m| m.fields.clone())
        .collect::<BTreeSet<_>>();
    for dropped in before.difference(&fields) {
        let kept = entry
            .managers
            .iter()
            .any(|m| m.name != manager && m.fields.iter().any(|f| overlaps(f, dropped)));
        if !kept {
            unset(&mut entry.object, dropped);
        }
    }
    for field in &fields {
        let value = body.pointer(field).cloned().unwrap_or(Value::Null);
        let keep_map = value.as_object().is_some_and(Map::is_empty)
            && entry.object.pointer(field).is_some_and(Value::is_object);
        if !keep_map {
            set(&mut entry.object, field, value);
        }
    }
    own(&mut entry, kind, manager, "Apply", fields, true);
    finish(store, kind, key(kind, namespace, name), old, entry)
}

/// The 409 a real server gives for `conflicts` (manager, its apiVersion, field).
fn conflict(kind: &Kind, name: &str, conflicts: &[(String, String, String)]) -> Failure {
    let mut groups: Vec<(&str, &str, Vec<String>)> = Vec::new();
    for (manager, version, field) in conflicts {
        match groups.iter_mut().find(|g| g.0 == manager && g.1 == version) {
            Some(group) => group.2.push(dotted(field)),
            None => groups.push((manager, version, vec![dotted(field)])),
        }
    }
    let described: Vec<String> = groups
        .iter()
        .map(|(manager, version, fields)| match fields.as_slice() {
            [one] => format!("conflict with \"{manager}\" using {version}: {one}"),
            many => format!(
                "conflicts with \"{manager}\" using {version}:\n- {}",
                many.join("\n- ")
            ),
        })
        .collect();
    let n = conflicts.len();
    let message = format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        described.join("\n")
    );
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(manager, version, field)| {
            json!({"reason": "FieldManagerConflict",
                   "message": format!("conflict with \"{manager}\" using {version}"),
                   "field": dotted(field)})
        })
        .collect();
    Failure::new(409, "Conflict", message).with_details(
        json!({"name": name, "group": kind.group, "kind": kind.plural, "causes": causes}),
    )
}

/// Creates `object` (POST, or a test's `create`) as an `Update` by `manager`.
pub(crate) fn create(
    store: &mut Store,
    kind: &Kind,
    namespace: &str,
    manager: &str,
    mut object: Value,
) -> Result<Written, Failure> {
    check_numbers(kind, &object)?;
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
        return Err(Failure::new(
            422,
            "Invalid",
            format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                kind.qualified_kind()
            ),
        ));
    };
    if store.objects.contains_key(&key(kind, namespace, &name)) {
        return Err(Failure::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified()),
        )
        .with_details(json!({"name": name, "group": kind.group, "kind": kind.plural})));
    }
    let (old, mut entry) = existing_or_new(store, kind, namespace, &name)?;
    if let Some(metadata) = object["metadata"].as_object_mut() {
        for server_set in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            metadata.remove(server_set);
        }
        if kind.namespaced {
            metadata.insert("namespace".into(), json!(namespace));
        }
    }
    let fields = leaves(&object);
    entry.object = object;
    own(&mut entry, kind, manager, "Update", fields, false);
    finish(store, kind, key(kind, namespace, &name), old, entry)
}

/// Sets `pointer` of the object at `key` to `value` as an `Update` by `manager`, which takes
/// the fields set.
pub(crate) fn update(
    store: &mut Store,
    kind: &Kind,
    key: Key,
    manager: &str,
    pointer: &str,
    value: Value,
) -> Result<Written, Failure> {
    let Some(old) = store.objects.get(&key).cloned() else {
        return Err(Failure::not_found(&key.0, &key.1, &key.3));
    };
    let mut entry = old.clone();
    let mut fields = BTreeSet::new();
    collect(&value, pointer.to_string(), &mut fields);
    set(&mut entry.object, pointer, value);
    take(&mut entry, kind, manager, "Update", &fields);
    finish(store, kind, key, Some(old), entry)
}

/// A JSON merge patch (RFC 7386) of the object at `key` as an `Update` by `manager`.
pub(crate) fn merge(
    store: &mut Store,
    kind: &Kind,
    key: Key,
    manager: &str,
    patch: Value,
) -> Result<Written, Failure> {
    fn merged(target: &mut Value, patch: &Value) {
        let Some(patch) = patch.as_object() else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = json!({});
        }
        let map = target.as_object_mut().expect("made an object above");
        for (name, value) in patch {
            if value.is_null() {
                map.remove(name);
            } else {
                merged(map.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
    check_numbers(kind, &patch)?;
    let Some(old) = store.objects.get(&key).cloned() else {
        return Err(Failure::not_found(&key.0, &key.1, &key.3));
    };
    let mut entry = old.clone();
    merged(&mut entry.object, &patch);
    let fields = leaves(&patch);
    take(&mut entry, kind, manager, "Update", &fields);
    finish(store, kind, key, Some(old), entry)
}

/// Replaces the object at `key` by `object` (PUT) as an `Update` by `manager`: it takes the
/// fields whose value changed; fields that went are nobody's.
pub(crate) fn replace(
    store: &mut Store,
    kind: &Kind,
    key: Key,
    manager: &str,
    mut object: Value,
) -> Result<Written, Failure> {
    check_numbers(kind, &object)?;
    let Some(old) = store.objects.get(&key).cloned() else {
        return Err(Failure::not_found(&key.0, &key.1, &key.3));
    };
    let mut entry = old.clone();
    // The server keeps its own metadata and the status; the owned metadata is the body's.
    let written = object["metadata"].take();
    object["metadata"] = old.object["metadata"].clone();
    for owned in ["labels", "annotations", "finalizers", "ownerReferences"] {
        let metadata = object["metadata"].as_object_mut().expect("stored metadata");
        match written.get(owned) {
            Some(value) => metadata.insert(owned.into(), value.clone()),
            None => metadata.remove(owned),
        };
    }
    if let Some(status) = old.object.get("status") {
        object["status"] = status.clone();
    }
    let fields = leaves(&object);
    let changed: BTreeSet<String> = fields
        .iter()
        .filter(|f| object.pointer(f) != old.object.pointer(f))
        .cloned()
        .collect();
    entry.object = object;
    for m in &mut entry.managers {
        m.fields.retain(|f| fields.contains(f));
    }
    take(&mut entry, kind, manager, "Update", &changed);
    finish(store, kind, key, Some(old), entry)
}

/// Refuses what a real server would, bumps the generation, and stores `entry` if anything
/// changed.
pub(crate) fn finish(
    store: &mut Store,
    kind: &Kind,
    key: Key,
    old: Option<Entry>,
    mut entry: Entry,
) -> Result<Written, Failure> {
    let Some(old) = old else {
        jobs::check_new(kind, &key.3, &entry.object)?;
        let (object, later) = store.write(&key, entry);
        return Ok((201, object, later));
    };
    check_immutable(kind, &key.3, &old.object, &entry.object)?;
    let content = |o: &Value| {
        let mut o = o.clone();
        if let Some(map) = o.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        o
    };
    if content(&old.object) != content(&entry.object) {
        let generation = old.object["metadata"]["generation"].as_i64().unwrap_or(1);
        entry.object["metadata"]["generation"] = json!(generation + 1);
    }
    if old.object == entry.object && old.managers == entry.managers {
        return Ok((200, old.object, Vec::new()));
    }
    let (object, later) = store.write(&key, entry);
    Ok((200, object, later))
}

/// A Job's pod template and selector cannot change once it exists.
fn check_immutable(kind: &Kind, name: &str, old: &Value, new: &Value) -> Result<(), Failure> {
    if !kind.is("batch", "Job") {
        return Ok(());
    }
    for field in ["template", "selector"] {
        let value = &new["spec"][field];
        if &old["spec"][field] != value {
            let cause = format!("Invalid value: {value}: field is immutable");
            return Err(Failure::new(
                422,
                "Invalid",
                format!(
                    "{} \"{name}\" is invalid: spec.{field}: {cause}",
                    kind.qualified_kind()
                ),
            )
            .with_details(json!({"name": name, "group": kind.group, "kind": kind.kind,
                "causes": [{"reason": "FieldValueInvalid", "message": cause,
                            "field": format!("spec.{field}")}]})));
        }
    }
    Ok(())
}

//! Parameter schemas: the JSON Schemas a ComponentType, Trait or Workflow declares for what
//! teams may set (`parameters`) and what each environment may override (`environmentConfigs`).
//!
//! Values are checked the Kubernetes way: defaults are applied first (structural defaulting:
//! a nested object is descended into only if it is present or was just defaulted), then the
//! value is validated. A field the schema does not declare is an error unless the schema says
//! `additionalProperties`. Every violation is reported with its JSON pointer.
//!
//! Compiling a schema is far more expensive than validating with it, so [`SchemaCache`]
//! compiles each distinct schema once and shares it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

/// One way a value breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer of the offending value, relative to the validated value (`""` is the root).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {}", self.message)
    }
}

/// Joins violations into one message.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A compiled schema.
pub struct Schema {
    raw: Value,
    validator: jsonschema::Validator,
}

impl Schema {
    /// Compiles `raw`; the error says where and why it is not a valid JSON Schema.
    pub fn compile(raw: &Value) -> Result<Schema, Violation> {
        if let Err(e) = jsonschema::meta::validate(raw) {
            return Err(Violation {
                pointer: e.instance_path().to_string(),
                message: format!("not a valid JSON Schema: {e}"),
            });
        }
        let validator = jsonschema::validator_for(raw).map_err(|e| Violation {
            pointer: String::new(),
            message: format!("not a valid JSON Schema: {e}"),
        })?;
        Ok(Schema {
            raw: raw.clone(),
            validator,
        })
    }

    /// Applies defaults to `value` (absent counts as `{}`), then validates it. Returns the
    /// defaulted value, or every violation.
    pub fn apply(&self, value: Option<&Value>) -> Result<Value, Vec<Violation>> {
        let mut value = value.cloned().unwrap_or_else(|| Value::Object(Map::new()));
        apply_defaults(&self.raw, &mut value);
        let mut violations = Vec::new();
        unknown_fields(&self.raw, &value, String::new(), &mut violations);
        violations.extend(self.validator.iter_errors(&value).map(|e| Violation {
            pointer: e.instance_path().to_string(),
            message: e.to_string(),
        }));
        if violations.is_empty() {
            Ok(value)
        } else {
            violations.sort_by(|a, b| a.pointer.cmp(&b.pointer));
            violations.dedup();
            Err(violations)
        }
    }
}

/// Compiled schemas by content, shared by every check and render.
#[derive(Default)]
pub struct SchemaCache {
    compiled: Mutex<HashMap<String, Arc<Schema>>>,
}

/// Bound on cached schemas; past it the cache starts over (schemas are few in practice).
const MAX_CACHED: usize = 4096;

impl SchemaCache {
    /// The compiled form of `raw`, compiling it on first use.
    pub fn get(&self, raw: &Value) -> Result<Arc<Schema>, Violation> {
        // serde_json's maps are sorted, so equal schemas print equal.
        self.get_or_compile(&raw.to_string(), || raw.clone())
    }

    /// The schema cached under `id`, or `raw()` compiled and cached under it. `id` must
    /// change whenever the schema can: e.g. the owning object's key and revision.
    pub fn get_or_compile(
        &self,
        id: &str,
        raw: impl FnOnce() -> Value,
    ) -> Result<Arc<Schema>, Violation> {
        if let Some(schema) = self.lock().get(id) {
            return Ok(schema.clone());
        }
        let schema = Arc::new(Schema::compile(&raw())?);
        let mut compiled = self.lock();
        if compiled.len() >= MAX_CACHED {
            compiled.clear();
        }
        compiled.insert(id.to_string(), schema.clone());
        Ok(schema)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Schema>>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Fills in `default`s from `schema` into `value`, descending only into objects that are
/// present or were just defaulted, and into every item of arrays.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (name, property) in properties {
                if !map.contains_key(name)
                    && let Some(default) = property.get("default")
                {
                    map.insert(name.clone(), default.clone());
                }
                if let Some(child) = map.get_mut(name) {
                    apply_defaults(property, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Reports fields of objects whose schema lists `properties` but says nothing of
/// `additionalProperties` (or `patternProperties`): a typo there would otherwise pass silently.
fn unknown_fields(schema: &Value, value: &Value, pointer: String, out: &mut Vec<Violation>) {
    match value {
        Value::Object(map) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            let closed = schema.get("additionalProperties").is_none()
                && schema.get("patternProperties").is_none();
            for (name, child) in map {
                let at = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
                match properties.get(name) {
                    Some(property) => unknown_fields(property, child, at, out),
                    None if closed => {
                        let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                        out.push(Violation {
                            pointer: at,
                            message: format!(
                                "unknown field {name:?} (known: {})",
                                known.join(", ")
                            ),
                        });
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_fields(item_schema, item, format!("{pointer}/{i}"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mk_schema() -> Schema {
        Schema::compile(&json!({
            "type": "object",
            "properties": {
                "port": {"type": "integer", "default": 8080, "minimum": 1, "maximum": 65535},
                "resources": {
                    "type": "object",
                    "default": {},
                    "properties": {"cpu": {"type": "string", "default": "100m"}}
                },
                "probe": {
                    "type": "object",
                    "properties": {"path": {"type": "string", "default": "/healthz"}}
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "env": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "value": {"type": "string", "default": ""}}
                    }
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn defaults_fill_absent_fields_and_defaulted_objects_only() {
        let out = mk_schema()
            .apply(Some(&json!({"env": [{"name": "A"}]})))
            .unwrap();
        assert_eq!(
            out,
            json!({"port": 8080, "resources": {"cpu": "100m"}, "env": [{"name": "A", "value": ""}]}),
            "probe is neither present nor defaulted, so it is not created"
        );
        let out = mk_schema().apply(None).unwrap();
        assert_eq!(out["port"], 8080, "an absent value defaults from {{}}");
        let out = mk_schema().apply(Some(&json!({"probe": {}}))).unwrap();
        assert_eq!(out["probe"], json!({"path": "/healthz"}));
    }

    #[test]
    fn every_violation_is_reported_with_its_pointer() {
        let err = mk_schema()
            .apply(Some(
                &json!({"port": 70000, "prot": 1, "resources": {"cpu": 2}, "labels": {"a": "b"}}),
            ))
            .unwrap_err();
        let pointers: Vec<&str> = err.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/port", "/prot", "/resources/cpu"], "{err:?}");
        assert!(err[1].message.contains("unknown field \"prot\""), "{err:?}");
        assert!(
            describe(&err).contains("/port: 70000 is greater than the maximum of 65535"),
            "{}",
            describe(&err)
        );
    }

    #[test]
    fn invalid_schemas_do_not_compile_and_the_cache_compiles_once() {
        let err =
            Schema::compile(&json!({"type": "object", "properties": {"port": {"type": "integr"}}}))
                .err()
                .unwrap();
        assert_eq!(err.pointer, "/properties/port/type", "{err}");
        let cache = SchemaCache::default();
        let raw = json!({"type": "object"});
        let a = cache.get(&raw).unwrap();
        let b = cache.get(&raw).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}

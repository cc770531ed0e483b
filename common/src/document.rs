//! Conversion between typed objects and the documents users write.
//!
//! A YAML file, a grpcurl JSON body and the stored object are one document under the proto3
//! JSON mapping: `{apiVersion, kind, metadata, spec, status}`. Parsing goes YAML → JSON value →
//! typed object (pbjson rejects unknown fields, so a typo is an error, not a silent drop).
//! Printing goes typed object → JSON value → YAML, with keys in a stable order.
//!
//! `google.protobuf.Struct` keeps every number as a double; [`to_json`] turns integral doubles
//! back into integers so `replicas: 3` prints as `3`, not `3.0`.

use serde_json::Value;

use crate::kind::{Kind, UnknownKind};
use crate::object::Object;
use crate::pb::v1alpha1::Resource;

/// A document that is not a valid Troupe object.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The text is not YAML.
    #[error("malformed YAML: {0}")]
    Yaml(String),
    /// A `kind: List` document whose `items` is missing or not a list.
    #[error("document {index} (List): `items` must be a list of documents")]
    ListItems {
        /// 1-based position of the document in the stream.
        index: usize,
    },
    /// A document is not a mapping.
    #[error("document {index}: expected a mapping with apiVersion, kind, metadata and spec")]
    NotAMapping {
        /// 1-based position of the document in the stream.
        index: usize,
    },
    /// A required top-level field is missing.
    #[error("document {index}: missing field `{field}`")]
    Missing {
        /// 1-based position of the document in the stream.
        index: usize,
        /// The missing field.
        field: &'static str,
    },
    /// `apiVersion` is not Troupe's.
    #[error("document {index} ({kind}): apiVersion {found:?} is not supported; use {expected:?}", expected = crate::API_VERSION)]
    ApiVersion {
        /// 1-based position of the document in the stream.
        index: usize,
        /// The document's kind.
        kind: String,
        /// What the document says.
        found: String,
    },
    /// `kind` names no Troupe kind.
    #[error("document {index}: {unknown}")]
    Kind {
        /// 1-based position of the document in the stream.
        index: usize,
        /// The unknown kind.
        unknown: UnknownKind,
    },
    /// The document does not match the kind's schema.
    #[error("document {index} ({kind} {name:?}): {message}")]
    Schema {
        /// 1-based position of the document in the stream.
        index: usize,
        /// The document's kind.
        kind: Kind,
        /// The document's `metadata.name`.
        name: String,
        /// What does not match, from the proto3 JSON decoder.
        message: String,
    },
}

/// Parses a YAML stream of one or more `---`-separated documents. Empty documents are skipped.
pub fn from_yaml(text: &str) -> Result<Vec<Object>, DocumentError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| DocumentError::Yaml(e.to_string()))?;
    let mut expanded = Vec::new();
    for (i, doc) in docs.into_iter().filter(|d| !d.is_null()).enumerate() {
        expanded.extend(expand_list(doc, i + 1)?);
    }
    expanded
        .into_iter()
        .enumerate()
        .map(|(i, doc)| from_json_document(doc, i + 1))
        .collect()
}

/// A `kind: List` document (what `troupe get -o json` prints for a listing) stands for its
/// items; any other document for itself. A List without a list of `items` is refused: read
/// as nothing, a typo would apply nothing and report success.
fn expand_list(doc: Value, index: usize) -> Result<Vec<Value>, DocumentError> {
    match doc {
        Value::Object(mut map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
            match map.remove("items") {
                Some(Value::Array(items)) => Ok(items),
                _ => Err(DocumentError::ListItems { index }),
            }
        }
        other => Ok(vec![other]),
    }
}

/// Decodes one JSON document (`{apiVersion, kind, metadata, spec}`); `index` is its 1-based
/// position in the stream it came from, for error messages.
pub fn from_json_document(doc: Value, index: usize) -> Result<Object, DocumentError> {
    let Value::Object(map) = &doc else {
        return Err(DocumentError::NotAMapping { index });
    };
    let kind_name = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(DocumentError::Missing {
            index,
            field: "kind",
        })?;
    let kind = Kind::parse(kind_name).map_err(|unknown| DocumentError::Kind { index, unknown })?;
    let api_version =
        map.get("apiVersion")
            .and_then(Value::as_str)
            .ok_or(DocumentError::Missing {
                index,
                field: "apiVersion",
            })?;
    if api_version != crate::API_VERSION {
        return Err(DocumentError::ApiVersion {
            index,
            kind: kind_name.to_string(),
            found: api_version.to_string(),
        });
    }
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut wrapper = serde_json::Map::new();
    wrapper.insert(kind.json_field(), doc);
    let resource: Resource =
        serde_json::from_value(Value::Object(wrapper)).map_err(|e| DocumentError::Schema {
            index,
            kind,
            name: name.clone(),
            message: e.to_string(),
        })?;
    let mut object = resource
        .object
        .ok_or(DocumentError::NotAMapping { index })?;
    if object.kind() != kind {
        return Err(DocumentError::Schema {
            index,
            kind,
            name,
            message: "kind does not match the document".into(),
        });
    }
    object.set_type_meta();
    Ok(object)
}

/// The object as a JSON document, with integral numbers printed as integers.
pub fn to_json(object: &Object) -> Value {
    let resource = Resource {
        object: Some(object.clone()),
    };
    let mut value = serde_json::to_value(&resource).expect("generated types always serialize");
    let mut doc = match &mut value {
        Value::Object(map) => map
            .remove(&object.kind().json_field())
            .unwrap_or(Value::Null),
        _ => Value::Null,
    };
    integral_numbers(&mut doc);
    doc
}

/// The object as a YAML document (no leading `---`).
pub fn to_yaml(object: &Object) -> String {
    json_to_yaml(&to_json(object))
}

/// Any JSON value as YAML.
pub fn json_to_yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).expect("JSON values always serialize to YAML")
}

/// Rewrites every integral double within ±2^53 as an integer, in place.
pub fn integral_numbers(value: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `props`: such a List was read as no documents, so `apply` did nothing and
    /// reported success.
    #[test]
    fn a_list_without_a_list_of_items_is_refused() {
        for text in [
            "apiVersion: troupe.dev/v1alpha1\nkind: List\n",
            "apiVersion: troupe.dev/v1alpha1\nkind: List\nitem: []\n",
            "kind: List\nitems: {}\n",
        ] {
            let err = from_yaml(text).unwrap_err();
            assert!(
                err.to_string().contains("`items` must be a list"),
                "{text}: {err}"
            );
        }
        assert!(from_yaml("kind: List\nitems: []\n").unwrap().is_empty());
    }
}

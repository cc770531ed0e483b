//! Property tests of what the API does with a decoded object before it reads the store: any
//! object a request can carry (the examples of every kind with a part replaced by arbitrary
//! JSON, or their encodings mutated) is checked by [`check`], [`check_immutable`] and
//! [`references`] without panicking and in bounded time. Replay: see `crate::props`.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use prost::Message;
use serde_json::Value;
use troupe_common::Object;
use troupe_common::document::{from_json_document, from_yaml, to_json};
use troupe_common::pb::v1alpha1::Resource;

use super::{check, check_immutable};
use crate::render::template::{Engine, Limits};
use crate::resources::references::references;

const KEYS: &[&str] = &[
    "name",
    "type",
    "parameters",
    "kind",
    "image",
    "port",
    "spec",
    "env",
];

/// The examples shipped in `examples/`, read once.
fn corpus() -> &'static [Object] {
    static CORPUS: std::sync::OnceLock<Vec<Object>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        [
            include_str!("../../../../examples/platform.yaml"),
            include_str!("../../../../examples/samples/more-types-and-traits.yaml"),
            include_str!("../../../../examples/access/access.yaml"),
        ]
        .iter()
        .flat_map(|text| from_yaml(text).expect("the examples parse"))
        .collect()
    })
}

fn engine() -> &'static Engine {
    static ENGINE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(Limits::default()))
}

/// Every location (JSON pointer) inside `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (token, child) in children {
        let p = format!("{at}/{token}");
        out.push(p.clone());
        pointers(child, p, out);
    }
}

fn checked(original: &Object, object: &Object) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let _ = check(object, engine());
    let _ = check_immutable(original, object);
    let _ = references(object);
    prop_assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

proptest! {
    #![proptest_config(crate::props::config())]

    #[test]
    fn any_document_a_request_carries_is_checked(
        pick in any::<usize>(),
        at in any::<usize>(),
        replacement in crate::props::json(KEYS),
    ) {
        let original = &corpus()[pick % corpus().len()];
        let mut doc = to_json(original);
        let mut locations = Vec::new();
        pointers(&doc, String::new(), &mut locations);
        let location = &locations[at % locations.len()];
        *doc.pointer_mut(location).expect("a location of the document") = replacement;
        if let Ok(object) = from_json_document(doc, 1) {
            checked(original, &object)?;
        }
    }

    #[test]
    fn any_encoding_a_request_carries_is_checked(
        pick in any::<usize>(),
        at in any::<usize>(),
        bytes in prop::collection::vec(any::<u8>(), 1..8),
    ) {
        let original = &corpus()[pick % corpus().len()];
        let mut encoded = Resource { object: Some(original.clone()) }.encode_to_vec();
        let at = at % encoded.len();
        let end = (at + bytes.len()).min(encoded.len());
        encoded.splice(at..end, bytes);
        if let Ok(Resource { object: Some(object) }) = Resource::decode(encoded.as_slice()) {
            checked(original, &object)?;
        }
    }
}

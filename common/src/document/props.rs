//! Property tests of the document reader behind `troupe apply -f`: any text is either refused
//! with an error or read as objects that print back to the same objects; a stream of valid
//! documents reads as exactly those objects; and any JSON document (the examples with parts
//! replaced by arbitrary values) decodes or is refused, never panics, and what decodes prints
//! back to itself. Replay: see `crate::props`.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{from_json_document, from_yaml, to_json, to_yaml};
use crate::props::{corpus, mutate, mutations};

/// Reads `text`; what it yields must survive printing and reading again.
fn check_yaml(text: &str) -> Result<(), TestCaseError> {
    let Ok(objects) = from_yaml(text) else {
        return Ok(());
    };
    for object in objects {
        let printed = to_yaml(&object);
        let again = from_yaml(&printed)
            .map_err(|e| TestCaseError::fail(format!("{printed} does not read back: {e}")))?;
        prop_assert_eq!(again.len(), 1);
        prop_assert_eq!(to_json(&again[0]), to_json(&object));
    }
    Ok(())
}

/// Arbitrary JSON, with keys the schema uses so some of it decodes.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("name".to_string()),
        Just("type".to_string()),
        Just("parameters".to_string()),
        Just("labels".to_string()),
        Just("image".to_string()),
        "[a-zA-Z]{1,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        "\\PC{0,12}".prop_map(Value::String),
        Just(Value::String("1970-01-01T00:00:00Z".into())),
        Just(Value::String("9999-12-31T23:59:59Z".into())),
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every location (JSON pointer) inside `value`, depth first.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            out.push(p.clone());
            pointers(v, p, out);
        }),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| {
            let p = format!("{at}/{i}");
            out.push(p.clone());
            pointers(v, p, out);
        }),
        _ => {}
    }
}

proptest! {
    #![proptest_config(crate::props::config())]

    #[test]
    fn any_text_reads_or_is_refused(text in "\\PC{0,60}") {
        check_yaml(&text)?;
    }

    #[test]
    fn mutated_documents_read_or_are_refused(pick in any::<usize>(), edits in mutations()) {
        let corpus = corpus();
        let text = to_yaml(&corpus[pick % corpus.len()]);
        let bytes = mutate(text.into_bytes(), &edits);
        check_yaml(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn a_stream_reads_as_its_documents(picks in prop::collection::vec(any::<usize>(), 1..6)) {
        let corpus = corpus();
        let chosen: Vec<_> = picks.iter().map(|p| &corpus[p % corpus.len()]).collect();
        let stream = chosen
            .iter()
            .map(|o| to_yaml(o))
            .collect::<Vec<_>>()
            .join("---\n");
        let read = from_yaml(&stream)
            .map_err(|e| TestCaseError::fail(format!("{stream} is refused: {e}")))?;
        let read: Vec<_> = read.iter().map(to_json).collect();
        let expected: Vec<_> = chosen.iter().map(|o| to_json(o)).collect();
        prop_assert_eq!(read, expected);
    }

    #[test]
    fn a_list_reads_as_its_items_or_is_refused(
        picks in prop::collection::vec(any::<usize>(), 0..4),
        items in prop_oneof![Just(None), json_value().prop_map(Some)],
        as_list in any::<bool>(),
    ) {
        let corpus = corpus();
        let chosen: Vec<Value> = picks.iter().map(|p| to_json(&corpus[p % corpus.len()])).collect();
        let items = if as_list { Some(Value::Array(chosen.clone())) } else { items };
        let mut list = serde_json::json!({"apiVersion": crate::API_VERSION, "kind": "List"});
        if let Some(items) = &items {
            list["items"] = items.clone();
        }
        let read = from_yaml(&list.to_string());
        match items {
            Some(Value::Array(items)) if as_list => {
                let read = read.map_err(|e| TestCaseError::fail(format!("{list} is refused: {e}")))?;
                prop_assert_eq!(read.iter().map(to_json).collect::<Vec<_>>(), items);
            }
            Some(Value::Array(_)) => {}
            _ => prop_assert!(read.is_err(), "{} was read as {:?}", list, read),
        }
    }

    #[test]
    fn any_json_document_decodes_or_is_refused(
        pick in any::<usize>(),
        at in any::<usize>(),
        replacement in json_value(),
    ) {
        let corpus = corpus();
        let mut doc = to_json(&corpus[pick % corpus.len()]);
        let mut locations = Vec::new();
        pointers(&doc, String::new(), &mut locations);
        let location = &locations[at % locations.len()];
        *doc.pointer_mut(location).expect("a location of the document") = replacement;
        if let Ok(object) = from_json_document(doc, 1) {
            let printed = to_json(&object);
            let again = from_json_document(printed.clone(), 1)
                .map_err(|e| TestCaseError::fail(format!("{printed} does not decode: {e}")))?;
            prop_assert_eq!(to_json(&again), printed);
        }
    }
}

//! Property tests of trait patch paths: any text parses or is refused without panicking;
//! paths written in the grammar (keys with escapes, indices, `-`, `[*]`, filters, as their
//! own segment or as a key's suffix) always parse; and applying any operation at any such
//! path to any JSON never panics, leaves the object untouched when it fails or selects
//! nothing, and puts the value where the path says. Replay: see `crate::props`.

use proptest::prelude::*;
use serde_json::Value;

use super::path::Selector;
use super::{Op, Path, apply};

const KEYS: &[&str] = &[
    "spec",
    "containers",
    "name",
    "env",
    "a~b",
    "x/y",
    "0",
    "main",
];

/// A key as a JSON pointer token: plain, escaped, an index or `-`.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KEYS).prop_map(|k| k.replace('~', "~0").replace('/', "~1")),
        (0usize..4).prop_map(|i| i.to_string()),
        Just("-".to_string()),
        Just(String::new()),
        "[a-zA-Z_.:@-]{1,5}",
    ]
}

fn filter() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("@".to_string()),
        prop::collection::vec(prop::sample::select(&["name", "a", "b_c", "x-y"][..]), 1..3)
            .prop_map(|f| format!("@.{}", f.join("."))),
    ];
    let literal = prop_oneof![
        prop::sample::select(KEYS).prop_map(|k| format!("'{k}'")),
        "[a-z/ )\\]]{0,6}".prop_map(|s| format!("\"{s}\"")),
        any::<i32>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
    ];
    (field, prop::bool::ANY, literal)
        .prop_map(|(f, eq, l)| format!("[?({f}{}{l})]", if eq { "==" } else { "!=" }))
}

/// One segment of a valid path.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&["spec", "containers", "env", "0", "a~0b", "x~1y"][..])
            .prop_map(str::to_string),
        2 => token(),
        1 => Just("[*]".to_string()),
        1 => filter(),
        1 => (token(), prop_oneof![Just("[*]".to_string()), filter()])
            .prop_map(|(k, s)| format!("{k}{s}")),
    ]
}

fn valid_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 0..4), token()).prop_map(|(s, last)| {
        format!(
            "/{}",
            s.into_iter().chain([last]).collect::<Vec<_>>().join("/")
        )
    })
}

/// Arbitrary JSON, or a workload-shaped object with arbitrary parts, where paths like
/// `/spec/containers/[?(@.name=='main')]/env/-` find something.
fn object() -> impl Strategy<Value = Value> {
    let part = || crate::props::json(KEYS);
    prop_oneof![
        part(),
        (part(), part(), part()).prop_map(|(a, b, c)| {
            serde_json::json!({
                "spec": {
                    "containers": [{"name": "main", "env": [a]}, {"name": "x", "env": b}, c],
                    "name": "main",
                },
                "0": [{"a": {"b_c": 1}}, "main"],
                "a~b": {"x/y": []},
            })
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Add), Just(Op::Replace), Just(Op::Remove)]
}

/// True when every segment is a plain key and the last is not `-`: the path names exactly
/// one location, which a JSON pointer finds.
fn names_one_location(path: &Path) -> bool {
    path.segments
        .iter()
        .all(|s| matches!(&s.selector, Selector::Key(_)))
        && !matches!(&path.segments.last().map(|s| &s.selector), Some(Selector::Key(k)) if k == "-")
}

proptest! {
    #![proptest_config(crate::props::config())]

    #[test]
    fn any_text_parses_or_is_refused(text in "/?\\PC{0,30}") {
        if let Ok(path) = Path::parse(&text) {
            prop_assert_eq!(path.as_str(), text.as_str());
            prop_assert!(!path.segments.is_empty());
        }
    }

    #[test]
    fn paths_in_the_grammar_parse(
        text in prop::collection::vec(segment(), 1..5).prop_map(|s| format!("/{}", s.join("/"))),
    ) {
        let parsed = Path::parse(&text);
        prop_assert!(parsed.is_ok(), "{:?}: {:?}", text, parsed);
    }

    #[test]
    fn applying_a_patch_changes_exactly_what_the_path_names(
        object in object(),
        text in valid_path(),
        op in op(),
        value in crate::props::json(KEYS),
    ) {
        let path = Path::parse(&text).expect("a path in the grammar");
        let mut patched = object.clone();
        let value = (op != Op::Remove).then_some(&value);
        match apply(&mut patched, op, &path, value) {
            Err(_) | Ok(0) => prop_assert_eq!(&patched, &object, "{} {}", op, text),
            Ok(_) if op != Op::Remove && names_one_location(&path) => {
                prop_assert_eq!(patched.pointer(&text), value, "{} {} on {}", op, text, object);
            }
            Ok(_) => {}
        }
    }
}

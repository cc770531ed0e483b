//! Property tests of parameter schemas: any schema built from the keywords authors use
//! (types, properties, items, defaults, patterns, `$ref`, enums, bounds) compiles or is
//! refused, and checking any value against it returns violations or the defaulted value, in
//! bounded time and without panicking. Replay: see `crate::props`.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::Schema;

const KEYS: &[&str] = &[
    "port",
    "name",
    "tags",
    "a",
    "b",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
];

fn keyword() -> impl Strategy<Value = (String, Value)> {
    let kv = |k: &str, v: Value| (k.to_string(), v);
    prop_oneof![
        prop::sample::select(
            &[
                "object", "string", "integer", "number", "array", "boolean", "null", "nope"
            ][..]
        )
        .prop_map(move |t| kv("type", json!(t))),
        prop::sample::select(
            &[
                "^[a-z]+$",
                "(a+)+$",
                "(a|aa)+b",
                "(",
                "\\p{L}+",
                "(?=a)a",
                "a{1000000}",
                ""
            ][..]
        )
        .prop_map(move |p| kv("pattern", json!(p))),
        prop::sample::select(
            &[
                "#",
                "#/properties/a",
                "#/nope",
                "http://127.0.0.1:9/x.json",
                "other.json"
            ][..]
        )
        .prop_map(move |r| kv("$ref", json!(r))),
        prop::sample::select(&["email", "regex", "date-time", "uri", "hostname", "ipv4"][..])
            .prop_map(move |f| kv("format", json!(f))),
        any::<i64>().prop_map(move |n| kv("minLength", json!(n))),
        (0u64..5).prop_map(move |n| kv("maxItems", json!(n))),
        any::<f64>().prop_map(move |n| kv("multipleOf", json!(n))),
        any::<bool>().prop_map(move |b| kv("additionalProperties", json!(b))),
        crate::props::json(KEYS).prop_map(move |v| kv("default", v)),
        crate::props::json(KEYS).prop_map(move |v| kv("enum", json!([v]))),
        Just(kv("required", json!(["a", "name"]))),
    ]
}

fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop::collection::vec(keyword(), 0..4)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()));
    leaf.prop_recursive(3, 16, 3, |inner| {
        (
            prop::collection::vec(keyword(), 0..3),
            prop::collection::vec((prop::sample::select(KEYS), inner.clone()), 0..3),
            prop::option::of(inner),
        )
            .prop_map(|(kv, properties, items)| {
                let mut map: Map<_, _> = kv.into_iter().collect();
                let properties: Map<_, _> = properties
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                map.insert("properties".into(), Value::Object(properties));
                if let Some(items) = items {
                    map.insert("items".into(), items);
                }
                Value::Object(map)
            })
    })
}

proptest! {
    #![proptest_config(crate::props::config())]

    #[test]
    fn any_schema_compiles_or_is_refused_and_checks_any_value(
        raw in schema(),
        value in prop::option::of(crate::props::json(KEYS)),
    ) {
        let started = Instant::now();
        if let Ok(schema) = Schema::compile(&raw) {
            let first = schema.apply(value.as_ref());
            prop_assert_eq!(&schema.apply(value.as_ref()), &first);
            if let Ok(defaulted) = first {
                // Defaulting is idempotent: a defaulted value checks as itself.
                prop_assert_eq!(schema.apply(Some(&defaulted)), Ok(defaulted));
            }
        }
        prop_assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }
}

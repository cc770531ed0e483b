//! Property tests of the template engine: templates built from a small grammar (literals,
//! variables, operators, slices, conditionals, the filters and helpers the engine offers,
//! mixed text, escapes, expression keys, forEach and includeWhen) over arbitrary parameters
//! never panic, finish in bounded time, stay within the render's budget (what they print never
//! exceeds the output limit), and render the same way twice. Replay: see `crate::props`.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value as Json, json};

use super::*;

const KEYS: &[&str] = &["port", "tags", "name", "items", "a", "b", "value", "x"];

/// Limits small enough that a runaway template stops after a few milliseconds.
fn mk_limits() -> Limits {
    Limits {
        fuel: 50_000,
        recursion: 32,
        max_output_bytes: 4 << 10,
        max_objects: 20,
        max_iterations: 200,
    }
}

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(
            &[
                "0", "1", "-1", "2", "3", "64", "1000", "100000", "9223372036854775807",
                "-9223372036854775808", "0.5", "-2.5", "1e308", "none", "true", "false", "''",
                "'x'", "'a,b'", "'é}}'", "'{{'", "\"${{\"", "[]", "{}", "[1, 'a', none]",
                "{'k': 1, 'v': [2]}", "parameters", "parameters.port", "parameters.tags",
                "parameters.name", "parameters.items", "parameters.a.b", "parameters.missing",
                "metadata.name", "item", "item.value", "range(3)", "range(100000)", "omit()",
            ][..]
        )
        .prop_map(str::to_string),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn filter() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "length",
            "default(1)",
            "join(',')",
            "join",
            "upper",
            "lower",
            "items",
            "list",
            "string",
            "int",
            "float",
            "first",
            "last",
            "reverse",
            "sort",
            "unique",
            "tojson",
            "fromjson",
            "sha256",
            "hash",
            "hash(70)",
            "b64encode",
            "b64decode",
            "abs",
            "round",
            "trim",
            "indent(4)",
            "batch(2)",
            "batch(0)",
            "slice(3)",
            "slice(0)",
            "map('string')",
            "select",
            "reject",
            "selectattr('name')",
            "selectattr('x', 'containing', 'a')",
            "dictsort",
            "replace('a', 'bb')",
            "title",
            "capitalize",
            "max",
            "min",
            "sum",
            "attr('x')",
            "service_ports",
            "file_mounts('v')",
            "to_map('name', 'value')",
            "tojson(indent=2)",
            "pprint",
            "escape",
            "safe",
            "bool",
            "count",
            "wordcount",
            "urlencode",
            "split(',')",
            "lines",
            "chain([1])",
            "zip([1])",
        ][..],
    )
}

/// An expression over `atom`s, at most `depth` operators deep.
fn expr() -> impl Strategy<Value = String> {
    atom().prop_recursive(4, 24, 3, |inner| {
        let two = (inner.clone(), inner.clone());
        prop_oneof![
            (inner.clone(), filter()).prop_map(|(e, f)| format!("({e}) | {f}")),
            (
                two.clone(),
                prop::sample::select(
                    &[
                        "+", "-", "*", "/", "//", "%", "**", "~", "==", "!=", "<", ">=", "and",
                        "or", "in", "not in",
                    ][..]
                )
            )
                .prop_map(|((a, b), op)| format!("({a}) {op} ({b})")),
            inner.clone().prop_map(|e| format!("-({e})")),
            inner.clone().prop_map(|e| format!("not ({e})")),
            two.clone().prop_map(|(a, b)| format!("({a})[{b}]")),
            (inner.clone(), any::<(i8, i8, i8)>())
                .prop_map(|(e, (a, b, c))| format!("({e})[{a}:{b}:{c}]")),
            (inner.clone(), two.clone())
                .prop_map(|(c, (a, b))| format!("({a}) if ({c}) else ({b})")),
            two.clone().prop_map(|(a, b)| format!("[{a}, {b}]")),
            two.clone()
                .prop_map(|(a, b)| format!("{{'k': {a}, ({b}) | string: 1}}")),
            two.clone().prop_map(|(a, b)| format!("merge({a}, {b})")),
            two.clone().prop_map(|(a, b)| format!("dns_name({a}, {b})")),
            two.clone().prop_map(|(a, b)| format!("hash({a}, n={b})")),
            two.clone().prop_map(|(a, b)| format!("range({a}, {b})")),
            inner.clone().prop_map(|e| format!("fromjson(tojson({e}))")),
            inner.prop_map(|e| format!("({e}) is defined")),
        ]
    })
}

/// A template string: one expression, text around expressions, escapes, or broken syntax.
fn template_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => expr().prop_map(|e| format!("${{{{ {e} }}}}")),
        2 => (expr(), expr()).prop_map(|(a, b)| format!("x-${{{{ {a} }}}}-${{{{ {b} }}}}")),
        1 => expr().prop_map(|e| format!("$${{{{ {e} }}}} ${{{{ {e} }}}}")),
        1 => expr().prop_map(|e| format!("${{{{ {e}")),
        1 => "\\PC{0,12}",
    ]
}

/// A resource template: a map (the engine refuses anything else) of templates.
fn template() -> impl Strategy<Value = Json> {
    prop::collection::vec((key(), value()), 0..5)
        .prop_map(|kv| Json::Object(kv.into_iter().collect()))
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => template_string(),
    ]
}

fn value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        4 => template_string().prop_map(Json::String),
        1 => any::<i64>().prop_map(Json::from),
        1 => Just(Json::Null),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|kv| Json::Object(kv.into_iter().collect())),
        ]
    })
}

fn context() -> impl Strategy<Value = Json> {
    crate::props::json(KEYS).prop_map(|parameters| {
        json!({
            "metadata": {"name": "api", "namespace": "acme"},
            "parameters": parameters,
            "item": {"value": 1},
        })
    })
}

fn include_when() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        1 => Just("${{ true }}".to_string()),
        1 => expr().prop_map(|e| format!("${{{{ ({e}) is defined }}}}")),
        1 => expr().prop_map(|e| format!("${{{{ {e} }}}}")),
    ]
}

fn for_each() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        2 => prop::sample::select(
            &["range(3)", "parameters.items", "parameters | items", "[{'value': 1}, 'a', none]"][..]
        )
        .prop_map(|e| format!("${{{{ {e} }}}}")),
        1 => expr().prop_map(|e| format!("${{{{ {e} }}}}")),
    ]
}

/// Everything a render produced, or its error, with what it spent.
type Outcome = (Result<Vec<Json>, TemplateError>, Spent);

/// Renders `template` as a resource entry (forEach and includeWhen when given), checking the
/// bounds every render must keep.
fn render(
    engine: &Engine,
    entry: &ResourceEntry<'_>,
    context: &Json,
) -> Result<Outcome, TestCaseError> {
    let ctx = engine.context(context).expect("the context is an object");
    let started = Instant::now();
    let result = engine.render_resource("/r", entry, &ctx);
    let elapsed = started.elapsed();
    let spent = ctx.budget().spent();
    prop_assert!(elapsed < Duration::from_secs(5), "took {:?}", elapsed);
    if let Ok(objects) = &result {
        let limits = engine.limits();
        prop_assert!(spent.fuel <= limits.fuel, "{:?}", spent);
        prop_assert!(spent.bytes <= limits.max_output_bytes, "{:?}", spent);
        let printed = serde_json::to_string(objects).expect("JSON").len();
        prop_assert!(
            printed <= limits.max_output_bytes,
            "{} bytes of output, {:?}",
            printed,
            spent
        );
        prop_assert!(spent.objects <= limits.max_objects, "{:?}", spent);
        prop_assert!(spent.iterations <= limits.max_iterations, "{:?}", spent);
    }
    Ok((result, spent))
}

proptest! {
    #![proptest_config(crate::props::config())]

    #[test]
    fn any_template_renders_within_its_budget_and_the_same_twice(
        template in template(),
        context in context(),
        include_when in include_when(),
        for_each in for_each(),
    ) {
        let engine = Engine::new(mk_limits());
        let entry = ResourceEntry {
            include_when: &include_when,
            for_each: &for_each,
            var: if for_each.is_empty() { "" } else { "item" },
            template: &template,
        };
        let (first, _) = render(&engine, &entry, &context)?;
        let (second, _) = render(&engine, &entry, &context)?;
        prop_assert_eq!(first, second);
    }

    #[test]
    fn any_text_checks_or_is_refused(text in "\\PC{0,40}") {
        let engine = Engine::new(mk_limits());
        let _ = engine.check("/t", &Json::String(text.clone()));
        let _ = engine.check_field("/t", &text);
    }
}

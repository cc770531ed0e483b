//! Fuel, output size and recursion bounds.

use serde_json::{Value as Json, json};

use super::*;

#[test]
fn a_runaway_expression_runs_out_of_fuel() {
    let engine = Engine::new(Limits {
        fuel: 50_000,
        ..Limits::default()
    });
    let err = engine
        .render(
            "/t",
            &json!({"n": "${{ range(100000) | map('string') | join(',') | length }}"}),
            &mk_context(),
        )
        .unwrap_err();
    assert_eq!(err.path, "/t/n");
    assert!(
        err.message.contains("ran out of fuel (limit 50000"),
        "{err}"
    );
}

#[test]
fn fuel_is_a_budget_per_render_call() {
    // One evaluation fits the budget; many in one call do not; every call starts afresh.
    let engine = Engine::new(Limits {
        fuel: 20_000,
        ..Limits::default()
    });
    let one = json!("${{ range(1000) | map('string') | join | length }}");
    assert_eq!(
        engine.render("/t", &one, &mk_context()).unwrap(),
        json!(2890)
    );
    assert_eq!(
        engine.render("/t", &one, &mk_context()).unwrap(),
        json!(2890)
    );
    let many = Json::Array(vec![one.clone(); 20]);
    let err = engine.render("/t", &many, &mk_context()).unwrap_err();
    assert!(err.message.contains("ran out of fuel"), "{err}");
    assert_eq!(
        engine.render("/t", &one, &mk_context()).unwrap(),
        json!(2890)
    );

    let template = json!({"n": "${{ range(1000) | map('string') | join | length }}"});
    let resource = mk_resource("", "${{ range(20) }}", "i", &template);
    assert!(
        engine
            .render_resource("/r", &resource, &mk_context())
            .unwrap_err()
            .message
            .contains("fuel")
    );
}

#[test]
fn output_size_is_bounded_per_call() {
    let engine = Engine::new(Limits {
        max_output_bytes: 1000,
        ..Limits::default()
    });
    engine
        .render("/t", &json!({"s": "${{ 'x' * 500 }}"}), &mk_context())
        .unwrap();
    let err = engine
        .render("/t", &json!({"s": "${{ 'x' * 2000 }}"}), &mk_context())
        .unwrap_err();
    assert_eq!(err.path, "/t/s");
    assert!(err.message.contains("size limit (1000 bytes)"), "{err}");

    let err = engine
        .render(
            "/t",
            &json!({"s": "a${{ range(600) | list }}"}),
            &mk_context(),
        )
        .unwrap_err();
    assert!(err.message.contains("size limit"), "{err}");

    let template = json!({"s": "${{ 'x' * 300 }}"});
    let resource = mk_resource("", "${{ range(5) }}", "i", &template);
    let err = engine
        .render_resource("/r", &resource, &mk_context())
        .unwrap_err();
    assert!(err.message.contains("size limit"), "{err}");
}

#[test]
fn nesting_deeper_than_the_recursion_limit_is_refused() {
    let engine = Engine::new(Limits {
        recursion: 4,
        ..Limits::default()
    });
    engine
        .render("/t", &json!({"a": {"b": {"c": 1}}}), &mk_context())
        .unwrap();
    let deep = json!({"a": {"b": {"c": {"d": 1}}}});
    assert!(
        engine
            .render("/t", &deep, &mk_context())
            .unwrap_err()
            .message
            .contains("recursion limit (4")
    );
    assert!(engine.check("/t", &deep).is_err());
    let err = engine
        .render("/t", &json!({"a": "${{ [[[[[1]]]]] }}"}), &mk_context())
        .unwrap_err();
    assert!(err.message.contains("recursion limit"), "{err}");
}

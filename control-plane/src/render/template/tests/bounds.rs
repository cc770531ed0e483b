//! Fuel, output size, object, iteration and recursion bounds: per call with a bare JSON
//! context, per render across every call made with one [`Context`].

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
        err.message
            .contains("ran out of fuel (budget 50000, --render-fuel)"),
        "{err}"
    );
}

#[test]
fn fuel_is_a_budget_per_call_with_a_bare_context() {
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
    assert!(
        err.message
            .contains("the render's output exceeds 1000 bytes (--render-max-bytes)"),
        "{err}"
    );

    let err = engine
        .render(
            "/t",
            &json!({"s": "a${{ range(600) | list }}"}),
            &mk_context(),
        )
        .unwrap_err();
    assert!(err.message.contains("--render-max-bytes"), "{err}");

    let template = json!({"s": "${{ 'x' * 300 }}"});
    let resource = mk_resource("", "${{ range(5) }}", "i", &template);
    let err = engine
        .render_resource("/r", &resource, &mk_context())
        .unwrap_err();
    assert!(err.message.contains("--render-max-bytes"), "{err}");
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

/// Renders the same resource entry `entries` times with one render's context, as a
/// ComponentType with that many entries does; returns how many rendered and the first error.
fn mk_entries(engine: &Engine, context: &Context, entries: usize) -> (usize, Option<String>) {
    let template = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"blob": "${{ parameters.blob }}"}});
    let entry = mk_resource("", "", "", &template);
    for i in 0..entries {
        if let Err(e) = engine.render_resource(&format!("/resources/{i}"), &entry, context) {
            return (i, Some(e.to_string()));
        }
    }
    (entries, None)
}

#[test]
fn output_bytes_are_one_budget_for_the_whole_render() {
    // 300 entries of a 3 MB string: each entry fits the budget, together they are 900 MB.
    let engine = Engine::new(Limits::default());
    let blob = "x".repeat(3_000_000);
    let context = engine
        .context(&json!({"parameters": {"blob": blob}}))
        .unwrap();
    let (rendered, err) = mk_entries(&engine, &context, 300);
    let err = err.expect("the render stops at its output budget");
    assert_eq!(
        rendered, 2,
        "two 3 MB entries fit in 8 MiB, a third does not"
    );
    assert!(
        err.contains("/resources/2/template/data/blob: `parameters.blob`: the render's output exceeds 8 MiB (--render-max-bytes)"),
        "{err}"
    );
    // The third string was refused before it was copied: what was built stays in budget.
    let built = context.budget().spent().bytes;
    assert!(built <= 8 << 20, "built {built} bytes");
    assert!(built >= 6_000_000, "built {built} bytes");
}

#[test]
fn a_trait_context_draws_on_its_render_budget_and_a_new_render_starts_afresh() {
    let engine = Engine::new(Limits {
        max_output_bytes: 1 << 20,
        ..Limits::default()
    });
    let vars = json!({"parameters": {"blob": "y".repeat(100_000)}});
    let context = engine.context(&vars).unwrap();
    let (rendered, _) = mk_entries(&engine, &context, 5);
    assert_eq!(rendered, 5);
    let blob = json!("z".repeat(100_000));
    let trait_context = context.with(&[("parameters", &json!({"blob": blob}))]);
    let (rendered, err) = mk_entries(&engine, &trait_context, 20);
    assert_eq!(
        rendered, 5,
        "ten 100 KB entries in all fit in 1 MiB, not eleven"
    );
    assert!(err.unwrap().contains("exceeds 1 MiB"));
    let fresh = engine.context(&vars).unwrap();
    assert_eq!(mk_entries(&engine, &fresh, 10), (10, None));
}

#[test]
fn fuel_is_one_budget_for_the_whole_render() {
    let engine = Engine::new(Limits {
        fuel: 20_000,
        ..Limits::default()
    });
    let context = engine.context(&mk_context()).unwrap();
    let expensive = "${{ range(1000) | map('string') | join | length }}";
    let mut first_failure = None;
    for i in 0..20 {
        if let Err(e) = engine.eval("/rule", expensive, &context) {
            first_failure = Some((i, e));
            break;
        }
    }
    let (i, err) = first_failure.expect("twenty evaluations do not fit");
    assert!(i >= 1, "one evaluation fits");
    assert!(err.message.contains("budget 20000, --render-fuel"), "{err}");
    // What the evaluations that fitted spent is booked on the render, not on each call.
    let spent = context.budget().spent().fuel;
    assert!(spent > 20_000 / 20 && spent <= 20_000, "spent {spent}");
    let fresh = engine.context(&mk_context()).unwrap();
    engine.eval("/rule", expensive, &fresh).unwrap();
}

#[test]
fn objects_are_counted_across_the_render_and_named_in_the_error() {
    let engine = Engine::new(Limits {
        max_objects: 10,
        ..Limits::default()
    });
    let context = engine.context(&mk_context()).unwrap();
    let template = json!({"n": "${{ i }}"});
    let each = mk_resource("", "${{ range(6) }}", "i", &template);
    assert_eq!(
        engine.render_resource("/a", &each, &context).unwrap().len(),
        6
    );
    let err = engine.render_resource("/b", &each, &context).unwrap_err();
    assert_eq!(err.path, "/b/template");
    assert!(
        err.message.contains(
            "forEach item 4: the render makes more than 10 objects (--render-max-objects)"
        ),
        "{err}"
    );
    let single = mk_resource("", "", "", &template);
    let err = engine.render_resource("/c", &single, &context).unwrap_err();
    assert!(err.message.contains("more than 10 objects"), "{err}");
}

#[test]
fn for_each_items_are_counted_before_the_loop_runs() {
    let engine = Engine::new(Limits {
        max_iterations: 100,
        ..Limits::default()
    });
    let context = engine.context(&mk_context()).unwrap();
    let template = json!({"n": "${{ i }}"});
    let each = mk_resource("", "${{ range(101) }}", "i", &template);
    let err = engine.render_resource("/r", &each, &context).unwrap_err();
    assert_eq!(err.path, "/r/forEach");
    assert!(
        err.message
            .contains("more than 100 iterations in all (--render-max-iterations)"),
        "{err}"
    );
    assert_eq!(context.budget().spent().objects, 0, "nothing was rendered");
}

#[test]
fn binding_a_large_object_costs_fuel() {
    // A patch's `where` binds every object it looks at; 1 MB bound is 16,384 fuel.
    let engine = Engine::new(Limits {
        fuel: 40_000,
        ..Limits::default()
    });
    let context = engine.context(&mk_context()).unwrap();
    let object = json!({"kind": "ConfigMap", "data": {"blob": "x".repeat(1 << 20)}});
    let rule = "${{ object.kind == 'ConfigMap' }}";
    let bound = [("object", &object)];
    assert_eq!(
        engine.eval_bound("where", rule, &context, &bound).unwrap(),
        json!(true)
    );
    assert!(context.budget().spent().fuel >= 16_384);
    engine.eval_bound("where", rule, &context, &bound).unwrap();
    let err = engine
        .eval_bound("where", rule, &context, &bound)
        .unwrap_err();
    assert!(err.message.contains("--render-fuel"), "{err}");
}

//! Rendering semantics as a template author sees them; builders are `mk_*`.

use serde_json::{Value as Json, json};

use super::*;

mod bounds;
mod functions;
mod props;

fn mk_engine() -> Engine {
    Engine::new(Limits::default())
}

fn mk_context() -> Json {
    json!({
        "metadata": {
            "name": "shop-api-prod",
            "namespace": "dp-acme",
            "podSelectors": {"troupe.dev/component": "api"},
        },
        "parameters": {"port": 8080, "debug": true, "ratio": 0.5, "tags": ["a", "b"], "extra": null},
        "environmentConfigs": {"replicas": 3},
        "workload": {"endpoints": {"web": {"port": 80}, "admin": {"port": 9000}}},
    })
}

fn mk_resource<'a>(
    include_when: &'a str,
    for_each: &'a str,
    var: &'a str,
    template: &'a Json,
) -> ResourceEntry<'a> {
    ResourceEntry {
        include_when,
        for_each,
        var,
        template,
    }
}

fn render(template: Json) -> Result<Json, TemplateError> {
    mk_engine().render("/t", &template, &mk_context())
}

fn eval(field: &str) -> Json {
    mk_engine().eval("/f", field, &mk_context()).unwrap()
}

#[test]
fn standalone_expressions_keep_their_type() {
    let out = render(json!({
        "int": "${{ 3 }}",
        "replicas": "${{ environmentConfigs.replicas }}",
        "bool": "${{ parameters.debug }}",
        "float": "${{ parameters.ratio }}",
        "list": "${{ parameters.tags }}",
        "map": "  ${{ metadata.podSelectors }}\n",
        "null": "${{ parameters.extra }}",
        "string": "${{ metadata.name }}",
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({
            "int": 3, "replicas": 3, "bool": true, "float": 0.5, "list": ["a", "b"],
            "map": {"troupe.dev/component": "api"}, "null": null, "string": "shop-api-prod",
        })
    );
    assert!(out["int"].is_i64(), "`${{{{ 3 }}}}` must be 3, not 3.0");
    assert_eq!(serde_json::to_string(&out["replicas"]).unwrap(), "3");
}

#[test]
fn mixed_strings_interpolate_formatted_values() {
    let out = render(json!([
        "${{ metadata.name }}-config",
        "port=${{ parameters.port }} debug=${{ parameters.debug }} none=${{ parameters.extra }}.",
        "tags ${{ parameters.tags }} sel ${{ metadata.podSelectors }}",
        "${{ 1 }}${{ 2 }}",
    ]))
    .unwrap();
    assert_eq!(
        out,
        json!([
            "shop-api-prod-config",
            "port=8080 debug=true none=.",
            r#"tags ["a","b"] sel {"troupe.dev/component":"api"}"#,
            "12",
        ])
    );
}

#[test]
fn map_keys_may_be_expressions() {
    let out = render(json!({
        "${{ metadata.name }}": 1,
        "app.${{ 'x' | upper }}/y": 2,
        "${{ parameters.port }}": 3,
        "plain": 4,
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({"shop-api-prod": 1, "app.X/y": 2, "8080": 3, "plain": 4})
    );

    let err = render(json!({"labels": {"${{ parameters.tags }}": 1}})).unwrap_err();
    assert_eq!(err.path, "/t/labels/${{ parameters.tags }}");
    assert!(err.message.contains("string or a number"), "{err}");

    let err = render(json!({"${{ 'a' }}": 1, "a": 2})).unwrap_err();
    assert!(err.message.contains("already has"), "{err}");
}

#[test]
fn include_when_decides_whether_the_object_exists() {
    let engine = mk_engine();
    let template = json!({"kind": "Service", "metadata": {"name": "${{ metadata.name }}"}});
    let yes = mk_resource("${{ workload.endpoints | length > 0 }}", "", "", &template);
    let out = engine
        .render_resource("/spec/resources/1", &yes, &mk_context())
        .unwrap();
    assert_eq!(
        out,
        vec![json!({"kind": "Service", "metadata": {"name": "shop-api-prod"}})]
    );

    let no = mk_resource("${{ parameters.debug and false }}", "", "", &template);
    assert_eq!(
        engine.render_resource("/r", &no, &mk_context()).unwrap(),
        Vec::<Json>::new()
    );

    let not_bool = mk_resource("${{ parameters.port }}", "", "", &template);
    let err = engine
        .render_resource("/spec/resources/1", &not_bool, &mk_context())
        .unwrap_err();
    assert_eq!(err.path, "/spec/resources/1/includeWhen");
    assert_eq!(err.expression, "parameters.port");
    assert!(
        err.message.contains("must evaluate to a bool, got number"),
        "{err}"
    );
}

#[test]
fn for_each_over_a_list_makes_one_object_per_item() {
    let template = json!({"name": "${{ metadata.name }}-${{ tag }}", "index": "${{ tag }}"});
    let resource = mk_resource("", "${{ parameters.tags }}", "tag", &template);
    let out = mk_engine()
        .render_resource("/r", &resource, &mk_context())
        .unwrap();
    assert_eq!(
        out,
        vec![
            json!({"name": "shop-api-prod-a", "index": "a"}),
            json!({"name": "shop-api-prod-b", "index": "b"})
        ]
    );
}

#[test]
fn for_each_over_a_map_iterates_entries_in_key_order() {
    let template = json!({"name": "${{ ep.key }}", "port": "${{ ep.value.port }}"});
    let resource = mk_resource("", "${{ workload.endpoints }}", "ep", &template);
    let out = mk_engine()
        .render_resource("/r", &resource, &mk_context())
        .unwrap();
    assert_eq!(
        out,
        vec![
            json!({"name": "admin", "port": 9000}),
            json!({"name": "web", "port": 80})
        ]
    );
}

#[test]
fn for_each_needs_a_valid_var_and_a_list_or_map() {
    let engine = mk_engine();
    let template = json!({"a": 1});
    let missing = mk_resource("", "${{ parameters.tags }}", "", &template);
    let err = engine
        .render_resource("/r", &missing, &mk_context())
        .unwrap_err();
    assert_eq!(err.path, "/r/var");
    assert!(err.message.contains("required"), "{err}");
    assert_eq!(engine.check_resource("/r", &missing).unwrap_err(), err);

    let bad = mk_resource("", "${{ parameters.tags }}", "1x", &template);
    assert!(
        engine
            .render_resource("/r", &bad, &mk_context())
            .unwrap_err()
            .message
            .contains("not a valid name")
    );

    let scalar = mk_resource("", "${{ parameters.port }}", "x", &template);
    let err = engine
        .render_resource("/r", &scalar, &mk_context())
        .unwrap_err();
    assert_eq!(err.path, "/r/forEach");
    assert!(err.message.contains("list or a map"), "{err}");

    let stray = mk_resource("", "", "x", &template);
    assert!(
        engine
            .render_resource("/r", &stray, &mk_context())
            .unwrap_err()
            .message
            .contains("forEach is not")
    );
}

#[test]
fn for_each_errors_name_the_item() {
    let template = json!({"port": "${{ ep.value.missing + 1 }}"});
    let resource = mk_resource("", "${{ workload.endpoints }}", "ep", &template);
    let err = mk_engine()
        .render_resource("/r", &resource, &mk_context())
        .unwrap_err();
    assert_eq!(err.path, "/r/template/port");
    assert!(err.message.starts_with("forEach item 0: "), "{err}");
}

#[test]
fn omit_removes_map_entries_and_list_items() {
    let out = render(json!({
        "kept": 1,
        "dropped": "${{ omit() }}",
        "conditional": "${{ parameters.extra if parameters.extra else omit() }}",
        "list": [1, "${{ omit() }}", 2],
        "nested": "${{ {'a': omit(), 'b': [omit(), 3]} }}",
        "${{ omit() }}": "key omitted",
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({"kept": 1, "list": [1, 2], "nested": {"b": [3]}})
    );

    let err = render(json!({"s": "x-${{ omit() }}"})).unwrap_err();
    assert!(err.message.contains("part of a string"), "{err}");
}

#[test]
fn undefined_variables_are_errors_naming_path_expression_and_variable() {
    let err =
        render(json!({"spec": {"replicas": "${{ environmentConfigs.replica }}"}})).unwrap_err();
    assert_eq!(err.path, "/t/spec/replicas");
    assert_eq!(err.expression, "environmentConfigs.replica");
    assert!(
        err.message
            .contains("`environmentConfigs.replica` is undefined"),
        "{err}"
    );

    let err = render(json!({"name": "x-${{ nope }}"})).unwrap_err();
    assert!(err.message.contains("`nope` is undefined"), "{err}");
    assert_eq!(
        err.to_string(),
        format!("/t/name: `nope`: {}", err.message),
        "the message names path, expression and cause"
    );
    // Defaults still work under strict undefined.
    assert_eq!(eval("${{ parameters.missing | default(7) }}"), json!(7));
}

#[test]
fn check_reports_syntax_errors_with_path_and_expression() {
    let engine = mk_engine();
    let good = json!({"spec": {"replicas": "${{ environmentConfigs.replicas }}", "${{ k }}": ["${{ a }}-${{ b | upper }}"]}});
    engine.check("/spec/template", &good).unwrap();

    let err = engine
        .check(
            "/spec/template",
            &json!({"spec": {"replicas": "${{ 1 + }}"}}),
        )
        .unwrap_err();
    assert_eq!(err.path, "/spec/template/spec/replicas");
    assert_eq!(err.expression, "1 +");
    assert!(err.message.contains("syntax error"), "{err}");

    let err = engine
        .check("/t", &json!({"labels": {"a/${{ x x }}": 1}}))
        .unwrap_err();
    assert_eq!(err.path, "/t/labels/a~1${{ x x }}");
    assert_eq!(err.expression, "x x");

    let err = engine
        .check("/t", &json!(["ok", "${{ unterminated"]))
        .unwrap_err();
    assert_eq!(err.path, "/t/1");
    assert!(err.message.contains("unterminated"), "{err}");

    // Wrapped in the fuel meter, `a), (b` would parse; it must not pass the check.
    assert!(engine.check("/t", &json!("${{ a), (b }}")).is_err());
    assert!(
        engine
            .check_field("/w", "${{ resource.kind == 'Service' }}")
            .is_ok()
    );
    assert!(engine.check_field("/w", "no expression").is_err());
}

#[test]
fn double_dollar_escapes_a_literal_expression() {
    let out = render(
        json!({"cmd": "echo $${{ not.evaluated }} ${{ metadata.name }}", "only": "$${{ x }}"}),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"cmd": "echo ${{ not.evaluated }} shop-api-prod", "only": "${{ x }}"})
    );
}

#[test]
fn control_fields_must_be_one_expression() {
    let engine = mk_engine();
    assert_eq!(eval("${{ parameters.tags | length }}"), json!(2));
    let err = engine
        .eval("/spec/where", "kind == 'Service'", &mk_context())
        .unwrap_err();
    assert_eq!(err.path, "/spec/where");
    assert!(err.message.contains("exactly one"), "{err}");
    assert!(
        engine
            .eval("/f", "${{ 1 }}", &json!([1]))
            .unwrap_err()
            .message
            .contains("JSON object")
    );
}

#[test]
fn resource_templates_render_to_maps() {
    let template = json!("${{ parameters.tags }}");
    let resource = mk_resource("", "", "", &template);
    let err = mk_engine()
        .render_resource("/r", &resource, &mk_context())
        .unwrap_err();
    assert_eq!(err.path, "/r/template");
    assert!(
        err.message.contains("must render to a map, got a list"),
        "{err}"
    );
}

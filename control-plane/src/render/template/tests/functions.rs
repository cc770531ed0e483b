//! The helper functions, as a template author calls them.

use serde_json::json;

use super::*;

#[test]
fn dns_name_is_a_stable_sanitized_hash_suffixed_label() {
    let name = eval("${{ dns_name('Shop', 'API_v2', 'prod') }}");
    let name = name.as_str().unwrap();
    let (readable, hash) = name.rsplit_once('-').unwrap();
    assert_eq!(readable, "shop-api-v2-prod");
    assert_eq!(hash.len(), 8);
    assert_eq!(
        eval("${{ dns_name('Shop', 'API_v2', 'prod') }}"),
        json!(name),
        "stable"
    );
    assert_ne!(
        eval("${{ dns_name('Shop', 'API_v2', 'dev') }}"),
        json!(name)
    );
    // Same readable text, different parts: the hash tells them apart.
    assert_ne!(
        eval("${{ dns_name('a-b', 'c') }}"),
        eval("${{ dns_name('a', 'b-c') }}")
    );

    let long = eval("${{ dns_name('x' * 100, '--Weird..Chars!!', 'end') }}");
    let long = long.as_str().unwrap();
    assert!(long.len() <= 63, "{long} is {} chars", long.len());
    assert!(
        long.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    );
    assert!(!long.starts_with('-') && !long.contains("--"), "{long}");
    assert_eq!(
        eval("${{ dns_name('--a__b--') }}")
            .as_str()
            .unwrap()
            .split('-')
            .next(),
        Some("a")
    );
}

#[test]
fn merge_is_deep_and_later_arguments_win() {
    let merged = eval(
        "${{ merge({'a': {'x': 1, 'y': [1]}, 'b': 1, 'gone': 1}, {'a': {'y': [2], 'z': 3}, 'gone': omit()}, none, {'b': 'last'}) }}",
    );
    assert_eq!(
        merged,
        json!({"a": {"x": 1, "y": [2], "z": 3}, "b": "last"})
    );
    assert_eq!(
        eval("${{ merge(metadata.podSelectors, {'extra': 'y'}) | length }}"),
        json!(2)
    );
    let err = mk_engine()
        .eval("/f", "${{ merge({}, 3) }}", &mk_context())
        .unwrap_err();
    assert!(err.message.contains("not a map"), "{err}");
}

#[test]
fn sha256_and_hash_hex_digest_strings_and_json() {
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(eval("${{ sha256('') }}"), json!(empty));
    assert_eq!(eval("${{ '' | sha256 }}"), json!(empty));
    assert_eq!(eval("${{ hash('') }}"), json!(&empty[..8]));
    assert_eq!(eval("${{ hash('', n=12) }}"), json!(&empty[..12]));
    assert_eq!(eval("${{ hash('', 4) }}"), json!(&empty[..4]));
    // Non-strings hash their compact JSON, so equal values hash equally.
    assert_eq!(
        eval("${{ sha256({'b': 1, 'a': [true]}) }}"),
        eval(r#"${{ sha256('{"a":[true],"b":1}') }}"#)
    );
}

#[test]
fn base64_round_trips_and_rejects_bad_input() {
    assert_eq!(eval("${{ b64encode('héllo:1') }}"), json!("aMOpbGxvOjE="));
    assert_eq!(
        eval("${{ 'héllo:1' | b64encode | b64decode }}"),
        json!("héllo:1")
    );
    let err = mk_engine()
        .eval("/f", "${{ b64decode('not base64!') }}", &mk_context())
        .unwrap_err();
    assert!(err.message.contains("invalid base64"), "{err}");
}

#[test]
fn tojson_and_fromjson_round_trip_with_types() {
    assert_eq!(
        eval("${{ tojson(metadata.podSelectors) }}"),
        json!(r#"{"troupe.dev/component":"api"}"#)
    );
    assert_eq!(
        eval("${{ parameters.tags | tojson }}"),
        json!(r#"["a","b"]"#)
    );
    assert_eq!(eval("${{ tojson([1], indent=2) }}"), json!("[\n  1\n]"));
    assert_eq!(
        eval(r#"${{ fromjson('{"n": 3, "l": [true, null]}') }}"#),
        json!({"n": 3, "l": [true, null]})
    );
    assert_eq!(
        eval("${{ fromjson(tojson(parameters)) == parameters }}"),
        json!(true)
    );
    assert!(
        mk_engine()
            .eval("/f", "${{ fromjson('{') }}", &mk_context())
            .is_err()
    );
}

#[test]
fn file_mounts_and_to_map_shape_files_for_a_config_map() {
    let files = "[{'name': 'app.yaml', 'mountPath': '/etc/app.yaml', 'value': 'a: 1'}, \
                 {'name': 'key', 'mountPath': '/etc/key', 'value': 'k'}]";
    assert_eq!(
        eval(&format!("${{{{ {files} | file_mounts('cfg') }}}}")),
        json!([
            {"name": "cfg", "mountPath": "/etc/app.yaml", "subPath": "app.yaml"},
            {"name": "cfg", "mountPath": "/etc/key", "subPath": "key"},
        ])
    );
    assert_eq!(
        eval(&format!("${{{{ {files} | to_map('name', 'value') }}}}")),
        json!({"app.yaml": "a: 1", "key": "k"})
    );
    let err = mk_engine()
        .eval(
            "/f",
            "${{ [{'value': 1}] | to_map('name', 'value') }}",
            &mk_context(),
        )
        .unwrap_err();
    assert!(err.message.contains("an item has no \"name\""), "{err}");
}

#[test]
fn the_containing_test_selects_items_whose_list_holds_a_value() {
    let endpoints = "[{'name': 'web', 'visibility': ['external', 'internal']}, \
                     {'name': 'admin', 'visibility': ['internal']}, {'name': 'db'}]";
    assert_eq!(
        eval(&format!(
            "${{{{ {endpoints} | selectattr('visibility', 'containing', 'external') | map(attribute='name') | list }}}}"
        )),
        json!(["web"])
    );
    assert_eq!(
        eval(&format!(
            "${{{{ {endpoints} | selectattr('visibility', 'containing', 'internal') | map(attribute='name') | list }}}}"
        )),
        json!(["web", "admin"])
    );
}

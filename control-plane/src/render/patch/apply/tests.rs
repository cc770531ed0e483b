//! Applying patches to a small Deployment as a trait author sees it; builders are `mk_*`.

use serde_json::{Value, json};

use super::super::{Op, PatchError, Path};
use super::apply;

fn mk_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"team": "core"}},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [
                {"name": "main", "image": "web:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "proxy", "image": "envoy:1", "env": []},
            ]}},
        },
    })
}

fn mk_path(path: &str) -> Path {
    Path::parse(path).unwrap()
}

fn mk_apply(object: &mut Value, op: Op, path: &str, value: Value) -> Result<usize, PatchError> {
    apply(object, op, &mk_path(path), Some(&value))
}

const CONTAINERS: &str = "/spec/template/spec/containers";

#[test]
fn add_creates_volumes_in_the_pod_spec() {
    let mut d = mk_deployment();
    let volumes = json!([{"name": "cache", "emptyDir": {}}]);
    assert_eq!(
        mk_apply(
            &mut d,
            Op::Add,
            "/spec/template/spec/volumes",
            volumes.clone()
        ),
        Ok(1)
    );
    assert_eq!(d["spec"]["template"]["spec"]["volumes"], volumes);
}

#[test]
fn add_creates_missing_maps_but_no_array_to_insert_into() {
    let mut d = mk_deployment();
    let path = "/spec/template/metadata/annotations/example.com~1owner";
    assert_eq!(mk_apply(&mut d, Op::Add, path, json!("team-a")), Ok(1));
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["example.com/owner"],
        "team-a"
    );

    let err = mk_apply(
        &mut d,
        Op::Add,
        "/spec/template/spec/initContainers/0",
        json!({}),
    )
    .unwrap_err();
    assert!(
        matches!(&err, PatchError::NotFound { at, .. } if at == "initContainers"),
        "{err}"
    );
    assert!(
        err.to_string().contains("a missing array only to append"),
        "{err}"
    );
    assert!(
        d["spec"]["template"]["spec"]
            .get("initContainers")
            .is_none()
    );
}

#[test]
fn add_appends_to_a_missing_or_null_list_by_creating_it() {
    let mut d = mk_deployment();
    let containers = &mut d["spec"]["template"]["spec"]["containers"];
    containers[0].as_object_mut().unwrap().remove("env");
    containers[1]["env"] = Value::Null;
    containers
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "log", "env": [{"name": "A", "value": "1"}]}));
    let var = json!({"name": "REGION", "value": "eu"});
    let path = format!("{CONTAINERS}/[*]/env/-");
    assert_eq!(mk_apply(&mut d, Op::Add, &path, var.clone()), Ok(3));
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["env"], json!([var]), "missing");
    assert_eq!(containers[1]["env"], json!([var]), "null");
    assert_eq!(
        containers[2]["env"],
        json!([{"name": "A", "value": "1"}, var]),
        "existing"
    );

    let path = "/spec/template/spec/initContainers/-";
    assert_eq!(
        mk_apply(&mut d, Op::Add, path, json!({"name": "init"})),
        Ok(1)
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["initContainers"],
        json!([{"name": "init"}])
    );
    let path = "/spec/template/spec/securityContext/sysctls/-";
    assert_eq!(mk_apply(&mut d, Op::Add, path, json!({"name": "a"})), Ok(1));
    assert_eq!(
        d["spec"]["template"]["spec"]["securityContext"],
        json!({"sysctls": [{"name": "a"}]}),
        "maps on the way are created too"
    );

    let before = d.clone();
    let err = mk_apply(&mut d, Op::Replace, "/spec/tolerations/-", json!({})).unwrap_err();
    assert!(
        matches!(&err, PatchError::NotFound { at, .. } if at == "tolerations"),
        "only add creates: {err}"
    );
    assert_eq!(d, before);
}

#[test]
fn add_appends_a_volume_mount_to_the_filtered_container() {
    let mut d = mk_deployment();
    d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "a"}]);
    let path = format!("{CONTAINERS}/[?(@.name=='main')]/volumeMounts/-");
    assert_eq!(
        mk_apply(&mut d, Op::Add, &path, json!({"name": "cache"})),
        Ok(1)
    );
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers[0]["volumeMounts"],
        json!([{"name": "a"}, {"name": "cache"}])
    );
    assert!(
        containers[1].get("volumeMounts").is_none(),
        "the proxy is not selected"
    );
}

#[test]
fn add_appends_a_list_value_as_one_element() {
    let mut d = mk_deployment();
    let path = format!("{CONTAINERS}/1/env/-");
    assert_eq!(mk_apply(&mut d, Op::Add, &path, json!([1, 2])), Ok(1));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][1]["env"],
        json!([[1, 2]])
    );
}

#[test]
fn wildcard_adds_an_env_var_to_every_container() {
    let mut d = mk_deployment();
    let var = json!({"name": "REGION", "value": "eu"});
    assert_eq!(
        mk_apply(
            &mut d,
            Op::Add,
            &format!("{CONTAINERS}/[*]/env/-"),
            var.clone()
        ),
        Ok(2)
    );
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "A", "value": "1"}, var])
    );
    assert_eq!(containers[1]["env"], json!([var]));
}

#[test]
fn filter_as_a_key_suffix_with_slash_in_literal() {
    let mut d = mk_deployment();
    d["spec"]["template"]["spec"]["containers"][1]["workingDir"] = json!("/srv/app");
    let path = "/spec/template/spec/containers[?(@.workingDir == \"/srv/app\")]/image";
    assert_eq!(mk_apply(&mut d, Op::Replace, path, json!("envoy:2")), Ok(1));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][1]["image"],
        "envoy:2"
    );
}

#[test]
fn filter_compares_nested_fields_integers_booleans_and_inequality() {
    let mut ports = json!({"ports": [
        {"port": 80, "meta": {"public": true}},
        {"port": 9090, "meta": {"public": false}},
        {"port": 8080},
    ]});
    assert_eq!(
        mk_apply(
            &mut ports,
            Op::Replace,
            "/ports/[?(@.port==9090)]/port",
            json!(9091)
        ),
        Ok(1)
    );
    assert_eq!(ports["ports"][1]["port"], 9091);
    let path = "/ports/[?(@.meta.public!=true)]/exposed";
    assert_eq!(
        mk_apply(&mut ports, Op::Add, path, json!(false)),
        Ok(2),
        "a missing field is unequal"
    );
    assert!(ports["ports"][0].get("exposed").is_none());
    let mut args = json!({"args": ["--debug", "--port=80", "--debug"]});
    assert_eq!(
        apply(
            &mut args,
            Op::Remove,
            &mk_path("/args/[?(@=='--debug')]"),
            None
        ),
        Ok(2)
    );
    assert_eq!(args, json!({"args": ["--port=80"]}));
}

#[test]
fn replace_sets_a_nested_value() {
    let mut d = mk_deployment();
    assert_eq!(
        mk_apply(
            &mut d,
            Op::Replace,
            &format!("{CONTAINERS}/0/image"),
            json!("web:2")
        ),
        Ok(1)
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    assert_eq!(
        mk_apply(&mut d, Op::Replace, "/spec/replicas", json!(3)),
        Ok(1)
    );
    assert_eq!(d["spec"]["replicas"], 3);
}

#[test]
fn remove_deletes_a_key() {
    let mut d = mk_deployment();
    assert_eq!(
        apply(
            &mut d,
            Op::Remove,
            &mk_path("/metadata/annotations/team"),
            None
        ),
        Ok(1)
    );
    assert_eq!(d["metadata"]["annotations"], json!({}));
}

#[test]
fn remove_deletes_every_filtered_element() {
    let mut d = mk_deployment();
    let env = json!([{"name": "X"}, {"name": "A"}, {"name": "X"}, {"name": "B"}, {"name": "X"}]);
    d["spec"]["template"]["spec"]["containers"][0]["env"] = env;
    let path = mk_path(&format!("{CONTAINERS}/[*]/env/[?(@.name=='X')]"));
    assert_eq!(apply(&mut d, Op::Remove, &path, None), Ok(3));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A"}, {"name": "B"}])
    );
}

#[test]
fn add_inserts_at_an_array_index() {
    let mut d = mk_deployment();
    let sidecar = json!({"name": "init-logs", "image": "busybox"});
    assert_eq!(
        mk_apply(&mut d, Op::Add, &format!("{CONTAINERS}/1"), sidecar.clone()),
        Ok(1)
    );
    let names: Vec<_> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "init-logs", "proxy"]);
}

#[test]
fn replace_of_a_missing_key_names_the_segment() {
    let mut d = mk_deployment();
    let before = d.clone();
    let err = mk_apply(
        &mut d,
        Op::Replace,
        "/spec/strategy/type",
        json!("Recreate"),
    )
    .unwrap_err();
    let expected = PatchError::NotFound {
        op: Op::Replace,
        path: "/spec/strategy/type".into(),
        at: "strategy".into(),
        parent: "/spec".into(),
    };
    assert_eq!(err, expected);
    assert_eq!(
        err.to_string(),
        "cannot replace /spec/strategy/type: \"strategy\" does not exist under /spec \
         (replace needs an existing location; use add to create one)"
    );
    let err = apply(
        &mut d,
        Op::Remove,
        &mk_path(&format!("{CONTAINERS}/[*]/image/tag")),
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(
            "needs a map or an array at /spec/template/spec/containers/0/image, found a string"
        ),
        "{err}"
    );
    assert_eq!(d, before, "a failed patch changes nothing");
}

#[test]
fn index_past_the_end_is_out_of_range() {
    let mut d = mk_deployment();
    let err = mk_apply(
        &mut d,
        Op::Replace,
        &format!("{CONTAINERS}/2/image"),
        json!("x"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot replace {CONTAINERS}/2/image: index 2 is out of range for the array at {CONTAINERS} (length 2)"
        )
    );
    assert!(matches!(
        mk_apply(&mut d, Op::Add, &format!("{CONTAINERS}/3"), json!({})),
        Err(PatchError::OutOfRange { len: 2, .. })
    ));
    assert!(matches!(
        apply(
            &mut d,
            Op::Remove,
            &mk_path(&format!("{CONTAINERS}/-")),
            None
        ),
        Err(PatchError::Unsupported { .. })
    ));
    assert_eq!(d, mk_deployment());
}

#[test]
fn selector_matching_nothing_changes_nothing() {
    let mut d = mk_deployment();
    let path = format!("{CONTAINERS}/[?(@.name=='worker')]/image");
    assert_eq!(mk_apply(&mut d, Op::Replace, &path, json!("x")), Ok(0));
    let path = mk_path("/spec/template/spec/initContainers/[*]/env/-");
    assert_eq!(
        apply(&mut d, Op::Add, &path, Some(&json!({}))),
        Ok(0),
        "a missing list selects nothing"
    );
    assert_eq!(d, mk_deployment());
}

#[test]
fn escaped_slash_addresses_annotation_keys() {
    let mut d = mk_deployment();
    let path = mk_path("/metadata/annotations/example.com~1owner");
    assert_eq!(apply(&mut d, Op::Add, &path, Some(&json!("team-a"))), Ok(1));
    assert_eq!(d["metadata"]["annotations"]["example.com/owner"], "team-a");
    assert_eq!(apply(&mut d, Op::Remove, &path, None), Ok(1));
    assert_eq!(d["metadata"]["annotations"], json!({"team": "core"}));
}

#[test]
fn op_misuse_is_reported() {
    let mut d = mk_deployment();
    let err = apply(&mut d, Op::Add, &mk_path("/spec/replicas"), None).unwrap_err();
    assert_eq!(err.to_string(), "add /spec/replicas needs a value");
    let err = mk_apply(&mut d, Op::Add, &format!("{CONTAINERS}/[*]"), json!({})).unwrap_err();
    assert!(
        err.to_string()
            .contains("use replace to overwrite selected elements"),
        "{err}"
    );
}

//! Releases and rendering through the real server: cut an immutable, content-named release,
//! render it for environments with different overrides, and see exactly those differences.

use serde_json::Value;
use troupe_tests::{Server, examples_dir, stderr, success};

fn mk_platform() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    success(&server.cli(&["apply", "-f", examples_dir().to_str().unwrap()]));
    (server, dir)
}

fn render(server: &Server, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["render", "api", "-n", "acme", "-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&success(&server.cli(&all))).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {objects:#?}"))
}

#[test]
fn identical_inputs_make_one_release() {
    let (server, _dir) = mk_platform();
    let first = success(&server.cli(&["release", "create", "api", "-n", "acme"]));
    assert!(first.contains(" created; release #1 of api"), "{first}");
    let again = success(&server.cli(&["release", "create", "api", "-n", "acme"]));
    assert!(again.contains("unchanged (same content)"), "{again}");
    let name = first
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("componentrelease/");
    assert!(
        name.starts_with("api-") && name.len() == 14,
        "content-named: {name}"
    );

    // A change to the workload is a new release, #2.
    let yaml = success(&server.cli(&["get", "wl", "api", "-n", "acme", "-o", "yaml"]));
    let edited = yaml.replace("ghcr.io/acme/api:1.0.0", "ghcr.io/acme/api:1.1.0");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&edited)));
    let second = success(&server.cli(&["release", "create", "api", "-n", "acme"]));
    assert!(second.contains(" created; release #2 of api"), "{second}");

    // The first release still renders the old image: releases are snapshots.
    let old = render(&server, &["--env", "development", "--release", name]);
    let image = &find(&old, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "ghcr.io/acme/api:1.0.0");
    let current = render(&server, &["--env", "development"]);
    let image = &find(&current, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "ghcr.io/acme/api:1.1.0");
}

#[test]
fn renders_typed_manifests_with_labels_traits_and_defaults() {
    let (server, _dir) = mk_platform();
    let objects = render(&server, &["--env", "development"]);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Deployment", "Service", "Ingress"], "{objects:#?}");
    let deployment = find(&objects, "Deployment");
    assert_eq!(
        deployment["spec"]["replicas"], 1,
        "the schema default, as an integer"
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    assert_eq!(
        deployment["metadata"]["labels"]["troupe.dev/environment"],
        "development"
    );
    assert_eq!(
        deployment["metadata"]["labels"]["troupe.dev/component"],
        "api"
    );
    assert!(
        deployment["spec"]["template"]["metadata"]["annotations"]["troupe.dev/config-hash"]
            .is_string()
    );
    assert!(
        deployment["spec"]["template"]["spec"]["containers"][0]
            .get("command")
            .is_none(),
        "an empty command is left out, as a person would"
    );
    assert!(
        deployment["metadata"]["labels"]
            .get("troupe.dev/release")
            .is_none(),
        "no release rendered"
    );
    let service = find(&objects, "Service");
    assert_eq!(
        service["spec"]["ports"],
        serde_json::json!([{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}])
    );
    let ingress = find(&objects, "Ingress");
    assert_eq!(ingress["spec"]["rules"][0]["host"], "api.acme.example.com");
}

#[test]
fn two_environments_differ_exactly_by_their_overrides() {
    let (server, _dir) = mk_platform();
    let a = render(&server, &["--env", "production", "--set", "replicas=2"]);
    let b = render(&server, &["--env", "production", "--set", "replicas=5"]);
    assert_eq!(find(&a, "Deployment")["spec"]["replicas"], 2);
    assert_eq!(find(&b, "Deployment")["spec"]["replicas"], 5);
    let mut b_as_a = b.clone();
    for o in &mut b_as_a {
        if o["kind"] == "Deployment" {
            o["spec"]["replicas"] = Value::from(2);
        }
    }
    assert_eq!(a, b_as_a, "nothing but replicas differs");
    // Rendering is deterministic: same inputs, same bytes.
    assert_eq!(
        a,
        render(&server, &["--env", "production", "--set", "replicas=2"])
    );
}

#[test]
fn bad_overrides_and_unknown_environments_are_refused() {
    let (server, _dir) = mk_platform();
    let out = server.cli(&[
        "render",
        "api",
        "-n",
        "acme",
        "--env",
        "production",
        "--set",
        "replicas=-1",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("environmentConfigs")
            && err.contains("/replicas")
            && err.contains("InvalidArgument"),
        "{err}"
    );
    let out = server.cli(&["render", "api", "-n", "acme", "--env", "qa"]);
    assert!(
        stderr(&out).contains("Environment acme/qa not found"),
        "{}",
        stderr(&out)
    );
}

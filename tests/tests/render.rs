//! Releases and rendering through the real server: cut an immutable, content-named release,
//! render it for environments with different overrides, and see exactly those differences.

use serde_json::Value;
use troupe_tests::{PATIENCE, Platform, Server, eventually, stderr, stdout, success};

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
    let server = Platform::builder().examples().start();
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
    let server = Platform::builder().examples().start();
    let objects = render(&server, &["--env", "development"]);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "ConfigMap",
            "Service",
            "HTTPRoute",
            "Ingress",
            "NetworkPolicy"
        ],
        "{objects:#?}"
    );
    // The workload's file is a ConfigMap key, mounted at its path.
    assert_eq!(
        find(&objects, "ConfigMap")["data"]["app.yaml"],
        "cache: {ttlSeconds: 30}\n"
    );
    let deployment = find(&objects, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0],
        serde_json::json!({"name": "files", "mountPath": "/etc/api/app.yaml", "subPath": "app.yaml"})
    );
    // The external endpoint gets a route on the data plane's public gateway.
    let route = find(&objects, "HTTPRoute");
    assert_eq!(
        route["spec"]["hostnames"][0],
        "api-development.apps.acme.example.com"
    );
    assert_eq!(route["spec"]["parentRefs"][0]["name"], "gateway-external");
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
    let server = Platform::builder().examples().start();
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
    let server = Platform::builder().examples().start();
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

fn binding(name: &str, env: &str, release: &str, replicas: i64) -> String {
    format!(
        "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {{name: {name}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: api}}
  environment: {env}
  releaseName: {release}
  componentTypeEnvironmentConfigs: {{replicas: {replicas}}}
"
    )
}

/// Waits for Release NAME to exist and returns it as JSON.
fn wait_release(server: &Server, name: &str) -> Value {
    let text = eventually(&format!("Release acme/{name} exists"), PATIENCE, || {
        server.get_text("release", "acme", name, "json")
    });
    serde_json::from_str(&text).unwrap()
}

#[test]
fn bindings_render_into_releases_that_differ_by_their_overrides() {
    // Production is bound directly below: its edge requires nothing here.
    let server = Platform::builder().examples().ungated().start();
    let out = success(&server.cli(&["release", "create", "api", "-n", "acme"]));
    let release = out
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("componentrelease/")
        .to_string();
    let two = format!(
        "{}---\n{}",
        binding("api-development", "development", &release, 1),
        binding("api-production", "production", &release, 4)
    );
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&two)));
    let dev = wait_release(&server, "api-development");
    let prod = wait_release(&server, "api-production");
    let manifests = |r: &Value| -> Vec<Value> {
        r["spec"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["object"].clone())
            .collect()
    };
    let (dev_objects, prod_objects) = (manifests(&dev), manifests(&prod));
    assert_eq!(find(&dev_objects, "Deployment")["spec"]["replicas"], 1);
    assert_eq!(find(&prod_objects, "Deployment")["spec"]["replicas"], 4);
    assert_eq!(
        find(&prod_objects, "Deployment")["metadata"]["labels"]["troupe.dev/release"],
        release.as_str()
    );
    // Apart from the environment's own name, only the override differs.
    let normalize = |objects: &[Value]| {
        objects
            .iter()
            .map(|o| {
                o.to_string()
                    .replace("development", "ENV")
                    .replace("production", "ENV")
            })
            .map(|s| s.replace("\"replicas\":4", "\"replicas\":1"))
            .collect::<Vec<_>>()
    };
    assert_eq!(normalize(&dev_objects), normalize(&prod_objects));

    // Re-applying the same bindings changes nothing: no new revision for the Release.
    let version = prod["metadata"]["resourceVersion"].clone();
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&two)));
    // An observation window, not a wait: a needless re-render would land within it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let again = wait_release(&server, "api-production");
    assert_eq!(again["metadata"]["resourceVersion"], version);

    // A binding naming a release that does not exist is refused when written.
    let bad = binding("api-staging", "staging", "api-0000000000", 1);
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(&bad));
    assert!(
        stderr(&out).contains("ComponentRelease acme/api-0000000000"),
        "{}",
        stderr(&out)
    );

    // Undeploy removes the Release but keeps the binding.
    let undeploy = binding("api-development", "development", &release, 1) + "  state: Undeploy\n";
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&undeploy)));
    eventually(
        "the Release of the undeployed binding is removed",
        PATIENCE,
        || {
            let out = server.cli(&["get", "release", "api-development", "-n", "acme"]);
            if out.status.success() {
                Err(stdout(&out))
            } else {
                Ok(())
            }
        },
    );
    let yaml = success(&server.cli(&["get", "rb", "api-development", "-n", "acme", "-o", "yaml"]));
    assert!(yaml.contains("reason: Undeployed"), "{yaml}");
}

/// The example `service` rendered for production matches the reviewed file in
/// `tests/golden/`: a change to rendered output shows up as a diff to review. Run with
/// `TROUPE_UPDATE_GOLDEN=1` to rewrite the file after an intended change.
#[test]
fn example_service_render_matches_its_golden_file() {
    let server = Platform::builder().examples().start();
    let out = success(&server.cli(&[
        "render",
        "api",
        "-n",
        "acme",
        "--env",
        "production",
        "--set",
        "replicas=3",
    ]));
    let golden = troupe_tests::workspace_root().join("tests/golden/api-production.yaml");
    if std::env::var_os("TROUPE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &out).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).expect("golden file (TROUPE_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        out,
        expected,
        "rendered output changed; review and update {}",
        golden.display()
    );
}

/// Waits until `troupe get KIND NAME -n acme -o yaml` succeeds and `check` holds for it.
fn wait_yaml(server: &Server, kind: &str, name: &str, check: impl Fn(&str) -> bool) -> String {
    eventually(
        &format!("{kind} acme/{name} is as expected"),
        PATIENCE,
        || {
            let yaml = server.get_text(kind, "acme", name, "yaml")?;
            if check(&yaml) { Ok(yaml) } else { Err(yaml) }
        },
    )
}

#[test]
fn auto_deploy_releases_every_change_into_the_first_environment() {
    let server = Platform::builder().examples().start();
    let yaml = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    let auto = yaml.replace("spec:\n", "spec:\n  autoDeploy: true\n");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&auto)));

    // The pipeline starts at development: the binding appears there, and renders.
    let binding = wait_yaml(&server, "rb", "api-development", |_| true);
    let first = binding
        .lines()
        .find(|l| l.contains("releaseName:"))
        .unwrap()
        .to_string();
    wait_yaml(&server, "release", "api-development", |_| true);
    assert!(
        !server
            .cli(&["get", "rb", "api-staging", "-n", "acme"])
            .status
            .success(),
        "other environments change only by promotion"
    );

    // A change to the workload cuts release #2 and moves the binding to it.
    let workload = success(&server.cli(&["get", "wl", "api", "-n", "acme", "-o", "yaml"]));
    let edited = workload.replace("ghcr.io/acme/api:1.0.0", "ghcr.io/acme/api:2.0.0");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&edited)));
    // (The old release stays in `status.releaseHistory`; the spec line is what moves.)
    let moved = wait_yaml(&server, "rb", "api-development", |y| {
        !y.lines().any(|l| l == first)
    });
    assert!(moved.contains("releaseName: api-"), "{moved}");
    wait_yaml(&server, "release", "api-development", |y| {
        y.contains("ghcr.io/acme/api:2.0.0")
    });
    let releases = success(&server.cli(&["get", "cr", "-n", "acme"]));
    assert_eq!(
        releases.lines().count(),
        3,
        "two releases and a header: {releases}"
    );
}

#[test]
fn validation_rules_stop_a_render_with_their_message() {
    let server = Platform::builder().examples().start();
    let yaml = success(&server.cli(&["get", "comp", "api", "-n", "acme", "-o", "yaml"]));
    success(&server.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&yaml.replace("port: 8080", "port: 22")),
    ));
    let out = server.cli(&["render", "api", "-n", "acme", "--env", "development"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("ComponentType validations[0]")
            && err.contains("port 22 is reserved for SSH on our nodes"),
        "{err}"
    );
}

#[test]
fn diff_compares_a_binding_with_its_release() {
    // Production is bound directly below: its edge requires nothing here.
    let server = Platform::builder().examples().ungated().start();
    let out = success(&server.cli(&["release", "create", "api", "-n", "acme"]));
    let release = out
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("componentrelease/")
        .to_string();
    success(&server.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&binding("api-production", "production", &release, 2)),
    ));
    wait_release(&server, "api-production");
    let same = server.cli(&["diff", "api-production", "-n", "acme"]);
    assert!(same.status.success(), "{}", stderr(&same));
    assert!(stderr(&same).contains("no differences"));
    let changed = server.cli(&[
        "diff",
        "api-production",
        "-n",
        "acme",
        "--set",
        "replicas=6",
    ]);
    assert_eq!(
        changed.status.code(),
        Some(1),
        "differences exit 1, like kubectl diff"
    );
    let text = troupe_tests::stdout(&changed);
    assert!(
        text.contains("--- Deployment acme-shop-production/api"),
        "{text}"
    );
    let changes: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(['+', '-']) && !l.starts_with("---") && !l.starts_with("+++"))
        .collect();
    assert_eq!(changes, ["+  replicas: 6", "-  replicas: 2"], "{text}");
}

/// The rest of the sample platform renders to reviewed golden files: a worker with a
/// persistent volume and an autoscaler, and a scheduled task.
#[test]
fn sample_types_and_traits_match_their_golden_files() {
    let server = Platform::builder().samples().start();
    for (component, env, sets) in [
        (
            "orders",
            "production",
            vec!["--set", "replicas=2", "--set", "traits.scale.maxReplicas=6"],
        ),
        ("nightly-report", "development", vec![]),
        ("storefront", "staging", vec![]),
    ] {
        let mut args = vec!["render", component, "-n", "acme", "--env", env];
        args.extend(sets);
        let out = success(&server.cli(&args));
        let golden =
            troupe_tests::workspace_root().join(format!("tests/golden/{component}-{env}.yaml"));
        if std::env::var_os("TROUPE_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &out).unwrap();
        }
        let expected = std::fs::read_to_string(&golden)
            .expect("golden file (TROUPE_UPDATE_GOLDEN=1 writes it)");
        assert_eq!(
            out,
            expected,
            "rendered output changed; review and update {}",
            golden.display()
        );
    }
    let orders = render_json(
        &server,
        "orders",
        &["--env", "production", "--set", "traits.scale.maxReplicas=6"],
    );
    let pod = &find(&orders, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "orders-data"
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/lib/orders"
    );
    assert_eq!(
        find(&orders, "PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"],
        "5Gi"
    );
    assert_eq!(
        find(&orders, "HorizontalPodAutoscaler")["spec"]["maxReplicas"],
        6
    );
    let report = render_json(&server, "nightly-report", &["--env", "development"]);
    let cron = find(&report, "CronJob");
    assert_eq!(cron["spec"]["schedule"], "30 2 * * *");
    assert!(cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]["troupe.dev/config-hash"].is_string());
}

fn render_json(server: &Server, component: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["render", component, "-n", "acme", "-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&success(&server.cli(&all))).unwrap()
}

//! What a ReleaseBinding adds to a release through the real server: connections resolved from
//! the target component's binding in the same environment (pending, with the reason, until it
//! exists), and per-environment workload overrides.

use serde_json::Value;
use troupe_tests::{PATIENCE, Platform, Server, eventually, stderr, success};

/// Waits until `troupe get KIND NAME -n acme -o json` succeeds and `check` holds for it.
fn get_json(server: &Server, kind: &str, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(
        &format!("{kind} acme/{name} is as expected"),
        PATIENCE,
        || {
            let text = server.get_text(kind, "acme", name, "json")?;
            match serde_json::from_str::<Value>(&text) {
                Ok(value) if check(&value) => Ok(value),
                _ => Err(text),
            }
        },
    )
}

fn condition<'a>(binding: &'a Value, type_: &str) -> &'a Value {
    binding["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// The main container's environment in a stored Release's Deployment.
fn deployment_env(release: &Value) -> Vec<(String, String)> {
    let deployment = release["spec"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["object"])
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    let value = e["value"].as_str().unwrap_or_default().to_string();
                    (e["name"].as_str().unwrap().to_string(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

const API_URL: &str = "http://api.acme-shop-staging.svc.cluster.local:8080";

#[test]
fn connections_resolve_from_the_target_binding_and_are_pending_until_then() {
    let server = Platform::builder().samples().start();
    let storefront = server.cut_release("storefront");
    server.bind("storefront", "staging", &storefront, "");

    // api is not bound in staging: storefront deploys, without the variable, and says why.
    let binding = get_json(&server, "rb", "storefront-staging", |b| {
        condition(b, "ConnectionsResolved")["status"] == "False"
    });
    let pending = &binding["status"]["pendingConnections"][0];
    assert_eq!(pending["component"], "api");
    assert_eq!(
        pending["reason"],
        "component shop/api has no ReleaseBinding in environment staging"
    );
    assert_eq!(
        condition(&binding, "ConnectionsResolved")["reason"],
        "ConnectionsPending"
    );
    let rendered = get_json(&server, "release", "storefront-staging", |_| true);
    assert!(
        deployment_env(&rendered)
            .iter()
            .all(|(k, _)| k != "API_URL"),
        "a pending connection injects nothing"
    );

    // Binding api in staging resolves the connection without touching storefront's binding.
    let api = server.cut_release("api");
    server.bind("api", "staging", &api, "");
    let api_binding = get_json(&server, "rb", "api-staging", |b| {
        b["status"]["endpoints"][0]["invokeUrl"].is_string()
    });
    let endpoint = &api_binding["status"]["endpoints"][0];
    assert_eq!(
        endpoint["serviceUrl"]["host"],
        "api.acme-shop-staging.svc.cluster.local"
    );
    // Callers outside use the route on the data plane's public gateway.
    assert_eq!(
        endpoint["invokeUrl"],
        "https://api-staging.apps.acme.example.com:443"
    );
    assert_eq!(endpoint["externalUrls"]["http"]["port"], 80);
    let binding = get_json(&server, "rb", "storefront-staging", |b| {
        condition(b, "ConnectionsResolved")["status"] == "True"
    });
    assert_eq!(binding["status"]["resolvedConnections"][0]["url"], API_URL);
    assert!(binding["status"]["pendingConnections"].is_null());
    let rendered = get_json(&server, "release", "storefront-staging", |r| {
        deployment_env(r).iter().any(|(k, _)| k == "API_URL")
    });
    assert!(deployment_env(&rendered).contains(&("API_URL".into(), API_URL.into())));

    // Undeploying api makes the connection pending again, and the variable goes.
    server.bind("api", "staging", &api, "  state: Undeploy\n");
    let binding = get_json(&server, "rb", "storefront-staging", |b| {
        condition(b, "ConnectionsResolved")["status"] == "False"
    });
    assert_eq!(
        binding["status"]["pendingConnections"][0]["reason"],
        "component shop/api is undeployed in environment staging"
    );
    get_json(&server, "release", "storefront-staging", |r| {
        deployment_env(r).iter().all(|(k, _)| k != "API_URL")
    });

    // The dry run resolves the same way and names what is pending.
    let out = server.cli(&["render", "storefront", "-n", "acme", "--env", "production"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "connection to shop/api endpoint http is pending: component shop/api has no ReleaseBinding in environment production"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn connections_to_missing_endpoints_or_across_projects_say_why() {
    let server = Platform::builder().samples().start();
    let workload = success(&server.cli(&["get", "wl", "storefront", "-n", "acme", "-o", "yaml"]));
    let edited = workload.replace("endpoint: http", "endpoint: admin");
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&edited)));
    let api = server.cut_release("api");
    server.bind("api", "staging", &api, "");
    let storefront = server.cut_release("storefront");
    server.bind("storefront", "staging", &storefront, "");
    let binding = get_json(&server, "rb", "storefront-staging", |b| {
        b["status"]["pendingConnections"][0]["reason"].is_string()
    });
    assert_eq!(
        binding["status"]["pendingConnections"][0]["reason"],
        format!("component shop/api has no endpoint \"admin\" in release {api} (it has: http)")
    );

    // A visibility outside project and namespace is refused when written, naming the field.
    let bad = workload.replace("endpoint: http", "endpoint: http\n    visibility: world");
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(&bad));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.connections[0].visibility")
            && stderr(&out).contains("\"world\" is not one of project, namespace"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn workload_overrides_change_one_environment_only() {
    // Production is bound directly below: its edge requires nothing here.
    let server = Platform::builder().samples().ungated().start();
    let api = server.cut_release("api");
    let overrides = "  workloadOverrides:
    container:
      env:
        - {key: LOG_LEVEL, value: debug}
        - {key: FEATURE_X, value: \"on\"}
";
    server.bind("api", "staging", &api, overrides);
    server.bind("api", "production", &api, "");
    let staging = get_json(&server, "release", "api-staging", |_| true);
    let production = get_json(&server, "release", "api-production", |_| true);
    assert_eq!(
        deployment_env(&staging),
        [
            ("LOG_LEVEL".to_string(), "debug".to_string()),
            ("FEATURE_X".to_string(), "on".to_string())
        ],
        "an override replaces the variable with its key and appends new ones"
    );
    assert_eq!(
        deployment_env(&production),
        [("LOG_LEVEL".to_string(), "info".to_string())]
    );

    // The dry run takes the same overrides from the command line.
    let out = success(&server.cli(&[
        "render",
        "api",
        "-n",
        "acme",
        "--env",
        "production",
        "--set-env",
        "LOG_LEVEL=warn",
    ]));
    assert!(out.contains("value: warn"), "{out}");

    // An override without a key is refused when written, naming the field.
    let bad = "  workloadOverrides:\n    container:\n      env: [{value: x}]\n";
    let yaml = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {{name: api-development, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: api}}
  environment: development
  releaseName: {api}
{bad}"
    );
    let out = server.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("spec.workloadOverrides.container.env[0].key: required"),
        "{}",
        stderr(&out)
    );
}

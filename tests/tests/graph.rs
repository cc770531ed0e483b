//! `troupe graph` against the real server: two projects, billing's ledger calling shop's api
//! across projects (and a component that does not exist), both deploying themselves to
//! development. The graph shows the connection resolved there and pending elsewhere with the
//! reason, through the CLI in each format and through grpcurl; when api stops exposing the
//! endpoint to the namespace, the graph follows.

use serde_json::Value;
use troupe_tests::{PATIENCE, Platform, Server, eventually, stdout, success};

/// shop/api serves `http` to the namespace; billing/ledger calls it, and billing/audit, which
/// does not exist. Both deploy themselves to development.
const PROJECTS: &str = "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: api, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/service}
  autoDeploy: true
  parameters: {port: 8080}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: api, namespace: acme}
spec:
  owner: {projectName: shop, componentName: api}
  container: {image: ghcr.io/acme/api:1.0.0}
  endpoints:
    - {name: http, type: HTTP, port: 8080, visibility: [namespace, external]}
---
apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {name: billing, namespace: acme}
spec: {deploymentPipelineRef: default}
---
apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: ledger, namespace: acme}
spec:
  owner: {projectName: billing}
  componentType: {name: deployment/service}
  autoDeploy: true
  parameters: {port: 9090}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: ledger, namespace: acme}
spec:
  owner: {projectName: billing, componentName: ledger}
  container: {image: ghcr.io/acme/ledger:2.3.0}
  endpoints:
    - {name: grpc, type: gRPC, port: 9090}
  connections:
    - project: shop
      component: api
      endpoint: http
      visibility: namespace
      envBindings: {address: API_URL}
    - {component: audit, endpoint: events}
";

const API_URL: &str = "http://api.acme-shop-development.svc.cluster.local:8080";

/// `troupe graph -n acme ARGS -o json`, parsed.
fn graph(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["graph", "-n", "acme", "-o", "json"];
    all.extend(args);
    let out = success(&server.cli(&all));
    serde_json::from_str(&out).expect("JSON from troupe graph")
}

/// The state of the connection `consumer` → `target` (both `project/name`) in `environment`:
/// `("Resolved", url)` or `("Pending", reason)`.
fn state(graph: &Value, consumer: &str, target: &str, environment: &str) -> (String, String) {
    let name = |r: &Value| {
        format!(
            "{}/{}",
            r["project"].as_str().unwrap_or_default(),
            r["name"].as_str().unwrap_or_default()
        )
    };
    let connection = graph["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| name(&c["consumer"]) == consumer && name(&c["target"]) == target)
        .unwrap_or_else(|| panic!("no connection {consumer} → {target} in {graph:#}"));
    let state = connection["states"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["environment"] == environment)
        .unwrap_or_else(|| panic!("no state in {environment}: {connection:#}"));
    let text = |field: &str| state[field].as_str().unwrap_or_default().to_string();
    let detail = if text("state") == "Resolved" {
        text("url")
    } else {
        text("reason")
    };
    (text("state"), detail)
}

fn resolved(url: &str) -> (String, String) {
    ("Resolved".to_string(), url.to_string())
}

fn pending(reason: &str) -> (String, String) {
    ("Pending".to_string(), reason.to_string())
}

#[test]
fn the_graph_shows_a_cross_project_connection_and_follows_a_visibility_change() {
    let server = Platform::builder().examples().apply(PROJECTS).start();
    let seen = eventually(
        "ledger's connection to api resolves in development",
        PATIENCE,
        || {
            let seen = graph(&server, &[]);
            let development = state(&seen, "billing/ledger", "shop/api", "development");
            if development == resolved(API_URL) {
                Ok(seen)
            } else {
                Err(format!("{development:?}"))
            }
        },
    );
    assert_eq!(
        seen["environments"],
        serde_json::json!(["development", "staging", "production"])
    );
    assert_eq!(
        state(&seen, "billing/ledger", "shop/api", "staging"),
        pending(
            "component billing/ledger (the consumer) has no ReleaseBinding in environment staging"
        )
    );
    for env in ["development", "staging", "production"] {
        assert_eq!(
            state(&seen, "billing/ledger", "billing/audit", env),
            pending("component billing/audit does not exist"),
            "a connection to nothing is drawn, pending, in {env}"
        );
    }
    let api = seen["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "api"))
        .expect("api among the components");
    assert_eq!(
        api["endpoints"][0]["visibility"],
        serde_json::json!(["namespace", "external"])
    );

    // The table: every component, a line per connection, the reasons below.
    let table = success(&server.cli(&["graph", "-n", "acme"]));
    println!("{table}");
    for line in [
        "shop/api         deployment/service   http :8080 HTTP (namespace, external)",
        "billing/ledger → shop/api:http          namespace, external   Resolved      Pending [2]   Pending [3]",
        "[1] component billing/audit does not exist",
    ] {
        assert!(table.contains(line), "{line:?} not in\n{table}");
    }
    let dot = success(&server.cli(&["graph", "-n", "acme", "-o", "dot"]));
    for part in [
        "subgraph \"cluster_billing\" {",
        "subgraph \"cluster_shop\" {",
        "\"billing/ledger\" -> \"shop/api\" [label=\"http\"",
    ] {
        assert!(dot.contains(part), "{part:?} not in\n{dot}");
    }
    let mermaid = success(&server.cli(&["graph", "-n", "acme", "-o", "mermaid"]));
    assert!(
        mermaid.starts_with("flowchart LR\n") && mermaid.contains("subgraph"),
        "{mermaid}"
    );

    // The same through grpcurl, for one environment of one project.
    let request = r#"{"namespace": "acme", "project": "shop", "environment": "development"}"#;
    let out = success(&server.grpcurl(&[
        "-d",
        request,
        &server.addr,
        "troupe.v1alpha1.ReleaseService/Graph",
    ]));
    let answered: Value = serde_json::from_str(&out).expect("JSON from grpcurl");
    assert_eq!(answered["environments"], serde_json::json!(["development"]));
    assert_eq!(
        state(&answered, "billing/ledger", "shop/api", "development"),
        resolved(API_URL)
    );

    // api stops exposing http to the namespace: its new release deploys itself, ledger's
    // binding renders again, and the graph says why the connection no longer resolves.
    let narrowed = PROJECTS.replace(
        "visibility: [namespace, external]",
        "visibility: [external]",
    );
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&narrowed)));
    let why = "endpoint http of component shop/api is not visible to the namespace (its visibility: project, external)";
    let seen = eventually(
        "the graph shows ledger's connection pending",
        PATIENCE,
        || {
            let seen = graph(&server, &["--env", "development"]);
            let development = state(&seen, "billing/ledger", "shop/api", "development");
            if development == pending(why) {
                Ok(seen)
            } else {
                Err(format!("{development:?}"))
            }
        },
    );
    let api = seen["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "api"))
        .expect("api among the components");
    assert_eq!(
        api["endpoints"][0]["visibility"],
        serde_json::json!(["external"])
    );
    let out = server.cli(&["graph", "-n", "acme", "--env", "qa"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        troupe_tests::stderr(&out).contains("Environment acme/qa not found (NotFound)"),
        "{}",
        troupe_tests::stderr(&out)
    );
}

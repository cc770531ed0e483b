//! Network policies end to end, through a real server and a directory agent: shop's `api`
//! serves `http` to the namespace, billing's `ledger` starts without connections. Adding a
//! connection from ledger to api adds ledger's pods to the policy api's agent applies, and
//! the graph shows it resolved; taking `namespace` out of api's visibility takes the
//! allowance away and the graph shows the connection pending, with why; removing the
//! connection leaves neither. A project that turns egress control on gets an egress policy
//! holding DNS, its resolved connections and its CIDRs, and a host name the plain Kubernetes
//! provider cannot enforce shows on the binding as a condition.

use serde_json::Value;
use troupe_tests::{PATIENCE, Platform, check, eventually, release_files, success};

const SHOP_API: &str = "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: api, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/service}
  autoDeploy: true
  parameters: {port: 8080}
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
";

/// api's Workload, with `visibility` on its `http` endpoint.
fn api_workload(visibility: &str) -> String {
    format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: api, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: api}}
  container: {{image: ghcr.io/acme/api:1.0.0}}
  endpoints:
    - {{name: http, type: HTTP, port: 8080, visibility: {visibility}}}
"
    )
}

/// ledger's Workload, calling api across projects or not.
fn ledger_workload(connected: bool) -> String {
    let connections = if connected {
        "  connections:
    - {project: shop, component: api, endpoint: http, visibility: namespace, envBindings: {address: API_URL}}
"
    } else {
        ""
    };
    format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: ledger, namespace: acme}}
spec:
  owner: {{projectName: billing, componentName: ledger}}
  container: {{image: ghcr.io/acme/ledger:2.3.0}}
  endpoints:
    - {{name: grpc, type: gRPC, port: 9090}}
{connections}"
    )
}

/// The NetworkPolicy the agent applied for `component` in development, parsed; `None`
/// until there is one.
fn applied_policy(platform: &Platform, component: &str) -> Option<Value> {
    let files = release_files(
        &platform.agent_target("local"),
        "acme",
        &format!("{component}-development"),
    );
    let (_, text) = files
        .iter()
        .find(|(name, _)| name.starts_with("networkpolicy.networking.k8s.io_"))?;
    serde_saphyr::from_str(text).ok()
}

/// Whether `policy` admits the pods of billing's ledger from its own cell.
fn admits_ledger(policy: &Value) -> bool {
    let rules = policy["spec"]["ingress"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rules
        .iter()
        .flat_map(|r| r["from"].as_array().cloned().unwrap_or_default())
        .any(|peer| {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                == "acme-billing-development"
                && peer["podSelector"]["matchLabels"]["troupe.dev/component"] == "ledger"
        })
}

/// The graph's state of ledger → api in development: `Some((state, url or reason))`, `None`
/// when the graph has no such connection.
fn graph_state(platform: &Platform) -> Option<(String, String)> {
    let out =
        success(&platform.cli(&["graph", "-n", "acme", "--env", "development", "-o", "json"]));
    let graph: Value = serde_json::from_str(&out).expect("JSON from troupe graph");
    let connection = graph["connections"]
        .as_array()?
        .iter()
        .find(|c| c["consumer"]["name"] == "ledger" && c["target"]["name"] == "api")?;
    let state = &connection["states"][0];
    let text = |field: &str| state[field].as_str().unwrap_or_default().to_string();
    let detail = if text("state") == "Resolved" {
        text("url")
    } else {
        text("reason")
    };
    Some((text("state"), detail))
}

fn apply(platform: &Platform, yaml: &str) {
    success(&platform.cli_with_stdin(&["apply", "-f", "-"], Some(yaml)));
}

#[test]
fn a_connection_opens_the_target_policy_and_removing_it_or_the_visibility_closes_it() {
    let platform = Platform::builder()
        .examples()
        .apply(SHOP_API)
        .apply(&api_workload("[namespace]"))
        .apply(&ledger_workload(false))
        .agent("acme/local", "local")
        .start();

    let policy = eventually("api's policy is applied", PATIENCE, || {
        applied_policy(&platform, "api").ok_or("no policy file yet")
    });
    assert_eq!(policy["metadata"]["namespace"], "acme-shop-development");
    assert!(!admits_ledger(&policy), "nothing declared yet: {policy:#}");
    let ledger = eventually("ledger's policy is applied", PATIENCE, || {
        applied_policy(&platform, "ledger").ok_or("no policy file yet")
    });
    assert_eq!(
        ledger["spec"]["podSelector"]["matchLabels"]["troupe.dev/component"], "ledger",
        "each component's policy holds its own pods"
    );

    // ledger declares the connection: its new release runs, and api's policy admits it.
    apply(&platform, &ledger_workload(true));
    eventually("api's policy admits ledger", PATIENCE, || {
        check(applied_policy(&platform, "api"), |p| {
            p.as_ref().is_some_and(admits_ledger)
        })
    });
    assert_eq!(
        graph_state(&platform),
        Some((
            "Resolved".into(),
            "http://api.acme-shop-development.svc.cluster.local:8080".into()
        ))
    );

    // api stops serving the namespace: the connection is no longer permitted.
    apply(&platform, &api_workload("[]"));
    eventually("api's policy no longer admits ledger", PATIENCE, || {
        check(applied_policy(&platform, "api"), |p| {
            p.as_ref().is_some_and(|p| !admits_ledger(p))
        })
    });
    let (state, reason) = eventually("the graph shows the connection pending", PATIENCE, || {
        check(graph_state(&platform), |s| {
            s.as_ref().is_some_and(|(state, _)| state == "Pending")
        })
    })
    .expect("checked");
    assert_eq!(state, "Pending");
    assert!(
        reason.contains("is not visible to the namespace"),
        "the graph says why: {reason}"
    );

    // Visible again, then the connection goes: the allowance goes with it.
    apply(&platform, &api_workload("[namespace]"));
    eventually("api's policy admits ledger again", PATIENCE, || {
        check(applied_policy(&platform, "api"), |p| {
            p.as_ref().is_some_and(admits_ledger)
        })
    });
    apply(&platform, &ledger_workload(false));
    eventually("api's policy no longer admits ledger", PATIENCE, || {
        check(applied_policy(&platform, "api"), |p| {
            p.as_ref().is_some_and(|p| !admits_ledger(p))
        })
    });
    assert_eq!(
        graph_state(&platform),
        None,
        "the graph has no such connection"
    );
}

#[test]
fn a_project_egress_ceiling_limits_its_components_and_an_unenforceable_rule_shows() {
    let platform = Platform::builder()
        .examples()
        .apply(SHOP_API)
        .apply(&api_workload("[namespace]"))
        .apply(&ledger_workload(true))
        .agent("acme/local", "local")
        .start();
    eventually("ledger's connection resolves", PATIENCE, || {
        check(graph_state(&platform), |s| {
            s.as_ref().is_some_and(|(state, _)| state == "Resolved")
        })
    });

    apply(
        &platform,
        "apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {name: billing, namespace: acme}
spec:
  deploymentPipelineRef: default
  egress:
    enabled: true
    allow:
      - {cidr: 10.20.0.0/16, ports: [5432]}
      - {host: api.payments.example.com}
",
    );
    let policy = eventually("ledger's policy controls egress", PATIENCE, || {
        check(applied_policy(&platform, "ledger"), |p| {
            p.as_ref()
                .is_some_and(|p| p["spec"]["policyTypes"].to_string().contains("Egress"))
        })
    })
    .expect("checked");
    let egress = policy["spec"]["egress"].to_string();
    assert!(egress.contains("\"port\":53"), "DNS: {egress}");
    assert!(
        egress.contains("acme-shop-development") && egress.contains("8080"),
        "the connection to api: {egress}"
    );
    assert!(
        egress.contains("10.20.0.0/16") && egress.contains("5432"),
        "the CIDR: {egress}"
    );
    assert!(
        !egress.contains("payments"),
        "a host cannot be a NetworkPolicy rule: {egress}"
    );

    let binding = platform
        .get_json("releasebinding", "acme", "ledger-development")
        .expect("ledger's binding");
    let condition = binding["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "NetworkPoliciesEnforced")
        .cloned()
        .unwrap_or_else(|| panic!("no NetworkPoliciesEnforced condition: {binding:#}"));
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "RulesUnenforceable");
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("api.payments.example.com")),
        "the condition names the rule: {condition:#}"
    );

    // A component may narrow the ceiling, not widen it.
    apply(
        &platform,
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: ledger, namespace: acme}
spec:
  owner: {projectName: billing}
  componentType: {name: deployment/service}
  autoDeploy: true
  parameters: {port: 9090}
  egress:
    enabled: true
    allow: [{cidr: 10.0.0.0/8}]
",
    );
    let out = platform.cli(&["render", "ledger", "-n", "acme", "--env", "development"]);
    assert!(
        !out.status.success(),
        "a widening component does not render"
    );
    let error = troupe_tests::stderr(&out);
    assert!(
        error.contains("spec.egress.allow[0]") && error.contains("10.0.0.0/8"),
        "the error names the rule: {error}"
    );
}

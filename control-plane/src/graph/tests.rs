//! The graph as a user reads it: which components and connections are drawn, and each
//! connection's state and reason per environment, from bindings as the binding controller
//! leaves them.

use std::sync::Arc;

use serde_json::{Value, json};
use troupe_common::pb::v1alpha1 as pb;

use super::*;
use crate::resources::{Origin, Resources};
use crate::store::MemoryStore;

const ENVIRONMENTS: [&str; 2] = ["development", "staging"];

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a well-formed object")
}

fn mk_component(project: &str, name: &str) -> pb::Component {
    from(json!({
        "metadata": {"name": name, "namespace": "acme"},
        "spec": {"owner": {"projectName": project},
                 "componentType": {"name": "deployment/service"}},
    }))
}

fn mk_workload(project: &str, name: &str, endpoints: Value, connections: Value) -> pb::Workload {
    from(json!({
        "metadata": {"name": name, "namespace": "acme"},
        "spec": {"owner": {"projectName": project, "componentName": name},
                 "endpoints": endpoints, "connections": connections},
    }))
}

/// A binding of `project/component` in `environment` running release `{component}-1`, with
/// `status` as the binding controller wrote it.
fn mk_binding(
    project: &str,
    component: &str,
    environment: &str,
    status: Value,
) -> pb::ReleaseBinding {
    from(json!({
        "metadata": {"name": format!("{component}-{environment}"), "namespace": "acme"},
        "spec": {"owner": {"projectName": project, "componentName": component},
                 "environment": environment, "releaseName": format!("{component}-1")},
        "status": status,
    }))
}

/// The status of a binding whose render resolved `resolved` and left `pending` pending.
fn mk_rendered(resolved: Value, pending: Value) -> Value {
    json!({
        "conditions": [{"type": "ConnectionsResolved", "status": "True"}],
        "resolvedConnections": resolved,
        "pendingConnections": pending,
    })
}

const API_URL: &str = "http://api.acme-shop-development.svc.cluster.local:8080";

/// shop/api serves `http` (namespace-visible) and `admin`; shop/web calls api's http;
/// billing/ledger calls shop/api's http across projects; shop/batch calls nothing.
fn mk_inputs(bindings: Vec<pb::ReleaseBinding>) -> Inputs {
    let http = json!({"name": "http", "type": "HTTP", "port": 8080, "visibility": ["namespace"]});
    let admin = json!({"name": "admin", "type": "HTTP", "port": 9090});
    Inputs {
        namespace: "acme".into(),
        components: vec![
            mk_component("shop", "web"),
            mk_component("billing", "ledger"),
            mk_component("shop", "api"),
            mk_component("shop", "batch"),
        ],
        workloads: vec![
            mk_workload("shop", "api", json!([http, admin]), json!([])),
            mk_workload(
                "shop",
                "web",
                json!([]),
                json!([{"component": "api", "endpoint": "http"}]),
            ),
            mk_workload(
                "billing",
                "ledger",
                json!([]),
                json!([{"project": "shop", "component": "api", "endpoint": "http",
                        "visibility": "namespace"}]),
            ),
        ],
        bindings,
        environments: ENVIRONMENTS.map(String::from).to_vec(),
    }
}

/// `(consumer, target, endpoint)` of each connection, as `project/name` pairs.
fn edges(graph: &pb::GraphResponse) -> Vec<(String, String, String)> {
    let name = |r: &Option<pb::GraphComponentRef>| {
        let r = r.as_ref().expect("a component");
        format!("{}/{}", r.project, r.name)
    };
    graph
        .connections
        .iter()
        .map(|c| (name(&c.consumer), name(&c.target), c.endpoint.clone()))
        .collect()
}

/// `(environment, state, url or reason)` of the connection from `consumer`.
fn states(graph: &pb::GraphResponse, consumer: &str) -> Vec<(String, String, String)> {
    let connection = graph
        .connections
        .iter()
        .find(|c| c.consumer.as_ref().is_some_and(|r| r.name == consumer))
        .unwrap_or_else(|| panic!("no connection from {consumer}"));
    connection
        .states
        .iter()
        .map(|s| {
            let detail = if s.url.is_empty() { &s.reason } else { &s.url };
            (s.environment.clone(), s.state.clone(), detail.clone())
        })
        .collect()
}

fn row(env: &str, state: &str, detail: &str) -> (String, String, String) {
    (env.to_string(), state.to_string(), detail.to_string())
}

#[test]
fn a_connection_resolved_where_its_consumer_runs_and_pending_where_it_does_not() {
    let resolved = json!([{"project": "shop", "component": "api", "endpoint": "http",
                           "url": API_URL}]);
    let bindings = vec![mk_binding(
        "shop",
        "web",
        "development",
        mk_rendered(resolved, json!([])),
    )];
    let graph = build(&mk_inputs(bindings), "");
    assert_eq!(
        states(&graph, "web"),
        [
            row("development", "Resolved", API_URL),
            row(
                "staging",
                "Pending",
                "component shop/web (the consumer) has no ReleaseBinding in environment staging"
            ),
        ]
    );
    let names: Vec<String> = graph
        .components
        .iter()
        .map(|c| format!("{}/{}", c.project, c.name))
        .collect();
    assert_eq!(
        names,
        ["billing/ledger", "shop/api", "shop/batch", "shop/web"],
        "every component, with connections or not, sorted by project and name"
    );
    let api = &graph.components[1];
    assert_eq!(api.component_type, "deployment/service");
    let endpoints: Vec<(&str, i32, &[String])> = api
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.port, e.visibility.as_slice()))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("http", 8080, &["namespace".to_string()][..]),
            ("admin", 9090, &[][..])
        ]
    );
}

#[test]
fn pending_reasons_come_from_the_consumer_binding() {
    let missing_endpoint =
        "component shop/api has no endpoint \"http\" in release api-1 (it has: admin)";
    let not_deployed = "component shop/api has no ReleaseBinding in environment staging";
    let pending = |reason: &str| json!([{"project": "shop", "component": "api", "endpoint": "http", "reason": reason}]);
    let bindings = vec![
        mk_binding(
            "shop",
            "web",
            "development",
            mk_rendered(json!([]), pending(missing_endpoint)),
        ),
        mk_binding(
            "shop",
            "web",
            "staging",
            mk_rendered(json!([]), pending(not_deployed)),
        ),
    ];
    let graph = build(&mk_inputs(bindings), "");
    assert_eq!(
        states(&graph, "web"),
        [
            row("development", "Pending", missing_endpoint),
            row("staging", "Pending", not_deployed),
        ]
    );
}

#[test]
fn a_connection_to_a_component_that_does_not_exist_is_pending_everywhere() {
    let mut inputs = mk_inputs(vec![]);
    inputs.workloads.push(mk_workload(
        "shop",
        "batch",
        json!([]),
        json!([{"component": "ghost", "endpoint": "http"}]),
    ));
    // Even where the consumer runs and its status still names the target.
    let resolved = json!([{"project": "shop", "component": "ghost", "endpoint": "http",
                           "url": API_URL}]);
    inputs.bindings.push(mk_binding(
        "shop",
        "batch",
        "development",
        mk_rendered(resolved, json!([])),
    ));
    let graph = build(&inputs, "");
    let gone = "component shop/ghost does not exist";
    assert_eq!(
        states(&graph, "batch"),
        [
            row("development", "Pending", gone),
            row("staging", "Pending", gone)
        ]
    );
    assert!(
        graph.components.iter().all(|c| c.name != "ghost"),
        "a missing target is named by its connection, not drawn as a component"
    );
}

#[test]
fn a_consumer_not_running_the_connection_says_why() {
    let mut undeployed = mk_binding("shop", "web", "development", json!({}));
    undeployed.spec.as_mut().unwrap().state = "Undeploy".into();
    let unrendered = mk_binding("shop", "web", "staging", json!({}));
    let graph = build(&mk_inputs(vec![undeployed, unrendered]), "");
    assert_eq!(
        states(&graph, "web"),
        [
            row(
                "development",
                "Pending",
                "component shop/web (the consumer) is undeployed in environment development"
            ),
            row(
                "staging",
                "Pending",
                "ReleaseBinding web-staging of component shop/web (the consumer) is not rendered yet"
            ),
        ]
    );

    // Rendered, from a release cut before the Workload declared the connection.
    let old = mk_binding(
        "shop",
        "web",
        "development",
        mk_rendered(json!([]), json!([])),
    );
    let graph = build(&mk_inputs(vec![old]), "");
    assert_eq!(
        states(&graph, "web")[0],
        row(
            "development",
            "Pending",
            "component shop/web (the consumer) runs release web-1 in environment development, \
             which does not declare the connection; a new release will"
        )
    );
}

#[test]
fn a_cross_project_connection_is_drawn_from_either_project() {
    let resolved = json!([{"project": "shop", "component": "api", "endpoint": "http",
                           "url": API_URL}]);
    let bindings = vec![mk_binding(
        "billing",
        "ledger",
        "development",
        mk_rendered(resolved, json!([])),
    )];
    let inputs = mk_inputs(bindings);
    let cross = (
        "billing/ledger".to_string(),
        "shop/api".to_string(),
        "http".to_string(),
    );

    let whole = build(&inputs, "");
    assert_eq!(edges(&whole).len(), 2);
    assert_eq!(
        states(&whole, "ledger")[0],
        row("development", "Resolved", API_URL)
    );
    assert_eq!(whole.connections[0].visibility, "namespace");
    assert_eq!(whole.connections[1].visibility, "project", "the default");

    let billing = build(&inputs, "billing");
    assert_eq!(edges(&billing), std::slice::from_ref(&cross));
    let names: Vec<&str> = billing.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ledger", "api"], "the target's end is drawn too");

    let shop = build(&inputs, "shop");
    assert!(edges(&shop).contains(&cross), "{:?}", edges(&shop));
    assert_eq!(
        shop.components.len(),
        4,
        "shop's three and ledger at the far end"
    );
}

#[test]
fn environments_follow_the_pipeline_then_their_names() {
    let env = |name: &str| -> pb::Environment { from(json!({"metadata": {"name": name}})) };
    let pipeline: pb::DeploymentPipeline = from(json!({
        "metadata": {"name": "default"},
        "spec": {"promotionPaths": [
            {"sourceEnvironment": "staging", "targets": [{"environment": "production"}]},
            {"sourceEnvironment": "development", "targets": [{"environment": "staging"}]},
            {"sourceEnvironment": "production", "targets": [{"environment": "gone"}]},
        ]},
    }));
    let environments = ["qa", "production", "development", "staging", "adhoc"].map(env);
    assert_eq!(
        environment_order(&environments, &[pipeline]),
        ["development", "staging", "production", "adhoc", "qa"]
    );
}

#[test]
fn only_what_the_caller_may_see_is_kept() {
    let mut graph = build(&mk_inputs(vec![]), "");
    retain_visible(&mut graph, |project, _| project == "shop");
    assert!(graph.components.iter().all(|c| c.project == "shop"));
    assert_eq!(
        edges(&graph),
        [(
            "shop/web".to_string(),
            "shop/api".to_string(),
            "http".to_string()
        )],
        "billing's connection into shop is billing's to show"
    );
}

/// The example platform (namespace acme, three environments, project shop, component api).
async fn mk_platform() -> Arc<Resources> {
    let resources = Arc::new(Resources::new(Arc::new(MemoryStore::new())));
    let yaml = include_str!("../../../examples/platform.yaml");
    for object in troupe_common::document::from_yaml(yaml).unwrap() {
        resources.apply(object, Origin::User, false).await.unwrap();
    }
    resources
}

#[tokio::test]
async fn one_environment_or_all_and_what_is_not_there_is_not_found() {
    let resources = mk_platform().await;
    let query = |project: &str, environment: &str| Query {
        namespace: "acme".into(),
        project: project.into(),
        environment: environment.into(),
    };
    let all = graph(&resources, &query("", "")).await.unwrap();
    assert_eq!(all.environments, ["development", "staging", "production"]);
    assert_eq!(all.components.len(), 1);
    let staging = graph(&resources, &query("shop", "staging")).await.unwrap();
    assert_eq!(staging.environments, ["staging"]);

    for (query, missing) in [
        (query("", "qa"), "Environment acme/qa not found"),
        (query("billing", ""), "Project acme/billing not found"),
        (
            Query {
                namespace: "nowhere".into(),
                ..Query::default()
            },
            "Namespace nowhere not found",
        ),
    ] {
        let error = graph(&resources, &query).await.unwrap_err();
        assert_eq!(error.to_string(), missing);
    }
}

//! The real `troupe-agent` with `--apply kubernetes` against the test API server
//! ([`KubeApi`]): a component bound to an environment lands in the cluster as objects with
//! the agent's inventory labels, and the platform reports it ready once the cluster says the
//! Deployment is available.

use serde_json::{Value, json};
use troupe_tests::kube_api::KubeApi;
use troupe_tests::{PATIENCE, Platform, check, eventually};

/// Where the example project shop's development objects go.
const TARGET: &str = "acme-shop-development";

/// The Gateway API's HTTPRoute, as a cluster with the Gateway API installed serves it.
fn mk_httproute_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "httproutes.gateway.networking.k8s.io"},
        "spec": {"group": "gateway.networking.k8s.io", "scope": "Namespaced",
                 "names": {"kind": "HTTPRoute", "plural": "httproutes", "singular": "httproute",
                           "listKind": "HTTPRouteList"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

#[test]
fn a_bound_release_lands_in_the_cluster_and_turns_ready_when_the_deployment_is_available() {
    // The server answers on the runtime's threads while this test blocks on processes.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kube = runtime.block_on(KubeApi::start());
    // Today's agent does not create the target namespace: the cluster has it.
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TARGET}}));
    kube.create(mk_httproute_crd());

    let platform = Platform::builder().examples().start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 1);
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");

    let deployment = eventually("the Deployment is applied", PATIENCE, || {
        check(kube.list("deployments", TARGET), |d| d.len() == 1)
    })
    .remove(0);
    let labels = &deployment["metadata"]["labels"];
    assert_eq!(
        labels["troupe.dev/release-namespace"], "acme",
        "{deployment}"
    );
    assert_eq!(
        labels["troupe.dev/release"], "api-development",
        "{deployment}"
    );
    assert_eq!(
        labels["app.kubernetes.io/managed-by"], "troupe-agent",
        "{deployment}"
    );
    let name = deployment["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(
        kube.managers_of("deployments", TARGET, &name, "/spec/template"),
        ["troupe-agent"]
    );
    assert!(
        kube.requests()
            .iter()
            .any(|r| r == &format!("PATCH /apis/apps/v1/namespaces/{TARGET}/deployments/{name}")),
        "{:?}",
        kube.requests()
    );

    // Rolling out: not ready while the cluster reports no available replica.
    assert!(platform.ready("api", "development").is_err());
    let replicas = deployment["spec"]["replicas"].clone();
    kube.set_status(
        "deployments",
        TARGET,
        &name,
        json!({"observedGeneration": deployment["metadata"]["generation"],
               "replicas": replicas, "updatedReplicas": replicas,
               "readyReplicas": replicas, "availableReplicas": replicas}),
    );
    eventually("development is ready", PATIENCE, || {
        platform.ready("api", "development")
    });
}

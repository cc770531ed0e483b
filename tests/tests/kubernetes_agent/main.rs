//! The real `troupe-agent` with `--apply kubernetes` against the test API server
//! ([`KubeApi`]), driven from bindings as a user would: a fresh cluster gets its namespace, a
//! refused object is retried until it applies, an expired watch lists again; the modules
//! cover objects shared with others (`sharing`), CRDs (`crds`), an idle agent's requests
//! (`idle`) and an API server that hangs on one object (`slow`); and builds run as Jobs, by
//! the executor itself (`build_jobs`) and through the agent (`builds`).

mod build_jobs;
mod builds;
mod crds;
mod idle;
mod sharing;
mod slow;

use serde_json::{Value, json};
use troupe_tests::kube_api::KubeApi;
use troupe_tests::{PATIENCE, Platform, check, eventually, success};

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

/// A cluster with the Gateway API installed, served on the runtime's threads while a test
/// blocks on processes.
fn mk_cluster() -> (tokio::runtime::Runtime, KubeApi) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kube = runtime.block_on(KubeApi::start());
    kube.create(mk_httproute_crd());
    (runtime, kube)
}

/// `troupe status COMPONENT -n acme -o json`'s row for `env`.
fn status_row(platform: &Platform, component: &str, env: &str) -> Value {
    let out = success(&platform.cli(&["status", component, "-n", "acme", "-o", "json"]));
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"] == env)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Says the Deployment `name` in `namespace` is rolled out, as its controller would.
fn roll_out(kube: &KubeApi, namespace: &str, name: &str) {
    let deployment = kube.get("deployments", namespace, name).unwrap();
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    kube.set_status(
        "deployments",
        namespace,
        name,
        json!({"observedGeneration": deployment["metadata"]["generation"],
               "replicas": replicas, "updatedReplicas": replicas,
               "readyReplicas": replicas, "availableReplicas": replicas}),
    );
}

/// Binds the example component api in development and waits for its Deployment; its name.
fn deploy_api(platform: &Platform, kube: &KubeApi) -> String {
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");
    let deployments = eventually("the Deployment is applied", PATIENCE, || {
        check(kube.list("deployments", TARGET), |d| d.len() == 1)
    });
    deployments[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_fresh_cluster_gets_the_namespace_and_the_release_and_loses_both_when_it_is_unbound() {
    let (_runtime, kube) = mk_cluster();
    let platform = Platform::builder().examples().start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 1);
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");

    // The namespace did not exist: the agent made it, labelled, and applied into it.
    let deployment = eventually("the Deployment is applied", PATIENCE, || {
        check(kube.list("deployments", TARGET), |d| d.len() == 1)
    })
    .remove(0);
    let namespace = kube
        .get("namespaces", "", TARGET)
        .expect("the target namespace");
    let labels = &namespace["metadata"]["labels"];
    assert_eq!(
        labels["agent.troupe.dev/created-namespace"], "true",
        "{namespace}"
    );
    assert_eq!(labels["troupe.dev/project"], "shop", "{namespace}");
    assert_eq!(
        labels["troupe.dev/environment"], "development",
        "{namespace}"
    );
    assert_eq!(labels["troupe.dev/namespace"], "acme", "{namespace}");
    // The component's network policy is in place before any pod of it can start.
    let requests = kube.requests();
    let first = |collection: &str| {
        requests
            .iter()
            .position(|r| r.starts_with("PATCH") && r.contains(collection))
            .unwrap_or_else(|| panic!("no PATCH of {collection} in {requests:#?}"))
    };
    assert!(
        first("/networkpolicies/troupe-api") < first("/deployments/api"),
        "{requests:#?}"
    );
    // The template's labels are kept, the agent's are its own, integers stay integers.
    let labels = &deployment["metadata"]["labels"];
    assert_eq!(
        labels["agent.troupe.dev/release-namespace"], "acme",
        "{deployment}"
    );
    assert_eq!(
        labels["agent.troupe.dev/release"], "api-development",
        "{deployment}"
    );
    assert_eq!(labels["troupe.dev/component"], "api", "{deployment}");
    assert_eq!(
        labels["app.kubernetes.io/managed-by"], "troupe-agent",
        "{deployment}"
    );
    assert!(deployment["spec"]["replicas"].is_u64(), "{deployment}");
    let name = deployment["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(
        kube.managers_of("deployments", TARGET, &name, "/spec/template"),
        ["troupe-agent"]
    );

    // Rolling out: not ready while the cluster reports no available replica.
    assert!(platform.ready("api", "development").is_err());
    roll_out(&kube, TARGET, &name);
    eventually("development is ready", PATIENCE, || {
        platform.ready("api", "development")
    });

    // Unbound: its objects go, and so does the namespace the agent made for them.
    success(&platform.cli(&["delete", "releasebinding", "api-development", "-n", "acme"]));
    eventually("the namespace is removed", PATIENCE, || {
        check(kube.get("namespaces", "", TARGET), Option::is_none)
    });
    assert!(kube.list("deployments", "").is_empty());
}

#[test]
fn a_refused_object_is_retried_with_backoff_until_it_applies_and_the_rest_applies_meanwhile() {
    let (_runtime, kube) = mk_cluster();
    kube.refuse(
        "PATCH",
        "services",
        "api",
        403,
        "Forbidden",
        "services \"api\" is forbidden: User \"system:serviceaccount:troupe-system:troupe-agent\" cannot patch resource \"services\"",
    );
    let platform = Platform::builder().examples().start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 30);
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");

    // The Service fails alone; the binding names it, the attempt and the API server's words.
    let row = eventually("the binding names the retried Service", PATIENCE, || {
        check(status_row(&platform, "api", "development"), |r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains("attempt 2"))
        })
    });
    let message = row["message"].as_str().unwrap();
    assert_eq!(row["reason"], "ResourcesDegraded", "{row}");
    assert!(
        message.contains(&format!(
            "Service api: retrying (attempt 2, next in 2s): applying Service {TARGET}/api: \
             Forbidden (403): services \"api\" is forbidden"
        )),
        "{message}"
    );
    assert!(!message.contains("Status {"), "no debug text: {message}");
    assert_eq!(
        kube.list("deployments", TARGET).len(),
        1,
        "the rest is applied"
    );
    assert!(kube.list("services", TARGET).is_empty());

    // Allowed again: the next attempt (not the next generation, not the 30 s drift pass)
    // applies it.
    kube.allow("PATCH", "services", "api");
    eventually("the Service is applied", PATIENCE, || {
        check(kube.list("services", TARGET), |s| s.len() == 1)
    });
    let name = kube.list("deployments", TARGET)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    roll_out(&kube, TARGET, &name);
    eventually("development is ready", PATIENCE, || {
        platform.ready("api", "development")
    });
}

#[test]
fn a_watch_refused_with_410_lists_again_and_health_keeps_flowing() {
    let (_runtime, kube) = mk_cluster();
    let platform = Platform::builder().examples().start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 30);
    let name = deploy_api(&platform, &kube);
    eventually("the Deployments are watched", PATIENCE, || {
        check(kube.requests(), |r| {
            r.iter().any(|r| r == "WATCH /apis/apps/v1/deployments")
        })
    });

    // Something else changes, the API server compacts and restarts: every watch resumes at
    // a version it no longer has.
    kube.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "elsewhere", "namespace": "default"}}));
    kube.clear_requests();
    kube.compact();
    kube.expire_watches();
    eventually("the Deployments are listed again", PATIENCE, || {
        check(kube.requests(), |r| {
            r.iter().any(|r| r == "LIST /apis/apps/v1/deployments")
        })
    });
    roll_out(&kube, TARGET, &name);
    eventually(
        "development is ready through the new watch",
        PATIENCE,
        || platform.ready("api", "development"),
    );
}

#[test]
fn a_refused_prune_is_retried_and_the_release_goes_once_it_succeeds() {
    let (_runtime, kube) = mk_cluster();
    let platform = Platform::builder().examples().start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 30);
    let name = deploy_api(&platform, &kube);
    // Only a Release recorded as applied waits for its prune; one deleted before its first
    // ack is written goes at once (the agent still prunes what it holds).
    eventually("the Release is recorded as applied", PATIENCE, || {
        check(
            platform.get_json("release", "acme", "api-development"),
            |r| {
                r.as_ref()
                    .is_some_and(|r| r["status"]["appliedGeneration"] == "1")
            },
        )
    });
    kube.refuse(
        "DELETE",
        "deployments",
        &name,
        403,
        "Forbidden",
        "deployments.apps is forbidden: cannot delete",
    );

    success(&platform.cli(&["delete", "releasebinding", "api-development", "-n", "acme"]));
    let delete = format!("DELETE /apis/apps/v1/namespaces/{TARGET}/deployments/{name}");
    eventually("the agent has tried the delete twice", PATIENCE, || {
        check(kube.requests(), |r| {
            r.iter().filter(|r| **r == delete).count() >= 2
        })
    });
    let release = platform.cli(&[
        "get",
        "release",
        "api-development",
        "-n",
        "acme",
        "-o",
        "json",
    ]);
    assert!(
        release.status.success(),
        "the Release stays until its prune is acknowledged: {}",
        troupe_tests::stderr(&release)
    );

    kube.allow("DELETE", "deployments", &name);
    eventually("the Deployment is pruned", PATIENCE, || {
        check(kube.list("deployments", TARGET), Vec::is_empty)
    });
    eventually("the Release leaves the store", PATIENCE, || {
        check(
            platform.get_json("release", "acme", "api-development"),
            Option::is_none,
        )
    });
}

#[test]
fn an_object_someone_deletes_is_re_created_at_once_not_at_the_next_drift_pass() {
    let (_runtime, kube) = mk_cluster();
    let platform = Platform::builder().examples().start();
    // Drift passes five minutes apart: only the watch can bring the object back in time.
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 300);
    let name = deploy_api(&platform, &kube);
    assert!(kube.delete("deployments", TARGET, &name));
    eventually(
        "the Deployment is back",
        std::time::Duration::from_secs(20),
        || check(kube.get("deployments", TARGET, &name), Option::is_some),
    );
}

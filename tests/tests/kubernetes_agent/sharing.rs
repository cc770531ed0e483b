//! Objects the agent shares a cluster with: one someone else made, a replica count an
//! autoscaler owns, a Job whose template cannot change.

use serde_json::json;
use troupe_tests::{PATIENCE, Platform, check, eventually, success};

use super::{TARGET, mk_cluster, status_row};

#[test]
fn an_object_someone_else_made_is_reported_not_taken_and_survives_the_release() {
    let (_runtime, kube) = mk_cluster();
    // An operator made the namespace and, by hand, a ConfigMap the release also renders.
    kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TARGET}}));
    kube.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "api-files", "namespace": TARGET},
                       "data": {"app.yaml": "by hand"}}));
    let platform = Platform::builder().examples().start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 1);
    let release = platform.cut_release("api");
    platform.bind("api", "development", &release, "");

    let row = eventually("the binding names the conflict", PATIENCE, || {
        check(status_row(&platform, "api", "development"), |r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains("api-files"))
        })
    });
    assert_eq!(row["reason"], "ResourcesDegraded", "{row}");
    assert!(
        row["message"].as_str().unwrap().contains(&format!(
            "ConfigMap api-files: ConfigMap {TARGET}/api-files exists and was not made by this \
             release (managed by kubectl); Troupe leaves it alone"
        )),
        "{row}"
    );
    assert_eq!(
        kube.get("configmaps", TARGET, "api-files").unwrap()["data"]["app.yaml"],
        "by hand"
    );
    assert_eq!(
        kube.list("deployments", TARGET).len(),
        1,
        "the rest is applied"
    );

    // Unbound: the agent's objects go; the operator's ConfigMap and namespace stay.
    success(&platform.cli(&["delete", "releasebinding", "api-development", "-n", "acme"]));
    eventually("the Deployment is pruned", PATIENCE, || {
        check(kube.list("deployments", TARGET), Vec::is_empty)
    });
    assert!(kube.get("configmaps", TARGET, "api-files").is_some());
    assert!(kube.get("namespaces", "", TARGET).is_some());
}

#[test]
fn the_autoscalers_replica_count_is_left_to_it() {
    let (_runtime, kube) = mk_cluster();
    let platform = Platform::builder().samples().start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 1);
    let release = platform.cut_release("orders");
    platform.bind("orders", "development", &release, "");
    eventually(
        "the autoscaler and its Deployment are applied",
        PATIENCE,
        || {
            check(
                (
                    kube.list("horizontalpodautoscalers", TARGET).len(),
                    kube.list("deployments", TARGET).len(),
                ),
                |n| *n == (1, 1),
            )
        },
    );
    // The Deployment leaves spec.replicas to the autoscaler, which sets it.
    assert!(
        !kube
            .managers_of("deployments", TARGET, "orders", "/spec/replicas")
            .contains(&"troupe-agent".to_string())
    );
    kube.update_as(
        "horizontal-pod-autoscaler",
        "deployments",
        TARGET,
        "orders",
        "/spec/replicas",
        json!(4),
    )
    .unwrap();
    kube.clear_requests();

    // A drift pass over the whole release (seen by a deleted object coming back) leaves the
    // count alone and sends the Deployment nothing.
    assert!(kube.delete("persistentvolumeclaims", TARGET, "orders-data"));
    eventually("a drift pass re-creates the claim", PATIENCE, || {
        check(
            kube.get("persistentvolumeclaims", TARGET, "orders-data"),
            Option::is_some,
        )
    });
    let deployment = kube.get("deployments", TARGET, "orders").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 4);
    assert_eq!(
        kube.managers_of("deployments", TARGET, "orders", "/spec/replicas"),
        ["horizontal-pod-autoscaler"]
    );
    assert!(
        !kube
            .requests()
            .iter()
            .any(|r| r.contains("/deployments/orders")),
        "{:?}",
        kube.requests()
    );
}

const MIGRATION: &str = "apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: migration, namespace: acme}
spec:
  workloadType: job
  resources:
    - id: job
      template:
        apiVersion: batch/v1
        kind: Job
        metadata: {name: \"${{ metadata.name }}\", namespace: \"${{ metadata.namespace }}\"}
        spec:
          template:
            spec:
              restartPolicy: Never
              containers:
                - name: main
                  image: ${{ workload.container.image }}
---
apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: migrate, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: job/migration}
";

fn workload(image: &str) -> String {
    format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: migrate, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: migrate}}
  container: {{image: {image}}}
"
    )
}

#[test]
fn a_job_whose_template_changed_is_replaced() {
    let (_runtime, kube) = mk_cluster();
    let platform = Platform::builder()
        .examples()
        .apply(MIGRATION)
        .apply(&workload("ghcr.io/acme/migrate:1"))
        .start();
    let _agent = platform.register_kube_agent("acme/local", "k8s", &kube, 30);
    let release = platform.cut_release("migrate");
    platform.bind("migrate", "development", &release, "");
    let first = eventually("the Job is applied", PATIENCE, || {
        check(kube.get("jobs", TARGET, "migrate"), Option::is_some)
    })
    .unwrap();

    // A new image: the API server refuses the change to the template, the agent replaces it.
    success(&platform.cli_with_stdin(
        &["apply", "-f", "-"],
        Some(&workload("ghcr.io/acme/migrate:2")),
    ));
    let release = platform.cut_release("migrate");
    platform.bind("migrate", "development", &release, "");
    let job = eventually("the Job runs the new image", PATIENCE, || {
        check(kube.get("jobs", TARGET, "migrate"), |j| {
            j.as_ref().is_some_and(|j| {
                j["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/migrate:2"
            })
        })
    })
    .unwrap();
    assert_ne!(
        job["metadata"]["uid"], first["metadata"]["uid"],
        "a new Job"
    );
    assert!(
        kube.requests().contains(&format!(
            "DELETE /apis/batch/v1/namespaces/{TARGET}/jobs/migrate"
        )),
        "{:?}",
        kube.requests()
    );
}

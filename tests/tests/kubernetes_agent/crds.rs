//! A CustomResourceDefinition and a custom resource of it in one release: the custom resource
//! waits, `Progressing`, until the definition is Established, then applies.

use std::time::Duration;

use troupe_tests::{PATIENCE, Platform, check, eventually};

use super::{TARGET, mk_cluster, status_row};

const TABS: &str = "apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {name: local, namespace: acme}
spec:
  planeId: local
  resourcePolicy:
    allowedKinds: [{group: apps, kind: Deployment}, {group: example.com, kind: CronTab}]
    allowedClusterKinds: [{group: apiextensions.k8s.io, kind: CustomResourceDefinition}]
---
apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: tabs, namespace: acme}
spec:
  workloadType: deployment
  resources:
    - id: definition
      template:
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: crontabs.example.com}
        spec:
          group: example.com
          scope: Namespaced
          names: {kind: CronTab, plural: crontabs, singular: crontab, listKind: CronTabList}
          versions:
            - name: v1
              served: true
              storage: true
              schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
    - id: tab
      template:
        apiVersion: example.com/v1
        kind: CronTab
        metadata: {name: \"${{ metadata.name }}\", namespace: \"${{ metadata.namespace }}\"}
        spec: {cron: \"0 3 * * *\"}
    - id: deployment
      template:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: \"${{ metadata.name }}\", namespace: \"${{ metadata.namespace }}\"}
        spec:
          selector: {matchLabels: \"${{ metadata.podSelectors }}\"}
          template:
            metadata: {labels: \"${{ metadata.podSelectors }}\"}
            spec:
              containers: [{name: main, image: \"${{ workload.container.image }}\"}]
---
apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: tabs, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/tabs}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: tabs, namespace: acme}
spec:
  owner: {projectName: shop, componentName: tabs}
  container: {image: ghcr.io/acme/tabs:1}
";

#[test]
fn a_custom_resource_waits_for_its_definition_to_be_established() {
    let (_runtime, kube) = mk_cluster();
    kube.set_crd_delay(Duration::from_secs(4));
    let platform = Platform::builder().examples().apply(TABS).start();
    let _agent = platform.register_kube_agent_with(
        "acme/local",
        "k8s",
        &kube,
        30,
        &[
            "--allow-kinds",
            "apps/Deployment,networking.k8s.io/NetworkPolicy,example.com/CronTab",
            "--allow-cluster-kinds",
            "apiextensions.k8s.io/CustomResourceDefinition",
        ],
    );
    let release = platform.cut_release("tabs");
    platform.bind("tabs", "development", &release, "");

    let row = eventually("the binding says the CronTab waits", PATIENCE, || {
        check(status_row(&platform, "tabs", "development"), |r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains("CronTab tabs"))
        })
    });
    assert_eq!(row["reason"], "ResourcesProgressing", "{row}");
    assert!(
        row["message"].as_str().unwrap().contains(
            "waiting for CustomResourceDefinition crontabs.example.com to be Established"
        ),
        "{row}"
    );
    assert_eq!(
        kube.list("deployments", TARGET).len(),
        1,
        "the rest is applied"
    );
    eventually("the CronTab is applied", PATIENCE, || {
        check(kube.get("crontabs", TARGET, "tabs"), Option::is_some)
    });
}

//! The test API server ([`KubeApi`]) behaves as a real one where Troupe's applier can tell:
//! each test drives it with a real `kube::Client` over HTTP and asserts what a client sees,
//! including the shape of each failure Status.

mod jobs;
mod objects;
mod watches;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{GroupVersionKind, Status};
use kube::discovery::{ApiResource, Discovery, pinned_kind};
use serde_json::{Value, json};
use troupe_tests::kube_api::KubeApi;

/// The API of `kind` in `namespace` (empty: cluster-scoped or all namespaces).
fn api(
    kube: &KubeApi,
    api_version: &str,
    kind: &str,
    plural: &str,
    namespace: &str,
) -> Api<DynamicObject> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    if namespace.is_empty() {
        Api::all_with(kube.client(), &resource)
    } else {
        Api::namespaced_with(kube.client(), namespace, &resource)
    }
}

/// The failure Status of a call that must fail.
fn failure<T>(result: kube::Result<T>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("expected a failure Status, got {other}"),
        Ok(_) => panic!("expected a failure Status, got a success"),
    }
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// Applies `value` as `manager`, forced or not.
async fn apply(
    api: &Api<DynamicObject>,
    manager: &str,
    force: bool,
    value: Value,
) -> kube::Result<DynamicObject> {
    let name = value["metadata"]["name"].as_str().unwrap().to_string();
    let mut params = PatchParams::apply(manager);
    params.force = force;
    api.patch(&name, &params, &Patch::Apply(&value)).await
}

/// Polls `probe` until it returns `Some`, for up to ten seconds.
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

const CRD: &str = "crontabs.stable.example.com";

fn mk_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD},
        "spec": {"group": "stable.example.com", "scope": "Namespaced",
                 "names": {"kind": "CronTab", "plural": "crontabs", "singular": "crontab", "listKind": "CronTabList"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

#[tokio::test]
async fn discovery_serves_the_builtin_kinds_and_a_crds_kinds_once_established() {
    let kube = KubeApi::start().await;
    let client = kube.client();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    for (group, version, kind) in [
        ("", "v1", "Namespace"),
        ("", "v1", "PersistentVolumeClaim"),
        ("apps", "v1", "Deployment"),
        ("batch", "v1", "Job"),
        ("autoscaling", "v2", "HorizontalPodAutoscaler"),
        ("networking.k8s.io", "v1", "Ingress"),
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
    ] {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        assert!(discovery.resolve_gvk(&gvk).is_some(), "{kind} discovered");
    }
    assert!(!discovery.has_group("stable.example.com"));

    // The CRD is stored at once, its kind served only once Established.
    kube.set_crd_delay(Duration::from_millis(300));
    let crds = api(
        &kube,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "",
    );
    let stored = apply(&crds, "troupe-agent", false, mk_crd()).await.unwrap();
    let from = stored.metadata.resource_version.clone().unwrap();
    let gvk = GroupVersionKind::gvk("stable.example.com", "v1", "CronTab");
    let early = failure(pinned_kind(&client, &gvk).await);
    assert_eq!((early.code, early.reason.as_str()), (404, "NotFound"));
    let crontabs = api(
        &kube,
        "stable.example.com/v1",
        "CronTab",
        "crontabs",
        "default",
    );
    let early = failure(crontabs.list(&ListParams::default()).await);
    assert_eq!(
        early.message,
        "the server could not find the requested resource"
    );

    // Established arrives as a MODIFIED event.
    let mut events = crds
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    let established = match events.try_next().await.unwrap() {
        Some(WatchEvent::Modified(crd)) => crd,
        other => panic!("expected MODIFIED, got {other:?}"),
    };
    let conditions = established.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    for kind in ["NamesAccepted", "Established"] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == kind && c["status"] == "True"),
            "{conditions:?}"
        );
    }
    let (resource, _) = pinned_kind(&client, &gvk).await.unwrap();
    assert_eq!(resource.plural, "crontabs");
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("stable.example.com"));

    // Its objects are not decoded into Go structs: any JSON number goes.
    let cron = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                      "metadata": {"name": "nightly", "namespace": "default"}, "spec": {"every": 1.5}});
    apply(&crontabs, "troupe-agent", false, cron).await.unwrap();
    assert_eq!(
        crontabs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Deleting the CRD stops serving the kind and takes its objects.
    crds.delete(CRD, &DeleteParams::background()).await.unwrap();
    assert!(kube.get("crontabs", "default", "nightly").is_none());
    assert_eq!(failure(pinned_kind(&client, &gvk).await).code, 404);
}

#[tokio::test]
async fn a_kubeconfig_written_for_the_server_reaches_it() {
    let kube = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<String> = namespaces
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
}

#[tokio::test]
async fn a_refused_method_fails_with_the_status_given_until_allowed() {
    let kube = KubeApi::start().await;
    let configmaps = api(&kube, "v1", "ConfigMap", "configmaps", "default");
    kube.refuse(
        "GET",
        "configmaps",
        "kube-root-ca.crt",
        403,
        "Forbidden",
        "configmaps \"kube-root-ca.crt\" is forbidden",
    );
    let refused = failure(configmaps.get("kube-root-ca.crt").await);
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        refused.message,
        "configmaps \"kube-root-ca.crt\" is forbidden"
    );
    // Other methods on it, and the same method on others, are answered as usual.
    assert_eq!(failure(configmaps.get("other").await).code, 404);
    kube.allow("GET", "configmaps", "kube-root-ca.crt");
    configmaps.get("kube-root-ca.crt").await.unwrap();
}

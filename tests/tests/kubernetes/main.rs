//! The Kubernetes applier in process against the test API server ([`KubeApi`]): server-side
//! apply with the inventory labels, ordering, health noticed through watches, pruning of what
//! left a release and of whole releases, and cluster info.

mod cluster;

use std::time::Duration;

use serde_json::{Value, json};
use troupe_agent::apply::Applier;
use troupe_agent::apply::kubernetes::KubeApplier;
use troupe_common::pb::v1alpha1::{ReleaseResource, ReleaseResourceStatus};
use troupe_tests::kube_api::KubeApi;

const RELEASE: &str = "acme/web-dev";

fn mk_resource(id: &str, object: Value) -> ReleaseResource {
    ReleaseResource {
        id: id.into(),
        object: Some(serde_json::from_value(object).unwrap()),
    }
}

/// The release: the Namespace comes last to show it is applied first all the same.
fn mk_release() -> Vec<ReleaseResource> {
    vec![
        mk_resource(
            "settings",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "settings", "namespace": "shop", "labels": {"app": "web"}},
                   "data": {"color": "blue"}}),
        ),
        mk_resource(
            "web",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
        ),
        mk_resource(
            "web-svc",
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        ),
        mk_resource(
            "ns",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        ),
    ]
}

fn health_of<'a>(statuses: &'a [ReleaseResourceStatus], id: &str) -> &'a str {
    &statuses
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no status for {id} in {statuses:?}"))
        .health
}

fn patches(fake: &KubeApi) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH "))
        .collect()
}

#[tokio::test]
async fn applies_orders_watches_health_and_prunes_only_its_own_objects() {
    let fake = KubeApi::start().await;
    let state = tempfile::tempdir().unwrap();
    // Objects the release must never touch: another release's, and one made by hand.
    fake.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}));
    fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "other", "labels": {
            "agent.troupe.dev/release-namespace": "acme", "agent.troupe.dev/release": "api-dev"}}}));
    fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "by-hand", "namespace": "other"}}));

    let applier = KubeApplier::new(fake.client(), state.path().join("kubernetes"));
    let statuses = applier
        .apply(RELEASE, &mk_release())
        .await
        .unwrap()
        .statuses;

    // Reported in release order, the Deployment still rolling out.
    let ids: Vec<&str> = statuses.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["settings", "web", "web-svc", "ns"]);
    assert_eq!(health_of(&statuses, "web"), "Progressing");
    assert_eq!(health_of(&statuses, "settings"), "Healthy");
    assert_eq!(health_of(&statuses, "web-svc"), "Healthy");
    assert_eq!(health_of(&statuses, "ns"), "Healthy");
    let web = statuses.iter().find(|s| s.id == "web").unwrap();
    assert_eq!(
        (web.group.as_str(), web.version.as_str(), web.kind.as_str()),
        ("apps", "v1", "Deployment")
    );
    assert_eq!((web.namespace.as_str(), web.name.as_str()), ("shop", "web"));

    // The Namespace went first, then the rest in release order.
    assert_eq!(
        patches(&fake),
        [
            "PATCH /api/v1/namespaces/shop",
            "PATCH /api/v1/namespaces/shop/configmaps/settings",
            "PATCH /apis/apps/v1/namespaces/shop/deployments/web",
            "PATCH /api/v1/namespaces/shop/services/web",
        ]
    );

    // Each object carries the inventory labels, its own labels, and the agent's field manager.
    for (plural, namespace, name) in [
        ("namespaces", "", "shop"),
        ("configmaps", "shop", "settings"),
        ("deployments", "shop", "web"),
        ("services", "shop", "web"),
    ] {
        let object = fake
            .get(plural, namespace, name)
            .unwrap_or_else(|| panic!("{plural} {name} applied"));
        let labels = &object["metadata"]["labels"];
        assert_eq!(
            labels["agent.troupe.dev/release-namespace"], "acme",
            "{object}"
        );
        assert_eq!(labels["agent.troupe.dev/release"], "web-dev", "{object}");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "troupe-agent",
            "{object}"
        );
        assert_eq!(
            object["metadata"]["managedFields"][0]["manager"],
            "troupe-agent"
        );
    }
    assert_eq!(
        fake.get("configmaps", "shop", "settings").unwrap()["metadata"]["labels"]["app"],
        "web"
    );

    // The controller catches up: the watch notices, without another apply.
    let changes = applier
        .health_changes()
        .expect("the applier watches health");
    let applied = patches(&fake).len();
    fake.set_status(
        "deployments",
        "shop",
        "web",
        json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
               "readyReplicas": 2, "availableReplicas": 2}),
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let health = applier.health(RELEASE).unwrap();
            if health_of(&health, "web") == "Healthy" {
                break;
            }
            changes.notified().await;
        }
    })
    .await
    .expect("the Deployment turns Healthy through the watch");
    assert_eq!(
        patches(&fake).len(),
        applied,
        "health came from the watch, not an apply"
    );
    assert!(
        fake.requests()
            .contains(&"WATCH /apis/apps/v1/deployments".to_string()),
        "{:?}",
        fake.requests()
    );

    // Re-applying what is there changes nothing.
    let again = applier
        .apply(RELEASE, &mk_release())
        .await
        .unwrap()
        .statuses;
    assert_eq!(health_of(&again, "web"), "Healthy");

    // The ConfigMap leaves the release: it is deleted, the rest stays, and so do the objects
    // of others (one with the same name, another release's labels and the same kind).
    let without_settings: Vec<ReleaseResource> = mk_release()
        .into_iter()
        .filter(|r| r.id != "settings")
        .collect();
    let statuses = applier
        .apply(RELEASE, &without_settings)
        .await
        .unwrap()
        .statuses;
    assert_eq!(statuses.len(), 3);
    assert!(fake.get("configmaps", "shop", "settings").is_none());
    assert!(fake.get("deployments", "shop", "web").is_some());
    assert!(fake.get("services", "shop", "web").is_some());
    assert!(fake.get("namespaces", "", "shop").is_some());
    assert!(fake.get("configmaps", "other", "settings").is_some());
    assert!(fake.get("configmaps", "other", "by-hand").is_some());
    assert!(
        fake.requests()
            .contains(&"DELETE /api/v1/namespaces/shop/configmaps/settings".to_string())
    );
    drop(applier);

    // After a restart (a new applier, the same state), pruning the release still finds every
    // kind it used, and deletes the Namespace last.
    let applier = KubeApplier::new(fake.client(), state.path().join("kubernetes"));
    applier.prune(RELEASE).await.unwrap();
    for (plural, namespace, name) in [
        ("namespaces", "", "shop"),
        ("deployments", "shop", "web"),
        ("services", "shop", "web"),
    ] {
        assert!(
            fake.get(plural, namespace, name).is_none(),
            "{plural} {name} pruned"
        );
    }
    assert!(fake.get("configmaps", "other", "settings").is_some());
    assert!(fake.get("configmaps", "other", "by-hand").is_some());
    let deletes: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE "))
        .collect();
    assert_eq!(
        deletes.last().map(String::as_str),
        Some("DELETE /api/v1/namespaces/shop")
    );
    assert_eq!(applier.health(RELEASE), None);
    // Pruning again finds nothing and is not an error.
    applier.prune(RELEASE).await.unwrap();
}

#[tokio::test]
async fn an_object_of_a_kind_the_cluster_does_not_serve_fails_alone_and_names_it() {
    let fake = KubeApi::start().await;
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    let mut release = mk_release();
    release.push(mk_resource(
        "cron",
        json!({"apiVersion": "apps/v1", "kind": "CronTab", "metadata": {"name": "x", "namespace": "shop"}}),
    ));
    let applied = applier.apply(RELEASE, &release).await.unwrap();
    assert_eq!(applied.failed, ["cron"]);
    let cron = applied.statuses.iter().find(|s| s.id == "cron").unwrap();
    assert_eq!(cron.health, "Degraded");
    assert!(
        cron.message
            .starts_with("finding CronTab (apps/v1) on the cluster: "),
        "{}",
        cron.message
    );
    // The rest of the release is applied all the same.
    assert!(fake.get("deployments", "shop", "web").is_some());
    assert!(!patches(&fake).iter().any(|p| p.contains("crontab")));
}

#[tokio::test]
async fn info_reports_the_platform_version_and_nodes() {
    let fake = KubeApi::start().await;
    for name in ["node-a", "node-b"] {
        fake.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}));
    }
    let state = tempfile::tempdir().unwrap();
    let info = KubeApplier::new(fake.client(), state.path()).info().await;
    assert_eq!(info.platform, "kubernetes");
    assert_eq!(info.kubernetes_version, "v1.33.1");
    assert_eq!(info.node_count, 2);
}

/// A release of one ConfigMap `shared` in `shop`, saying who wrote it.
fn mk_shared(written_by: &str) -> Vec<ReleaseResource> {
    vec![mk_resource(
        "shared",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "shared", "namespace": "shop"},
               "data": {"writtenBy": written_by}}),
    )]
}

fn shared_written_by(fake: &KubeApi) -> Option<(String, String)> {
    let object = fake.get("configmaps", "shop", "shared")?;
    Some((
        object["data"]["writtenBy"].as_str()?.to_string(),
        object["metadata"]["labels"]["agent.troupe.dev/release"]
            .as_str()?
            .to_string(),
    ))
}

#[tokio::test]
async fn an_object_of_another_release_is_neither_taken_over_nor_pruned() {
    let fake = KubeApi::start().await;
    fake.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path().join("kubernetes"));
    let first = applier
        .apply("acme/first", &mk_shared("first"))
        .await
        .unwrap()
        .statuses;
    assert_eq!(health_of(&first, "shared"), "Healthy");

    // The second release renders the same ConfigMap: that object fails, naming the owner,
    // and the cluster's object stays the first's.
    let second = applier
        .apply("acme/second", &mk_shared("second"))
        .await
        .unwrap()
        .statuses;
    assert_eq!(health_of(&second, "shared"), "Degraded");
    assert_eq!(second[0].message, "owned by release acme/first");
    assert_eq!(
        (second[0].namespace.as_str(), second[0].name.as_str()),
        ("shop", "shared")
    );
    assert_eq!(
        shared_written_by(&fake),
        Some(("first".into(), "first".into()))
    );
    // The conflict stays in the health reported between applies.
    let health = applier.health("acme/second").unwrap();
    assert_eq!(health_of(&health, "shared"), "Degraded");

    // Pruning the second leaves the first's object; pruning the first removes it, and the
    // second's next apply takes it.
    applier.prune("acme/second").await.unwrap();
    assert_eq!(
        shared_written_by(&fake),
        Some(("first".into(), "first".into()))
    );
    applier
        .apply("acme/second", &mk_shared("second"))
        .await
        .unwrap();
    applier.prune("acme/first").await.unwrap();
    assert_eq!(shared_written_by(&fake), None);
    let second = applier
        .apply("acme/second", &mk_shared("second"))
        .await
        .unwrap()
        .statuses;
    assert_eq!(health_of(&second, "shared"), "Healthy");
    assert_eq!(
        shared_written_by(&fake),
        Some(("second".into(), "second".into()))
    );
}

#[tokio::test]
async fn whole_numbers_go_out_as_integers() {
    // A Release carries objects as google.protobuf.Struct, where every number is a double; a
    // strict decoder refuses `"replicas": 2.0` for an int32 field.
    let fake = KubeApi::start().await;
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    applier.apply(RELEASE, &mk_release()).await.unwrap();
    let deployment = fake
        .get("deployments", "shop", "web")
        .expect("the Deployment");
    assert!(
        deployment["spec"]["replicas"].is_u64(),
        "replicas went out as {}",
        deployment["spec"]["replicas"]
    );
    let service = fake.get("services", "shop", "web").expect("the Service");
    assert!(
        service["spec"]["ports"][0]["port"].is_u64(),
        "port went out as {}",
        service["spec"]["ports"][0]["port"]
    );
}

#[tokio::test]
async fn a_refused_object_fails_alone_with_the_api_servers_reason_code_and_message() {
    let fake = KubeApi::start().await;
    fake.refuse(
        "PATCH",
        "services",
        "web",
        403,
        "Forbidden",
        "services \"web\" is forbidden: User \"troupe-agent\" cannot patch resource \"services\"",
    );
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    let applied = applier.apply(RELEASE, &mk_release()).await.unwrap();
    assert_eq!(applied.failed, ["web-svc"]);
    let service = applied.statuses.iter().find(|s| s.id == "web-svc").unwrap();
    assert_eq!(
        (service.health.as_str(), service.message.as_str()),
        (
            "Degraded",
            "applying Service shop/web: Forbidden (403): services \"web\" is forbidden: \
             User \"troupe-agent\" cannot patch resource \"services\""
        )
    );
    // The objects after it in the release were applied, and the health between applies
    // still names the failure.
    assert!(fake.get("configmaps", "shop", "settings").is_some());
    assert!(fake.get("deployments", "shop", "web").is_some());
    let health = applier.health(RELEASE).unwrap();
    assert_eq!(health_of(&health, "web-svc"), "Degraded");
    // Once the API server allows it, the next apply applies it.
    fake.allow("PATCH", "services", "web");
    let applied = applier.apply(RELEASE, &mk_release()).await.unwrap();
    assert!(applied.failed.is_empty());
    assert!(fake.get("services", "shop", "web").is_some());
}

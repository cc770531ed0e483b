//! What a real cluster does to the applier, in process: namespaces that must exist, objects
//! someone else made, fields another manager owns, immutable Job templates, CRDs that take
//! time to be Established, edits and deletions by others, watches that expire, and the
//! requests an idle agent sends.

use std::time::Duration;

use serde_json::{Value, json};
use troupe_agent::apply::Applier;
use troupe_agent::apply::kubernetes::KubeApplier;
use troupe_common::pb::v1alpha1::ReleaseResource;
use troupe_tests::kube_api::KubeApi;

use super::{RELEASE, health_of, mk_resource, patches};

fn mk_configmap(name: &str, namespace: &str, annotations: Value) -> ReleaseResource {
    mk_resource(
        name,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": namespace, "annotations": annotations,
                            "labels": {"troupe.dev/project": "shop", "troupe.dev/environment": "dev",
                                       "troupe.dev/release": "the-templates-own"}},
               "data": {"color": "blue"}}),
    )
}

fn mk_job(image: &str, annotations: Value) -> ReleaseResource {
    mk_resource(
        "migrate",
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "migrate", "namespace": "default", "annotations": annotations},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "main", "image": image}]}}}}),
    )
}

fn mk_deployment(replicas: Option<i64>, annotations: Value) -> ReleaseResource {
    let mut object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
           "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
    if let Some(replicas) = replicas {
        object["spec"]["replicas"] = json!(replicas);
    }
    mk_resource("web", object)
}

/// Polls `probe` every 20 ms for up to 10 s.
async fn until(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !probe() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_target_namespace_is_created_labelled_and_removed_only_when_the_agent_made_it_and_it_is_empty()
 {
    let fake = KubeApi::start().await;
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    // A fresh cluster: neither namespace exists; someone else made a third.
    fake.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "theirs"}}));
    let release = [
        mk_configmap("a", "shop", json!({})),
        mk_configmap("b", "theirs", json!({})),
    ];
    let applied = applier.apply(RELEASE, &release).await.unwrap();
    assert!(applied.failed.is_empty(), "{:?}", applied.statuses);
    let shop = fake
        .get("namespaces", "", "shop")
        .expect("the namespace is created");
    let labels = &shop["metadata"]["labels"];
    assert_eq!(
        labels["agent.troupe.dev/created-namespace"], "true",
        "{shop}"
    );
    assert_eq!(labels["troupe.dev/project"], "shop", "{shop}");
    assert_eq!(labels["troupe.dev/environment"], "dev", "{shop}");
    // The template's own labels are kept; the agent's live under their own keys.
    let a = fake.get("configmaps", "shop", "a").unwrap();
    assert_eq!(
        a["metadata"]["labels"]["troupe.dev/release"],
        "the-templates-own"
    );
    assert_eq!(
        a["metadata"]["labels"]["agent.troupe.dev/release"],
        "web-dev"
    );

    // Something else lands in the created namespace: removing the release keeps it.
    fake.create(json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "by-hand", "namespace": "shop"}}));
    applier.prune(RELEASE).await.unwrap();
    assert!(fake.get("configmaps", "shop", "a").is_none());
    assert!(
        fake.get("namespaces", "", "shop").is_some(),
        "it holds a Secret"
    );
    assert!(fake.get("namespaces", "", "theirs").is_some());

    // Without it, the namespace the agent created goes; the other never does.
    fake.delete("secrets", "shop", "by-hand");
    applier.apply(RELEASE, &release).await.unwrap();
    applier.prune(RELEASE).await.unwrap();
    assert!(
        fake.get("namespaces", "", "shop").is_none(),
        "the agent's empty namespace goes"
    );
    assert!(
        fake.get("namespaces", "", "theirs").is_some(),
        "someone else's stays"
    );
}

#[tokio::test]
async fn an_object_someone_else_made_is_a_conflict_unless_adopted_and_never_pruned() {
    let fake = KubeApi::start().await;
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "a", "namespace": "default"}, "data": {"color": "red"}}));
    let applied = applier
        .apply(RELEASE, &[mk_configmap("a", "default", json!({}))])
        .await
        .unwrap();
    let status = &applied.statuses[0];
    assert_eq!(status.health, "Degraded");
    assert_eq!(
        status.message,
        "ConfigMap default/a exists and was not made by this release (managed by kubectl); \
         Troupe leaves it alone (delete it, or annotate the manifest with troupe.dev/adopt: \
         \"true\" to take it over)"
    );
    assert_eq!(
        fake.get("configmaps", "default", "a").unwrap()["data"]["color"],
        "red"
    );
    applier.prune(RELEASE).await.unwrap();
    assert!(
        fake.get("configmaps", "default", "a").is_some(),
        "not pruned"
    );

    // The platform opts in: the object is taken over.
    let adopted = [mk_configmap(
        "a",
        "default",
        json!({"troupe.dev/adopt": "true"}),
    )];
    let applied = applier.apply(RELEASE, &adopted).await.unwrap();
    assert_eq!(health_of(&applied.statuses, "a"), "Healthy");
    assert_eq!(
        fake.get("configmaps", "default", "a").unwrap()["data"]["color"],
        "blue"
    );
}

#[tokio::test]
async fn fields_another_manager_owns_are_forced_by_default_and_reported_when_the_platform_says_so()
{
    let fake = KubeApi::start().await;
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    applier
        .apply(RELEASE, &[mk_deployment(Some(2), json!({}))])
        .await
        .unwrap();
    // Someone scales it by hand: the drift pass sets it back (the release is the truth).
    fake.update_as(
        "kubectl-edit",
        "deployments",
        "default",
        "web",
        "/spec/replicas",
        json!(5),
    )
    .unwrap();
    until("the watch sees the edit", || {
        fake.get("deployments", "default", "web").unwrap()["spec"]["replicas"] == 5
    })
    .await;
    let mut applied = applier
        .apply(RELEASE, &[mk_deployment(Some(2), json!({}))])
        .await
        .unwrap();
    for _ in 0..50 {
        if fake.get("deployments", "default", "web").unwrap()["spec"]["replicas"] == 2 {
            break;
        }
        // The cache may not have the edit yet: the next pass sees it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        applied = applier
            .apply(RELEASE, &[mk_deployment(Some(2), json!({}))])
            .await
            .unwrap();
    }
    assert!(applied.failed.is_empty());
    assert_eq!(
        fake.get("deployments", "default", "web").unwrap()["spec"]["replicas"],
        2
    );

    // Not forced: the same edit is a conflict the status names, and the field stays.
    fake.update_as(
        "kubectl-edit",
        "deployments",
        "default",
        "web",
        "/spec/replicas",
        json!(5),
    )
    .unwrap();
    let shared = [mk_deployment(
        Some(2),
        json!({"troupe.dev/force-conflicts": "false"}),
    )];
    let applied = applier.apply(RELEASE, &shared).await.unwrap();
    assert_eq!(applied.failed, ["web"]);
    let message = &applied.statuses[0].message;
    assert!(
        message.starts_with(
            "applying Deployment default/web: Conflict (409): Apply failed with 1 conflict"
        ),
        "{message}"
    );
    assert!(
        message.contains("kubectl-edit") && message.contains(".spec.replicas"),
        "{message}"
    );
    assert_eq!(
        fake.get("deployments", "default", "web").unwrap()["spec"]["replicas"],
        5
    );

    // Leaving the field out (as the HPA trait does) shares the object without a fight.
    fake.update_as(
        "kube-controller-manager",
        "deployments",
        "default",
        "web",
        "/spec/replicas",
        json!(7),
    )
    .unwrap();
    let without = [mk_deployment(
        None,
        json!({"troupe.dev/force-conflicts": "false"}),
    )];
    let applied = applier.apply(RELEASE, &without).await.unwrap();
    assert!(applied.failed.is_empty(), "{:?}", applied.statuses);
    assert_eq!(
        fake.get("deployments", "default", "web").unwrap()["spec"]["replicas"],
        7
    );
    assert_eq!(
        fake.managers_of("deployments", "default", "web", "/spec/replicas"),
        ["kube-controller-manager"]
    );
}

#[tokio::test]
async fn a_job_whose_template_changed_is_replaced_unless_the_platform_says_no() {
    let fake = KubeApi::start().await;
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    applier
        .apply(RELEASE, &[mk_job("migrate:1", json!({}))])
        .await
        .unwrap();
    let first_uid = fake.get("jobs", "default", "migrate").unwrap()["metadata"]["uid"].clone();

    let applied = applier
        .apply(RELEASE, &[mk_job("migrate:2", json!({}))])
        .await
        .unwrap();
    assert!(applied.failed.is_empty(), "{:?}", applied.statuses);
    let job = fake.get("jobs", "default", "migrate").unwrap();
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        "migrate:2"
    );
    assert_ne!(job["metadata"]["uid"], first_uid, "a new Job");
    assert!(
        fake.request_log()
            .iter()
            .any(|r| r.verb == "DELETE" && r.path.ends_with("/jobs/migrate")),
        "the old one was deleted"
    );

    // Opted out: the API server's refusal stands, and the status says so.
    let kept = [mk_job(
        "migrate:3",
        json!({"troupe.dev/replace-on-immutable": "false"}),
    )];
    let applied = applier.apply(RELEASE, &kept).await.unwrap();
    assert_eq!(applied.failed, ["migrate"]);
    assert!(
        applied.statuses[0].message.contains("Invalid (422)")
            && applied.statuses[0].message.contains("field is immutable"),
        "{}",
        applied.statuses[0].message
    );
}

fn mk_crd() -> ReleaseResource {
    mk_resource(
        "crd",
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "crontabs.example.com"},
               "spec": {"group": "example.com", "scope": "Namespaced",
                        "names": {"kind": "CronTab", "plural": "crontabs", "singular": "crontab",
                                  "listKind": "CronTabList"},
                        "versions": [{"name": "v1", "served": true, "storage": true,
                                      "schema": {"openAPIV3Schema": {"type": "object",
                                                 "x-kubernetes-preserve-unknown-fields": true}}}]}}),
    )
}

#[tokio::test]
async fn a_custom_resource_waits_for_its_crd_to_be_established_and_never_fails_for_good() {
    let fake = KubeApi::start().await;
    fake.set_crd_delay(Duration::from_millis(1500));
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    let release = [
        mk_resource(
            "tab",
            json!({"apiVersion": "example.com/v1", "kind": "CronTab",
                   "metadata": {"name": "nightly", "namespace": "default"}, "spec": {"cron": "0 3 * * *"}}),
        ),
        mk_crd(),
    ];
    let applied = applier.apply(RELEASE, &release).await.unwrap();
    assert_eq!(applied.failed, ["tab"]);
    let tab = &applied.statuses[0];
    assert_eq!(
        (tab.health.as_str(), tab.message.as_str()),
        (
            "Progressing",
            "waiting for CustomResourceDefinition crontabs.example.com to be Established"
        )
    );
    // Tried again (as the worker's retries do) until it is served.
    let mut attempts = 1;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        attempts += 1;
        let applied = applier.apply(RELEASE, &release).await.unwrap();
        if applied.failed.is_empty() {
            break;
        }
        assert_eq!(applied.statuses[0].health, "Progressing");
        assert!(attempts < 50, "{:?}", applied.statuses);
    }
    assert!(fake.get("crontabs", "default", "nightly").is_some());
}

#[tokio::test]
async fn an_idle_agent_sends_nothing_and_corrects_only_what_drifted() {
    let fake = KubeApi::start().await;
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    let release = [
        mk_configmap("a", "default", json!({})),
        mk_deployment(Some(2), json!({})),
    ];
    applier.apply(RELEASE, &release).await.unwrap();
    until("the watches have listed", || {
        fake.request_log()
            .iter()
            .filter(|r| r.verb == "WATCH")
            .count()
            >= 2
    })
    .await;
    fake.clear_requests();
    for _ in 0..20 {
        applier.apply(RELEASE, &release).await.unwrap();
    }
    assert_eq!(
        fake.requests(),
        Vec::<String>::new(),
        "20 drift passes, no request"
    );

    // Someone deletes the ConfigMap: the next pass re-creates it, and only it.
    fake.delete("configmaps", "default", "a");
    until("the watch sees the deletion", || {
        applier
            .health(RELEASE)
            .is_some_and(|h| health_of(&h, "a") == "Degraded")
    })
    .await;
    applier.apply(RELEASE, &release).await.unwrap();
    assert!(fake.get("configmaps", "default", "a").is_some());
    assert_eq!(
        patches(&fake),
        ["PATCH /api/v1/namespaces/default/configmaps/a"]
    );
}

#[tokio::test]
async fn a_watch_whose_version_expired_lists_again_and_keeps_seeing_changes() {
    let fake = KubeApi::start().await;
    let state = tempfile::tempdir().unwrap();
    let applier = KubeApplier::new(fake.client(), state.path());
    applier
        .apply(RELEASE, &[mk_deployment(Some(1), json!({}))])
        .await
        .unwrap();
    until("the watch has started", || {
        fake.requests()
            .iter()
            .any(|r| r.starts_with("WATCH /apis/apps/v1/deployments"))
    })
    .await;
    // Other kinds change, the API server compacts and restarts: the Deployments' watch resumes
    // at a version the server no longer has.
    fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "elsewhere", "namespace": "default"}}));
    fake.clear_requests();
    fake.refuse_compacted_watches_at_start();
    fake.compact();
    fake.expire_watches();
    until("the watcher lists again", || {
        fake.requests()
            .iter()
            .any(|r| r.starts_with("LIST /apis/apps/v1/deployments"))
    })
    .await;
    // And changes reach the health again.
    fake.set_status(
        "deployments",
        "default",
        "web",
        json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
               "readyReplicas": 1, "availableReplicas": 1}),
    );
    until("the Deployment turns Healthy through the new watch", || {
        applier
            .health(RELEASE)
            .is_some_and(|h| health_of(&h, "web") == "Healthy")
    })
    .await;
}

//! Objects: namespaces that must exist, field managers and their conflicts, immutable Job
//! templates, deletion with propagation, strict numbers.

use super::*;

fn mk_deployment(replicas: Option<i64>, labels: Value) -> Value {
    let mut deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
    if let Some(replicas) = replicas {
        deployment["spec"]["replicas"] = json!(replicas);
    }
    deployment
}

#[tokio::test]
async fn namespaced_objects_need_their_namespace_which_takes_them_along() {
    let kube = KubeApi::start().await;
    let configmaps = api(&kube, "v1", "ConfigMap", "configmaps", "shop");
    let settings = json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "settings", "namespace": "shop"}, "data": {"a": "b"}});
    let missing = failure(apply(&configmaps, "troupe-agent", true, settings.clone()).await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "namespaces \"shop\" not found");
    let details = missing.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("shop", "namespaces")
    );

    // A new namespace gets what a cluster's controllers put there.
    let namespaces = api(&kube, "v1", "Namespace", "namespaces", "");
    apply(&namespaces, "troupe-agent", false, namespace("shop"))
        .await
        .unwrap();
    assert!(kube.get("configmaps", "shop", "kube-root-ca.crt").is_some());
    assert!(kube.get("serviceaccounts", "shop", "default").is_some());
    apply(&configmaps, "troupe-agent", false, settings)
        .await
        .unwrap();

    // Deleting it deletes everything in it, and nothing elsewhere.
    namespaces
        .delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(
        failure(configmaps.get("settings").await).message,
        "configmaps \"settings\" not found"
    );
    assert!(kube.get("serviceaccounts", "shop", "default").is_none());
    assert!(kube.get("serviceaccounts", "default", "default").is_some());
    assert_eq!(
        failure(namespaces.delete("shop", &DeleteParams::background()).await).code,
        404
    );
}

#[tokio::test]
async fn apply_conflicts_with_other_managers_unless_forced_and_drops_what_it_left_out() {
    let kube = KubeApi::start().await;
    kube.create(namespace("shop"));
    let deployments = api(&kube, "apps/v1", "Deployment", "deployments", "shop");
    let labels = json!({"app": "web", "tier": "front"});
    apply(
        &deployments,
        "troupe-agent",
        false,
        mk_deployment(Some(2), labels.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        kube.managers_of("deployments", "shop", "web", "/spec/replicas"),
        ["troupe-agent"]
    );

    // The HPA scales it; the agent's next apply of its own value conflicts.
    kube.update_as(
        "hpa-controller",
        "deployments",
        "shop",
        "web",
        "/spec/replicas",
        json!(5),
    )
    .unwrap();
    kube.update_as(
        "kubectl",
        "deployments",
        "shop",
        "web",
        "/metadata/labels/owner",
        json!("ops"),
    )
    .unwrap();
    let conflict = failure(
        apply(
            &deployments,
            "troupe-agent",
            false,
            mk_deployment(Some(2), labels.clone()),
        )
        .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        conflict.message,
        "Apply failed with 1 conflict: conflict with \"hpa-controller\" using apps/v1: .spec.replicas"
    );
    let causes = conflict.details.unwrap().causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(
        (
            causes[0].reason.as_str(),
            causes[0].message.as_str(),
            causes[0].field.as_str()
        ),
        (
            "FieldManagerConflict",
            "conflict with \"hpa-controller\" using apps/v1",
            ".spec.replicas"
        )
    );
    assert_eq!(
        kube.get("deployments", "shop", "web").unwrap()["spec"]["replicas"],
        5
    );

    // A dry run conflicts the same way; forced, it shows the result and stores nothing.
    let mut dry = PatchParams::apply("troupe-agent").dry_run();
    let deployment = mk_deployment(Some(2), labels.clone());
    let patch = Patch::Apply(&deployment);
    assert_eq!(
        failure(deployments.patch("web", &dry, &patch).await).code,
        409
    );
    dry.force = true;
    let shown = deployments.patch("web", &dry, &patch).await.unwrap();
    assert_eq!(shown.data["spec"]["replicas"], 2);
    assert_eq!(
        kube.get("deployments", "shop", "web").unwrap()["spec"]["replicas"],
        5
    );

    // Leaving the field out is no conflict; the HPA keeps it.
    apply(
        &deployments,
        "troupe-agent",
        false,
        mk_deployment(None, labels.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        kube.get("deployments", "shop", "web").unwrap()["spec"]["replicas"],
        5
    );
    // Forced, the agent takes it over.
    apply(
        &deployments,
        "troupe-agent",
        true,
        mk_deployment(Some(3), labels),
    )
    .await
    .unwrap();
    assert_eq!(
        kube.managers_of("deployments", "shop", "web", "/spec/replicas"),
        ["troupe-agent"]
    );

    // A label the agent stops applying goes; kubectl's stays.
    let applied = apply(
        &deployments,
        "troupe-agent",
        false,
        mk_deployment(Some(3), json!({"app": "web"})),
    )
    .await
    .unwrap();
    let labels = applied.metadata.labels.unwrap();
    assert_eq!(labels.keys().collect::<Vec<_>>(), ["app", "owner"]);
    let managed: Vec<(String, String)> = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert_eq!(
        managed,
        [
            ("troupe-agent".to_string(), "Apply".to_string()),
            ("kubectl".into(), "Update".into())
        ]
    );
    let fields =
        kube.get("deployments", "shop", "web").unwrap()["metadata"]["managedFields"][0]["fieldsV1"]
            .clone();
    assert!(fields["f:spec"]["f:replicas"].is_object(), "{fields}");

    // Strict numbers: a float for an int32 field is refused whole.
    let mut floating = mk_deployment(Some(3), json!({"app": "web"}));
    floating["spec"]["replicas"] = json!(2.0);
    let refused = failure(apply(&deployments, "troupe-agent", true, floating).await);
    assert_eq!((refused.code, refused.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        refused.message,
        "json: cannot unmarshal number 2.0 into Go struct field Deployment.spec.replicas of type int32"
    );
}

#[tokio::test]
async fn a_jobs_template_cannot_change() {
    let kube = KubeApi::start().await;
    kube.create(namespace("shop"));
    let jobs = api(&kube, "batch/v1", "Job", "jobs", "shop");
    let job = |image: &str, team: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "shop", "labels": {"team": team}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "migrate", "image": image}]}}}})
    };
    apply(&jobs, "troupe-agent", true, job("migrate:1", "a"))
        .await
        .unwrap();
    // Its labels may change.
    apply(&jobs, "troupe-agent", true, job("migrate:1", "b"))
        .await
        .unwrap();
    let invalid = failure(apply(&jobs, "troupe-agent", true, job("migrate:2", "b")).await);
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert!(
        invalid
            .message
            .starts_with("Job.batch \"migrate\" is invalid: spec.template: Invalid value: "),
        "{}",
        invalid.message
    );
    assert!(
        invalid.message.ends_with(": field is immutable"),
        "{}",
        invalid.message
    );
    let causes = invalid.details.unwrap().causes;
    assert_eq!(
        (causes[0].reason.as_str(), causes[0].field.as_str()),
        ("FieldValueInvalid", "spec.template")
    );
    let stored = kube.get("jobs", "shop", "migrate").unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["image"],
        "migrate:1"
    );
}

#[tokio::test]
async fn deletion_in_the_foreground_marks_the_object_first() {
    let kube = KubeApi::start().await;
    kube.set_foreground_delay(Duration::from_millis(300));
    let configmaps = api(&kube, "v1", "ConfigMap", "configmaps", "default");
    for name in ["slow", "fast"] {
        let cm =
            object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}));
        configmaps
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    let taken = failure(
        configmaps
            .create(
                &PostParams::default(),
                &object(json!({"apiVersion": "v1",
        "kind": "ConfigMap", "metadata": {"name": "slow"}})),
            )
            .await,
    );
    assert_eq!((taken.code, taken.reason.as_str()), (409, "AlreadyExists"));

    configmaps
        .delete("slow", &DeleteParams::foreground())
        .await
        .unwrap();
    let marked = configmaps.get("slow").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    until("the marked object to go", || {
        let configmaps = configmaps.clone();
        async move {
            configmaps
                .get_opt("slow")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;

    configmaps
        .delete("fast", &DeleteParams::background())
        .await
        .unwrap();
    assert!(kube.get("configmaps", "default", "fast").is_none());
    let absent = failure(configmaps.delete("fast", &DeleteParams::default()).await);
    assert_eq!((absent.code, absent.reason.as_str()), (404, "NotFound"));
    // A replace (PUT) takes the body's labels and data; its manager owns what it changed.
    let mut kept = configmaps.get("kube-root-ca.crt").await.unwrap();
    kept.data["data"] = json!({"ca.crt": "rotated"});
    kept.metadata.labels = Some([("rotated".to_string(), "yes".to_string())].into());
    let replaced = configmaps
        .replace("kube-root-ca.crt", &PostParams::default(), &kept)
        .await
        .unwrap();
    assert_eq!(replaced.data["data"]["ca.crt"], "rotated");
    assert_eq!(replaced.metadata.labels.unwrap()["rotated"], "yes");
    assert_eq!(
        kube.managers_of("configmaps", "default", "kube-root-ca.crt", "/data"),
        ["kube-client"]
    );

    // Someone else deleting, as a test does it.
    assert!(kube.delete("configmaps", "default", "kube-root-ca.crt"));
    assert!(!kube.delete("configmaps", "default", "kube-root-ca.crt"));
}

//! The directory applier on a temporary folder: files, drift, pruning, and objects whose
//! names would lead out of the root.

use super::*;

fn resource(kind: &str, name: &str, extra: &str) -> ReleaseResource {
    let object = serde_json::json!({
        "apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "shop"},
        "data": {"x": extra}
    });
    ReleaseResource {
        id: format!("{kind}/{name}"),
        object: Some(serde_json::from_value(object).unwrap()),
    }
}

#[tokio::test]
async fn writes_one_file_per_object_touches_nothing_unchanged_and_prunes_what_left() {
    let root = tempfile::tempdir().unwrap();
    let applier = DirApplier::new(root.path());
    let both = [
        resource("ConfigMap", "a", "1"),
        resource("ConfigMap", "b", "1"),
    ];
    let statuses = applier.apply("acme/api-dev", &both).await.unwrap().statuses;
    assert!(statuses.iter().all(|s| s.health == Health::Healthy));
    let dir = root.path().join("acme/api-dev");
    let a = dir.join("configmap_shop_a.yaml");
    assert!(
        std::fs::read_to_string(&a)
            .unwrap()
            .contains("kind: ConfigMap")
    );
    let modified = std::fs::metadata(&a).unwrap().modified().unwrap();

    std::thread::sleep(std::time::Duration::from_millis(20));
    applier.apply("acme/api-dev", &both[..1]).await.unwrap();
    assert_eq!(std::fs::metadata(&a).unwrap().modified().unwrap(), modified);
    assert!(!dir.join("configmap_shop_b.yaml").exists());

    // Drift is corrected by the next apply.
    std::fs::write(&a, "edited by hand").unwrap();
    applier.apply("acme/api-dev", &both[..1]).await.unwrap();
    assert!(
        std::fs::read_to_string(&a)
            .unwrap()
            .contains("kind: ConfigMap")
    );

    applier.prune("acme/api-dev").await.unwrap();
    assert!(!dir.exists());
    applier.prune("acme/api-dev").await.unwrap();
}

fn mk_object(api_version: &str, kind: &str, namespace: &str, name: &str) -> ReleaseResource {
    let object = serde_json::json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": namespace}, "data": {"x": "1"}
    });
    ReleaseResource {
        id: format!("{kind}/{name}"),
        object: Some(serde_json::from_value(object).unwrap()),
    }
}

/// Every file under `root`, relative to it.
fn files_under(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn hostile_kinds_names_and_namespaces_fail_alone_and_write_nothing_outside_the_release() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    let applier = DirApplier::new(&root);
    let long = "a".repeat(300);
    let hostile = [
        mk_object("v1", "../../etc", "shop", "passwd"),
        mk_object("v1", "/abs", "shop", "x"),
        mk_object("v1", "a/b", "shop", "x"),
        mk_object("v1", "", "shop", "x"),
        mk_object("v1", &format!("K{long}"), "shop", "x"),
        mk_object("v1", "Kïnd", "shop", "x"),
        mk_object("v1", "ConfigMap", "shop", "../../../escaped"),
        mk_object("v1", "ConfigMap", "shop", "/abs"),
        mk_object("v1", "ConfigMap", "shop", "a/b"),
        mk_object("v1", "ConfigMap", "shop", ""),
        mk_object("v1", "ConfigMap", "shop", &long),
        mk_object("v1", "ConfigMap", "shop", "ünïcode"),
        mk_object("v1", "ConfigMap", "shop", ".."),
        mk_object("v1", "ConfigMap", "../../etc", "x"),
        mk_object("v1", "ConfigMap", "/abs", "x"),
        mk_object("v1", "ConfigMap", "a/b", "x"),
        mk_object("v1", "ConfigMap", &long, "x"),
        mk_object("v1", "ConfigMap", "nämespace", "x"),
        mk_object("../../etc/v1", "ConfigMap", "shop", "x"),
        mk_object("/abs/v1", "ConfigMap", "shop", "x"),
        mk_object("a/b/v1", "ConfigMap", "shop", "x"),
    ];
    let mut resources = hostile.to_vec();
    resources.push(mk_object("v1", "ConfigMap", "shop", "fine"));
    let statuses = applier
        .apply("acme/api-dev", &resources)
        .await
        .unwrap()
        .statuses;

    assert_eq!(statuses.len(), resources.len());
    for (status, resource) in statuses.iter().zip(&hostile) {
        assert_eq!(status.health, Health::Degraded, "{}", resource.id);
        assert_eq!(status.id, resource.id);
        assert!(status.message.starts_with("not written: "), "{status:?}");
    }
    assert_eq!(statuses.last().unwrap().health, Health::Healthy);
    assert_eq!(
        files_under(outer.path()),
        ["root/acme/api-dev/configmap_shop_fine.yaml"]
    );
    // The message names the field and the value.
    assert!(
        statuses[0]
            .message
            .contains("kind \"../../etc\" is not a kind"),
        "{}",
        statuses[0].message
    );
    assert!(
        statuses[6]
            .message
            .contains("metadata.name \"../../../escaped\""),
        "{}",
        statuses[6].message
    );
    assert!(
        statuses[13]
            .message
            .contains("metadata.namespace \"../../etc\""),
        "{}",
        statuses[13].message
    );
}

#[tokio::test]
async fn a_release_id_that_is_not_two_labels_is_refused_whole() {
    let outer = tempfile::tempdir().unwrap();
    let applier = DirApplier::new(outer.path().join("root"));
    let fine = [mk_object("v1", "ConfigMap", "shop", "fine")];
    for release in [
        "../x", "acme/..", "/abs/x", "acme/a b", "", "acme/", "Acme/x",
    ] {
        let err = applier.apply(release, &fine).await.unwrap_err();
        assert!(matches!(err, Error::BadRelease(_)), "{release}: {err}");
        assert!(applier.prune(release).await.is_err(), "{release}");
    }
    assert!(files_under(outer.path()).is_empty());
}

#[tokio::test]
async fn kinds_of_different_groups_get_different_files() {
    let root = tempfile::tempdir().unwrap();
    let applier = DirApplier::new(root.path());
    let resources = [
        mk_object("apps/v1", "Deployment", "shop", "api"),
        mk_object("example.com/v1", "Deployment", "shop", "api"),
        mk_object("rbac.authorization.k8s.io/v1", "ClusterRole", "", "reader"),
    ];
    let statuses = applier
        .apply("acme/api-dev", &resources)
        .await
        .unwrap()
        .statuses;
    assert!(statuses.iter().all(|s| s.health == Health::Healthy));
    assert_eq!(
        files_under(root.path()),
        [
            "acme/api-dev/clusterrole.rbac.authorization.k8s.io_reader.yaml",
            "acme/api-dev/deployment.apps_shop_api.yaml",
            "acme/api-dev/deployment.example.com_shop_api.yaml",
        ]
    );
}

#[tokio::test]
async fn two_objects_of_one_release_writing_one_file_fail_the_second() {
    let root = tempfile::tempdir().unwrap();
    let applier = DirApplier::new(root.path());
    let mut twice = [
        mk_object("v1", "ConfigMap", "shop", "a"),
        mk_object("v1", "ConfigMap", "shop", "a"),
    ];
    twice[1].id = "ConfigMap/a-again".into();
    let statuses = applier
        .apply("acme/api-dev", &twice)
        .await
        .unwrap()
        .statuses;
    assert_eq!(statuses[0].health, Health::Healthy);
    assert_eq!(statuses[1].health, Health::Degraded);
    assert!(statuses[1].message.contains("configmap_shop_a.yaml"));
}

#[tokio::test]
async fn files_of_the_older_naming_are_removed_by_the_next_apply() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("acme/api-dev");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("deployment_shop_api.yaml"), "old").unwrap();
    let applier = DirApplier::new(root.path());
    let resources = [mk_object("apps/v1", "Deployment", "shop", "api")];
    applier.apply("acme/api-dev", &resources).await.unwrap();
    assert_eq!(
        files_under(root.path()),
        ["acme/api-dev/deployment.apps_shop_api.yaml"]
    );
}

#[tokio::test]
async fn whole_numbers_are_written_as_integers() {
    // A Release carries objects as google.protobuf.Struct, where every number is a double.
    let root = tempfile::tempdir().unwrap();
    let applier = DirApplier::new(root.path());
    let object = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 8080}]}]}}},
        "data": {"ratio": 0.5}
    });
    let resource = ReleaseResource {
        id: "Deployment/web".into(),
        object: Some(serde_json::from_value(object).unwrap()),
    };
    applier.apply("acme/api-dev", &[resource]).await.unwrap();
    let text = std::fs::read_to_string(
        root.path()
            .join("acme/api-dev/deployment.apps_shop_web.yaml"),
    )
    .unwrap_or_else(|_| {
        let files = files_under(root.path());
        panic!("no Deployment file among {files:?}")
    });
    assert!(text.contains("replicas: 3\n"), "{text}");
    assert!(text.contains("containerPort: 8080\n"), "{text}");
    assert!(text.contains("ratio: 0.5\n"), "{text}");
    assert!(!text.contains("3.0") && !text.contains("8080.0"), "{text}");
}

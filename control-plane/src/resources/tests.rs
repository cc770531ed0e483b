//! Unit tests of the resource layer over the in-memory store.

use troupe_common::pb::v1alpha1 as pb;

use super::*;
use crate::store::MemoryStore;

fn mk_namespace(name: &str) -> Object {
    pb::Namespace {
        metadata: Some(pb::ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into()
}

fn mk_resources() -> Arc<Resources> {
    Arc::new(Resources::new(Arc::new(MemoryStore::new())))
}

fn mk_meta(namespace: &str, name: &str) -> Option<pb::ObjectMeta> {
    Some(pb::ObjectMeta {
        name: name.into(),
        namespace: namespace.into(),
        ..Default::default()
    })
}

fn mk_owner() -> Option<pb::ComponentOwner> {
    Some(pb::ComponentOwner {
        project_name: "shop".into(),
        component_name: "api".into(),
    })
}

/// One object of each kind only the control plane writes, as a user would hand it in.
fn mk_control_plane_objects() -> Vec<Object> {
    vec![
        pb::ComponentRelease {
            metadata: mk_meta("acme", "api-1"),
            spec: Some(pb::ComponentReleaseSpec {
                owner: mk_owner(),
                content_hash: "0000".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into(),
        pb::Release {
            metadata: mk_meta("acme", "api-production"),
            spec: Some(pb::ReleaseSpec {
                owner: mk_owner(),
                environment: "production".into(),
                content_hash: "0000".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into(),
        pb::Promotion {
            metadata: mk_meta("acme", "api-production-7"),
            spec: Some(pb::PromotionSpec {
                owner: mk_owner(),
                action: "Rollback".into(),
                target_environment: "production".into(),
                release_name: "api-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into(),
    ]
}

#[tokio::test]
async fn a_user_cannot_write_what_the_control_plane_computes() {
    let resources = mk_resources();
    resources
        .apply(mk_namespace("acme"), Origin::User, false)
        .await
        .unwrap();
    let expected = [
        "ComponentRelease acme/api-1 is written by the control plane: use `troupe release create` or ReleaseService.CreateRelease",
        "Release acme/api-production is written by the control plane: the binding controller renders it from its ReleaseBinding; change the ReleaseBinding, or use `troupe promote` or `troupe rollback`",
        "Promotion acme/api-production-7 is written by the control plane: use `troupe promote`, `troupe rollback` or PromotionService.Promote and PromotionService.Rollback",
    ];
    for (object, expected) in mk_control_plane_objects().into_iter().zip(expected) {
        let key = object.key();
        for dry_run in [true, false] {
            let err = resources
                .apply(object.clone(), Origin::User, dry_run)
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::ControlPlaneOwned { .. }),
                "{key}: {err}"
            );
            assert_eq!(err.to_string(), expected);
        }
        assert!(matches!(resources.get(&key), Err(Error::NotFound(_))));
        // The control plane's own write goes on to the ordinary checks (here: the component
        // does not exist).
        let err = resources
            .apply(object, Origin::ControlPlane, false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::MissingReference { .. }),
            "{key}: {err}"
        );
    }
}

#[tokio::test]
async fn a_user_cannot_delete_releases_or_promotion_records() {
    let resources = mk_resources();
    let release = ObjectKey::new(Kind::Release, "acme", "api-production");
    let err = resources
        .delete(&release, Origin::User, 0, false)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Release acme/api-production is deleted by the control plane: delete its ReleaseBinding, or set the binding's state to Undeploy"
    );
    let promotion = ObjectKey::new(Kind::Promotion, "acme", "api-production-7");
    let err = resources
        .delete(&promotion, Origin::User, 0, true)
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "Promotion acme/api-production-7 is deleted by the control plane: promotion records are kept"
        ),
        "{err}"
    );
    // A ComponentRelease no binding uses may go; the control plane deletes Releases itself.
    let unused = ObjectKey::new(Kind::ComponentRelease, "acme", "api-1");
    for (key, origin) in [(unused, Origin::User), (release, Origin::ControlPlane)] {
        let err = resources.delete(&key, origin, 0, false).await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{key}: {err}");
    }
}

#[tokio::test]
async fn a_user_apply_never_sets_status() {
    let resources = mk_resources();
    resources
        .apply(mk_namespace("acme"), Origin::User, false)
        .await
        .unwrap();
    let mk_plane = |generation| -> Object {
        pb::DataPlane {
            metadata: mk_meta("acme", "edge"),
            spec: Some(pb::DataPlaneSpec {
                plane_id: "edge".into(),
                ..Default::default()
            }),
            status: Some(pb::DataPlaneStatus {
                observed_generation: generation,
                releases_in_sync: 99,
                ..Default::default()
            }),
            ..Default::default()
        }
        .into()
    };
    let key = ObjectKey::new(Kind::DataPlane, "acme", "edge");
    let (created, _) = resources
        .apply(mk_plane(7), Origin::User, false)
        .await
        .unwrap();
    let plane: pb::DataPlane = resources.get_as(&key).unwrap();
    assert_eq!(plane.status, None, "created: {created:?}");

    let written = pb::DataPlaneStatus {
        observed_generation: 1,
        ..Default::default()
    };
    let status = written.clone();
    resources
        .update_status(&key, move |_, object| {
            if let Some(p) = object.typed_mut::<pb::DataPlane>() {
                p.status = Some(status.clone());
            }
        })
        .await
        .unwrap();
    let (_, outcome) = resources
        .apply(mk_plane(8), Origin::User, false)
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Unchanged);
    let plane: pb::DataPlane = resources.get_as(&key).unwrap();
    assert_eq!(plane.status, Some(written));
}

#[tokio::test]
async fn typed_reads_return_the_generated_type_and_refuse_another() {
    let resources = mk_resources();
    for name in ["acme", "zeta"] {
        resources
            .apply(mk_namespace(name), Origin::User, false)
            .await
            .unwrap();
    }
    let key = ObjectKey::new(Kind::Namespace, "", "acme");
    let namespace: pb::Namespace = resources.get_as(&key).unwrap();
    assert_eq!(namespace.metadata.unwrap().name, "acme");

    let err = resources.get_as::<pb::Component>(&key).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stored Namespace acme could not be decoded: it holds a Namespace, not a Component"
    );
    let missing = ObjectKey::new(Kind::Namespace, "", "nope");
    assert!(matches!(
        resources.get_as::<pb::Namespace>(&missing),
        Err(Error::NotFound(_))
    ));

    let all: Vec<pb::Namespace> = resources.list_as("", &Default::default()).await.unwrap();
    let names: Vec<String> = all.into_iter().map(|n| n.metadata.unwrap().name).collect();
    assert_eq!(names, ["acme", "zeta"]);
}

fn mk_template(value: serde_json::Value) -> Option<pbjson_types::Struct> {
    Some(serde_json::from_value(value).unwrap())
}

fn mk_component_type(template: serde_json::Value) -> Object {
    pb::ComponentType {
        metadata: mk_meta("acme", "service"),
        spec: Some(pb::ComponentTypeSpec {
            workload_type: "deployment".into(),
            resources: vec![pb::ResourceTemplate {
                id: "deployment".into(),
                template: mk_template(template),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .into()
}

#[tokio::test]
async fn templates_must_name_the_object_they_make() {
    let resources = mk_resources();
    resources
        .apply(mk_namespace("acme"), Origin::User, false)
        .await
        .unwrap();
    let cases = [
        (
            serde_json::json!({}),
            "ComponentType acme/service: spec.resources[0].template.apiVersion: required: the template of resource \"deployment\" is empty (a string, or a ${{ }} expression)",
        ),
        (
            serde_json::json!({"apiVersion": "apps/v1", "metadata": {"name": "x"}}),
            "ComponentType acme/service: spec.resources[0].template.kind: required: the template of resource \"deployment\" must name the Kubernetes object it makes (a string, or a ${{ }} expression)",
        ),
        (
            serde_json::json!({"apiVersion": "", "kind": "Deployment"}),
            "ComponentType acme/service: spec.resources[0].template.apiVersion: required: the template of resource \"deployment\" must name the Kubernetes object it makes (a string, or a ${{ }} expression)",
        ),
    ];
    for (template, expected) in cases {
        let err = resources
            .apply(mk_component_type(template), Origin::User, false)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert_eq!(err.to_string(), expected);
    }
    let key = ObjectKey::new(Kind::ComponentType, "acme", "service");
    assert!(matches!(resources.get(&key), Err(Error::NotFound(_))));

    let expressions = serde_json::json!({
        "apiVersion": "${{ parameters.apiVersion }}",
        "kind": "${{ parameters.kind }}",
        "metadata": {"name": "${{ metadata.name }}"},
    });
    resources
        .apply(mk_component_type(expressions), Origin::User, false)
        .await
        .unwrap();

    let mk_trait = |template| -> Object {
        pb::Trait {
            metadata: mk_meta("acme", "storage"),
            spec: Some(pb::TraitSpec {
                creates: vec![pb::ResourceTemplate {
                    template: mk_template(template),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .into()
    };
    let err = resources
        .apply(mk_trait(serde_json::json!({})), Origin::User, false)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Trait acme/storage: spec.creates[0].template.apiVersion: required: the template is empty (a string, or a ${{ }} expression)"
    );
    let volume = serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim"});
    resources
        .apply(mk_trait(volume), Origin::User, false)
        .await
        .unwrap();
}

#[tokio::test]
async fn pages_follow_tokens_through_what_the_selector_skips() {
    let resources = mk_resources();
    for i in 0..10 {
        let mut namespace = mk_namespace(&format!("ns-{i}"));
        if i % 3 == 0 {
            namespace
                .meta_mut()
                .labels
                .insert("team".into(), "a".into());
        }
        resources
            .apply(namespace, Origin::User, false)
            .await
            .unwrap();
    }
    let selector = LabelSelector::parse("team=a").unwrap();
    let (mut names, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = resources
            .list(Kind::Namespace, "", &selector, 2, &token)
            .await
            .unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|o| o.meta().name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["ns-0", "ns-3", "ns-6", "ns-9"]);
    assert_eq!(pages, 2, "the last full page knows nothing follows");

    let error = resources
        .list(Kind::Namespace, "", &selector, 2, "no-slash")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("pageToken"), "{error}");
}

#[test]
fn page_sizes_have_a_default_and_a_maximum_that_says_to_page() {
    assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE as usize);
    assert_eq!(page_size(MAX_PAGE_SIZE).unwrap(), MAX_PAGE_SIZE as usize);
    let error = page_size(MAX_PAGE_SIZE + 1).unwrap_err().to_string();
    assert!(
        error.contains("pageSize") && error.contains("nextPageToken"),
        "{error}"
    );
}

/// A Namespace carrying `labels`.
fn mk_labelled_namespace(labels: &[(&str, &str)]) -> Object {
    let mut object = mk_namespace("labelled");
    object.meta_mut().labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    object
}

#[tokio::test]
async fn labels_no_selector_could_name_are_refused_naming_the_label() {
    let resources = mk_resources();
    for (key, value) in [
        ("app=web", "x"),
        ("tier!", "x"),
        ("a,b", "x"),
        ("(group)", "x"),
        ("-app", "x"),
        ("Example.COM/app", "x"),
        ("app", "a b"),
        ("app", "web=db"),
        ("app", "(x)"),
        ("app", &"v".repeat(64)),
    ] {
        let error = resources
            .apply(mk_labelled_namespace(&[(key, value)]), Origin::User, false)
            .await
            .expect_err(&format!("{key:?}: {value:?} was stored"))
            .to_string();
        assert!(
            error.contains(&format!("metadata.labels[{key:?}]")),
            "{key:?}: {value:?}: {error}"
        );
    }
    let fine = [
        ("app", "web"),
        ("troupe.dev/release", "api-1.2_3"),
        ("app.kubernetes.io/managed-by", ""),
    ];
    resources
        .apply(mk_labelled_namespace(&fine), Origin::User, false)
        .await
        .expect("well-formed labels");
}

fn mk_large_release(name: &str, objects: usize) -> Object {
    let resources = (0..objects)
        .map(|i| pb::ReleaseResource {
            id: format!("config-{i}"),
            object: Some(
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": format!("config-{i}"), "namespace": "shop"},
                    "data": {"payload": "x".repeat(1024)},
                }))
                .unwrap(),
            ),
        })
        .collect();
    pb::Release {
        metadata: mk_meta("acme", name),
        spec: Some(pb::ReleaseSpec {
            owner: mk_owner(),
            environment: "production".into(),
            release_binding: "api-production".into(),
            resources,
            content_hash: "0000".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into()
}

/// Status writes of a Release of a megabyte (acks, health) don't write its manifests again:
/// a burst of them leaves the event log room for the history a watch resumes from, and the
/// Release reads back whole.
#[tokio::test]
async fn status_writes_of_a_large_release_keep_the_history_a_watch_resumes_from() {
    let dir = tempfile::tempdir().unwrap();
    let retention = crate::store::Retention {
        revisions: 100_000,
        bytes: 4 * 1024 * 1024,
    };
    let store =
        Arc::new(crate::store::SledStore::open_with_retention(dir.path(), retention).unwrap());
    let resources = Arc::new(Resources::new(store.clone()));
    let release = mk_large_release("api-production", 1024);
    let key = release.key();
    // As the binding controller leaves it (its references are not what this is about).
    let created = store
        .commit(put(Txn::default(), key.clone(), &release, None))
        .unwrap();
    for generation in 1..=40 {
        let changed = resources
            .update_status(&key, move |_, object| {
                if let Object::Release(release) = object {
                    release.status.get_or_insert_default().applied_generation = generation;
                }
            })
            .await
            .unwrap();
        assert!(changed);
    }
    let events = store.events_after(created, usize::MAX).unwrap_or_else(|e| {
        panic!("40 status writes of a 1 MiB Release pushed the history out of a 4 MiB log: {e}")
    });
    assert_eq!(events.len(), 40);
    let last = decode_bytes(&key, &events[39].value, events[39].revision).unwrap();
    let Object::Release(read) = resources.get(&key).unwrap() else {
        panic!("not a Release");
    };
    assert_eq!(Object::Release(read.clone()), last);
    assert_eq!(read.status.unwrap().applied_generation, 40);
    let Object::Release(written) = release else {
        unreachable!()
    };
    assert_eq!(read.spec, written.spec, "the manifests read back whole");
}

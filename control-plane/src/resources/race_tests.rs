//! Writes racing another server's commit on a shared store: between a write's checks (under
//! this server's lock) and its commit, another server's commit lands; the write fails as it
//! would have failed a moment later, and writes nothing.

use std::sync::Mutex;

use tokio::sync::{broadcast, watch};

use super::*;
use crate::store::{Durability, Event, MemoryStore, StoreError};

/// A store that commits `other` (another server's write) just before the next commit it is
/// given.
struct Interleaved {
    inner: Arc<MemoryStore>,
    other: Mutex<Option<Txn>>,
}

impl Store for Interleaved {
    fn get(&self, key: &ObjectKey) -> Result<Option<Record>, StoreError> {
        self.inner.get(key)
    }
    fn list(&self, kind: Kind, ns: Option<&str>) -> Result<(Vec<Record>, Revision), StoreError> {
        self.inner.list(kind, ns)
    }
    fn list_page(
        &self,
        kind: Kind,
        ns: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        self.inner.list_page(kind, ns, after, limit)
    }
    fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        if let Some(other) = self.other.lock().unwrap().take() {
            self.inner.commit(other)?;
        }
        self.inner.commit(txn)
    }
    fn revision(&self) -> Revision {
        self.inner.revision()
    }
    fn events_after(&self, after: Revision, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.events_after(after, limit)
    }
    fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.inner.subscribe()
    }
    fn durability(&self) -> watch::Receiver<Durability> {
        self.inner.durability()
    }
    fn request_flush(&self) {
        self.inner.request_flush()
    }
}

/// The sample platform: namespace acme, types, environments, pipeline, project shop.
const PLATFORM: &str = include_str!("../../../examples/platform.yaml");

fn mk_store() -> (Arc<Interleaved>, Arc<Resources>) {
    let store = Arc::new(Interleaved {
        inner: Arc::new(MemoryStore::new()),
        other: Mutex::new(None),
    });
    (store.clone(), Arc::new(Resources::new(store)))
}

async fn apply_yaml(resources: &Arc<Resources>, yaml: &str) -> Result<Outcome, Error> {
    let mut outcome = Outcome::Unchanged;
    for object in troupe_common::document::from_yaml(yaml).unwrap() {
        outcome = resources.apply(object, Origin::User, false).await?.1;
    }
    Ok(outcome)
}

#[tokio::test]
async fn a_write_whose_reference_another_server_deletes_meanwhile_fails_naming_it() {
    let (store, resources) = mk_store();
    apply_yaml(&resources, PLATFORM).await.unwrap();
    let project = ObjectKey::new(Kind::Project, "acme", "shop");
    *store.other.lock().unwrap() = Some(Txn::default().delete(project));
    let err = apply_yaml(
        &resources,
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: web, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/service}
",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::MissingReference { field, .. } if field == "spec.owner.projectName"),
        "{err}"
    );
    let component = ObjectKey::new(Kind::Component, "acme", "web");
    assert!(matches!(resources.get(&component), Err(Error::NotFound(_))));
}

const SHOP_LABELLED: &str = "apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {name: shop, namespace: acme, labels: {team: shop}}
spec: {deploymentPipelineRef: default}
";

#[tokio::test]
async fn a_write_naming_the_version_another_server_changed_meanwhile_is_stale() {
    let (store, resources) = mk_store();
    apply_yaml(&resources, PLATFORM).await.unwrap();
    let project = ObjectKey::new(Kind::Project, "acme", "shop");
    let record = store.get(&project).unwrap().unwrap();
    // The other server writes the same bytes again: a new revision.
    *store.other.lock().unwrap() = Some(Txn::default().put(project.clone(), record.value));
    let mut object = troupe_common::document::from_yaml(SHOP_LABELLED)
        .unwrap()
        .remove(0);
    object.meta_mut().resource_version = record.mod_revision;
    let err = resources
        .apply(object, Origin::User, false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stale { .. }), "{err}");
}

#[tokio::test]
async fn a_write_naming_no_version_is_made_again_over_another_servers_change() {
    let (store, resources) = mk_store();
    apply_yaml(&resources, PLATFORM).await.unwrap();
    let project = ObjectKey::new(Kind::Project, "acme", "shop");
    let record = store.get(&project).unwrap().unwrap();
    *store.other.lock().unwrap() = Some(Txn::default().put(project.clone(), record.value));
    assert_eq!(
        apply_yaml(&resources, SHOP_LABELLED).await.unwrap(),
        Outcome::Configured
    );
    let labels = resources.get(&project).unwrap().meta().labels.clone();
    assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
}

#[tokio::test]
async fn a_delete_is_refused_when_another_server_made_a_referrer_meanwhile() {
    let (store, resources) = mk_store();
    apply_yaml(&resources, PLATFORM).await.unwrap();
    apply_yaml(
        &resources,
        "apiVersion: troupe.dev/v1alpha1
kind: DeploymentPipeline
metadata: {name: quick, namespace: acme}
spec:
  promotionPaths:
    - sourceEnvironment: development
      targets: [{environment: staging}]
",
    )
    .await
    .unwrap();
    let pipeline = ObjectKey::new(Kind::DeploymentPipeline, "acme", "quick");
    // This server has looked at the pipeline's referrers before: none.
    resources
        .delete(&pipeline, Origin::User, 0, true)
        .await
        .unwrap();
    // Between this delete's referrer check and its commit, the other server writes a
    // Project on the pipeline.
    let mut project = troupe_common::document::from_yaml(
        "apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {name: fast, namespace: acme, uid: u1, generation: 1}
spec: {deploymentPipelineRef: quick}
",
    )
    .unwrap()
    .remove(0);
    project.set_type_meta();
    let key = project.key();
    *store.other.lock().unwrap() = Some(put(Txn::default(), key.clone(), &project, None));
    let err = resources
        .delete(&pipeline, Origin::User, 0, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::StillReferenced { referrers, .. } if referrers.contains(&key)),
        "{err}"
    );
    assert!(resources.get(&pipeline).is_ok());
}

fn component(name: &str, project: &str) -> Object {
    let yaml = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: {name}, namespace: acme}}
spec:
  owner: {{projectName: {project}}}
  componentType: {{name: deployment/service}}
"
    );
    troupe_common::document::from_yaml(&yaml).unwrap().remove(0)
}

/// Writers on one server take no lock: concurrent applies of one object all land, one after
/// the other, and components created while their project is deleted either go with it or
/// are refused; none is left without its project.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_one_server_keep_every_rule() {
    let store = Arc::new(MemoryStore::new());
    let resources = Arc::new(Resources::new(store));
    apply_yaml(&resources, PLATFORM).await.unwrap();
    let project = ObjectKey::new(Kind::Project, "acme", "shop");

    let mut writers = Vec::new();
    for i in 0..16 {
        let resources = resources.clone();
        writers.push(tokio::spawn(async move {
            let mut object = resources.get(&ObjectKey::new(Kind::Project, "acme", "shop"))?;
            object.meta_mut().resource_version = 0;
            object
                .meta_mut()
                .labels
                .insert(format!("writer-{i}"), "yes".into());
            resources.apply(object, Origin::User, false).await
        }));
    }
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let generation = resources.get(&project).unwrap().meta().generation;
    assert_eq!(generation, 1, "labels are no spec change");

    let mut writers = Vec::new();
    for i in 0..40 {
        let writer = resources.clone();
        writers.push(tokio::spawn(async move {
            let object = component(&format!("c{i}"), "shop");
            writer.apply(object, Origin::User, false).await.map(|_| ())
        }));
        if i == 20 {
            let resources = resources.clone();
            let project = project.clone();
            writers.push(tokio::spawn(async move {
                resources
                    .delete(&project, Origin::User, 0, false)
                    .await
                    .map(|_| ())
            }));
        }
    }
    for writer in writers {
        match writer.await.unwrap() {
            Ok(()) | Err(Error::MissingReference { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(matches!(resources.get(&project), Err(Error::NotFound(_))));
    let left = resources
        .list_as::<troupe_common::pb::v1alpha1::Component>("acme", &Default::default())
        .await
        .unwrap();
    let orphans: Vec<_> = left
        .iter()
        .filter(|c| {
            c.spec
                .as_ref()
                .unwrap()
                .owner
                .as_ref()
                .unwrap()
                .project_name
                == "shop"
        })
        .map(|c| c.metadata.as_ref().unwrap().name.clone())
        .collect();
    assert!(
        orphans.is_empty(),
        "components outlived their project: {orphans:?}"
    );
}

#[tokio::test]
async fn two_last_releases_purged_at_once_still_take_their_environment() {
    let (store, resources) = mk_store();
    apply_yaml(&resources, PLATFORM).await.unwrap();
    apply_yaml(
        &resources,
        "apiVersion: troupe.dev/v1alpha1
kind: Environment
metadata: {name: eu, namespace: acme}
spec:
  dataPlaneRef: {kind: DataPlane, name: local}
",
    )
    .await
    .unwrap();
    // eu is being deleted, waiting for its data plane to prune its two Releases.
    let environment = ObjectKey::new(Kind::Environment, "acme", "eu");
    let mut env = resources.get(&environment).unwrap();
    env.meta_mut().delete_time = Some(now());
    env.meta_mut().resource_version = 0;
    let mut txn = put(Txn::default(), environment.clone(), &env, None);
    for name in ["a", "b"] {
        let release = Object::Release(pb::Release {
            metadata: Some(pb::ObjectMeta {
                name: name.into(),
                namespace: "acme".into(),
                generation: 2,
                delete_time: Some(now()),
                ..Default::default()
            }),
            spec: Some(pb::ReleaseSpec {
                environment: "eu".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        txn = put(txn, release.key(), &release, None);
    }
    store.commit(txn).unwrap();
    // Another server purges b after this one looked for eu's referrers (and saw b), before
    // it commits a's purge.
    let (a, b) = (
        ObjectKey::new(Kind::Release, "acme", "a"),
        ObjectKey::new(Kind::Release, "acme", "b"),
    );
    *store.other.lock().unwrap() = Some(Txn::default().delete(b.clone()));
    assert!(resources.purge_release(&a, 2).await.unwrap());
    assert!(matches!(resources.get(&b), Err(Error::NotFound(_))));
    assert!(
        matches!(resources.get(&environment), Err(Error::NotFound(_))),
        "eu waits for no Release any more and must be gone"
    );
}

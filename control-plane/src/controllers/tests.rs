//! Controllers under faults, over real stores and the sample platform: a controller whose
//! watch falls so far behind that its revision leaves the event log, and a binding whose
//! Release cannot be written for a while (a store that fails those commits on demand).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{broadcast, watch};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::{ConditionType, Reason};
use troupe_common::{Kind, Object, ObjectKey};

use super::binding::BindingController;
use super::deploy::DeployController;
use crate::releases::Releases;
use crate::resources::{Origin, Resources};
use crate::store::{Durability, Event, MemoryStore, Op, Record, Revision, Store, StoreError, Txn};

/// The sample platform (what dev mode loads).
const SAMPLE_PLATFORM: &str = include_str!("../../../examples/platform.yaml");

/// A [`MemoryStore`] whose commits that write a Release fail while `full` is set, as on a
/// full disk.
struct FlakyStore {
    inner: MemoryStore,
    full: AtomicBool,
}

impl Store for FlakyStore {
    fn get(&self, key: &ObjectKey) -> Result<Option<Record>, StoreError> {
        self.inner.get(key)
    }

    fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        self.inner.list(kind, namespace)
    }

    fn list_page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<(Vec<Record>, Revision), StoreError> {
        self.inner.list_page(kind, namespace, after, limit)
    }

    fn commit(&self, txn: Txn) -> Result<Revision, StoreError> {
        let writes_release = txn
            .ops
            .iter()
            .any(|op| matches!(op, Op::Put { key, .. } | Op::PutShared { key, .. } if key.kind == Kind::Release));
        if writes_release && self.full.load(Ordering::SeqCst) {
            return Err(StoreError::Engine("no space left on device".into()));
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
        self.inner.request_flush();
    }
}

/// Applies the sample platform, with `autoDeploy` on when asked.
async fn mk_platform(resources: &Arc<Resources>, auto_deploy: bool) {
    let mut yaml = SAMPLE_PLATFORM.to_string();
    if auto_deploy {
        let comment = "# autoDeploy: true would cut a release and bind it in the first environment \
                       on every change";
        assert!(yaml.contains(comment), "the sample platform changed");
        yaml = yaml.replace(comment, "autoDeploy: true");
    }
    for object in troupe_common::document::from_yaml(&yaml).unwrap() {
        resources.apply(object, Origin::User, false).await.unwrap();
    }
}

/// A binding of the sample component `api` in `environment` that names no release.
fn mk_binding(environment: &str) -> Object {
    let yaml = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {{name: api-{environment}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: api}}
  environment: {environment}
"
    );
    troupe_common::document::from_yaml(&yaml).unwrap().remove(0)
}

/// The binding's `Rendered` condition: `(status, reason, message)`.
fn rendered(resources: &Resources, binding: &ObjectKey) -> Option<(String, String, String)> {
    let binding = resources.get_as::<pb::ReleaseBinding>(binding).ok()?;
    let condition = binding
        .status?
        .conditions
        .into_iter()
        .find(|c| c.r#type == ConditionType::Rendered.as_str())?;
    Some((condition.status, condition.reason, condition.message))
}

/// Polls `done` until it holds, for up to 20 seconds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_controller_whose_watch_was_compacted_watches_again() {
    // The event log keeps 64 revisions; the live channel holds 4096 commits.
    let store = Arc::new(MemoryStore::with_retention(
        crate::store::Retention::revisions(64),
    ));
    let resources = Arc::new(Resources::new(store.clone()));
    let releases = Arc::new(Releases::new(resources.clone()));
    tokio::spawn(BindingController::new(resources.clone(), releases).run());
    mk_platform(&resources, false).await;
    resources
        .apply(mk_binding("development"), Origin::User, false)
        .await
        .unwrap();
    let first = ObjectKey::new(Kind::ReleaseBinding, "acme", "api-development");
    eventually("the controller has seen the first binding", || {
        rendered(&resources, &first).is_some_and(|(_, reason, _)| reason == "NoRelease")
    })
    .await;

    // A burst of 5,000 commits while the controller cannot run (this test holds the only
    // thread): its watch falls behind the live channel, and the log no longer reaches back
    // to where it was.
    let namespace = resources
        .get(&ObjectKey::new(Kind::Namespace, "", "acme"))
        .unwrap();
    let value = pb::Resource {
        object: Some(namespace.clone()),
    }
    .encode_to_vec();
    for _ in 0..5_000 {
        store
            .commit(Txn::default().put(namespace.key(), value.clone()))
            .unwrap();
    }

    resources
        .apply(mk_binding("staging"), Origin::User, false)
        .await
        .unwrap();
    let second = ObjectKey::new(Kind::ReleaseBinding, "acme", "api-staging");
    eventually(
        "the controller, watching again, renders the new binding",
        || rendered(&resources, &second).is_some_and(|(_, reason, _)| reason == "NoRelease"),
    )
    .await;
}

#[tokio::test]
async fn a_reconcile_that_fails_is_retried_and_shows_on_the_binding() {
    let store = Arc::new(FlakyStore {
        inner: MemoryStore::new(),
        full: AtomicBool::new(true),
    });
    let resources = Arc::new(Resources::new(store.clone()));
    let releases = Arc::new(Releases::new(resources.clone()));
    let controller = BindingController::new(resources.clone(), releases.clone());
    let queue = controller.queue();
    tokio::spawn(controller.run());
    tokio::spawn(DeployController::new(resources.clone(), releases).run());
    mk_platform(&resources, true).await;

    // The deploy controller binds the component in the first environment; its Release cannot
    // be written, and the binding says so, retry after retry.
    let binding = ObjectKey::new(Kind::ReleaseBinding, "acme", "api-development");
    let mut seen = None;
    eventually("the binding shows the third failed attempt", || {
        seen = rendered(&resources, &binding);
        seen.as_ref().is_some_and(|(status, reason, message)| {
            status == "False"
                && reason == Reason::ReconcileFailed.as_str()
                && message.contains("no space left on device")
                && message.contains("attempt 3, retrying in 400ms")
        })
    })
    .await;
    let release = ObjectKey::new(Kind::Release, "acme", "api-development");
    assert!(resources.get(&release).is_err(), "{seen:?}");
    // The binding is written within the attempt; the queue counts the attempt once it ends.
    eventually("the queue counts the failed attempts", || {
        let stats = queue.stats();
        stats.failures >= 3 && stats.retries >= 2
    })
    .await;

    // The disk has room again; nothing else changes, and the binding converges.
    store.full.store(false, Ordering::SeqCst);
    eventually("the Release is written and the binding rendered", || {
        resources.get(&release).is_ok()
            && rendered(&resources, &binding).is_some_and(|(status, reason, _)| {
                status == "True" && reason == Reason::Rendered.as_str()
            })
    })
    .await;
    eventually("nothing is left to retry", || queue.stats().depth() == 0).await;
}

#[tokio::test]
async fn a_handler_that_panics_does_not_end_the_controller() {
    let resources = Arc::new(Resources::new(Arc::new(MemoryStore::new())));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let follower = resources.clone();
    tokio::spawn(async move {
        super::follow(&follower, "test", vec![Kind::Namespace], |_, _| {
            let calls = counted.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("a bug in the controller's bookkeeping");
                }
            }
        })
        .await;
    });
    mk_platform(&resources, false).await;
    eventually(
        "the listing after the panic hands the namespace over again",
        || calls.load(Ordering::SeqCst) >= 2,
    )
    .await;
}

/// The components `web` and `other` of project shop, deploying themselves; `web` connects to
/// api's `http` when `connected`.
fn mk_neighbours(connected: bool) -> Vec<Object> {
    let connections = if connected {
        "  connections: [{component: api, endpoint: http, envBindings: {address: API_URL}}]\n"
    } else {
        ""
    };
    let mut yaml = String::new();
    for name in ["web", "other"] {
        let connections = if name == "web" { connections } else { "" };
        yaml.push_str(&format!(
            "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: {name}, namespace: acme}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/service}}
  autoDeploy: true
  parameters: {{port: 8080}}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: {name}}}
  container: {{image: ghcr.io/acme/{name}:1.0.0}}
{connections}---
"
        ));
    }
    troupe_common::document::from_yaml(&yaml).unwrap()
}

/// Whether the network policy in `component`'s development Release admits `consumer` by
/// name; `None` while there is no such Release.
fn admits(resources: &Resources, component: &str, consumer: &str) -> Option<bool> {
    let key = ObjectKey::new(Kind::Release, "acme", format!("{component}-development"));
    let release = resources.get_as::<pb::Release>(&key).ok()?;
    let policy = release
        .spec?
        .resources
        .into_iter()
        .find(|r| r.id.starts_with("NetworkPolicy/"))?;
    let policy = serde_json::to_value(policy.object?).ok()?;
    Some(
        policy["spec"]["ingress"]
            .to_string()
            .contains(&format!("\"troupe.dev/component\":\"{consumer}\"")),
    )
}

fn version(resources: &Resources, name: &str) -> u64 {
    let key = ObjectKey::new(Kind::Release, "acme", name);
    resources.get(&key).map_or(0, |r| r.meta().resource_version)
}

#[tokio::test]
async fn a_new_connection_renders_the_target_again_and_no_other_component() {
    let resources = Arc::new(Resources::new(Arc::new(MemoryStore::new())));
    let releases = Arc::new(Releases::new(resources.clone()));
    tokio::spawn(BindingController::new(resources.clone(), releases.clone()).run());
    tokio::spawn(DeployController::new(resources.clone(), releases).run());
    mk_platform(&resources, true).await;
    for object in mk_neighbours(false) {
        resources.apply(object, Origin::User, false).await.unwrap();
    }
    eventually("api, web and other run in development", || {
        ["api", "web", "other"]
            .iter()
            .all(|c| admits(&resources, c, "web") == Some(false))
    })
    .await;
    let other = version(&resources, "other-development");

    for object in mk_neighbours(true) {
        resources.apply(object, Origin::User, false).await.unwrap();
    }
    eventually("api's policy admits web by name", || {
        admits(&resources, "api", "web") == Some(true)
    })
    .await;
    assert_eq!(
        version(&resources, "other-development"),
        other,
        "the Release of a component nothing connects to does not change"
    );

    for object in mk_neighbours(false) {
        resources.apply(object, Origin::User, false).await.unwrap();
    }
    eventually("api's policy no longer names web", || {
        admits(&resources, "api", "web") == Some(false)
    })
    .await;
    assert_eq!(version(&resources, "other-development"), other);
}

/// `n` components of project shop, `web0`…, each connecting to api's `http` and deploying
/// itself.
fn mk_consumers(n: usize) -> Vec<Object> {
    let yaml: String = (0..n)
        .map(|i| {
            format!(
                "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: web{i}, namespace: acme}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/service}}
  autoDeploy: true
  parameters: {{port: 8080}}
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: web{i}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: web{i}}}
  container: {{image: ghcr.io/acme/web:1.0.0}}
  connections: [{{component: api, endpoint: http}}]
---
"
            )
        })
        .collect();
    troupe_common::document::from_yaml(&yaml).unwrap()
}

// Several threads: the controller's workers render while its watch is still listing (api's
// binding is listed first, its 40 consumers after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_that_starts_knows_every_consumer_before_its_first_render() {
    const CONSUMERS: usize = 40;
    let resources = Arc::new(Resources::new(Arc::new(MemoryStore::new())));
    let releases = Arc::new(Releases::new(resources.clone()));
    // The deploy controller alone: releases are cut and bound, nothing is rendered yet (as
    // after a restart, when every binding is there before the binding controller starts).
    tokio::spawn(DeployController::new(resources.clone(), releases.clone()).run());
    mk_platform(&resources, true).await;
    for object in mk_consumers(CONSUMERS) {
        resources.apply(object, Origin::User, false).await.unwrap();
    }
    let bound = |component: String| {
        let key = ObjectKey::new(
            Kind::ReleaseBinding,
            "acme",
            format!("{component}-development"),
        );
        resources
            .get_as::<pb::ReleaseBinding>(&key)
            .is_ok_and(|b| b.spec.is_some_and(|s| !s.release_name.is_empty()))
    };
    eventually("api and its consumers are bound", || {
        bound("api".into()) && (0..CONSUMERS).all(|i| bound(format!("web{i}")))
    })
    .await;

    tokio::spawn(BindingController::new(resources.clone(), releases).run());
    eventually("api's policy admits every consumer", || {
        (0..CONSUMERS).all(|i| admits(&resources, "api", &format!("web{i}")) == Some(true))
    })
    .await;
    let key = ObjectKey::new(Kind::Release, "acme", "api-development");
    assert_eq!(
        resources.get(&key).unwrap().meta().generation,
        1,
        "api's first Release already admitted every consumer: no policy shut one out meanwhile"
    );
}

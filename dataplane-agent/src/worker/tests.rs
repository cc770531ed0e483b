//! The worker on its own: the write-ahead of a first apply, and an apply that outlives the
//! session that asked for it.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource, ReleaseResourceStatus};
use troupe_common::status::Health;

use super::*;
use crate::apply::{self, describe};

/// An applier that gets as far as creating objects, then fails (a crash mid-apply, as far as
/// the state on disk can tell), and counts what it is asked to do.
#[derive(Default)]
struct Failing {
    applies: AtomicUsize,
}

impl Applier for Failing {
    fn apply<'a>(
        &'a self,
        _release: &'a str,
        _resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Vec<ReleaseResourceStatus>, apply::Error>> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Err(apply::Error::io("writing", "/target/api.yaml")(
                std::io::Error::other("the target went away mid-apply"),
            ))
        })
    }

    fn prune<'a>(&'a self, _release: &'a str) -> BoxFuture<'a, Result<(), apply::Error>> {
        Box::pin(async { Ok(()) })
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        Box::pin(async { ClusterInfo::default() })
    }
}

/// An applier whose applies wait until the test lets them through, one at a time.
#[derive(Default)]
pub(crate) struct Gated {
    /// Notified when an apply has started.
    pub started: Notify,
    /// Lets one waiting apply finish.
    pub release: Notify,
}

impl Applier for Gated {
    fn apply<'a>(
        &'a self,
        _release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Vec<ReleaseResourceStatus>, apply::Error>> {
        Box::pin(async move {
            self.started.notify_one();
            self.release.notified().await;
            Ok(resources.iter().map(describe).collect())
        })
    }

    fn prune<'a>(&'a self, _release: &'a str) -> BoxFuture<'a, Result<(), apply::Error>> {
        Box::pin(async { Ok(()) })
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        Box::pin(async { ClusterInfo::default() })
    }
}

/// A worker over `applier` with its state in `dir`, the default policy and no drift pass
/// during a test; it stops when the returned sender is dropped.
pub(crate) fn mk_gated_worker(
    dir: &std::path::Path,
    applier: &Arc<Gated>,
) -> (watch::Sender<bool>, Handle) {
    let (stop, stopping) = watch::channel(false);
    let worker = Worker::spawn(
        applier.clone(),
        Arc::new(Policy::default()),
        State::open(dir).unwrap(),
        BTreeMap::new(),
        Duration::from_secs(3600),
        stopping,
    );
    (stop, worker)
}

pub(crate) fn mk_upsert(release: &str, generation: i64) -> Upsert {
    Upsert {
        release: release.into(),
        generation,
        content_hash: format!("h{generation}"),
        manifests: b"[]".to_vec(),
    }
}

#[tokio::test]
async fn a_first_apply_is_on_record_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let applier = Arc::new(Failing::default());
    let mut core = Core::new(
        applier.clone(),
        Arc::new(Policy::default()),
        State::open(dir.path()).unwrap(),
        BTreeMap::new(),
    );
    let error = core.upsert(mk_upsert("acme/api-eu", 4)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "writing /target/api.yaml: the target went away mid-apply"
    );
    // After a restart the agent reports it (generation 0), so a removal can reach it…
    let held = State::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(held.get("acme/api-eu"), Some(&Held::pending("acme/api-eu")));
    // …and never re-applies it on its own: nothing of it was acknowledged.
    core.held = held;
    core.correct_drift().await;
    assert_eq!(applier.applies.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_apply_in_flight_when_its_session_ends_is_recorded_and_reported_in_the_next_hello() {
    let dir = tempfile::tempdir().unwrap();
    let applier = Arc::new(Gated::default());
    let (_stop, worker) = mk_gated_worker(dir.path(), &applier);

    let (replies, answers) = mpsc::channel(8);
    assert!(worker.connect(replies.clone()).await.unwrap().is_empty());
    let upsert = Command::Upsert {
        upsert: mk_upsert("acme/api-eu", 4),
        replies: replies.clone(),
    };
    worker.commands.send(upsert).await.unwrap();
    applier.started.notified().await;
    // The stream drops mid-apply: the session and its answers are gone.
    drop((replies, answers));
    applier.release.notify_one();

    let (replies, _answers) = mpsc::channel(8);
    let known = worker.connect(replies).await.unwrap();
    assert_eq!(
        known,
        vec![(
            "acme/api-eu".to_string(),
            pb::KnownRelease {
                generation: 4,
                content_hash: "h4".into(),
            }
        )]
    );
    let on_disk = State::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(on_disk["acme/api-eu"].generation, 4);
}

fn mk_object(api_version: &str, kind: &str, name: &str, data: &str) -> ReleaseResource {
    let object = serde_json::json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": "shop"}, "data": {"from": data}
    });
    ReleaseResource {
        id: format!("{kind}/{name}"),
        object: Some(serde_json::from_value(object).unwrap()),
    }
}

fn mk_release(release: &str, generation: i64, objects: &[ReleaseResource]) -> Upsert {
    Upsert {
        release: release.into(),
        generation,
        content_hash: format!("h{generation}"),
        manifests: troupe_common::agent::encode_manifests(objects),
    }
}

/// An agent core over the directory applier at `target`, its state in `state`.
fn mk_dir_core(target: &std::path::Path, state: &std::path::Path, policy: Policy) -> Core {
    let state = State::open(state).unwrap();
    let held = state.load().unwrap();
    Core::new(
        Arc::new(crate::apply::dir::DirApplier::new(target)),
        Arc::new(policy),
        state,
        held,
    )
}

fn entry<'a>(core: &'a Core, release: &str, id: &str) -> &'a ReleaseResourceStatus {
    let (_, statuses) = &core.health[release];
    statuses.iter().find(|s| s.id == id).unwrap()
}

#[tokio::test]
async fn an_object_owned_by_one_release_is_not_taken_by_another_nor_pruned_with_it() {
    let (target, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut core = mk_dir_core(target.path(), state.path(), Policy::default());
    let first = [mk_object("v1", "ConfigMap", "shared", "first")];
    let second = [
        mk_object("v1", "ConfigMap", "shared", "second"),
        mk_object("v1", "ConfigMap", "own", "second"),
    ];
    core.upsert(mk_release("acme/first", 1, &first))
        .await
        .unwrap();
    core.upsert(mk_release("acme/second", 1, &second))
        .await
        .unwrap();

    let conflict = entry(&core, "acme/second", "ConfigMap/shared");
    assert_eq!(conflict.health, Health::Degraded);
    assert_eq!(conflict.message, "owned by release acme/first");
    assert_eq!(
        entry(&core, "acme/second", "ConfigMap/own").health,
        Health::Healthy
    );
    let second_files = crate::apply::dir::DirApplier::new(target.path())
        .release_dir("acme/second")
        .unwrap();
    assert!(!second_files.join("configmap_shop_shared.yaml").exists());
    assert!(second_files.join("configmap_shop_own.yaml").exists());

    // A restart keeps the owner: the drift pass does not hand the object over.
    drop(core);
    let mut core = mk_dir_core(target.path(), state.path(), Policy::default());
    core.correct_drift().await;
    assert_eq!(
        entry(&core, "acme/second", "ConfigMap/shared").message,
        "owned by release acme/first"
    );

    // Removing the release that waits leaves the owner's object alone.
    core.remove("acme/second").await.unwrap();
    let first_file = target.path().join("acme/first/configmap_shop_shared.yaml");
    assert!(
        std::fs::read_to_string(&first_file)
            .unwrap()
            .contains("first")
    );
}

#[tokio::test]
async fn when_the_owner_lets_go_the_release_that_waited_takes_the_object() {
    let (target, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut core = mk_dir_core(target.path(), state.path(), Policy::default());
    let shared = |from| [mk_object("v1", "ConfigMap", "shared", from)];
    core.upsert(mk_release("acme/first", 1, &shared("first")))
        .await
        .unwrap();
    core.upsert(mk_release("acme/second", 1, &shared("second")))
        .await
        .unwrap();

    core.remove("acme/first").await.unwrap();
    assert!(core.apply_waiting().await);
    let taken = target.path().join("acme/second/configmap_shop_shared.yaml");
    assert!(std::fs::read_to_string(&taken).unwrap().contains("second"));
    assert_eq!(
        entry(&core, "acme/second", "ConfigMap/shared").health,
        Health::Healthy
    );
    // And it is on record: after a restart the first, back again, waits in its turn.
    drop(core);
    let mut core = mk_dir_core(target.path(), state.path(), Policy::default());
    core.upsert(mk_release("acme/first", 2, &shared("first")))
        .await
        .unwrap();
    assert_eq!(
        entry(&core, "acme/first", "ConfigMap/shared").message,
        "owned by release acme/second"
    );

    // An object that leaves its owner's release is free for the next apply of the other.
    core.upsert(mk_release("acme/second", 2, &[]))
        .await
        .unwrap();
    core.correct_drift().await;
    assert_eq!(
        entry(&core, "acme/first", "ConfigMap/shared").health,
        Health::Healthy
    );
}

#[tokio::test]
async fn objects_outside_the_agents_policy_fail_alone() {
    let (target, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let policy = crate::policy::from_flags(&["apps/Deployment".into()], &[]).unwrap();
    let mut core = mk_dir_core(target.path(), state.path(), policy);
    let objects = [
        mk_object("v1", "ConfigMap", "settings", "x"),
        mk_object("apps/v1", "Deployment", "api", "x"),
    ];
    core.upsert(mk_release("acme/api", 1, &objects))
        .await
        .unwrap();
    let refused = entry(&core, "acme/api", "ConfigMap/settings");
    assert_eq!(refused.health, Health::Degraded);
    assert!(
        refused.message.contains("--allow-kinds"),
        "{}",
        refused.message
    );
    assert_eq!(
        entry(&core, "acme/api", "Deployment/api").health,
        Health::Healthy
    );
    assert_eq!(
        crate::apply::dir::DirApplier::new(target.path())
            .release_dir("acme/api")
            .unwrap()
            .read_dir()
            .unwrap()
            .count(),
        1
    );
}

//! The worker on its own: the write-ahead of a first apply, an apply that outlives the
//! session that asked for it, a hung apply that holds up only its own release; and the state
//! operations of `core` run one after the other.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource, ReleaseResourceStatus};
use troupe_common::status::Health;

use super::*;
use crate::apply::{self, describe};

mod generations;
mod retries;
mod serial;

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
    ) -> BoxFuture<'a, Result<apply::Applied, apply::Error>> {
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

/// An applier whose applies (of every release, or of one only) wait until the test lets them
/// through, one at a time.
#[derive(Default)]
pub(crate) struct Gated {
    /// Notified when an apply that waits has started.
    pub started: Notify,
    /// Lets one waiting apply finish.
    pub release: Notify,
    /// The one release whose applies wait; `None`: every release's.
    pub only: Option<String>,
    /// How many applies that wait are under way.
    pub waiting: AtomicUsize,
    /// The most applies that waited at once.
    pub most_waiting: AtomicUsize,
    /// Releases whose objects someone deleted, as the watches of a cluster report them.
    pub deleted: std::sync::Mutex<Vec<String>>,
    /// Notified when `deleted` has news.
    pub changes: Arc<Notify>,
}

impl Applier for Gated {
    fn apply<'a>(
        &'a self,
        release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<apply::Applied, apply::Error>> {
        Box::pin(async move {
            if self.only.as_deref().is_none_or(|only| only == release) {
                let now = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_waiting.fetch_max(now, Ordering::SeqCst);
                self.started.notify_one();
                self.release.notified().await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(apply::Applied::done(
                resources.iter().map(describe).collect(),
            ))
        })
    }

    fn prune<'a>(&'a self, _release: &'a str) -> BoxFuture<'a, Result<(), apply::Error>> {
        Box::pin(async { Ok(()) })
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        Box::pin(async { ClusterInfo::default() })
    }

    fn health_changes(&self) -> Option<Arc<Notify>> {
        Some(self.changes.clone())
    }

    fn drifted(&self) -> Vec<String> {
        std::mem::take(&mut *self.deleted.lock().unwrap())
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
        mk_timing(),
        4,
        stopping,
    );
    (stop, worker)
}

/// No drift pass during a test; quick retries.
fn mk_timing() -> Timing {
    Timing {
        resync_every: Duration::from_secs(3600),
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
    }
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
        mk_timing(),
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
async fn an_object_deleted_while_its_release_is_applied_is_applied_again_right_after() {
    let dir = tempfile::tempdir().unwrap();
    let applier = Arc::new(Gated::default());
    let (_stop, worker) = mk_gated_worker(dir.path(), &applier);
    let (replies, _answers) = Replies::channel(8);
    worker.connect(replies.clone()).await.unwrap();
    let upsert = Command::Upsert {
        upsert: mk_upsert("acme/api-eu", 4),
        replies,
    };
    worker.commands.send(upsert).await.unwrap();
    applier.started.notified().await;
    // Someone deletes an object the apply under way has already applied.
    applier.deleted.lock().unwrap().push("acme/api-eu".into());
    applier.changes.notify_one();
    applier.release.notify_one();
    // The release is applied again once that apply is done, not at the next drift pass.
    tokio::time::timeout(Duration::from_secs(5), applier.started.notified())
        .await
        .expect("a second apply of the release");
    applier.release.notify_one();
}

#[tokio::test]
async fn an_apply_in_flight_when_its_session_ends_is_recorded_and_reported_in_the_next_hello() {
    let dir = tempfile::tempdir().unwrap();
    let applier = Arc::new(Gated::default());
    let (_stop, worker) = mk_gated_worker(dir.path(), &applier);

    let (replies, answers) = Replies::channel(8);
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

    // A session that connects while the apply finishes may see it as written ahead
    // (generation 0); one that connects after it is recorded sees it applied.
    let expected = vec![(
        "acme/api-eu".to_string(),
        pb::KnownRelease {
            generation: 4,
            content_hash: "h4".into(),
        },
    )];
    let (replies, _answers) = Replies::channel(8);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let known = worker.connect(replies.clone()).await.unwrap();
        if known == expected {
            break;
        }
        assert_eq!(known[0].1.generation, 0, "{known:?}");
        assert!(tokio::time::Instant::now() < deadline, "never recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let on_disk = State::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(on_disk["acme/api-eu"].generation, 4);
}

/// The next ack a session gets, skipping health reports and progress.
async fn next_ack(answers: &mut mpsc::Receiver<Reply>) -> pb::Ack {
    loop {
        let reply = tokio::time::timeout(Duration::from_secs(10), answers.recv())
            .await
            .expect("an answer within 10 s")
            .expect("the worker is running");
        if let Reply::Message(AgentMessage {
            message: Some(agent_message::Message::Ack(ack)),
        }) = reply
        {
            return ack;
        }
    }
}

#[tokio::test]
async fn a_hung_apply_holds_up_its_own_release_only_and_its_objects_stay_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let applier = Arc::new(Gated {
        only: Some("acme/slow".into()),
        ..Gated::default()
    });
    let (_stop, worker) = mk_gated_worker(dir.path(), &applier);
    let (replies, mut answers) = Replies::channel(64);
    worker.connect(replies.clone()).await.unwrap();
    let upsert = |release: &str, generation, objects: &[ReleaseResource]| Command::Upsert {
        upsert: mk_release(release, generation, objects),
        replies: replies.clone(),
    };
    let shared = mk_object("v1", "ConfigMap", "shared", "x");
    let own = mk_object("v1", "ConfigMap", "own", "x");

    // The slow release's apply hangs; a newer generation of it and a removal queue behind.
    worker
        .commands
        .send(upsert("acme/slow", 1, std::slice::from_ref(&shared)))
        .await
        .unwrap();
    applier.started.notified().await;
    worker
        .commands
        .send(upsert("acme/slow", 2, std::slice::from_ref(&shared)))
        .await
        .unwrap();
    let remove = Command::Remove {
        release: "acme/slow".into(),
        generation: 3,
        replies: replies.clone(),
    };
    worker.commands.send(remove).await.unwrap();

    // Another release is applied and acknowledged meanwhile, without the object the hung
    // apply is taking.
    worker
        .commands
        .send(upsert("acme/fast", 1, &[shared, own]))
        .await
        .unwrap();
    let ack = next_ack(&mut answers).await;
    assert_eq!(
        (ack.release.as_str(), ack.generation, ack.ok),
        ("acme/fast", 1, true),
        "{ack:?}"
    );
    let report = loop {
        match answers.recv().await.unwrap() {
            Reply::Message(AgentMessage {
                message: Some(agent_message::Message::Status(report)),
            }) => break report,
            _ => continue,
        }
    };
    let messages: Vec<(&str, &str)> = report
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.message.as_str()))
        .collect();
    assert_eq!(
        messages,
        [("shared", "owned by release acme/slow"), ("own", "")],
        "the object the hung apply claims is not taken"
    );

    // Let go, the slow release's work lands in the order it came: one at a time.
    for expected in [(1, true), (2, true), (3, true)] {
        if expected.0 < 3 {
            applier.release.notify_one();
        }
        let ack = next_ack(&mut answers).await;
        assert_eq!(
            (ack.release.as_str(), ack.generation, ack.ok),
            ("acme/slow", expected.0, expected.1)
        );
        if expected.0 == 1 {
            applier.started.notified().await;
        }
    }
    assert_eq!(
        applier.most_waiting.load(Ordering::SeqCst),
        1,
        "one release's applies never overlap"
    );
}

#[tokio::test]
async fn a_session_that_stops_reading_its_answers_does_not_stop_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let applier = Arc::new(Gated {
        only: Some("acme/nothing-waits".into()),
        ..Gated::default()
    });
    let (_stop, worker) = mk_gated_worker(dir.path(), &applier);
    let script = async {
        // A session whose stream no longer drains: room for one answer, never read.
        let (stalled, _unread) = Replies::channel(1);
        worker.connect(stalled.clone()).await.unwrap();
        for release in ["acme/a", "acme/b", "acme/c"] {
            let upsert = Command::Upsert {
                upsert: mk_upsert(release, 1),
                replies: stalled.clone(),
            };
            worker.commands.send(upsert).await.unwrap();
        }
        // The next session is answered all the same (after one bounded wait for the stalled
        // one), and the stalled one knows to resync.
        let (replies, mut answers) = Replies::channel(64);
        worker.connect(replies.clone()).await.unwrap();
        let upsert = Command::Upsert {
            upsert: mk_upsert("acme/next", 1),
            replies,
        };
        worker.commands.send(upsert).await.unwrap();
        let ack = next_ack(&mut answers).await;
        assert_eq!((ack.release.as_str(), ack.ok), ("acme/next", true));
        assert!(stalled.gave_up());
    };
    tokio::time::timeout(Duration::from_secs(60), script)
        .await
        .expect("the worker answered the next session");
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
        mk_timing(),
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
    core.remove("acme/second", 2).await.unwrap();
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

    core.remove("acme/first", 2).await.unwrap();
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

//! The worker on its own: the write-ahead of a first apply, and an apply that outlives the
//! session that asked for it.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use troupe_common::pb::v1alpha1::{ClusterInfo, ReleaseResource, ReleaseResourceStatus};

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
    let mut core = Core {
        applier: applier.clone(),
        state: State::open(dir.path()).unwrap(),
        held: BTreeMap::new(),
        health: HashMap::new(),
        unreported: BTreeSet::new(),
    };
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
    let (_stop, stopping) = watch::channel(false);
    let worker = Worker::spawn(
        applier.clone(),
        State::open(dir.path()).unwrap(),
        BTreeMap::new(),
        Duration::from_secs(3600),
        stopping,
    );

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

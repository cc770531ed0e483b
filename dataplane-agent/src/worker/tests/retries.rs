//! Retries: an object that failed is applied again with backoff, a removal that failed is
//! pruned again and never re-created by drift, unless the control plane sends the release
//! again; content held is applied again when sent after an apply or a prune failed.

use super::*;

/// An applier that refuses every object of kind Service for its first `failures` applies, and
/// its first prune; it fails as a whole as many applies as `apply_failures` says; it
/// remembers what it last applied.
struct Flaky {
    failures: AtomicUsize,
    prune_failures: AtomicUsize,
    apply_failures: AtomicUsize,
    applied: std::sync::Mutex<Vec<String>>,
}

impl Flaky {
    fn new(failures: usize) -> Self {
        Self {
            failures: AtomicUsize::new(failures),
            prune_failures: AtomicUsize::new(1),
            apply_failures: AtomicUsize::new(0),
            applied: Default::default(),
        }
    }
}

impl Applier for Flaky {
    fn apply<'a>(
        &'a self,
        _release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<apply::Applied, apply::Error>> {
        Box::pin(async move {
            let broken = self
                .apply_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if broken {
                return Err(apply::Error::io("writing", "/target")(
                    std::io::Error::other("the disk is full"),
                ));
            }
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let mut applied = apply::Applied::default();
            for resource in resources {
                let mut status = describe(resource);
                if failing && status.kind == "Service" {
                    status.health = Health::Degraded.as_str().into();
                    status.message = "applying Service shop/web: Forbidden (403): no".into();
                    applied.failed.push(status.id.clone());
                } else {
                    status.health = Health::Healthy.as_str().into();
                    let data = serde_json::to_value(&resource.object).unwrap();
                    self.applied
                        .lock()
                        .unwrap()
                        .push(data["data"]["from"].to_string());
                }
                applied.statuses.push(status);
            }
            Ok(applied)
        })
    }

    fn prune<'a>(&'a self, _release: &'a str) -> BoxFuture<'a, Result<(), apply::Error>> {
        Box::pin(async move {
            match self
                .prune_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            {
                Ok(_) => Err(apply::Error::io("pruning", "/target")(
                    std::io::Error::other("busy"),
                )),
                Err(_) => Ok(()),
            }
        })
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        Box::pin(async { ClusterInfo::default() })
    }
}

fn mk_flaky_core(applier: &Arc<Flaky>, state: &std::path::Path) -> Core {
    Core::new(
        applier.clone(),
        Arc::new(Policy::default()),
        State::open(state).unwrap(),
        BTreeMap::new(),
        mk_timing(),
    )
}

/// Waits until the core's next retry is due.
async fn until_due(core: &Core) {
    let at = core.next_retry(|_| false).expect("a retry is scheduled");
    tokio::time::sleep_until(at).await;
}

#[tokio::test]
async fn a_failed_object_is_retried_with_backoff_and_its_release_kept_at_the_newest_generation() {
    let state = tempfile::tempdir().unwrap();
    let applier = Arc::new(Flaky::new(2));
    let mut core = mk_flaky_core(&applier, state.path());
    let objects = |from| {
        [
            mk_object("v1", "ConfigMap", "settings", from),
            mk_object("v1", "Service", "web", from),
        ]
    };
    // The first attempt: the Service fails alone, the ConfigMap applies, the release is
    // recorded at its generation all the same.
    core.upsert(mk_release("acme/web", 1, &objects("one")))
        .await
        .unwrap();
    let service = entry(&core, "acme/web", "Service/web");
    assert_eq!(service.health, Health::Degraded);
    assert_eq!(
        service.message,
        "retrying (attempt 1, next in 10ms): applying Service shop/web: Forbidden (403): no"
    );
    assert_eq!(
        entry(&core, "acme/web", "ConfigMap/settings").health,
        Health::Healthy
    );
    assert_eq!(core.known()[0].1.generation, 1);

    // The second attempt fails too, and waits twice as long.
    until_due(&core).await;
    assert!(core.retry_due().await.0);
    assert_eq!(
        entry(&core, "acme/web", "Service/web").message,
        "retrying (attempt 2, next in 20ms): applying Service shop/web: Forbidden (403): no"
    );
    // The third goes through: nothing left to retry.
    until_due(&core).await;
    assert!(core.retry_due().await.0);
    let service = entry(&core, "acme/web", "Service/web");
    assert_eq!(
        (service.health.as_str(), service.message.as_str()),
        ("Healthy", "")
    );
    assert!(core.next_retry(|_| false).is_none());

    // A newer generation that fails at first: drift re-applies it, never the older one.
    applier.failures.store(1, Ordering::SeqCst);
    core.upsert(mk_release("acme/web", 2, &objects("two")))
        .await
        .unwrap();
    applier.applied.lock().unwrap().clear();
    core.correct_drift().await;
    assert_eq!(
        *applier.applied.lock().unwrap(),
        ["\"two\"", "\"two\""],
        "drift applies the newest generation the control plane sent"
    );
}

#[tokio::test]
async fn a_failed_removal_is_retried_and_not_re_applied_by_drift() {
    let state = tempfile::tempdir().unwrap();
    let applier = Arc::new(Flaky::new(0));
    let mut core = mk_flaky_core(&applier, state.path());
    core.upsert(mk_release(
        "acme/web",
        1,
        &[mk_object("v1", "ConfigMap", "settings", "one")],
    ))
    .await
    .unwrap();
    let error = core.remove("acme/web", 2).await.unwrap_err();
    assert_eq!(error.to_string(), "pruning /target: busy");
    applier.applied.lock().unwrap().clear();
    core.correct_drift().await;
    assert!(applier.applied.lock().unwrap().is_empty(), "not re-created");

    until_due(&core).await;
    let (_, removed) = core.retry_due().await;
    assert_eq!(removed, [("acme/web".to_string(), 2)]);
    assert!(core.known().is_empty());
    assert!(core.next_retry(|_| false).is_none());
}

#[tokio::test]
async fn a_release_sent_again_while_its_failed_removal_is_retried_is_applied_not_pruned() {
    let state = tempfile::tempdir().unwrap();
    let applier = Arc::new(Flaky::new(0));
    let mut core = mk_flaky_core(&applier, state.path());
    let objects = [mk_object("v1", "ConfigMap", "settings", "one")];
    core.upsert(mk_release("acme/web", 1, &objects))
        .await
        .unwrap();
    core.remove("acme/web", 2).await.unwrap_err();
    // Part of it may be gone: the next Hello reports it pending, not as held whole.
    assert_eq!(core.known()[0].1, pb::KnownRelease::default());

    // The release is put back as it was (a later generation, the same content): applied
    // again, in case the prune removed part of it, and no longer removed.
    applier.applied.lock().unwrap().clear();
    let again = Upsert {
        content_hash: "h1".into(),
        ..mk_release("acme/web", 3, &objects)
    };
    core.upsert(again).await.unwrap();
    assert_eq!(*applier.applied.lock().unwrap(), ["\"one\""]);
    assert!(
        core.next_retry(|_| false).is_none(),
        "the removal is called off"
    );
    assert_eq!(core.known()[0].1.generation, 3);
}

#[tokio::test]
async fn the_content_held_sent_again_after_a_failed_apply_is_applied_not_just_acknowledged() {
    let state = tempfile::tempdir().unwrap();
    let applier = Arc::new(Flaky::new(0));
    let mut core = mk_flaky_core(&applier, state.path());
    let one = [mk_object("v1", "ConfigMap", "settings", "one")];
    core.upsert(mk_release("acme/web", 1, &one)).await.unwrap();
    // A newer generation fails as a whole, perhaps halfway: the target may hold a mix.
    applier.apply_failures.store(1, Ordering::SeqCst);
    let two = [mk_object("v1", "ConfigMap", "settings", "two")];
    core.upsert(mk_release("acme/web", 2, &two))
        .await
        .unwrap_err();
    assert_eq!(core.known()[0].1, pb::KnownRelease::default());

    // Rolled back to what the agent held: applied, not only acknowledged.
    applier.applied.lock().unwrap().clear();
    let back = Upsert {
        content_hash: "h1".into(),
        ..mk_release("acme/web", 3, &one)
    };
    core.upsert(back).await.unwrap();
    assert_eq!(*applier.applied.lock().unwrap(), ["\"one\""]);
    assert_eq!(core.known()[0].1.generation, 3);
}

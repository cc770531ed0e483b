//! The queue's coalescing, ordering and retries, with counting reconciles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use troupe_common::Kind;

use super::*;

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Component, "acme", name)
}

fn mk_queue() -> Arc<Queue> {
    Arc::new(Queue::new("test"))
}

/// Polls `done` every few milliseconds for up to five seconds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_burst_of_changes_to_one_key_is_reconciled_once() {
    let queue = mk_queue();
    for _ in 0..100 {
        queue.add(key("api"));
    }
    queue.add(key("web"));
    assert_eq!(queue.len(), 2);
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    queue.spawn_workers(4, move |_| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(())
        }
    });
    eventually("the queue drains", || queue.is_empty()).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(queue.stats().reconciles, 2);
}

#[tokio::test]
async fn a_change_during_a_reconcile_is_reconciled_after_it() {
    let queue = mk_queue();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let again = queue.clone();
    queue.spawn_workers(2, move |k| {
        let runs = counted.clone();
        let queue = again.clone();
        async move {
            // The first reconcile sees a change arrive while it runs.
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                queue.add(k);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, String>(())
        }
    });
    queue.add(key("api"));
    eventually("it ran twice", || runs.load(Ordering::SeqCst) >= 2).await;
    eventually("the queue drains", || queue.is_empty()).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "once, then once more");
}

#[test]
fn the_retry_delay_doubles_up_to_its_cap() {
    assert_eq!(backoff(1), Duration::from_millis(100));
    assert_eq!(backoff(2), Duration::from_millis(200));
    assert_eq!(backoff(5), Duration::from_millis(1600));
    assert_eq!(backoff(11), MAX_RETRY);
    assert_eq!(backoff(u32::MAX), MAX_RETRY);
}

#[tokio::test]
async fn a_failing_key_is_retried_with_growing_delays_until_it_succeeds() {
    let queue = mk_queue();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    queue.spawn_workers(2, move |_| {
        let runs = counted.clone();
        async move {
            // Fails three times, with nothing changing meanwhile.
            match runs.fetch_add(1, Ordering::SeqCst) {
                0..3 => Err("disk full"),
                _ => Ok(()),
            }
        }
    });
    let started = Instant::now();
    queue.add(key("api"));
    eventually("it succeeds", || runs.load(Ordering::SeqCst) == 4).await;
    eventually("the queue drains", || queue.is_empty()).await;
    // 100 + 200 + 400 ms of backoff, no tight loop.
    assert!(started.elapsed() >= Duration::from_millis(700));
    let stats = queue.stats();
    assert_eq!((stats.reconciles, stats.failures, stats.retries), (4, 3, 3));
    assert_eq!(queue.next_retry(&key("api")).attempt, 1, "success resets");
}

#[tokio::test]
async fn a_panicking_reconcile_is_retried_and_the_worker_lives_on() {
    let queue = mk_queue();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    queue.spawn_workers(1, move |_| {
        let runs = counted.clone();
        async move {
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("bug in a reconcile");
            }
            Ok::<_, String>(())
        }
    });
    queue.add(key("api"));
    eventually("it is retried", || runs.load(Ordering::SeqCst) == 2).await;
    queue.add(key("web"));
    eventually("the one worker takes the next key", || {
        runs.load(Ordering::SeqCst) == 3
    })
    .await;
}

#[tokio::test]
async fn a_change_resets_the_backoff_and_queues_at_once() {
    let queue = mk_queue();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    queue.spawn_workers(1, move |_| {
        let runs = counted.clone();
        async move {
            // Fails five times: the next retry is 1.6 s away.
            if runs.fetch_add(1, Ordering::SeqCst) < 5 {
                Err("conflict")
            } else {
                Ok(())
            }
        }
    });
    queue.add(key("api"));
    eventually("it backs off for the fifth time", || {
        runs.load(Ordering::SeqCst) == 5 && queue.stats().backing_off == 1
    })
    .await;
    let changed = Instant::now();
    queue.add(key("api"));
    eventually("the change is reconciled", || {
        runs.load(Ordering::SeqCst) == 6
    })
    .await;
    assert!(
        changed.elapsed() < Duration::from_secs(1),
        "not after the 1.6 s backoff"
    );
    eventually("nothing is left to retry", || queue.is_empty()).await;
    assert_eq!(
        queue.stats().retries,
        4,
        "the change is not counted as a retry"
    );
}

#[tokio::test]
async fn a_nudge_leaves_a_failing_key_to_its_retry() {
    let queue = mk_queue();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    queue.spawn_workers(1, move |_| {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("conflict")
        }
    });
    queue.add(key("api"));
    eventually("it backs off", || queue.stats().backing_off == 1).await;
    let before = runs.load(Ordering::SeqCst);
    queue.nudge(key("api"));
    let stats = queue.stats();
    assert_eq!((stats.waiting, stats.backing_off), (0, 1), "{stats:?}");
    eventually("the retry runs it", || runs.load(Ordering::SeqCst) > before).await;
}

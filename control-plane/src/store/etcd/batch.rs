//! Group commit: commits that arrive while etcd is busy with earlier ones go to it together,
//! as one transaction.
//!
//! A commit of one transaction without ranges joins a queue. At most [`IN_FLIGHT`]
//! transactions of queued commits are at etcd at once. While all are, commits wait, and the
//! next transaction takes as many of the waiting as fit: within etcd's limits, with the same
//! fence, and none touching what another in it writes (one's writes are neither another's
//! writes nor its checks). So under load one round trip, one raft entry and one watch event
//! carry many commits, and a lone writer waits for nothing: its commit goes at once.
//!
//! Every compare of such a transaction is evaluated before any of its writes, and no commit in
//! it checks what another writes, so each commit's checks hold as they would have alone, and
//! any order of them is one they could have run in. They share its revision. A transaction
//! whose compares fail reads every checked key instead, at the same revision: the commits
//! whose checks failed are told which, and the others go again together.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use etcd_client::{TxnOp, TxnOpResponse};
use tokio::sync::oneshot;
use troupe_common::ObjectKey;

use super::Shared;
use super::commit::{
    OP_OVERHEAD, REQUEST_SLACK, Step, Write, compare, conflict, fence_compare, found_revision,
    held_term, run,
};
use crate::store::{Fence, Precondition, Revision, StoreError, TxnLimits};

/// Transactions of queued commits at etcd at once. Commits beyond them wait and go together.
/// One measured best on the project's machine (`troupe-bench write`): at 64 clients, 2 and 4
/// made smaller transactions and fewer commits per second, and one writer waits for nothing
/// either way.
const IN_FLIGHT: usize = 1;

/// A commit waiting to go, and where its outcome goes: its revision, or `None` if it changed
/// nothing (deletes of keys that were not there).
struct Queued {
    step: Step,
    fence: Option<Fence>,
    reply: oneshot::Sender<Result<Option<Revision>, StoreError>>,
}

/// The commits waiting to go, and how many transactions of them are at etcd.
#[derive(Default)]
pub(super) struct Batches {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    in_flight: usize,
}

impl Batches {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is one push, one pop or one count: always consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Commits `step` with `fence`, alone or with others waiting at the same time; returns its
/// revision (`None` if it changed nothing) once the tail has published it.
pub(super) async fn commit(
    shared: &Arc<Shared>,
    step: Step,
    fence: Option<Fence>,
) -> Result<Option<Revision>, StoreError> {
    let (reply, answer) = oneshot::channel();
    let go = {
        let mut state = shared.batches.state();
        state.queue.push_back(Queued { step, fence, reply });
        let go = state.in_flight < IN_FLIGHT;
        state.in_flight += usize::from(go);
        go
    };
    // Sent from a task of its own on the store's runtime, which neither its caller's going
    // away (a cancelled request) nor the end of the caller's runtime (a leadership's
    // controllers) stops: the commits in its transaction are other callers' too.
    if go {
        let shared = shared.clone();
        shared.runtime.clone().spawn(async move {
            while let Some(batch) = next(&shared) {
                send(&shared, batch).await;
            }
        });
    }
    answer.await.unwrap_or_else(|_| {
        Err(StoreError::Engine(
            "the etcd store stopped before a commit was sent".into(),
        ))
    })
}

/// The commits of the next transaction, if any wait; with none, gives up its place among the
/// [`IN_FLIGHT`].
fn next(shared: &Shared) -> Option<Vec<Queued>> {
    let mut state = shared.batches.state();
    let batch = take(&mut state.queue, &shared.limits);
    if batch.is_empty() {
        state.in_flight -= 1;
        return None;
    }
    Some(batch)
}

/// One check of a commit: a key and what it must hold.
type Check<'a> = (&'a ObjectKey, Precondition);

/// What a transaction of several commits holds so far.
#[derive(Default)]
struct Gathered<'a> {
    written: HashSet<&'a ObjectKey>,
    checked: HashSet<&'a ObjectKey>,
    /// Its compares: a check several commits make (the Project or ComponentType they all
    /// refer to) is one.
    compares: HashSet<Check<'a>>,
    writes: usize,
    bytes: usize,
}

impl<'a> Gathered<'a> {
    /// Whether `step` may join: it fits, and it touches nothing another commit writes, nor
    /// writes anything another checks.
    fn admits(&self, step: &'a Step, limits: &TxnLimits, fence: Option<&Fence>) -> bool {
        let fence_cost = fence.map_or(0, |f| f.key.len() + OP_OVERHEAD);
        let new_compares = step
            .checks
            .iter()
            .filter(|(k, c)| !self.compares.contains(&(k, *c)))
            .count();
        self.compares.len() + new_compares + usize::from(fence.is_some()) <= limits.max_ops
            && self.writes + step.ops() <= limits.max_ops
            && self.bytes + step.bytes + fence_cost + REQUEST_SLACK <= limits.max_request_bytes
            && step
                .writes
                .iter()
                .all(|w| !self.written.contains(&w.key) && !self.checked.contains(&w.key))
            && step.checks.iter().all(|(k, _)| !self.written.contains(k))
    }

    fn add(&mut self, step: &'a Step) {
        self.written.extend(step.writes.iter().map(|w| &w.key));
        self.checked.extend(step.checks.iter().map(|(k, _)| k));
        self.compares
            .extend(step.checks.iter().map(|(k, c)| (k, *c)));
        self.writes += step.ops();
        self.bytes += step.bytes;
    }
}

/// The commits, oldest first, of the next transaction: the oldest waiting, and each after it
/// that may join it. Those that may not stay, in order, for the next.
fn take(queue: &mut VecDeque<Queued>, limits: &TxnLimits) -> Vec<Queued> {
    let Some(first) = queue.front() else {
        return Vec::new();
    };
    let fence = first.fence.clone();
    let mut joining = vec![0];
    {
        let mut gathered = Gathered::default();
        gathered.add(&first.step);
        for (i, queued) in queue.iter().enumerate().skip(1) {
            if queued.fence == fence && gathered.admits(&queued.step, limits, fence.as_ref()) {
                gathered.add(&queued.step);
                joining.push(i);
            }
        }
    }
    // Removed from the back, so the positions before stay put.
    let mut batch: Vec<Queued> = joining
        .into_iter()
        .rev()
        .filter_map(|i| queue.remove(i))
        .collect();
    batch.reverse();
    batch
}

/// Sends `batch` as one transaction (or, for one commit, as that commit alone) and tells each
/// commit its outcome.
async fn send(shared: &Arc<Shared>, mut batch: Vec<Queued>) {
    while batch.len() > 1 {
        match together(shared, &batch).await {
            Together::Landed { revision, changed } => {
                for (queued, changed) in batch.into_iter().zip(changed) {
                    let _ = queued.reply.send(Ok(changed.then_some(revision)));
                }
                return;
            }
            Together::Refused(failed) if failed.iter().any(Option::is_some) => {
                // Those whose checks failed are told so; the others go again.
                let mut holding = Vec::new();
                for (queued, failure) in batch.into_iter().zip(failed) {
                    match failure {
                        Some(error) => drop(queued.reply.send(Err(error))),
                        None => holding.push(queued),
                    }
                }
                batch = holding;
            }
            Together::Refused(_) => {
                // Each alone, at once: each learns its own answer from etcd.
                let each = batch.into_iter().map(|queued| alone(shared, queued, false));
                futures::future::join_all(each).await;
                return;
            }
            Together::Failed => {
                // The same, each maybe landed already: each finds out.
                let each = batch.into_iter().map(|queued| alone(shared, queued, true));
                futures::future::join_all(each).await;
                return;
            }
        }
    }
    if let Some(queued) = batch.pop() {
        alone(shared, queued, false).await;
    }
}

/// Sends `queued` as a transaction of its own and tells it its outcome; `unknown`: it was
/// sent before, with others, and may have landed.
async fn alone(shared: &Shared, queued: Queued, unknown: bool) {
    let outcome = run(shared, queued.step, &[], queued.fence.as_ref(), unknown).await;
    let _ = queued.reply.send(outcome);
}

/// What became of a transaction of several commits.
enum Together {
    /// It landed at `revision`; `changed` says for each commit whether it changed anything.
    Landed {
        revision: Revision,
        changed: Vec<bool>,
    },
    /// A compare failed: for each commit, the failure of its checks, if they failed.
    Refused(Vec<Option<StoreError>>),
    /// etcd did not answer, or refused the request, or answered that a compare failed after
    /// a sending that may have landed: whether any of it landed is unknown.
    Failed,
}

/// The distinct checks of `batch`, in order, and for each commit where its checks are among
/// them.
fn distinct_checks(batch: &[Queued]) -> (Vec<Check<'_>>, Vec<Vec<usize>>) {
    let mut distinct = Vec::new();
    let mut at = HashMap::new();
    let places = batch
        .iter()
        .map(|q| {
            q.step
                .checks
                .iter()
                .map(|(k, c)| {
                    *at.entry((k, *c)).or_insert_with(|| {
                        distinct.push((k, *c));
                        distinct.len() - 1
                    })
                })
                .collect()
        })
        .collect();
    (distinct, places)
}

/// Commits `batch` as one transaction; returns once the tail has published it. A check
/// several commits make is one compare. Its other branch reads every checked key (and the
/// fence), which tells whose checks failed.
async fn together(shared: &Shared, batch: &[Queued]) -> Together {
    let layout = &shared.layout;
    let fence = batch[0].fence.as_ref();
    let (distinct, places) = distinct_checks(batch);
    let mut compares: Vec<_> = distinct
        .iter()
        .map(|(k, c)| compare(layout, k, *c))
        .collect();
    let keys_only = etcd_client::GetOptions::new().with_keys_only();
    let mut explain: Vec<_> = distinct
        .iter()
        .map(|(k, _)| TxnOp::get(layout.object(k), Some(keys_only.clone())))
        .collect();
    if let Some(fence) = fence {
        let (compare, read) = fence_compare(fence);
        compares.push(compare);
        explain.push(read);
    }
    let ops: Vec<_> = batch
        .iter()
        .flat_map(|q| q.step.writes.iter())
        .flat_map(Write::txn_ops)
        .collect();
    let txn = etcd_client::Txn::new()
        .when(compares)
        .and_then(ops)
        .or_else(explain);
    let lands_once = batch.iter().any(|q| q.step.lands_once());
    let response = match super::resend::send(shared, txn, false, lands_once).await {
        Ok((response, false)) => response,
        // Sent more than once, and refused: the first may have landed.
        Ok((response, true)) if !response.succeeded() => return Together::Failed,
        Ok((response, true)) => response,
        Err(e) => {
            tracing::debug!(error = %e, commits = batch.len(), "etcd store: a group commit failed; each commit is made alone");
            return Together::Failed;
        }
    };
    let mut answers = response.op_responses().into_iter();
    if !response.succeeded() {
        let found: Vec<Option<Revision>> = answers
            .by_ref()
            .take(distinct.len())
            .map(|answer| found_revision(layout, &answer))
            .collect();
        if let Some(fence) = fence
            && held_term(answers.next().as_ref()) != Some(fence.term)
        {
            let fenced = || Some(StoreError::Fenced { term: fence.term });
            return Together::Refused(batch.iter().map(|_| fenced()).collect());
        }
        let failed = batch
            .iter()
            .zip(&places)
            .map(|(q, places)| {
                let found: Vec<_> = places.iter().map(|&i| found[i]).collect();
                let holds = q
                    .step
                    .checks
                    .iter()
                    .zip(&found)
                    .all(|((_, c), f)| c.holds(*f));
                (!holds).then(|| conflict(q.step.checks.clone(), found))
            })
            .collect();
        return Together::Refused(failed);
    }
    let changed: Vec<bool> = batch
        .iter()
        .map(|q| {
            let mut changed = false;
            for write in &q.step.writes {
                changed |= write.value.is_some();
                for answer in answers.by_ref().take(write.ops()) {
                    changed |= matches!(answer, TxnOpResponse::Delete(d) if d.deleted() > 0);
                }
            }
            changed
        })
        .collect();
    let revision = layout.to_store(response.header().map_or(0, |h| h.revision()));
    if changed.iter().any(|&c| c) {
        shared.mark_durable(revision);
        shared.wait_seen(revision).await;
    }
    Together::Landed { revision, changed }
}

#[cfg(test)]
mod tests {
    use troupe_common::Kind;

    use super::super::commit::{Known, plan};
    use super::super::tests::{mk_etcd, mk_store};
    use super::*;
    use crate::store::{Precondition, Store, Txn};

    fn mk_key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Component, "acme", name)
    }

    fn mk_step(txn: Txn) -> Step {
        let layout = super::super::layout::Layout::new("/t");
        let mut steps = plan(&layout, &TxnLimits::default(), txn, None, &Known::default()).unwrap();
        assert_eq!(steps.len(), 1);
        steps.pop().unwrap()
    }

    fn mk_queued(txn: Txn, fence: Option<Fence>) -> Queued {
        Queued {
            step: mk_step(txn),
            fence,
            reply: oneshot::channel().0,
        }
    }

    fn names(queued: &[Queued]) -> Vec<String> {
        queued
            .iter()
            .map(|q| q.step.writes[0].key.name.clone())
            .collect()
    }

    #[test]
    fn a_transaction_takes_the_waiting_commits_that_touch_nothing_another_writes() {
        let fence = Fence {
            key: b"/t/leader".to_vec(),
            term: 3,
        };
        let put = |name: &str| Txn::default().put(mk_key(name), b"v".to_vec());
        let mut queue: VecDeque<Queued> = [
            // a writes a, checking b is there.
            mk_queued(put("a").check(mk_key("b"), Precondition::Present), None),
            // b writes what a checks: not with a.
            mk_queued(put("b"), None),
            // c touches nothing of a's: with a.
            mk_queued(put("c").check(mk_key("b"), Precondition::Present), None),
            // d checks what a writes: not with a.
            mk_queued(put("d").check(mk_key("a"), Precondition::Absent), None),
            // e writes what c writes: not with c.
            mk_queued(put("c2").put(mk_key("c"), b"w".to_vec()), None),
            // f is fenced, the others not: not with them.
            mk_queued(put("f"), Some(fence)),
            // g is independent of everything: with a.
            mk_queued(put("g"), None),
        ]
        .into();
        let batch = take(&mut queue, &TxnLimits::default());
        assert_eq!(names(&batch), ["a", "c", "g"]);
        assert_eq!(names(queue.make_contiguous()), ["b", "d", "c2", "f"]);
        // The next takes the oldest left, and what may join it.
        let batch = take(&mut queue, &TxnLimits::default());
        assert_eq!(names(&batch), ["b", "d", "c2"]);
        assert_eq!(names(&take(&mut queue, &TxnLimits::default())), ["f"]);
        assert!(take(&mut queue, &TxnLimits::default()).is_empty());
    }

    /// The sizes of the transactions 25 commits made by `commit` go in, with etcd taking 10
    /// operations of each kind per transaction.
    fn sizes(commit: impl Fn(usize) -> Txn) -> Vec<usize> {
        let limits = TxnLimits {
            max_ops: 10,
            ..TxnLimits::default()
        };
        let mut queue: VecDeque<Queued> = (0..25).map(|i| mk_queued(commit(i), None)).collect();
        std::iter::from_fn(|| {
            let batch = take(&mut queue, &limits);
            (!batch.is_empty()).then_some(batch.len())
        })
        .collect()
    }

    #[test]
    fn a_transaction_stays_within_etcds_limits() {
        let create = |i: usize| {
            let key = mk_key(&format!("c{i}"));
            Txn::default()
                .check(key.clone(), Precondition::Absent)
                .put(key, b"v".to_vec())
        };
        assert_eq!(sizes(create), [10, 10, 5]);
    }

    #[test]
    fn a_check_several_commits_make_counts_once_toward_etcds_limits() {
        // Each creates a key of its own and checks the Project they all refer to: one compare
        // for the Project and one per commit fit nine commits in ten compares.
        let create = |i: usize| {
            let key = mk_key(&format!("c{i}"));
            Txn::default()
                .check(mk_key("project"), Precondition::Present)
                .check(key.clone(), Precondition::Absent)
                .put(key, b"v".to_vec())
        };
        assert_eq!(sizes(create), [9, 9, 7]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_sharing_a_check_that_fails_are_each_told_and_the_others_land() {
        let etcd = mk_etcd();
        let store = Arc::new(mk_store(&etcd, "/shared"));
        let target = mk_key("target");
        let read = store
            .commit(Txn::default().put(target.clone(), b"v1".to_vec()))
            .unwrap();
        store
            .commit(Txn::default().put(target.clone(), b"v2".to_vec()))
            .unwrap();
        // 40 commits at once: the even ones require the target as it was first read (it
        // changed since), the odd ones only that it exists.
        let commits = (0..40).map(|i| {
            let key = mk_key(&format!("w{i}"));
            let check = if i % 2 == 0 {
                Precondition::AtRevision(read)
            } else {
                Precondition::Present
            };
            let txn = Txn::default()
                .check(target.clone(), check)
                .check(key.clone(), Precondition::Absent)
                .put(key, b"v".to_vec());
            match store.commit_async(txn) {
                Ok(committing) => committing,
                Err(_) => panic!("etcd commits without blocking a thread"),
            }
        });
        let outcomes = futures::future::join_all(commits).await;
        for (i, outcome) in outcomes.iter().enumerate() {
            let stored = store.get(&mk_key(&format!("w{i}"))).unwrap();
            if i % 2 == 0 {
                match outcome {
                    Err(StoreError::Conflict { key, .. }) => assert_eq!(key, &target, "w{i}"),
                    other => panic!("w{i}: {other:?}"),
                }
                assert!(stored.is_none(), "w{i} was written though its check failed");
            } else {
                let revision = outcome.as_ref().unwrap_or_else(|e| panic!("w{i}: {e}"));
                assert_eq!(stored.unwrap().mod_revision, *revision, "w{i}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_transactions_and_each_gets_its_own_outcome() {
        let etcd = mk_etcd();
        let store = Arc::new(mk_store(&etcd, "/batch"));
        store
            .commit(Txn::default().put(mk_key("taken"), b"v".to_vec()))
            .unwrap();
        // 60 commits of keys of their own, 4 creating one that exists, and 4 deleting one
        // that never was, all at once.
        let mut commits = Vec::new();
        for i in 0..60 {
            let key = mk_key(&format!("c{i}"));
            commits.push(
                Txn::default()
                    .check(key.clone(), Precondition::Absent)
                    .put(key, b"v".to_vec()),
            );
        }
        for _ in 0..4 {
            let key = mk_key("taken");
            commits.push(
                Txn::default()
                    .check(key.clone(), Precondition::Absent)
                    .put(key, b"w".to_vec()),
            );
            commits.push(Txn::default().delete(mk_key("never")));
        }
        let before = store.revision();
        let outcomes =
            futures::future::join_all(commits.into_iter().map(
                |txn| match store.commit_async(txn) {
                    Ok(committing) => committing,
                    Err(_) => panic!("etcd commits without blocking a thread"),
                },
            ))
            .await;
        let landed: Vec<Revision> = outcomes[..60]
            .iter()
            .map(|o| *o.as_ref().unwrap())
            .collect();
        for outcome in &outcomes[60..] {
            match outcome {
                Err(StoreError::Conflict { key, .. }) => assert_eq!(key.name, "taken"),
                // Deleting what is not there changes nothing: the head.
                Ok(revision) => assert!(*revision >= before),
                other => panic!("{other:?}"),
            }
        }
        let conflicts = outcomes[60..].iter().filter(|o| o.is_err()).count();
        assert_eq!(conflicts, 4, "{outcomes:?}");
        // Every landed commit is there, at the revision it was told.
        for (i, revision) in landed.iter().enumerate() {
            let record = store.get(&mk_key(&format!("c{i}"))).unwrap().unwrap();
            assert_eq!(record.mod_revision, *revision);
        }
        assert_eq!(store.get(&mk_key("taken")).unwrap().unwrap().value, b"v");
        let mut distinct = landed.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() < landed.len(),
            "60 commits at once went to etcd one by one: {distinct:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_whose_callers_went_away_still_land_and_stop_no_other() {
        use futures::FutureExt;
        let etcd = mk_etcd();
        let store = Arc::new(mk_store(&etcd, "/gone"));
        // Ten callers start a commit each and go away (a cancelled request) before it lands.
        for i in 0..10 {
            let key = mk_key(&format!("gone{i}"));
            let mut committing = match store.commit_async(Txn::default().put(key, b"v".to_vec())) {
                Ok(committing) => committing,
                Err(_) => panic!("etcd commits without blocking a thread"),
            };
            assert!((&mut committing).now_or_never().is_none());
        }
        let key = mk_key("after");
        let committing = match store.commit_async(Txn::default().put(key.clone(), b"v".to_vec())) {
            Ok(committing) => committing,
            Err(_) => panic!("etcd commits without blocking a thread"),
        };
        let revision = tokio::time::timeout(std::time::Duration::from_secs(10), committing)
            .await
            .expect("a commit after callers went away lands")
            .unwrap();
        assert_eq!(store.get(&key).unwrap().unwrap().mod_revision, revision);
        for i in 0..10 {
            assert!(
                store.get(&mk_key(&format!("gone{i}"))).unwrap().is_some(),
                "gone{i}"
            );
        }
    }

    #[test]
    fn commits_outlive_the_runtime_of_their_caller() {
        let etcd = mk_etcd();
        let store = Arc::new(mk_store(&etcd, "/runtimes"));
        let commit = |name: &str| match store
            .commit_async(Txn::default().put(mk_key(name), b"v".to_vec()))
        {
            Ok(committing) => committing,
            Err(_) => panic!("etcd commits without blocking a thread"),
        };
        // A runtime that ends while its commits are under way: a leadership's controllers.
        let ending = tokio::runtime::Runtime::new().unwrap();
        ending.block_on(async {
            use futures::FutureExt;
            for i in 0..10 {
                assert!(commit(&format!("early{i}")).now_or_never().is_none());
            }
        });
        ending.shutdown_background();
        let other = tokio::runtime::Runtime::new().unwrap();
        let later = commit("later");
        let revision = other
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), later).await
            })
            .expect("a commit after another runtime ended lands")
            .unwrap();
        assert_eq!(
            store.get(&mk_key("later")).unwrap().unwrap().mod_revision,
            revision
        );
    }
}

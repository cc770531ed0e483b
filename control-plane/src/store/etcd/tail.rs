//! The tail: one etcd watch on the store's prefix for as long as the store is open, turning
//! etcd's events into the store's commits, whoever made them (this store, or another replica
//! on the same cluster).
//!
//! Each commit the tail sees goes, under one lock and in revision order, into the [`Log`]: the
//! [`View`] of every object, a bounded cache of recent commits that `events_after` serves
//! from, and the live channel (`subscribe`, one message per commit); then the tail marks its
//! revision seen, which is what a commit waits for before it returns, so the writer reads its
//! own commit and its subscribers have it by then.
//!
//! The tail also keeps etcd's history within the store's [`Retention`]: it weighs every commit
//! and compacts etcd (the whole cluster: compaction is global) when the history grows past it.
//! A watch that fails is resumed from the revision after the last one seen; if etcd compacted
//! those meanwhile, the commits in between are lost to this store: it loads the view again
//! (as an open does), the cache starts over and the live channel is replaced, so every
//! subscriber sees it close and resumes from the log (where it learns it is too far behind).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{WatchOptions, WatchResponse};
use tokio::sync::broadcast;

use super::bridge::{failed, within};
use super::tails::{self, Change, Resolved};
use super::view::View;
use super::{Shared, restart};
use crate::store::retention::{LogSize, event_bytes};
use crate::store::{Event, LIVE_EVENTS, Retention, Revision, StoreError};

/// etcd compaction runs once this many revisions after the last (or at once past the byte
/// budget), to keep its cost off most commits.
const COMPACT_EVERY: u64 = 256;
/// Revisions the cache keeps at most (fewer if the retention says so).
const CACHE_REVISIONS: u64 = 100_000;
/// Bytes of events the cache keeps at most (fewer if the retention says so).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// The first wait before a failed watch is resumed; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The recent commits, and where the store is.
pub(super) struct Log {
    /// Every object, at `head`.
    view: View,
    /// Commits after `floor`, oldest first; each holds its events, all of one revision.
    commits: VecDeque<Arc<[Event]>>,
    /// Every commit after this revision is in `commits`.
    floor: Revision,
    /// Revision `floor` holds no object event (the marker of an open): a reader resuming just
    /// before it misses nothing the cache does not hold.
    quiet_floor: bool,
    /// The newest revision seen under the prefix.
    head: Revision,
    /// What the cache weighs, against `cache_budget`.
    cached: LogSize,
    cache_budget: Retention,
    /// What etcd's history of the prefix weighs (commits seen since the open), against the
    /// store's retention.
    retained: LogSize,
    /// The floor etcd was last compacted to by this store.
    compacted: Revision,
    /// The revision from which compaction is due again. Counted, not a multiple of
    /// [`COMPACT_EVERY`]: other writers on the cluster leave gaps in the store's revisions.
    compact_at: Revision,
    /// Subscribers: one message per commit.
    live: broadcast::Sender<Arc<[Event]>>,
}

impl Log {
    /// `view` at `head`, the revision of the open's marker, with an empty cache of commits
    /// that keeps within `retention` and the cache's own bounds.
    pub(super) fn new(head: Revision, view: View, retention: Retention) -> Self {
        Self {
            view,
            commits: VecDeque::new(),
            floor: head,
            quiet_floor: true,
            head,
            cached: LogSize::default(),
            cache_budget: Retention {
                revisions: retention.revisions.min(CACHE_REVISIONS),
                bytes: retention.bytes.min(CACHE_BYTES),
            },
            retained: LogSize::default(),
            compacted: 0,
            compact_at: head + COMPACT_EVERY,
            live: broadcast::channel(LIVE_EVENTS).0,
        }
    }

    /// The newest revision seen under the prefix.
    pub(super) fn head(&self) -> Revision {
        self.head
    }

    /// Every object, at [`Log::head`].
    pub(super) fn view(&self) -> &View {
        &self.view
    }

    /// Every commit after this revision is cached.
    pub(super) fn floor(&self) -> Revision {
        self.floor
    }

    /// A receiver of the commits from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<[Event]>> {
        self.live.subscribe()
    }

    /// The cached events after `after`, at least `limit` when there are that many, whole
    /// commits only; `None` when the cache does not reach back to `after`.
    pub(super) fn events_after(&self, after: Revision, limit: usize) -> Option<Vec<Event>> {
        let reaches =
            after >= self.floor || (self.quiet_floor && after.saturating_add(1) == self.floor);
        if !reaches {
            return None;
        }
        let start = self.commits.partition_point(|c| c[0].revision <= after);
        let mut out = Vec::new();
        for commit in self.commits.range(start..) {
            if out.len() >= limit {
                break;
            }
            out.extend(commit.iter().cloned());
        }
        Some(out)
    }

    /// Takes commit `revision`, publishes it, and returns the floor etcd should be compacted
    /// to, when that is due.
    fn record(
        &mut self,
        revision: Revision,
        commit: Resolved,
        retention: &Retention,
    ) -> Option<Revision> {
        let Resolved {
            events,
            tails,
            stored,
        } = commit;
        let bytes: u64 = events.iter().map(event_bytes).sum();
        self.view.apply(&events, &tails);
        let commit: Arc<[Event]> = events.into();
        self.head = revision;
        self.commits.push_back(commit.clone());
        // No receiver is not an error: nobody is watching.
        let _ = self.live.send(commit);
        self.cached.add(revision, bytes);
        let floor = self.cached.compact(&self.cache_budget, revision);
        while self.commits.front().is_some_and(|c| c[0].revision <= floor) {
            self.commits.pop_front();
        }
        if floor > self.floor {
            self.floor = floor;
            self.quiet_floor = false;
        }
        self.retained.add(revision, stored);
        if revision < self.compact_at && !self.retained.over(retention) {
            return None;
        }
        self.compact_at = revision + COMPACT_EVERY;
        let floor = self.retained.compact(retention, revision);
        (floor > self.compacted).then(|| {
            self.compacted = floor;
            floor
        })
    }

    /// Moves the head to a revision that changed no object (a marker).
    fn advance(&mut self, revision: Revision) {
        self.head = self.head.max(revision);
    }

    /// Starts over at `head` with `view`, after etcd compacted away commits this store never
    /// saw: nothing before it can be served any more, and every subscriber must resume from
    /// the log.
    fn restart_at(&mut self, head: Revision, view: View) {
        tracing::error!(
            seen = self.head,
            restarted_at = head,
            "etcd store: etcd compacted commits this store had not seen yet; watchers start over"
        );
        self.view = view;
        self.commits.clear();
        self.cached = LogSize::default();
        self.retained = LogSize::default();
        self.floor = head;
        self.quiet_floor = true;
        self.head = head;
        self.compact_at = head + COMPACT_EVERY;
        // Dropping the old sender closes every receiver once it has drained.
        self.live = broadcast::channel(LIVE_EVENTS).0;
    }
}

/// The create revision of a deletion whose last value the etcd event does not carry (the
/// tail's watch asks for none): the view, which holds it, fills it in ([`View::fill_deleted`]).
/// No object has it: the first commit of a store is revision 1.
pub(super) const NOT_CARRIED: Revision = 0;

/// Watches the prefix from the revision after the head, for as long as the store's runtime
/// runs, resuming after every failure. The watch asks for no previous values: etcd would read
/// one from its backend for every change and send it along, and the view holds them.
pub(super) async fn follow(shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match watch(&shared, &mut backoff).await {
            Ok(()) => {
                tracing::warn!(etcd = %shared.members, "etcd store: etcd ended the watch on the store's prefix; resuming")
            }
            Err(error) => {
                tracing::warn!(etcd = %shared.members, %error, "etcd store: the watch on the store's prefix failed; resuming")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One watch, until it ends or fails.
async fn watch(shared: &Shared, backoff: &mut Duration) -> Result<(), StoreError> {
    let from = shared.layout.to_etcd(shared.log().head() + 1);
    let options = WatchOptions::new().with_prefix().with_start_revision(from);
    let root = shared.layout.root().to_vec();
    let mut watch_client = shared.watch_client();
    let what = "watching the store's prefix";
    // A watch etcd refuses for an old token signs in again, and is made again after the
    // usual pause (not at once: for a user whose rights were taken, etcd would check its
    // password in a tight loop).
    let since = std::time::Instant::now();
    let mut stream = match within(
        &shared.members,
        what,
        watch_client.watch(root, Some(options)),
    )
    .await?
    {
        Ok(stream) => stream,
        Err(e) => {
            shared.sign_in.after(&e, since).await;
            return Err(failed(&shared.members, what, &e));
        }
    };
    // A member taken out may be the one this watch is on, answering nothing: the watch
    // resumes through the others.
    let mut removals = shared.sign_in.removals();
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = removals.changed() => {
                return Err(StoreError::Unavailable(
                    "a member was taken out of the client's set".into(),
                ));
            }
        };
        let response = match message {
            Ok(response) => response,
            Err(e) => {
                shared.sign_in.after(&e, since).await;
                return Err(failed(&shared.members, what, &e));
            }
        };
        let Some(response) = response else {
            return Ok(());
        };
        if response.canceled() {
            if response.compact_revision() > 0 {
                let (head, view) = restart(shared).await?;
                shared.log().restart_at(head, view);
                shared.mark_durable(head);
                return Ok(());
            }
            shared
                .sign_in
                .after_cancel(response.cancel_reason(), since)
                .await;
            return Err(StoreError::Engine(format!(
                "etcd at {} cancelled the watch: {}",
                shared.members,
                response.cancel_reason()
            )));
        }
        *backoff = MIN_BACKOFF;
        take(shared, &response).await?;
    }
}

/// Takes the commits of one watch response, in order, then compacts etcd if that is due, then
/// marks the last revision seen. Fails if a tail it had to read from etcd could not be read:
/// the watch then resumes after the last commit taken.
async fn take(shared: &Shared, response: &WatchResponse) -> Result<(), StoreError> {
    let mut commits: Vec<(Revision, Vec<Change>)> = Vec::new();
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        let revision = shared.layout.to_store(kv.mod_revision());
        if commits.last().is_none_or(|(r, _)| *r != revision) {
            commits.push((revision, Vec::new()));
        }
        match tails::to_change(&shared.layout, event) {
            Ok(Some(change)) => commits.last_mut().expect("pushed above").1.push(change),
            Ok(None) => {}
            // One undecodable change must not stop every other: it is logged and skipped.
            Err(error) => tracing::error!(revision, %error, "etcd store: skipping an event"),
        }
    }
    // Whatever etcd's watch delivers is on a quorum's disks: say so before any subscriber
    // hears of it, so that none waits for durability (and asks etcd for its revision).
    if let Some((last, _)) = commits.last() {
        shared.mark_durable(*last);
    }
    let mut compact_to = None;
    let mut outcome = Ok(());
    for (revision, changes) in commits {
        let commit = match resolve(shared, revision, &changes).await {
            Ok(Some(commit)) => commit,
            Ok(None) => continue,
            Err(error) => {
                outcome = Err(error);
                break;
            }
        };
        let mut log = shared.log();
        let Resolved {
            mut events,
            tails,
            stored,
        } = commit;
        log.view().fill_deleted(&mut events);
        if events.is_empty() {
            log.advance(revision);
        } else if let Some(floor) = log.record(
            revision,
            Resolved {
                events,
                tails,
                stored,
            },
            &shared.retention,
        ) {
            compact_to = Some(floor);
        }
    }
    let head = shared.log().head();
    if let Some(floor) = compact_to {
        compact(shared, floor).await;
    }
    shared.seen.send_if_modified(|seen| {
        let newer = head > *seen;
        *seen = (*seen).max(head);
        newer
    });
    outcome
}

/// Commit `revision`'s changes with every value whole ([`tails::resolve`]); `None` if the
/// store has it already. A tail neither the commit nor the view has is read from etcd (only
/// the tail's task changes the view, so it still holds what it held before the read).
async fn resolve(
    shared: &Shared,
    revision: Revision,
    changes: &[Change],
) -> Result<Option<Resolved>, StoreError> {
    let (resolved, missing) = {
        let log = shared.log();
        if revision <= log.head() {
            return Ok(None);
        }
        tails::resolve(changes, |key, digest| log.view().tail(key, digest))
    };
    if missing.is_empty() {
        return Ok(Some(resolved));
    }
    let fetched = tails::fetch(shared, &missing).await?;
    let log = shared.log();
    let (resolved, missing) = tails::resolve(changes, |key, digest| {
        tails::matching(&fetched, key, digest).or_else(|| log.view().tail(key, digest))
    });
    tails::skipped(&missing);
    Ok(Some(resolved))
}

/// Compacts etcd's history so that every revision after `floor` stays.
async fn compact(shared: &Shared, floor: Revision) {
    let revision = shared.layout.to_etcd(floor + 1);
    let mut kv = shared.kv();
    match within(&shared.members, "compacting", kv.compact(revision, None)).await {
        Ok(Ok(_)) => tracing::debug!(floor, "etcd store: history compacted"),
        // Another replica (or the operator) compacted further already.
        Ok(Err(e)) if super::bridge::is_compacted(&e) => {}
        // etcd lets only its root user compact; others rely on the cluster's own.
        Ok(Err(e)) if e.to_string().contains("permission denied") => {
            if !shared
                .compaction_refused
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    "etcd store: etcd refuses this user compaction (only its root user may \
                     compact): start etcd with --auto-compaction-retention so that its history \
                     stays bounded"
                );
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, floor, "etcd store: compacting etcd failed"),
        Err(e) => tracing::warn!(error = %e, floor, "etcd store: compacting etcd failed"),
    }
}

#[cfg(test)]
mod tests {
    use troupe_common::{Kind, ObjectKey};

    use super::*;
    use crate::store::EventType;

    fn mk_commit(revision: Revision) -> Vec<Event> {
        vec![Event {
            revision,
            kind: EventType::Added,
            key: ObjectKey::new(Kind::Component, "acme", format!("c{revision}")),
            value: b"v".to_vec(),
            create_revision: revision,
        }]
    }

    #[test]
    fn the_cache_serves_whole_commits_after_its_floor_and_compaction_comes_due_through_gaps() {
        let retention = Retention {
            revisions: 10,
            bytes: u64::MAX,
        };
        let mut log = Log::new(5, View::default(), retention);
        assert_eq!(
            log.events_after(4, 10),
            Some(vec![]),
            "the open's marker at 5 changed no object"
        );
        assert_eq!(log.events_after(3, 10), None, "before the open: history");
        let mut live = log.subscribe();
        // Other users of the cluster take every other revision: none is a multiple of 256.
        let mut compactions = Vec::new();
        for revision in (7..=600).step_by(2) {
            let events = mk_commit(revision);
            let commit = Resolved {
                stored: events.iter().map(event_bytes).sum(),
                events,
                tails: Vec::new(),
            };
            if let Some(floor) = log.record(revision, commit, &retention) {
                compactions.push((revision, floor));
            }
        }
        assert_eq!(compactions, [(261, 251), (517, 507)]);
        assert_eq!((log.head(), log.floor()), (599, 589));
        let names = |events: Vec<Event>| -> Vec<String> {
            events.into_iter().map(|e| e.key.name).collect()
        };
        assert_eq!(names(log.events_after(589, 2).unwrap()), ["c591", "c593"]);
        assert_eq!(log.events_after(588, 1), None, "the floor held a commit");
        assert_eq!(log.view().list(Kind::Component, None).len(), 297);
        assert_eq!(live.try_recv().unwrap()[0].revision, 7);

        // Commits lost to a compaction: the subscribers' channel closes, the cache restarts.
        log.restart_at(1000, View::default());
        while live.try_recv().is_ok() {}
        assert!(matches!(
            live.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
        assert_eq!(log.events_after(999, 10), Some(vec![]));
        assert!(log.view().get(&mk_commit(7)[0].key).is_none());
    }
}

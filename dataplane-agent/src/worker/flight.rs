//! Applies and prunes in flight: up to `limit` at once, each a task of its own over the shared
//! applier, one at a time per release.
//!
//! What sessions ask waits in a backlog, in the order it came, until its release has nothing
//! in flight and a slot is free; one release's later commands never overtake its earlier
//! ones, so an upsert, a newer upsert and a removal of one release never overlap nor change
//! order. A newer generation that arrives while an older one applies is applied after it
//! rather than cancelling it: the older apply may have half-written its objects, and its ack
//! is owed to the control plane all the same (an ack means the content was applied). A
//! `SyncComplete` (as [`Event::Synced`], which readiness follows) waits for what its session
//! asked before it, so "synced" still means that everything that differed was handled.
//!
//! Work of the worker's own (a drift pass, a retry, objects deleted by someone else, a
//! release that waited for an object now free) queues behind the backlog, once per release,
//! and is dropped for a release that has an apply or a command in flight or waiting: that
//! one applies the newest the agent holds anyway.
//!
//! A task does nothing but call the applier; its result comes back to the worker task
//! ([`Done`]), which records it and answers. The state is never touched off the worker.

use std::collections::{HashMap, HashSet, VecDeque};

use tokio::task::{Id, JoinSet};
use troupe_common::pb::v1alpha1::{self as pb, ReleaseResource, agent_message};

use super::core::Started;
use super::{Replies, Reply, Upsert, Worker, ack};
use crate::Event;
use crate::apply::{self, Applied};

/// Something asked of the worker that touches one release (or, for `Synced`, a session).
pub(super) enum Work {
    /// Apply, record, acknowledge.
    Upsert { upsert: Upsert, replies: Replies },
    /// Acknowledge a refusal.
    Refuse { ack: pb::Ack, replies: Replies },
    /// Prune, forget, acknowledge: to the session that asked, or, for a retry, the session
    /// connected when it succeeds.
    Remove {
        release: String,
        generation: i64,
        replies: Option<Replies>,
    },
    /// Tell the embedding program the session is in sync, once what it asked before is done.
    Synced { replies: Replies },
}

impl Work {
    fn release(&self) -> Option<&str> {
        match self {
            Work::Upsert { upsert, .. } => Some(&upsert.release),
            Work::Refuse { ack, .. } => Some(&ack.release),
            Work::Remove { release, .. } => Some(release),
            Work::Synced { .. } => None,
        }
    }

    fn replies(&self) -> Option<&Replies> {
        match self {
            Work::Upsert { replies, .. }
            | Work::Refuse { replies, .. }
            | Work::Synced { replies } => Some(replies),
            Work::Remove { replies, .. } => replies.as_ref(),
        }
    }

    /// Whether it runs the applier, and so needs a slot.
    fn needs_slot(&self) -> bool {
        matches!(self, Work::Upsert { .. } | Work::Remove { .. })
    }
}

/// Why a release is being applied.
pub(super) enum Asked {
    /// An upsert from a session, answered with an ack.
    Upsert { generation: i64, replies: Replies },
    /// The worker's own: a drift pass or the like, or a retry.
    Again { retry: bool },
}

/// A task's result, back on the worker.
pub(super) enum Done {
    Applied {
        started: Started,
        result: Result<Applied, apply::Error>,
        asked: Asked,
    },
    Pruned {
        release: String,
        generation: i64,
        result: Result<(), apply::Error>,
        replies: Option<Replies>,
    },
}

/// The applies and prunes in flight and what waits for them.
pub(super) struct Flights {
    limit: usize,
    tasks: JoinSet<Done>,
    /// Per release in flight, the session that asked (none for the worker's own work).
    busy: HashMap<String, Option<Replies>>,
    /// The release of each task, to free it should the task panic.
    ids: HashMap<Id, String>,
    /// What sessions asked, in order, not started yet.
    backlog: VecDeque<Work>,
    /// Releases to apply again for the worker's own reasons, and whether as a retry.
    again: VecDeque<(String, bool)>,
}

impl Flights {
    /// Nothing in flight; at most `limit` (at least 1) at once.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            tasks: JoinSet::new(),
            busy: HashMap::new(),
            ids: HashMap::new(),
            backlog: VecDeque::new(),
            again: VecDeque::new(),
        }
    }

    /// How many commands wait.
    pub(super) fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Queues what a session asked, behind what it asked before.
    pub(super) fn queue(&mut self, work: Work) {
        self.backlog.push_back(work);
    }

    /// Whether `release` has an apply or prune in flight or waiting.
    pub(super) fn is_busy(&self, release: &str) -> bool {
        self.busy.contains_key(release)
            || self.backlog.iter().any(|w| w.release() == Some(release))
            || self.again.iter().any(|(r, _)| r == release)
    }

    /// The next task to finish; `None` at once when none is in flight. A task that panicked
    /// frees its release and is logged.
    pub(super) async fn next_done(&mut self) -> Option<Done> {
        loop {
            match self.tasks.join_next_with_id().await? {
                Ok((id, done)) => {
                    self.ids.remove(&id);
                    let release = match &done {
                        Done::Applied { started, .. } => started.release(),
                        Done::Pruned { release, .. } => release,
                    };
                    self.busy.remove(release);
                    return Some(done);
                }
                Err(e) => {
                    let release = self.ids.remove(&e.id()).unwrap_or_default();
                    tracing::error!(%release, error = %e, "an apply or prune task failed");
                    self.busy.remove(&release);
                }
            }
        }
    }

    fn spawn(
        &mut self,
        release: String,
        replies: Option<Replies>,
        task: impl Future<Output = Done> + Send + 'static,
    ) {
        let id = self.tasks.spawn(task).id();
        self.ids.insert(id, release.clone());
        self.busy.insert(release, replies);
    }

    /// Whether a session's command queued before `index`, or one in flight, came from
    /// `replies`' session.
    fn asked_before(&self, index: usize, replies: &Replies) -> bool {
        let same = |r: Option<&Replies>| r.is_some_and(|r| r.same_channel(replies));
        self.backlog.iter().take(index).any(|w| same(w.replies()))
            || self.busy.values().any(|r| same(r.as_ref()))
    }
}

impl Worker {
    /// Queues `releases` to apply again (as a retry when `retry`), skipping those with
    /// something in flight or waiting already.
    pub(super) fn again(&mut self, releases: Vec<String>, retry: bool) {
        for release in releases {
            if !self.flights.is_busy(&release) {
                self.flights.again.push_back((release, retry));
            }
        }
    }

    /// Queues `releases`, whose objects someone deleted, to apply again, once each, after
    /// whatever of theirs is in flight: an apply under way may have applied the deleted
    /// object before it went.
    pub(super) fn again_after_flight(&mut self, releases: Vec<String>) {
        for release in releases {
            if !self
                .flights
                .again
                .iter()
                .any(|(queued, _)| *queued == release)
            {
                self.flights.again.push_back((release, false));
            }
        }
    }

    /// Starts whatever may start: the backlog in order (a release waits behind its own
    /// earlier work and for a free slot), then the worker's own work.
    pub(super) async fn pump(&mut self) {
        let mut held_back: HashSet<String> = HashSet::new();
        let mut i = 0;
        while i < self.flights.backlog.len() {
            let work = &self.flights.backlog[i];
            let ready = match work.release() {
                None => !work
                    .replies()
                    .is_some_and(|r| self.flights.asked_before(i, r)),
                Some(release) => {
                    let full = work.needs_slot() && self.flights.busy.len() >= self.flights.limit;
                    let ready = !full
                        && !self.flights.busy.contains_key(release)
                        && !held_back.contains(release);
                    if !ready {
                        held_back.insert(release.to_string());
                    }
                    ready
                }
            };
            if ready {
                let work = self.flights.backlog.remove(i).expect("in range");
                self.start(work).await;
            } else {
                i += 1;
            }
        }
        // What has work in flight or waiting waits its turn, in order.
        let mut later = Vec::new();
        while self.flights.busy.len() < self.flights.limit
            && let Some((release, retry)) = self.flights.again.pop_front()
        {
            if self.flights.busy.contains_key(&release) || held_back.contains(&release) {
                later.push((release, retry));
                continue;
            }
            match self.core.begin_reapply(&release) {
                Some((started, objects)) => {
                    self.spawn_apply(started, objects, Asked::Again { retry })
                }
                None => {
                    self.core.retries.remove(&release);
                }
            }
        }
        for entry in later.into_iter().rev() {
            self.flights.again.push_front(entry);
        }
    }

    /// Starts one piece of work; what needs no applier is answered at once. Work of a
    /// session that has ended is dropped: the control plane asks again after `Hello`.
    async fn start(&mut self, work: Work) {
        if work.replies().is_some_and(Replies::is_closed) {
            return;
        }
        match work {
            Work::Upsert { upsert, replies } => {
                let (release, generation) = (upsert.release.clone(), upsert.generation);
                match self.core.begin_upsert(upsert) {
                    Ok(Some((started, objects))) => {
                        let asked = Asked::Upsert {
                            generation,
                            replies,
                        };
                        self.spawn_apply(started, objects, asked);
                    }
                    // Applied already: acknowledged again.
                    Ok(None) => self.answer(release, generation, Ok(false), &replies).await,
                    Err(e) => self.answer(release, generation, Err(e), &replies).await,
                }
            }
            Work::Refuse { ack, replies } => {
                replies.send_message(agent_message::Message::Ack(ack)).await;
            }
            Work::Remove {
                release,
                generation,
                replies,
            } => {
                let applier = self.core.applier.clone();
                let task_release = release.clone();
                let task_replies = replies.clone();
                self.flights.spawn(release, replies, async move {
                    let result = applier.prune(&task_release).await;
                    Done::Pruned {
                        release: task_release,
                        generation,
                        result,
                        replies: task_replies,
                    }
                });
            }
            Work::Synced { replies } => replies.send(Reply::Event(Event::Synced)).await,
        }
    }

    fn spawn_apply(&mut self, started: Started, objects: Vec<ReleaseResource>, asked: Asked) {
        let release = started.release().to_string();
        let replies = match &asked {
            Asked::Upsert { replies, .. } => Some(replies.clone()),
            Asked::Again { .. } => None,
        };
        let applier = self.core.applier.clone();
        let task_release = release.clone();
        self.flights.spawn(release, replies, async move {
            let result = applier.apply(&task_release, &objects).await;
            Done::Applied {
                started,
                result,
                asked,
            }
        });
    }

    /// Records what a task did and answers for it.
    pub(super) async fn landed(&mut self, done: Done) {
        match done {
            Done::Applied {
                started,
                result,
                asked,
            } => {
                let release = started.release().to_string();
                let result = self.core.finish(started, result);
                match asked {
                    Asked::Upsert {
                        generation,
                        replies,
                    } => self.answer(release, generation, result, &replies).await,
                    Asked::Again { retry } => match result {
                        Ok(true) => self.report_changes().await,
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(%release, error = %e, retry, "could not apply again");
                            if retry {
                                self.core.retry_later(&release);
                            }
                        }
                    },
                }
            }
            Done::Pruned {
                release,
                generation,
                result,
                replies,
            } => {
                let result = self.core.finish_remove(&release, generation, result);
                if let Err(e) = &result {
                    tracing::warn!(%release, error = %e, "prune failed");
                }
                let removed = result.is_ok();
                // A removal that succeeded on a retry, after its first ack failed, is
                // acknowledged to the session connected now.
                let replies = replies.or_else(|| {
                    let listener = self.listener.as_ref().filter(|_| removed)?;
                    Some(listener.replies.clone())
                });
                if let Some(replies) = replies {
                    let ack = ack(release, generation, result);
                    replies.send_message(agent_message::Message::Ack(ack)).await;
                }
                // What the release owned may be waited for by another.
                if removed {
                    let waiting = self.core.waiting();
                    self.again(waiting, false);
                }
            }
        }
    }

    /// Acknowledges an upsert, tells the embedding program, and reports its health to the
    /// session that asked if it changed.
    async fn answer(
        &mut self,
        release: String,
        generation: i64,
        result: Result<bool, super::Failure>,
        replies: &Replies,
    ) {
        if let Err(e) = &result {
            tracing::warn!(%release, generation, error = %e, "apply failed");
        }
        let report = self
            .core
            .unreported
            .remove(&release)
            .then(|| self.core.report(&release))
            .flatten();
        let ok = result.is_ok();
        let ack = ack(release.clone(), generation, result.map(|_| ()));
        replies.send_message(agent_message::Message::Ack(ack)).await;
        if ok {
            let acked = Event::Acked {
                release,
                generation,
            };
            replies.send(Reply::Event(acked)).await;
        }
        if let Some(report) = report {
            replies.send(Reply::Message(report)).await;
        }
    }
}

//! The one owner of the agent's state: the applier, the desired state on disk, the releases
//! held and the health last observed.
//!
//! [`Worker::spawn`] starts a task that takes [`Command`]s from a small bounded queue, one at a
//! time, and between them corrects drift on a tick and takes in health the applier watched
//! change. Sessions never touch the state: they queue what the control plane asks for and
//! read the answers (acks, health reports, progress) from their own reply channel, so a
//! session keeps heartbeating while an apply runs.
//!
//! Per release the order is: apply, record on disk, ack; prune, forget, ack. A first apply is
//! written ahead (generation 0), so a crash between apply and record still leaves the release
//! reported in `Hello`; drift correction never re-applies such an entry. The task outlives
//! sessions: an apply in flight when a stream drops finishes and is recorded, and the next
//! `Hello` reports it. Commands a session queued but the worker had not started when it ended
//! are dropped: the control plane resends whatever still differs after the next `Hello`.
//! Nothing is ever pruned but on a removal from the control plane.
//!
//! Before the applier sees a release, each object is checked against the agent's policy and
//! the owners index (`screen`, `owners`): one release owns each object, first come first
//! served; an object refused fails alone. When a release is removed, the releases that
//! waited for an object it owned are applied again at once.
//!
//! The operations on the state themselves (apply and record, prune and forget, drift, health)
//! are in `core`; this file is the task around them and what it says to sessions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use troupe_common::pb::v1alpha1::{self as pb, AgentMessage, agent_message};
use troupe_common::policy::Policy;

use self::core::{Core, Failure};
use crate::Event;
use crate::apply::Applier;
use crate::state::{Held, State};

mod core;
mod owners;
mod retry;
mod screen;

pub(crate) use self::retry::Timing;

/// How many commands may wait for the worker; a session that finds the queue full stops
/// reading its stream until there is room.
const QUEUE: usize = 16;

/// A whole upsert, its chunks joined.
#[derive(Debug)]
pub(crate) struct Upsert {
    /// Release id, `NAMESPACE/NAME`.
    pub release: String,
    /// The generation to apply.
    pub generation: i64,
    /// Its content hash.
    pub content_hash: String,
    /// Its objects, as a JSON list.
    pub manifests: Vec<u8>,
}

/// What a session asks of the worker. Every command that is answered carries the channel of
/// the session that sent it; the worker skips it, unstarted, once that session is gone.
pub(crate) enum Command {
    /// A session starts: what the agent holds, for its `Hello`. Health changes go to this
    /// session from now on, once it has synced.
    Connect {
        /// The new session's answers.
        replies: mpsc::Sender<Reply>,
        /// Each release held and the generation acknowledged (0 when written ahead only).
        known: oneshot::Sender<Vec<(String, pb::KnownRelease)>>,
    },
    /// Apply, record, acknowledge.
    Upsert {
        /// The release.
        upsert: Upsert,
        /// Where the ack goes.
        replies: mpsc::Sender<Reply>,
    },
    /// Acknowledge a release refused before it could be applied (too big, chunks out of
    /// order). Passed through the worker so acks go out in the order their upserts came.
    Refuse {
        /// The refused ack.
        ack: pb::Ack,
        /// Where the ack goes.
        replies: mpsc::Sender<Reply>,
    },
    /// Prune, forget, acknowledge.
    Remove {
        /// Release id.
        release: String,
        /// The generation the removal is for, echoed in the ack.
        generation: i64,
        /// Where the ack goes.
        replies: mpsc::Sender<Reply>,
    },
    /// The control plane has sent everything that differed: report all health, then every
    /// change as it comes.
    Synced {
        /// Where the reports go.
        replies: mpsc::Sender<Reply>,
    },
}

/// What the worker answers a session.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A message for the control plane.
    Message(AgentMessage),
    /// Progress for the program that embeds the agent.
    Event(Event),
}

/// A handle on the worker: where sessions queue commands.
#[derive(Clone)]
pub(crate) struct Handle {
    /// The worker's queue.
    pub commands: mpsc::Sender<Command>,
}

impl Handle {
    /// Registers a new session and returns what the agent holds, for its `Hello`. Waits for
    /// the command in progress, so an apply that outlived the last session is included.
    pub async fn connect(
        &self,
        replies: mpsc::Sender<Reply>,
    ) -> anyhow::Result<Vec<(String, pb::KnownRelease)>> {
        let (known, answer) = oneshot::channel();
        self.commands
            .send(Command::Connect { replies, known })
            .await
            .map_err(|_| anyhow::anyhow!("the agent's worker has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the agent's worker has stopped"))
    }
}

/// Wraps one agent message.
pub(crate) fn message(m: agent_message::Message) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

/// The session health changes are reported to.
struct Listener {
    replies: mpsc::Sender<Reply>,
    /// Set once the session's `SyncComplete` has been handled; reports wait until then.
    synced: bool,
}

/// The task that owns the agent's state.
pub(crate) struct Worker {
    core: Core,
    listener: Option<Listener>,
}

impl Worker {
    /// Starts the worker over `held` (as loaded from `state`); it corrects drift at once and
    /// then every `timing.resync_every`, retries what failed, and stops when `shutdown`
    /// turns true or every handle is gone.
    pub fn spawn(
        applier: Arc<dyn Applier>,
        policy: Arc<Policy>,
        state: State,
        held: BTreeMap<String, Held>,
        timing: Timing,
        shutdown: watch::Receiver<bool>,
    ) -> Handle {
        let (commands, queue) = mpsc::channel(QUEUE);
        let resync_every = timing.resync_every;
        let worker = Self {
            core: Core::new(applier, policy, state, held, timing),
            listener: None,
        };
        tokio::spawn(worker.run(queue, resync_every, shutdown));
        Handle { commands }
    }

    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Command>,
        resync_every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // Drift is corrected once at start, before any command, then on every tick; after a
        // long apply one late pass is enough, as it re-applies everything.
        self.core.correct_drift().await;
        let start = tokio::time::Instant::now() + resync_every;
        let mut drift = tokio::time::interval_at(start, resync_every);
        drift.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let changes = self.core.applier.health_changes();
        loop {
            tokio::select! {
                command = queue.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => return,
                },
                _ = drift.tick() => {
                    if self.core.correct_drift().await {
                        self.report_changes().await;
                    }
                }
                _ = retry_due(self.core.next_retry()) => {
                    let (changed, removed) = self.core.retry_due().await;
                    self.removed_late(removed).await;
                    if changed {
                        self.report_changes().await;
                    }
                }
                _ = health_changed(changes.as_deref()) => {
                    let mut changed = self.core.refresh_health();
                    changed |= self.core.restore_deleted().await;
                    if changed {
                        self.report_changes().await;
                    }
                }
                _ = crate::stopped(&mut shutdown) => return,
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Connect { replies, known } => {
                let _ = known.send(self.core.known());
                self.listener = Some(Listener {
                    replies,
                    synced: false,
                });
            }
            Command::Upsert { upsert, replies } if !replies.is_closed() => {
                self.upsert(upsert, &replies).await
            }
            Command::Refuse { ack, replies } => {
                let _ = replies
                    .send(Reply::Message(message(agent_message::Message::Ack(ack))))
                    .await;
            }
            Command::Remove {
                release,
                generation,
                replies,
            } if !replies.is_closed() => {
                let result = self.core.remove(&release, generation).await;
                if let Err(e) = &result {
                    tracing::warn!(%release, error = %e, "prune failed");
                }
                let removed = result.is_ok();
                let ack = ack(release, generation, result);
                let _ = replies
                    .send(Reply::Message(message(agent_message::Message::Ack(ack))))
                    .await;
                // What the release owned may be waited for by another.
                if removed && self.core.apply_waiting().await {
                    self.report_changes().await;
                }
            }
            Command::Synced { replies } if !replies.is_closed() => self.synced(&replies).await,
            // The session that asked is gone; the control plane asks again after `Hello`.
            Command::Upsert { .. } | Command::Remove { .. } | Command::Synced { .. } => {}
        }
    }

    async fn upsert(&mut self, upsert: Upsert, replies: &mpsc::Sender<Reply>) {
        let (release, generation) = (upsert.release.clone(), upsert.generation);
        let result = self.core.upsert(upsert).await;
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
        let ack = ack(release.clone(), generation, result);
        let _ = replies
            .send(Reply::Message(message(agent_message::Message::Ack(ack))))
            .await;
        if ok {
            let acked = Event::Acked {
                release,
                generation,
            };
            let _ = replies.send(Reply::Event(acked)).await;
        }
        if let Some(report) = report {
            let _ = replies.send(Reply::Message(report)).await;
        }
    }

    /// The control plane may have restarted: tell it every health, once, then changes.
    async fn synced(&mut self, replies: &mpsc::Sender<Reply>) {
        if let Some(listener) = &mut self.listener
            && listener.replies.same_channel(replies)
        {
            listener.synced = true;
        }
        let _ = replies.send(Reply::Event(Event::Synced)).await;
        self.core.unreported.clear();
        let mut releases: Vec<&String> = self.core.health.keys().collect();
        releases.sort();
        for release in releases {
            if let Some(report) = self.core.report(release) {
                let _ = replies.send(Reply::Message(report)).await;
            }
        }
    }

    /// Acknowledges removals that succeeded on a retry, after their first ack failed.
    async fn removed_late(&mut self, removed: Vec<(String, i64)>) {
        let Some(listener) = &self.listener else {
            return;
        };
        for (release, generation) in removed {
            let ack = ack(release, generation, Ok(()));
            let _ = listener
                .replies
                .send(Reply::Message(message(agent_message::Message::Ack(ack))))
                .await;
        }
    }

    /// Reports the health that changed to a synced session; without one it waits, and the
    /// next session's sync reports everything.
    async fn report_changes(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        if !listener.synced || listener.replies.is_closed() {
            return;
        }
        for release in std::mem::take(&mut self.core.unreported) {
            if let Some(report) = self.core.report(&release) {
                let _ = listener.replies.send(Reply::Message(report)).await;
            }
        }
    }
}

/// Resolves when the next retry is due; never when none is.
async fn retry_due(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the applier says health may have changed; never for appliers that do not
/// watch.
async fn health_changed(changes: Option<&Notify>) {
    match changes {
        Some(changes) => changes.notified().await,
        None => std::future::pending().await,
    }
}

fn ack(release: String, generation: i64, result: Result<(), Failure>) -> pb::Ack {
    pb::Ack {
        release,
        generation,
        ok: result.is_ok(),
        error: result.err().map(|e| e.to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
pub(crate) mod tests;

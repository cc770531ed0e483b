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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use troupe_common::agent::decode_manifests;
use troupe_common::pb::v1alpha1::{self as pb, AgentMessage, ReleaseResourceStatus, agent_message};
use troupe_common::timestamp::now_seconds;

use crate::Event;
use crate::apply::Applier;
use crate::state::{Held, State};

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

/// The applier, the desired state and the health the agent last saw.
struct Core {
    applier: Arc<dyn Applier>,
    state: State,
    held: BTreeMap<String, Held>,
    health: HashMap<String, (i64, Vec<ReleaseResourceStatus>)>,
    /// Releases whose health changed since it was last reported.
    unreported: BTreeSet<String>,
}

/// Why an upsert or a removal failed; its text is the error of the `Ack`.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The joined chunks are not a list of objects.
    #[error("{0}")]
    Decode(String),
    /// The applier failed.
    #[error("{0}")]
    Apply(String),
    /// The state on disk could not be written.
    #[error("recording the release in the agent's state: {0}")]
    Record(#[source] std::io::Error),
    /// The state on disk could not be cleared.
    #[error("forgetting the release in the agent's state: {0}")]
    Forget(#[source] std::io::Error),
}

impl Core {
    async fn upsert(&mut self, upsert: Upsert) -> Result<(), Failure> {
        if let Some(held) = self.held.get(&upsert.release)
            && (held.generation > upsert.generation
                || (held.generation == upsert.generation
                    && held.content_hash == upsert.content_hash))
        {
            // A resend of what is applied already, or an old generation: nothing to do.
            return Ok(());
        }
        let resources = decode_manifests(&upsert.manifests).map_err(Failure::Decode)?;
        if !self.held.contains_key(&upsert.release) {
            // Written ahead of a first apply: if the agent dies between the apply and the
            // record below, the release is still reported in `Hello` (as generation 0), so
            // the control plane sends it again or, if it is gone, a removal for what the
            // apply created.
            self.state
                .save(&Held::pending(&upsert.release))
                .map_err(Failure::Record)?;
        }
        let statuses = self
            .applier
            .apply(&upsert.release, &resources)
            .await
            .map_err(Failure::Apply)?;
        let held = Held {
            release: upsert.release.clone(),
            generation: upsert.generation,
            content_hash: upsert.content_hash,
            resources,
        };
        self.state.save(&held).map_err(Failure::Record)?;
        self.held.insert(upsert.release.clone(), held);
        self.observed(&upsert.release, upsert.generation, statuses);
        Ok(())
    }

    async fn remove(&mut self, release: &str) -> Result<(), Failure> {
        self.applier.prune(release).await.map_err(Failure::Apply)?;
        self.state.remove(release).map_err(Failure::Forget)?;
        self.held.remove(release);
        self.health.remove(release);
        self.unreported.remove(release);
        Ok(())
    }

    fn observed(&mut self, release: &str, generation: i64, statuses: Vec<ReleaseResourceStatus>) {
        let new = (generation, statuses);
        if self.health.get(release) != Some(&new) {
            self.health.insert(release.to_string(), new);
            self.unreported.insert(release.to_string());
        }
    }

    /// Re-applies everything held, correcting drift. Returns true when health changed.
    async fn correct_drift(&mut self) -> bool {
        let releases: Vec<Held> = self.held.values().cloned().collect();
        let before = self.unreported.len();
        // A release only written ahead of its first apply has nothing acknowledged to keep.
        for held in releases.into_iter().filter(|h| !h.is_pending()) {
            let statuses = match self.applier.apply(&held.release, &held.resources).await {
                Ok(statuses) => statuses,
                Err(e) => {
                    tracing::warn!(release = %held.release, error = %e, "could not re-apply");
                    continue;
                }
            };
            self.observed(&held.release, held.generation, statuses);
        }
        self.unreported.len() != before
    }

    /// Takes the health the applier watched change since the last apply. Returns true when
    /// health changed.
    fn refresh_health(&mut self) -> bool {
        let held: Vec<(String, i64)> = self
            .held
            .values()
            .map(|h| (h.release.clone(), h.generation))
            .collect();
        let before = self.unreported.len();
        for (release, generation) in held {
            if let Some(statuses) = self.applier.health(&release) {
                self.observed(&release, generation, statuses);
            }
        }
        self.unreported.len() != before
    }

    fn known(&self) -> Vec<(String, pb::KnownRelease)> {
        self.held
            .values()
            .map(|h| {
                let known = pb::KnownRelease {
                    generation: h.generation,
                    content_hash: h.content_hash.clone(),
                };
                (h.release.clone(), known)
            })
            .collect()
    }

    fn report(&self, release: &str) -> Option<AgentMessage> {
        let (generation, resources) = self.health.get(release)?.clone();
        Some(message(agent_message::Message::Status(pb::StatusReport {
            release: release.to_string(),
            generation,
            resources: stamp(resources),
        })))
    }
}

fn stamp(mut resources: Vec<ReleaseResourceStatus>) -> Vec<ReleaseResourceStatus> {
    let now = now_seconds();
    for r in &mut resources {
        r.last_observed_time = Some(now);
    }
    resources
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
    /// then every `resync_every`, and stops when `shutdown` turns true or every handle is
    /// gone.
    pub fn spawn(
        applier: Arc<dyn Applier>,
        state: State,
        held: BTreeMap<String, Held>,
        resync_every: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Handle {
        let (commands, queue) = mpsc::channel(QUEUE);
        let worker = Self {
            core: Core {
                applier,
                state,
                held,
                health: HashMap::new(),
                unreported: BTreeSet::new(),
            },
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
                _ = health_changed(changes.as_deref()) => {
                    if self.core.refresh_health() {
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
                let result = self.core.remove(&release).await;
                if let Err(e) = &result {
                    tracing::warn!(%release, error = %e, "prune failed");
                }
                let ack = ack(release, generation, result);
                let _ = replies
                    .send(Reply::Message(message(agent_message::Message::Ack(ack))))
                    .await;
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

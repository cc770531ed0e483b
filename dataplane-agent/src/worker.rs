//! The one owner of the agent's state: the applier, the desired state on disk, the releases
//! held and the health last observed.
//!
//! [`Worker::spawn`] starts a task that takes [`Command`]s from a small bounded queue and,
//! between them, corrects drift on a tick, retries what failed and takes in health the
//! applier watched change. Sessions never touch the state: they queue what the control plane
//! asks for and read the answers (acks, health reports, progress) from their own bounded
//! [`Replies`], so a session keeps heartbeating while an apply runs.
//!
//! Applies and prunes run concurrently, up to `concurrency` at once, each in a task of its
//! own over a shared applier (`flight`); the worker alone touches the state, before (screen,
//! write ahead, claim the objects) and after (record, ack). So a release whose apply hangs
//! holds up its own later commands only: one release's upsert, newer upsert and removal never
//! overlap nor change order, while other releases are applied and acknowledged meanwhile.
//!
//! Per release the order is: apply, record on disk, ack; prune, forget, ack. A first apply is
//! written ahead (generation 0), so a crash between apply and record still leaves the release
//! reported in `Hello`; drift correction never re-applies such an entry. The task outlives
//! sessions: an apply in flight when a stream drops finishes and is recorded, and a later
//! `Hello` reports it. Commands a session queued but the worker had not started when it
//! ended are dropped: the control plane resends whatever still differs after the next
//! `Hello`. Nothing is ever pruned but on a removal from the control plane.
//!
//! Before the applier sees a release, each object is checked against the agent's policy and
//! the owners index (`screen`, `owners`): one release owns each object, first come first
//! served, an object claimed by an apply in flight counting as owned; an object refused fails
//! alone. When a release is removed, the releases that waited for an object it owned are
//! applied again at once.
//!
//! The operations on the state themselves (begin and finish an apply, finish a prune, what
//! is due) are in `core`; the scheduling of applies in `flight`; this file is the task around
//! them and what it says to sessions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use troupe_common::pb::v1alpha1::{self as pb, AgentMessage, agent_message};
use troupe_common::policy::Policy;

use self::core::{Core, Failure};
use self::flight::{Flights, Work};
use crate::Event;
use crate::apply::Applier;
use crate::state::{Held, State};

mod core;
mod flight;
mod owners;
mod retry;
mod screen;

pub(crate) use self::retry::Timing;

/// How many commands may wait for the worker; a session that finds the queue full stops
/// reading its stream until there is room.
const QUEUE: usize = 16;
/// How many commands the worker takes from the queue while they wait for their release's
/// apply in flight or for a free slot; past that it leaves them in the queue.
const BACKLOG: usize = 64;
/// How long the worker waits for room in a session's replies. A session that has not made
/// room by then is stalled (its stream is not draining): the worker sends it nothing more
/// and the session ends itself, so the next `Hello` resyncs whatever it missed.
const REPLY_WAIT: Duration = Duration::from_secs(5);

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

/// What a session asks of the worker. Every command that is answered carries the replies of
/// the session that sent it; the worker skips it, unstarted, once that session is gone.
pub(crate) enum Command {
    /// A session starts: what the agent holds, for its `Hello`. Health changes go to this
    /// session from now on, once it has synced.
    Connect {
        /// The new session's answers.
        replies: Replies,
        /// Each release held and the generation acknowledged (0 when written ahead only).
        known: oneshot::Sender<Vec<(String, pb::KnownRelease)>>,
    },
    /// Apply, record, acknowledge.
    Upsert {
        /// The release.
        upsert: Upsert,
        /// Where the ack goes.
        replies: Replies,
    },
    /// Acknowledge a release refused before it could be applied (too big, chunks out of
    /// order). Passed through the worker so the ack follows what the release had queued.
    Refuse {
        /// The refused ack.
        ack: pb::Ack,
        /// Where the ack goes.
        replies: Replies,
    },
    /// Prune, forget, acknowledge.
    Remove {
        /// Release id.
        release: String,
        /// The generation the removal is for, echoed in the ack.
        generation: i64,
        /// Where the ack goes.
        replies: Replies,
    },
    /// The control plane has sent everything that differed: report all health, then every
    /// change as it comes; once what the session asked before is done, say it is synced.
    Synced {
        /// Where the reports go.
        replies: Replies,
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

/// Where the worker's answers to one session go: a bounded channel, and the mark the worker
/// leaves when it gave up on the session for not making room in time.
#[derive(Clone)]
pub(crate) struct Replies {
    tx: mpsc::Sender<Reply>,
    gave_up: Arc<AtomicBool>,
}

impl Replies {
    /// Replies with room for `capacity` answers, and the session's end of them.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Reply>) {
        let (tx, rx) = mpsc::channel(capacity);
        let replies = Self {
            tx,
            gave_up: Arc::default(),
        };
        (replies, rx)
    }

    /// True once the worker dropped an answer for want of room: the session has missed
    /// something and must end, so that the next `Hello` resyncs.
    pub fn gave_up(&self) -> bool {
        self.gave_up.load(Ordering::Relaxed)
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn same_channel(&self, other: &Self) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// Sends one answer, waiting at most [`REPLY_WAIT`] for room; after a wait that ran out
    /// the session gets nothing more. A bounded wait rather than `try_send`: a burst (every
    /// health report after a sync) may briefly fill a healthy session's channel, and ending
    /// it for that would only cause the same burst on the next stream.
    async fn send(&self, reply: Reply) {
        if self.gave_up() {
            return;
        }
        if let Err(SendTimeoutError::Timeout(_)) = self.tx.send_timeout(reply, REPLY_WAIT).await {
            tracing::warn!(
                waited = ?REPLY_WAIT,
                "a session does not read the agent's answers; dropping them until it reconnects"
            );
            self.gave_up.store(true, Ordering::Relaxed);
        }
    }

    async fn send_message(&self, m: agent_message::Message) {
        self.send(Reply::Message(message(m))).await;
    }
}

/// A handle on the worker: where sessions queue commands. It also carries the build plane,
/// which, like the worker, outlives sessions.
#[derive(Clone)]
pub struct Handle {
    /// The worker's queue.
    pub(crate) commands: mpsc::Sender<Command>,
    /// The attempts the agent runs, when it takes builds.
    pub(crate) builds: Option<crate::builds::Builds>,
}

impl Handle {
    /// Resolves once the worker has stopped (its shutdown turned true, or it failed): after
    /// that it touches neither the state nor the applier again.
    pub async fn stopped(&self) {
        self.commands.closed().await;
    }

    /// Registers a new session and returns what the agent holds, for its `Hello`: what is
    /// recorded, releases being applied for the first time as generation 0.
    pub(crate) async fn connect(
        &self,
        replies: Replies,
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
    replies: Replies,
    /// Set once the session's `SyncComplete` has been handled; reports wait until then.
    synced: bool,
}

/// The task that owns the agent's state.
pub(crate) struct Worker {
    core: Core,
    listener: Option<Listener>,
    flights: Flights,
}

impl Worker {
    /// Starts the worker over `held` (as loaded from `state`), applying up to `concurrency`
    /// releases at once; it corrects drift at once and then every `timing.resync_every`,
    /// retries what failed, and stops when `shutdown` turns true or every handle is gone.
    /// Applies in flight then are abandoned, as a crash would.
    pub fn spawn(
        applier: Arc<dyn Applier>,
        policy: Arc<Policy>,
        state: State,
        held: BTreeMap<String, Held>,
        timing: Timing,
        concurrency: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Handle {
        let (commands, queue) = mpsc::channel(QUEUE);
        let resync_every = timing.resync_every;
        let worker = Self {
            core: Core::new(applier, policy, state, held, timing),
            listener: None,
            flights: Flights::new(concurrency),
        };
        tokio::spawn(worker.run(queue, resync_every, shutdown));
        Handle {
            commands,
            builds: None,
        }
    }

    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Command>,
        resync_every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // Drift is corrected once at start, then on every tick; a pass still under way when
        // the next tick comes is not queued twice.
        self.again(self.core.held_releases(), false);
        let start = tokio::time::Instant::now() + resync_every;
        let mut drift = tokio::time::interval_at(start, resync_every);
        drift.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let changes = self.core.applier.health_changes();
        loop {
            self.pump().await;
            let next_retry = self.core.next_retry(|r| self.flights.is_busy(r));
            tokio::select! {
                command = queue.recv(), if self.flights.backlog_len() < BACKLOG => match command {
                    Some(command) => self.take(command).await,
                    None => return,
                },
                Some(done) = self.flights.next_done() => self.landed(done).await,
                _ = drift.tick() => self.again(self.core.held_releases(), false),
                _ = retry_due(next_retry) => {
                    let (removals, applies) = self.core.due(|r| self.flights.is_busy(r));
                    for (release, generation) in removals {
                        self.flights.queue(Work::Remove { release, generation, replies: None });
                    }
                    self.again(applies, true);
                }
                _ = health_changed(changes.as_deref()) => {
                    if self.core.refresh_health() {
                        self.report_changes().await;
                    }
                    let deleted = self.core.applier.drifted();
                    if !deleted.is_empty() {
                        tracing::info!(releases = ?deleted, "objects were deleted by someone else; applying again");
                    }
                    self.again_after_flight(deleted);
                }
                _ = crate::stopped(&mut shutdown) => return,
            }
        }
    }

    /// Takes one command from a session: a connect is answered at once, the rest wait their
    /// turn in the backlog.
    async fn take(&mut self, command: Command) {
        let work = match command {
            Command::Connect { replies, known } => {
                let _ = known.send(self.core.known());
                self.listener = Some(Listener {
                    replies,
                    synced: false,
                });
                return;
            }
            Command::Upsert { upsert, replies } => Work::Upsert { upsert, replies },
            Command::Refuse { ack, replies } => Work::Refuse { ack, replies },
            Command::Remove {
                release,
                generation,
                replies,
            } => Work::Remove {
                release,
                generation,
                replies: Some(replies),
            },
            Command::Synced { replies } => {
                if replies.is_closed() {
                    return;
                }
                self.synced(&replies).await;
                Work::Synced { replies }
            }
        };
        self.flights.queue(work);
    }

    /// The control plane may have restarted: tell it every health, once, then changes. At
    /// once, not after the applies the sync asked for: a hung one must not hold up the
    /// health of every other release.
    async fn synced(&mut self, replies: &Replies) {
        if let Some(listener) = &mut self.listener
            && listener.replies.same_channel(replies)
        {
            listener.synced = true;
        }
        self.core.unreported.clear();
        let mut releases: Vec<&String> = self.core.health.keys().collect();
        releases.sort();
        for release in releases {
            if let Some(report) = self.core.report(release) {
                replies.send(Reply::Message(report)).await;
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
                listener.replies.send(Reply::Message(report)).await;
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

//! The task that owns every attempt, and the small task per attempt that forwards its
//! executor's events.
//!
//! [`Runner::run`] loops over: commands from sessions (attach, detach, offer, cancel, ack),
//! events from the attempts' tasks, room in the attached session's channel (taken only when a
//! message is ready, one message per room, attempts served in turn), and the next instant an
//! attempt has work (a batch of lines to flush, a renewal, a lease running out). It awaits
//! nothing else, so a full session channel delays only what goes out.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use troupe_common::pb::v1alpha1::{self as pb, AgentMessage};

use super::attempt::{Attempt, BUFFER_BYTES, line_cost};
use super::offer::to_run_spec;
use super::{BuildPlaneConfig, Engine};
use crate::builds::{RunEvent, RunHandle};
use crate::worker::message;

/// Events of the attempts' tasks waiting for the runner, at most; a task waits for room,
/// and so does, through its handle, the executor.
const EVENTS: usize = 256;

/// An attempt: run id and attempt number.
type Key = (String, u32);

/// What a session asks of the build plane.
pub(super) enum Command {
    /// Send through this channel from now on, everything not acknowledged again.
    Attach {
        /// Which attach this is; a later one replaces it.
        session: u64,
        /// The session's outbound messages.
        outbound: mpsc::Sender<AgentMessage>,
    },
    /// The session of that attach has ended.
    Detach {
        /// Its attach.
        session: u64,
    },
    /// `BuildOffer` from the control plane.
    Offer(pb::BuildOffer),
    /// `BuildCancel` from the control plane.
    Cancel(pb::BuildCancel),
    /// `BuildAck` from the control plane.
    Ack(pb::BuildAck),
}

/// One event of one attempt's run.
struct Event {
    key: Key,
    /// The start it comes from: a forgotten attempt's task may outlive it.
    id: u64,
    event: RunEvent,
}

/// The owner of every attempt.
pub(super) struct Runner {
    config: BuildPlaneConfig,
    executor: Engine,
    attempts: BTreeMap<Key, Attempt>,
    /// The attached session: its attach number and channel.
    outbound: Option<(u64, mpsc::Sender<AgentMessage>)>,
    next_id: u64,
    /// The attempt the last message was for; the next is looked for after it.
    cursor: Option<Key>,
    events_tx: mpsc::Sender<Event>,
    events: Option<mpsc::Receiver<Event>>,
}

impl Runner {
    /// A runner with no attempt.
    pub(super) fn new(config: BuildPlaneConfig, executor: Engine) -> Self {
        let (events_tx, events) = mpsc::channel(EVENTS);
        Self {
            config,
            executor,
            attempts: BTreeMap::new(),
            outbound: None,
            next_id: 1,
            cursor: None,
            events_tx,
            events: Some(events),
        }
    }

    /// Runs until `shutdown` turns true or every [`Builds`](super::Builds) is gone. Then the
    /// attempts' tasks see the runner go and drop their handles, which kills their steps.
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut events = self.events.take().expect("the runner runs once");
        loop {
            let now = Instant::now();
            self.tick(now);
            let ready = self.outbound.is_some() && self.attempts.values().any(|a| a.has_ready(now));
            let outbound = self
                .outbound
                .as_ref()
                .filter(|_| ready)
                .map(|(_, tx)| tx.clone());
            let wake = self.attempts.values().filter_map(|a| a.wake_at(now)).min();
            // The arms take the time again: `now` may be a long wait old by then, and an ack
            // dated early would shorten the lease.
            tokio::select! {
                biased;
                () = crate::stopped(&mut shutdown) => return,
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command, Instant::now()),
                    None => return,
                },
                // Before the executor's events: a chatty step must not starve the stream
                // (room is only sought when a message is ready, so this starves nothing).
                permit = room(outbound), if ready => match permit {
                    Some(permit) => self.send_one(permit, Instant::now()),
                    None => self.outbound = None,
                },
                Some(event) = events.recv() => self.on_event(event, Instant::now()),
                () = until(wake), if wake.is_some() => {}
            }
        }
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Attach { session, outbound } => {
                tracing::debug!(
                    attempts = self.attempts.len(),
                    "builds attached to a session"
                );
                self.outbound = Some((session, outbound));
                for attempt in self.attempts.values_mut() {
                    attempt.resend(now);
                }
            }
            Command::Detach { session } => {
                if self.outbound.as_ref().is_some_and(|(s, _)| *s == session) {
                    self.outbound = None;
                }
            }
            Command::Offer(offer) => self.on_offer(offer, now),
            Command::Cancel(cancel) => self.on_cancel(cancel),
            Command::Ack(ack) => {
                let key = (ack.run, ack.attempt);
                if let Some(attempt) = self.attempts.get_mut(&key)
                    && attempt.on_ack(ack.logged, ack.finished, now)
                {
                    tracing::debug!(run = %key.0, attempt = key.1, "build attempt stored; forgotten");
                    self.attempts.remove(&key);
                }
            }
        }
    }

    /// Starts an offered attempt, or answers for it if it is already here.
    fn on_offer(&mut self, offer: pb::BuildOffer, now: Instant) {
        let key = (offer.run.clone(), offer.attempt);
        if let Some(attempt) = self.attempts.get_mut(&key) {
            attempt.on_ack(offer.logged, false, now);
            attempt.resend(now);
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let capacity = self.config.capacity.max(1);
        let running = self.attempts.values().filter(|a| a.is_running()).count();
        let attempt = if running >= capacity as usize {
            let why =
                format!("the agent is at capacity: {running} of {capacity} build attempts running");
            Attempt::declined(id, &offer, why, now)
        } else {
            match self.executor.start(to_run_spec(&offer), &self.config.root) {
                Ok(handle) => {
                    let budget = Arc::new(Semaphore::new(BUFFER_BYTES));
                    let canceller = handle.canceller();
                    let events = self.events_tx.clone();
                    tokio::spawn(follow(key.clone(), id, handle, budget.clone(), events));
                    Attempt::started(id, &offer, canceller, budget, now)
                }
                Err(error) => Attempt::refused(id, &offer, error.to_string(), now),
            }
        };
        if attempt.is_running() {
            tracing::info!(run = %key.0, attempt = key.1, "build attempt started");
        } else {
            tracing::warn!(run = %key.0, attempt = key.1, "build attempt refused");
        }
        self.attempts.insert(key, attempt);
    }

    fn on_cancel(&mut self, cancel: pb::BuildCancel) {
        let key = (cancel.run, cancel.attempt);
        let Some(attempt) = self.attempts.get_mut(&key) else {
            tracing::debug!(run = %key.0, attempt = key.1, "cancel for an attempt not here");
            return;
        };
        let reason = match cancel.reason.as_str() {
            "" => "cancelled",
            reason => reason,
        };
        tracing::info!(run = %key.0, attempt = key.1, reason, forget = cancel.forget, "cancelling a build attempt");
        attempt.cancel(Duration::from_secs(cancel.grace_seconds.into()), reason);
        if cancel.forget
            && let Some(attempt) = self.attempts.remove(&key)
        {
            attempt.close();
        }
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        let Some(attempt) = self.attempts.get_mut(&event.key) else {
            return;
        };
        if attempt.id != event.id {
            return;
        }
        if let RunEvent::Finished { phase, message, .. } = &event.event {
            let (run, number) = &event.key;
            tracing::info!(run = %run, attempt = number, phase = phase.as_str(), %message, "build attempt ended");
        }
        attempt.on_event(event.event, now);
    }

    fn tick(&mut self, now: Instant) {
        let grace = self.config.cancel_grace;
        for ((run, number), attempt) in &mut self.attempts {
            if attempt.tick(now, grace) {
                tracing::warn!(run = %run, attempt = number, "no ack from the control plane for the lease; cancelling the build attempt");
            }
        }
    }

    /// Sends the next ready message, looking at the attempts after the last one served.
    fn send_one(&mut self, permit: mpsc::OwnedPermit<AgentMessage>, now: Instant) {
        let ready = |(key, attempt): (&Key, &Attempt)| attempt.has_ready(now).then(|| key.clone());
        let key = match &self.cursor {
            Some(cursor) => self
                .attempts
                .range((Bound::Excluded(cursor.clone()), Bound::Unbounded))
                .chain(self.attempts.range(..=cursor.clone()))
                .find_map(ready),
            None => self.attempts.iter().find_map(ready),
        };
        let Some(key) = key else {
            return;
        };
        if let Some(m) = self
            .attempts
            .get_mut(&key)
            .and_then(|a| a.next_message(now))
        {
            permit.send(message(m));
        }
        self.cursor = Some(key);
    }
}

/// Room for one message in `outbound`; `None` once its session is gone; never without one.
async fn room(
    outbound: Option<mpsc::Sender<AgentMessage>>,
) -> Option<mpsc::OwnedPermit<AgentMessage>> {
    match outbound {
        Some(outbound) => outbound.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// Resolves at `at`; never without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Forwards one attempt's events to the runner until the run has ended. A line waits for
/// room in the attempt's `budget` first (see the `attempt` module on memory). If the runner
/// goes, the handle is dropped, which kills the run.
async fn follow(
    key: Key,
    id: u64,
    mut handle: RunHandle,
    budget: Arc<Semaphore>,
    events: mpsc::Sender<Event>,
) {
    loop {
        let event = tokio::select! {
            event = handle.next() => event,
            () = events.closed() => return,
        };
        let Some(event) = event else {
            return;
        };
        if let RunEvent::Log { step, line, .. } = &event {
            let cost =
                u32::try_from(line_cost(step, line)).expect("a line costs at most the budget");
            tokio::select! {
                // Closed when the attempt is forgotten: then nothing is held any more.
                permit = budget.acquire_many(cost) => if let Ok(permit) = permit {
                    permit.forget();
                },
                () = events.closed() => return,
            }
        }
        let event = Event {
            key: key.clone(),
            id,
            event,
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

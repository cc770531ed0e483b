//! One attempt as the build plane keeps it: its `BuildProgress` snapshot, the log lines the
//! control plane has not acknowledged, how much of them the attached session was sent, and
//! its lease.
//!
//! Invariants: `lines` holds exactly the lines `acked + 1 ..= progress.last_seq`, in order,
//! and `acked <= sent <= progress.last_seq`. A line goes out once per session: `sent` only
//! moves back (to `acked`) when a new session attaches or the control plane offers the
//! attempt again, which are the two times the control plane may have missed lines.
//!
//! Memory: lines are held until acknowledged, at most [`BUFFER_BYTES`] of them per attempt
//! (each counted by [`line_cost`] against the attempt's budget). Past that, the attempt's
//! task stops taking lines from the executor, so the step blocks writing its output while
//! its timeout and cancels still fire, until acks make room. Nothing is dropped: a control
//! plane that is away long enough for that has let the lease run out, and the attempt is
//! cancelled and ends once its lines are stored.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use troupe_common::pb::v1alpha1::{self as pb, agent_message};
use troupe_common::timestamp;

use crate::builds::{Canceller, Phase, RunEvent};

/// The phase of an attempt that has not ended, as `BuildProgress` spells it.
pub(super) const RUNNING: &str = "Running";

/// The phase of an attempt the agent had no room for: not run, not counted against the run.
pub(super) const REFUSED: &str = "Refused";

/// Most lines in one `BuildLogs`.
pub(super) const BATCH_LINES: usize = 256;
/// Most bytes of lines in one `BuildLogs`, well under the 4 MiB message limit.
const BATCH_BYTES: usize = 1024 * 1024;
/// How long a line may wait for others to share its `BuildLogs`.
pub(super) const BATCH_WAIT: Duration = Duration::from_millis(50);
/// Unacknowledged lines held per attempt, in [`line_cost`] bytes.
pub(super) const BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// What a held line costs beyond its text and step name: sequence, stream, time, queue slot.
const LINE_OVERHEAD: usize = 64;
/// The lease of an offer that names none.
const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// The shortest time between two renewals.
const MIN_RENEWAL: Duration = Duration::from_secs(1);

/// What one held line counts against its attempt's budget (never more than all of it).
pub(super) fn line_cost(step: &str, text: &str) -> usize {
    (step.len() + text.len() + LINE_OVERHEAD).min(BUFFER_BYTES)
}

/// One attempt of a run, running or ended.
pub(super) struct Attempt {
    /// Which start of the executor this attempt's events come from.
    pub(super) id: u64,
    progress: pb::BuildProgress,
    lines: VecDeque<pb::BuildLogLine>,
    /// Every line up to this one is stored by the control plane.
    acked: u64,
    /// Every line up to this one went to the attached session.
    sent: u64,
    /// When the unsent lines go out even if no more come.
    flush_at: Option<Instant>,
    /// The snapshot is to go out (it changed, a renewal is due, or a session attached).
    progress_due: bool,
    lease: Duration,
    last_ack: Instant,
    renew_at: Instant,
    lease_lost: bool,
    /// Set while the executor runs the attempt.
    canceller: Option<Canceller>,
    /// Why it was cancelled, said before the executor's message when it ends `Cancelled`.
    cancel_reason: Option<String>,
    /// What the attempt's task may still take of the executor's lines, in [`line_cost`] bytes.
    budget: Arc<Semaphore>,
}

impl Attempt {
    /// An attempt the executor has just started.
    pub(super) fn started(
        id: u64,
        offer: &pb::BuildOffer,
        canceller: Canceller,
        budget: Arc<Semaphore>,
        now: Instant,
    ) -> Self {
        let mut attempt = Self::new(id, offer, RUNNING, String::new(), budget, now);
        attempt.canceller = Some(canceller);
        attempt
    }

    /// An attempt refused before anything ran: it has ended `Failed`, saying why.
    pub(super) fn refused(id: u64, offer: &pb::BuildOffer, why: String, now: Instant) -> Self {
        let budget = Arc::new(Semaphore::new(0));
        Self::new(id, offer, Phase::Failed.as_str(), why, budget, now)
    }

    /// An attempt not started because the agent is at capacity: it has ended `Refused`,
    /// which the control plane does not count against the run (it offers the run again).
    pub(super) fn declined(id: u64, offer: &pb::BuildOffer, why: String, now: Instant) -> Self {
        let budget = Arc::new(Semaphore::new(0));
        Self::new(id, offer, REFUSED, why, budget, now)
    }

    fn new(
        id: u64,
        offer: &pb::BuildOffer,
        phase: &str,
        message: String,
        budget: Arc<Semaphore>,
        now: Instant,
    ) -> Self {
        let lease = match offer.lease_seconds {
            0 => DEFAULT_LEASE,
            seconds => Duration::from_secs(u64::from(seconds)),
        };
        Self {
            id,
            progress: pb::BuildProgress {
                run: offer.run.clone(),
                attempt: offer.attempt,
                phase: phase.into(),
                message,
                ..Default::default()
            },
            lines: VecDeque::new(),
            acked: 0,
            sent: 0,
            flush_at: None,
            progress_due: true,
            lease,
            last_ack: now,
            renew_at: now + renewal(lease),
            lease_lost: false,
            canceller: None,
            cancel_reason: None,
            budget,
        }
    }

    /// Whether the executor still runs it (what counts against the capacity).
    pub(super) fn is_running(&self) -> bool {
        self.canceller.is_some()
    }

    /// Takes one event of the executor.
    pub(super) fn on_event(&mut self, event: RunEvent, now: Instant) {
        match event {
            RunEvent::StepStarted { step, at } => {
                self.progress.steps.push(pb::WorkflowRunTask {
                    name: step,
                    phase: RUNNING.into(),
                    started_at: Some(timestamp::at(at)),
                    ..Default::default()
                });
                self.progress_due = true;
            }
            RunEvent::Log {
                seq,
                step,
                stream,
                line,
                at,
            } => {
                if self.unsent() == 0 {
                    self.flush_at = Some(now + BATCH_WAIT);
                }
                self.progress.last_seq = seq;
                self.lines.push_back(pb::BuildLogLine {
                    seq,
                    step,
                    stream: stream.as_str().into(),
                    text: line,
                    time: Some(timestamp::at(at)),
                });
            }
            RunEvent::StepFinished {
                step,
                phase,
                exit_code,
                message,
                at,
            } => {
                if let Some(task) = self
                    .progress
                    .steps
                    .iter_mut()
                    .rev()
                    .find(|t| t.name == step)
                {
                    task.phase = phase.as_str().into();
                    task.completed_at = Some(timestamp::at(at));
                    task.message = message;
                    task.exit_code = exit_code;
                }
                self.progress_due = true;
            }
            RunEvent::Finished {
                phase,
                outputs,
                message,
            } => {
                self.canceller = None;
                self.progress.phase = phase.as_str().into();
                self.progress.outputs = outputs.into_iter().collect();
                self.progress.message = match (&self.cancel_reason, phase) {
                    (Some(reason), Phase::Cancelled) => format!("{reason}: {message}"),
                    _ => message,
                };
                self.progress_due = true;
            }
        }
    }

    /// Takes an ack (or an offer's `logged`): drops the lines stored, renews the lease.
    /// True when the attempt may be forgotten: it has ended, the control plane says it
    /// stored that (`finished`), and it holds every line.
    pub(super) fn on_ack(&mut self, logged: u64, finished: bool, now: Instant) -> bool {
        self.last_ack = now;
        let logged = logged.min(self.progress.last_seq);
        let mut released = 0;
        while self.lines.front().is_some_and(|line| line.seq <= logged) {
            let line = self.lines.pop_front().expect("a front line");
            released += line_cost(&line.step, &line.text);
        }
        self.budget.add_permits(released);
        self.acked = self.acked.max(logged);
        self.sent = self.sent.max(self.acked);
        if self.unsent() == 0 {
            self.flush_at = None;
        }
        finished && !self.is_running() && self.lines.is_empty()
    }

    /// Sends the snapshot and every unacknowledged line again: a new session, or the control
    /// plane offered the attempt again.
    pub(super) fn resend(&mut self, now: Instant) {
        self.sent = self.acked;
        self.progress_due = true;
        self.flush_at = (self.unsent() > 0).then_some(now);
    }

    /// Cancels it if it runs; the first reason given is the one reported.
    pub(super) fn cancel(&mut self, grace: Duration, reason: &str) {
        if let Some(canceller) = &self.canceller {
            canceller.cancel(grace);
            self.cancel_reason.get_or_insert_with(|| reason.to_string());
        }
    }

    /// Lets the executor's task go on without waiting for room: the attempt is being dropped.
    pub(super) fn close(&self) {
        self.budget.close();
    }

    /// Renews and checks the lease: a renewal due marks the snapshot to go out again (an
    /// ended attempt's too, until the control plane says it stored the end: each progress
    /// asks for an ack); a running attempt that heard no ack for its lease cancels itself
    /// with `grace`. True when the lease was lost just now.
    pub(super) fn tick(&mut self, now: Instant, grace: Duration) -> bool {
        if now >= self.renew_at {
            self.progress_due = true;
            self.renew_at = now + renewal(self.lease);
        }
        if self.is_running() && !self.lease_lost && now >= self.last_ack + self.lease {
            self.lease_lost = true;
            self.cancel(grace, "the lease was lost");
            return true;
        }
        false
    }

    /// The next instant after `now` at which [`Attempt::tick`] or a flush has work.
    pub(super) fn wake_at(&self, now: Instant) -> Option<Instant> {
        let lease = (self.is_running() && !self.lease_lost).then(|| self.last_ack + self.lease);
        [self.flush_at, Some(self.renew_at), lease]
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .min()
    }

    /// Whether a message is ready to go out.
    pub(super) fn has_ready(&self, now: Instant) -> bool {
        self.progress_due || self.lines_ready(now)
    }

    /// The next message for the attached session, if one is ready. While the attempt runs
    /// the snapshot goes first (an offer is answered at once); once it has ended, its lines
    /// go before it, so that the control plane holds them when it learns the end.
    pub(super) fn next_message(&mut self, now: Instant) -> Option<agent_message::Message> {
        let lines_first = !self.is_running() || !self.progress_due;
        if lines_first && self.unsent() > 0 && (self.progress_due || self.lines_ready(now)) {
            return Some(agent_message::Message::BuildLogs(self.batch()));
        }
        if self.progress_due {
            self.progress_due = false;
            self.renew_at = now + renewal(self.lease);
            return Some(agent_message::Message::BuildProgress(self.progress.clone()));
        }
        None
    }

    fn lines_ready(&self, now: Instant) -> bool {
        let unsent = self.unsent();
        unsent >= BATCH_LINES as u64 || (unsent > 0 && self.flush_at.is_some_and(|at| at <= now))
    }

    fn unsent(&self) -> u64 {
        self.progress.last_seq - self.sent
    }

    /// The next unsent lines, up to a batch; the rest, if any, keeps the flush time of the
    /// first line that waited (it goes at once if it is a batch itself).
    fn batch(&mut self) -> pb::BuildLogs {
        let first = (self.sent - self.acked) as usize;
        let mut lines = Vec::new();
        let mut bytes = 0;
        for line in self.lines.range(first..).take(BATCH_LINES) {
            bytes += line_cost(&line.step, &line.text);
            // The first line goes whatever its size: lines are bounded by the executor.
            if bytes > BATCH_BYTES && !lines.is_empty() {
                break;
            }
            lines.push(line.clone());
        }
        self.sent += lines.len() as u64;
        if self.unsent() == 0 {
            self.flush_at = None;
        }
        pb::BuildLogs {
            run: self.progress.run.clone(),
            attempt: self.progress.attempt,
            lines,
        }
    }
}

/// How often an attempt's progress goes out again while nothing changes.
fn renewal(lease: Duration) -> Duration {
    (lease / 3).max(MIN_RENEWAL)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::builds::LogStream;

    fn mk_attempt(now: Instant) -> Attempt {
        let offer = pb::BuildOffer {
            run: "acme/api-1".into(),
            attempt: 1,
            lease_seconds: 30,
            ..Default::default()
        };
        Attempt::refused(1, &offer, "refused".into(), now)
    }

    fn mk_line(seq: u64) -> RunEvent {
        RunEvent::Log {
            seq,
            step: "build".into(),
            stream: LogStream::Stdout,
            line: format!("line {seq}"),
            at: SystemTime::now(),
        }
    }

    fn seqs(message: Option<agent_message::Message>) -> Vec<u64> {
        match message {
            Some(agent_message::Message::BuildLogs(logs)) => {
                logs.lines.iter().map(|l| l.seq).collect()
            }
            other => panic!("expected lines, got {other:?}"),
        }
    }

    #[test]
    fn lines_wait_for_company_then_go_once_and_again_only_after_a_resend() {
        let now = Instant::now();
        let mut attempt = mk_attempt(now);
        assert!(matches!(
            attempt.next_message(now),
            Some(agent_message::Message::BuildProgress(_))
        ));
        for seq in 1..=3 {
            attempt.on_event(mk_line(seq), now);
        }
        assert!(!attempt.has_ready(now), "lines wait for a batch");
        let later = now + BATCH_WAIT;
        assert_eq!(seqs(attempt.next_message(later)), [1, 2, 3]);
        assert!(attempt.next_message(later).is_none(), "never twice");
        assert!(!attempt.on_ack(2, true, later), "line 3 is not stored yet");
        attempt.resend(later);
        assert_eq!(seqs(attempt.next_message(later)), [3]);
        assert!(
            attempt.on_ack(3, true, later),
            "ended, stored, every line held"
        );
    }

    #[test]
    fn a_full_batch_goes_at_once_and_the_rest_follows() {
        let now = Instant::now();
        let mut attempt = mk_attempt(now);
        attempt.next_message(now);
        for seq in 1..=(BATCH_LINES as u64 + 1) {
            attempt.on_event(mk_line(seq), now);
        }
        assert_eq!(seqs(attempt.next_message(now)).len(), BATCH_LINES);
        assert!(
            attempt.next_message(now).is_none(),
            "one line waits for company"
        );
        let later = now + BATCH_WAIT;
        assert_eq!(seqs(attempt.next_message(later)), [BATCH_LINES as u64 + 1]);
    }

    #[test]
    fn renewals_come_every_third_of_the_lease() {
        let now = Instant::now();
        let mut attempt = mk_attempt(now);
        attempt.next_message(now);
        assert_eq!(attempt.wake_at(now), Some(now + Duration::from_secs(10)));
        attempt.tick(now + Duration::from_secs(10), Duration::ZERO);
        assert!(attempt.has_ready(now + Duration::from_secs(10)));
    }
}

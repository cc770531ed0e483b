//! The build plane with real processes (`/bin/sh` scripts through the `process` executor),
//! its session side driven through the same channel a session attaches. No fixed sleeps:
//! scripts wait for gate files the tests create, and every wait has a bound only a broken
//! build plane reaches.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use troupe_common::pb::v1alpha1::{self as pb, AgentMessage, agent_message};

use crate::builds::tests::{PATIENCE, gone, poll};
use crate::builds::{Attached, BuildPlaneConfig, Builds};

/// A build plane over a scratch directory (scripts, gate files, pid files, work dirs).
struct Plane {
    dir: TempDir,
    builds: Builds,
    _stop: watch::Sender<bool>,
}

/// One attached session: what the build plane sends it.
struct Session {
    _attached: Attached,
    rx: mpsc::Receiver<AgentMessage>,
}

impl Plane {
    fn start(capacity: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BuildPlaneConfig::new(dir.path().join("builds"));
        config.capacity = capacity;
        config.cancel_grace = Duration::from_secs(1);
        let (stop, stopping) = watch::channel(false);
        let builds = Builds::spawn(config, stopping);
        Self {
            dir,
            builds,
            _stop: stop,
        }
    }

    fn attach(&self) -> Session {
        let (tx, rx) = mpsc::channel(8);
        Session {
            _attached: self.builds.attach(tx),
            rx,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A step running the shell script `body`; `$OUT` names the scratch directory and
    /// `gate NAME` waits until the test creates `$OUT/NAME`.
    fn step(&self, name: &str, body: &str) -> pb::BuildStep {
        let script = self.path(&format!("{name}.sh"));
        let gate = "gate() { while [ ! -e \"$OUT/$1\" ]; do sleep 0.02; done; }";
        fs::write(&script, format!("#!/bin/sh\n{gate}\n{body}\n")).unwrap();
        pb::BuildStep {
            name: name.into(),
            command: vec!["/bin/sh".into(), script.display().to_string()],
            env: [("OUT".to_string(), self.dir.path().display().to_string())].into(),
            ..Default::default()
        }
    }

    fn open(&self, gate: &str) {
        fs::write(self.path(gate), "").unwrap();
    }

    /// The pid a script wrote to `name`, once it is there.
    async fn pid(&self, name: &str) -> i32 {
        let path = self.path(name);
        poll(|| fs::read_to_string(&path).ok()?.trim().parse().ok())
            .await
            .unwrap_or_else(|| panic!("the script wrote no pid to {name}"))
    }
}

fn mk_offer(run: &str, steps: Vec<pb::BuildStep>) -> pb::BuildOffer {
    pb::BuildOffer {
        run: run.into(),
        attempt: 1,
        steps,
        lease_seconds: 30,
        ..Default::default()
    }
}

fn mk_ack(run: &str, logged: u64, finished: bool) -> pb::BuildAck {
    pb::BuildAck {
        run: run.into(),
        attempt: 1,
        logged,
        finished,
    }
}

/// What a session received, in order.
#[derive(Default)]
struct Seen {
    progress: Vec<pb::BuildProgress>,
    lines: Vec<pb::BuildLogLine>,
}

impl Seen {
    fn seqs(&self) -> Vec<u64> {
        self.lines.iter().map(|l| l.seq).collect()
    }

    fn texts(&self) -> Vec<&str> {
        self.lines.iter().map(|l| l.text.as_str()).collect()
    }
}

impl Session {
    async fn next(&mut self) -> agent_message::Message {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("a message in time")
            .expect("the build plane is up")
            .message
            .expect("a message")
    }

    /// Everything about `run` until `done` holds of what was seen; messages about other runs
    /// go to `others`.
    async fn until(
        &mut self,
        run: &str,
        others: &mut Vec<agent_message::Message>,
        done: impl Fn(&Seen) -> bool,
    ) -> Seen {
        let mut seen = Seen::default();
        while !done(&seen) {
            match self.next().await {
                agent_message::Message::BuildProgress(p) if p.run == run => seen.progress.push(p),
                agent_message::Message::BuildLogs(l) if l.run == run => seen.lines.extend(l.lines),
                other => others.push(other),
            }
        }
        seen
    }

    /// Messages about `run` until its progress has phase `phase`, and those about others.
    async fn until_phase(&mut self, run: &str, phase: &str) -> (Seen, Vec<agent_message::Message>) {
        let mut others = Vec::new();
        let seen = self
            .until(run, &mut others, |s| {
                s.progress.last().is_some_and(|p| p.phase == phase)
            })
            .await;
        (seen, others)
    }
}

fn last(seen: &Seen) -> &pb::BuildProgress {
    seen.progress.last().expect("a progress")
}

#[tokio::test]
async fn an_offer_runs_its_steps_reports_them_and_is_forgotten_once_stored() {
    let plane = Plane::start(2);
    let mut session = plane.attach();
    let compile = plane.step("compile", "echo one\necho two >&2\necho three\ngate go");
    let mut publish = plane.step(
        "publish",
        "echo \"image=registry.local/app:$COMMIT\" >> \"$TROUPE_OUTPUTS\"\necho published",
    );
    publish.env.insert("COMMIT".into(), "abc123".into());
    let mut offer = mk_offer("acme/app-1", vec![compile, publish]);
    offer.outputs = vec!["image".into()];
    plane.builds.offer(offer);

    let first = session.next().await;
    let agent_message::Message::BuildProgress(first) = first else {
        panic!("a Running progress first, got {first:?}");
    };
    assert_eq!(
        (first.run.as_str(), first.attempt, first.phase.as_str()),
        ("acme/app-1", 1, "Running")
    );
    // The first step waits at its gate: its start and its three lines come out meanwhile.
    let mut others = Vec::new();
    let running = session
        .until("acme/app-1", &mut others, |s| {
            s.lines.len() == 3 && s.progress.iter().any(|p| p.steps.len() == 1)
        })
        .await;
    let step = &running.progress.last().unwrap().steps[0];
    assert_eq!(
        (step.name.as_str(), step.phase.as_str()),
        ("compile", "Running")
    );
    assert!(step.started_at.is_some() && step.completed_at.is_none());
    plane.open("go");
    let (rest, _) = session.until_phase("acme/app-1", "Succeeded").await;

    let lines: Vec<_> = running.lines.iter().chain(&rest.lines).collect();
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "every line once, in order");
    let said: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| (l.step.as_str(), l.stream.as_str(), l.text.as_str()))
        .collect();
    assert!(said.contains(&("compile", "stderr", "two")), "{said:?}");
    assert_eq!(said[3], ("publish", "stdout", "published"));
    let end = last(&rest);
    assert_eq!(end.last_seq, 4);
    assert_eq!(end.outputs["image"], "registry.local/app:abc123");
    assert_eq!(end.message, "2 steps succeeded");
    let steps: Vec<(&str, &str, Option<i32>)> = end
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.phase.as_str(), s.exit_code))
        .collect();
    assert_eq!(
        steps,
        [
            ("compile", "Succeeded", Some(0)),
            ("publish", "Succeeded", Some(0))
        ]
    );
    assert!(
        end.steps
            .iter()
            .all(|s| s.started_at.is_some() && s.completed_at.is_some())
    );

    // Stored: forgotten. A new session hears nothing of it, only of the next run.
    plane.builds.ack(mk_ack("acme/app-1", 4, true));
    drop(session);
    let mut session = plane.attach();
    plane
        .builds
        .offer(mk_offer("acme/app-2", vec![plane.step("quick", "true")]));
    let (_, others) = session.until_phase("acme/app-2", "Succeeded").await;
    assert!(
        others.is_empty(),
        "nothing about the stored attempt: {others:?}"
    );
}

#[tokio::test]
async fn after_a_reconnect_only_unacknowledged_lines_are_sent_again_each_once() {
    let plane = Plane::start(2);
    let mut first = plane.attach();
    let body = "for i in 1 2 3 4 5; do echo \"early $i\"; done\ngate go\nfor i in 6 7 8; do echo \"late $i\"; done";
    plane
        .builds
        .offer(mk_offer("acme/logs-1", vec![plane.step("chatty", body)]));
    let mut others = Vec::new();
    let before = first
        .until("acme/logs-1", &mut others, |s| s.lines.len() >= 5)
        .await;
    assert_eq!(before.seqs(), [1, 2, 3, 4, 5]);

    // The control plane stored three lines; then the stream drops and another opens.
    plane.builds.ack(mk_ack("acme/logs-1", 3, false));
    drop(first);
    let mut second = plane.attach();
    let resent = second
        .until("acme/logs-1", &mut others, |s| {
            s.lines.len() >= 2 && !s.progress.is_empty()
        })
        .await;
    assert_eq!(resent.texts(), ["early 4", "early 5"]);
    assert_eq!(last(&resent).phase, "Running");
    plane.open("go");
    let (after, _) = second.until_phase("acme/logs-1", "Succeeded").await;
    let mut all = resent.seqs();
    all.extend(after.seqs());
    assert_eq!(
        all,
        [4, 5, 6, 7, 8],
        "unacknowledged lines once each, then the rest"
    );
    assert_eq!(last(&after).last_seq, 8);
    assert!(others.is_empty(), "{others:?}");
}

#[tokio::test]
async fn a_cancel_stops_a_step_that_ignores_sigterm_once_its_grace_is_over() {
    let plane = Plane::start(2);
    let mut session = plane.attach();
    let body = "trap '' TERM\necho $$ > \"$OUT/pid\"\necho started\nsleep 1000";
    plane
        .builds
        .offer(mk_offer("acme/cancel-1", vec![plane.step("forever", body)]));
    let mut others = Vec::new();
    session
        .until("acme/cancel-1", &mut others, |s| !s.lines.is_empty())
        .await;
    let pid = plane.pid("pid").await;
    let cancelled = Instant::now();
    plane.builds.cancel(pb::BuildCancel {
        run: "acme/cancel-1".into(),
        attempt: 1,
        grace_seconds: 1,
        reason: "cancelled by alice".into(),
        forget: false,
    });
    let (seen, _) = session.until_phase("acme/cancel-1", "Cancelled").await;
    assert!(gone(pid).await, "the step's process is gone");
    let took = cancelled.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "SIGKILL once the grace of 1s was over, not before and not much later: {took:?}"
    );
    let end = last(&seen);
    assert!(
        end.message
            .starts_with("cancelled by alice: step \"forever\" was cancelled"),
        "{}",
        end.message
    );
    assert_eq!(end.steps[0].phase, "Cancelled");
}

#[tokio::test]
async fn an_attempt_whose_acks_stop_loses_its_lease_and_reports_its_end_on_the_next_stream() {
    let plane = Plane::start(2);
    let mut session = plane.attach();
    let body = "echo $$ > \"$OUT/pid\"\nsleep 1000";
    let mut offer = mk_offer("acme/lease-1", vec![plane.step("forever", body)]);
    offer.lease_seconds = 3;
    plane.builds.offer(offer);
    let pid = plane.pid("pid").await;

    // Acked, the attempt renews (every second) past its lease of 3 s and keeps running.
    let started = Instant::now();
    let mut renewals = 0;
    while started.elapsed() < Duration::from_secs(4) {
        if let agent_message::Message::BuildProgress(p) = session.next().await {
            assert_eq!(p.phase, "Running", "{}", p.message);
            plane.builds.ack(mk_ack("acme/lease-1", p.last_seq, false));
            renewals += 1;
        }
    }
    assert!(renewals >= 4, "renewed {renewals} times in 4 s");
    assert!(!gone_now(pid), "acked, the attempt runs on");

    // No more acks (the stream is gone): it stops itself, and says so on the next stream.
    drop(session);
    assert!(
        gone(pid).await,
        "the lease ran out and the step was stopped"
    );
    let mut next = plane.attach();
    let (seen, _) = next.until_phase("acme/lease-1", "Cancelled").await;
    let end = last(&seen);
    assert!(
        end.message.starts_with("the lease was lost: "),
        "{}",
        end.message
    );
}

/// Whether `pid` is already gone, without waiting.
fn gone_now(pid: i32) -> bool {
    !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn forget_stops_an_attempt_and_drops_it_without_a_word() {
    let plane = Plane::start(2);
    let mut session = plane.attach();
    let body = "echo $$ > \"$OUT/pid\"\necho started\nsleep 1000";
    plane
        .builds
        .offer(mk_offer("acme/lost-1", vec![plane.step("forever", body)]));
    let mut others = Vec::new();
    session
        .until("acme/lost-1", &mut others, |s| !s.lines.is_empty())
        .await;
    let pid = plane.pid("pid").await;
    plane.builds.cancel(pb::BuildCancel {
        run: "acme/lost-1".into(),
        attempt: 1,
        grace_seconds: 0,
        reason: "the lease was lost".into(),
        forget: true,
    });
    assert!(gone(pid).await, "the step's process is gone");

    // No end of it on this stream (only what went out before the cancel, if anything), and
    // nothing at all on the next one, which would resend everything the agent keeps.
    plane
        .builds
        .offer(mk_offer("acme/next-1", vec![plane.step("quick", "true")]));
    let (_, others) = session.until_phase("acme/next-1", "Succeeded").await;
    for other in &others {
        if let agent_message::Message::BuildProgress(p) = other {
            assert_eq!(p.phase, "Running", "the forgotten attempt reported: {p:?}");
        }
    }
    plane.builds.ack(mk_ack("acme/next-1", 0, true));
    drop(session);
    let mut next = plane.attach();
    plane
        .builds
        .offer(mk_offer("acme/next-2", vec![plane.step("quick2", "true")]));
    let (_, others) = next.until_phase("acme/next-2", "Succeeded").await;
    assert!(
        others.is_empty(),
        "nothing about the forgotten attempt: {others:?}"
    );
}

#[tokio::test]
async fn a_duplicate_offer_starts_nothing_and_resends_what_follows_logged() {
    let plane = Plane::start(2);
    let mut session = plane.attach();
    let body = "echo started >> \"$OUT/starts\"\necho one\necho two\ngate go";
    let offer = mk_offer("acme/dup-1", vec![plane.step("once", body)]);
    plane.builds.offer(offer.clone());
    let mut others = Vec::new();
    let before = session
        .until("acme/dup-1", &mut others, |s| s.lines.len() >= 2)
        .await;
    assert_eq!(before.texts(), ["one", "two"]);

    // The control plane offers it again, holding line 1: progress and line 2 come again.
    plane.builds.offer(pb::BuildOffer { logged: 1, ..offer });
    let again = session
        .until("acme/dup-1", &mut others, |s| {
            !s.lines.is_empty() && !s.progress.is_empty()
        })
        .await;
    assert_eq!(again.texts(), ["two"]);
    assert_eq!(last(&again).phase, "Running");
    plane.open("go");
    let (end, _) = session.until_phase("acme/dup-1", "Succeeded").await;
    assert!(end.lines.is_empty(), "no line twice: {:?}", end.texts());
    let starts = fs::read_to_string(plane.path("starts")).unwrap();
    assert_eq!(starts.lines().count(), 1, "one process started");
    assert!(others.is_empty(), "{others:?}");
}

#[tokio::test]
async fn offers_beyond_capacity_are_refused_and_those_it_cannot_run_fail_saying_why() {
    let plane = Plane::start(1);
    let mut session = plane.attach();
    plane
        .builds
        .offer(mk_offer("acme/busy-1", vec![plane.step("wait", "gate go")]));
    session.until_phase("acme/busy-1", "Running").await;

    plane
        .builds
        .offer(mk_offer("acme/busy-2", vec![plane.step("quick", "true")]));
    let (full, _) = session.until_phase("acme/busy-2", "Refused").await;
    assert_eq!(
        last(&full).message,
        "the agent is at capacity: 1 of 1 build attempts running"
    );

    plane.open("go");
    session.until_phase("acme/busy-1", "Succeeded").await;
    let no_command = pb::BuildStep {
        name: "empty".into(),
        ..Default::default()
    };
    plane.builds.offer(mk_offer("acme/bad-1", vec![no_command]));
    let (refused, _) = session.until_phase("acme/bad-1", "Failed").await;
    let message = &last(&refused).message;
    assert!(
        message.contains("step \"empty\": the step has no command"),
        "{message}"
    );
    assert!(last(&refused).steps.is_empty(), "nothing ran");
}

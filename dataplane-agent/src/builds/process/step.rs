//! One step of a run: its process group, its output, the cancel and timeouts that may stop
//! it, and how it ended.
//!
//! The loop in [`Run::watch`] never blocks on any one thing: a line waits for the caller to
//! take it while timeouts and cancels still fire, and the step's process is reaped as soon as
//! it exits. Lines are read from both pipes by two tasks and numbered here, in the order they
//! arrive, so the sequence is one across the attempt.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Run, show};
use crate::builds::event::{LogStream, Phase, RunEvent};
use crate::builds::group::Group;
use crate::builds::lines::{self, Line};
use crate::builds::spec::StepSpec;

/// Lines read but not yet numbered, at most.
const LINES: usize = 64;

/// How long a step's output is still read after its process group was killed. Only a process
/// that left the group (`setsid`) can keep a pipe open that long.
const DRAIN: Duration = Duration::from_secs(5);

/// How a step ended.
pub(super) struct StepEnd {
    pub(super) phase: Phase,
    pub(super) exit_code: Option<i32>,
    pub(super) message: String,
}

impl StepEnd {
    fn failed(message: String) -> Self {
        Self {
            phase: Phase::Failed,
            exit_code: None,
            message,
        }
    }
}

/// A step being stopped, and why.
struct Stop {
    phase: Phase,
    why: String,
    /// When the group gets SIGKILL if its leader has not exited.
    kill_at: Instant,
    killed: bool,
}

/// When a step must be stopped, and what to say then.
type Deadline = (Instant, String);

impl Run {
    /// Runs step `index` to its end; `None` if the handle was dropped meanwhile (the group is
    /// killed then, as it is dropped).
    pub(super) async fn step(
        &mut self,
        index: usize,
        run_deadline: Option<(Instant, Duration)>,
    ) -> Option<StepEnd> {
        let step = self.spec.steps[index].clone();
        let cwd = match &step.working_dir {
            Some(dir) => self.dir.work().join(dir),
            None => self.dir.work().to_path_buf(),
        };
        if !cwd.is_dir() {
            let dir = step.working_dir.unwrap_or_default();
            return Some(StepEnd::failed(format!(
                "could not start: its working directory {dir:?} does not exist"
            )));
        }
        let mut child = match self.command(&step, &cwd).spawn() {
            Ok(child) => child,
            Err(e) => {
                let program = &step.command[0];
                return Some(StepEnd::failed(format!("could not start {program:?}: {e}")));
            }
        };
        let Some(mut group) = child.id().and_then(Group::led_by) else {
            return Some(StepEnd::failed("its process has no id".into()));
        };
        let (line_tx, lines) = mpsc::channel(LINES);
        let (stop_reading, reading) = watch::channel(None);
        // Dropping the set aborts the readers, whatever way this returns.
        let mut readers = JoinSet::new();
        let max = self.config.max_line_bytes;
        if let Some(out) = child.stdout.take() {
            let forward = lines::forward(
                out,
                LogStream::Stdout,
                max,
                line_tx.clone(),
                reading.clone(),
            );
            readers.spawn(forward);
        }
        if let Some(err) = child.stderr.take() {
            readers.spawn(lines::forward(
                err,
                LogStream::Stderr,
                max,
                line_tx,
                reading,
            ));
        }
        let deadline = deadline(&step, run_deadline);
        let watched = Watched {
            name: step.name,
            child,
            lines,
            stop_reading,
            deadline,
        };
        self.watch(watched, &mut group).await
    }

    /// The step's process: argv as given, clean environment, own process group.
    fn command(&self, step: &StepSpec, cwd: &Path) -> Command {
        let program = &step.command[0];
        // A relative path is taken from the step's directory, not from wherever the agent runs.
        let program = if program.contains('/') {
            cwd.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut command = Command::new(program);
        command
            .args(&step.command[1..])
            .env_clear()
            .env("PATH", &self.config.path)
            .env("HOME", self.dir.work())
            .envs(step.env.iter().map(|(name, value)| (name, value)))
            .env("TROUPE_RUN", &self.spec.run)
            .env("TROUPE_ATTEMPT", self.spec.attempt.to_string())
            .env("TROUPE_STEP", &step.name)
            .env("TROUPE_OUTPUTS", self.dir.outputs())
            .env("TROUPE_WORKSPACE", self.dir.work())
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        command
    }

    /// Follows a started step until its process has exited and its output is all handed over.
    async fn watch(&mut self, mut step: Watched, group: &mut Group) -> Option<StepEnd> {
        let mut stop: Option<Stop> = None;
        let mut exit = None;
        let mut pending: Option<Line> = None;
        let mut lines_open = true;
        let mut cancel_open = true;
        while exit.is_none() || lines_open || pending.is_some() {
            let running = exit.is_none();
            let timeout_at = step
                .deadline
                .as_ref()
                .map(|d| d.0)
                .filter(|_| stop.is_none());
            let kill_at = stop
                .as_ref()
                .filter(|s| running && !s.killed)
                .map(|s| s.kill_at);
            tokio::select! {
                biased;
                () = self.events.closed() => return None,
                changed = self.cancel.changed(), if cancel_open => {
                    let kill_at = *self.cancel.borrow_and_update();
                    match (changed, kill_at) {
                        (Err(_), _) => cancel_open = false,
                        (Ok(()), Some(at)) if running => {
                            stopping(&mut stop, group, Phase::Cancelled, "was cancelled", at);
                        }
                        (Ok(()), _) => {}
                    }
                }
                () = until(timeout_at), if running && timeout_at.is_some() => {
                    let why = step.deadline.take().map(|d| d.1).unwrap_or_default();
                    let kill_at = Instant::now() + self.config.timeout_grace;
                    stopping(&mut stop, group, Phase::TimedOut, &why, kill_at);
                }
                () = until(kill_at), if kill_at.is_some() => {
                    group.kill();
                    if let Some(stop) = &mut stop {
                        stop.killed = true;
                    }
                }
                status = step.child.wait(), if running => {
                    // Reaped: what is left of the group goes now, before its number can be reused.
                    group.kill_and_disarm();
                    exit = Some(status);
                    step.stop_reading.send_replace(Some(Instant::now() + DRAIN));
                }
                permit = self.events.reserve(), if pending.is_some() => {
                    let (Ok(permit), Some(line)) = (permit, pending.take()) else { return None };
                    self.seq += 1;
                    permit.send(RunEvent::Log {
                        seq: self.seq,
                        step: step.name.clone(),
                        stream: line.stream,
                        line: line.text,
                        at: line.at,
                    });
                }
                line = step.lines.recv(), if pending.is_none() && lines_open => match line {
                    Some(line) => pending = Some(line),
                    None => lines_open = false,
                },
            }
        }
        exit.map(|status| ended(status, stop))
    }
}

/// A started step, as [`Run::watch`] follows it.
struct Watched {
    name: String,
    child: Child,
    lines: mpsc::Receiver<Line>,
    stop_reading: watch::Sender<Option<Instant>>,
    deadline: Option<Deadline>,
}

/// Starts stopping the step (SIGTERM to the group), or brings an earlier kill forward.
fn stopping(stop: &mut Option<Stop>, group: &Group, phase: Phase, why: &str, kill_at: Instant) {
    match stop {
        Some(stop) => stop.kill_at = stop.kill_at.min(kill_at),
        None => {
            group.terminate();
            *stop = Some(Stop {
                phase,
                why: why.to_string(),
                kill_at,
                killed: false,
            });
        }
    }
}

/// The earlier of the step's own timeout and the run's.
fn deadline(step: &StepSpec, run: Option<(Instant, Duration)>) -> Option<Deadline> {
    let own = step.timeout.map(|t| {
        (
            Instant::now() + t,
            format!("went over its timeout of {}", show(t)),
        )
    });
    let run = run.map(|(at, t)| (at, format!("went over the run's timeout of {}", show(t))));
    match (own, run) {
        (Some(own), Some(run)) => Some(if own.0 <= run.0 { own } else { run }),
        (own, run) => own.or(run),
    }
}

/// Resolves at `at`; never without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How a step ended, from its exit status and whether it was being stopped.
fn ended(status: io::Result<ExitStatus>, stop: Option<Stop>) -> StepEnd {
    let exit_code = status.as_ref().ok().and_then(ExitStatus::code);
    if let Some(stop) = stop {
        let how = if stop.killed {
            "killed with SIGKILL when its grace period ran out"
        } else {
            "stopped with SIGTERM"
        };
        return StepEnd {
            phase: stop.phase,
            exit_code,
            message: format!("{}; {how}", stop.why),
        };
    }
    let (phase, message) = match status {
        Ok(status) if status.success() => (Phase::Succeeded, "exited with code 0".to_string()),
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (Phase::Failed, format!("exited with code {code}")),
            (None, Some(signal)) => (
                Phase::Failed,
                format!("was killed by {}", signal_name(signal)),
            ),
            (None, None) => (Phase::Failed, format!("ended with {status}")),
        },
        Err(e) => (Phase::Failed, format!("could not be waited for: {e}")),
    };
    StepEnd {
        phase,
        exit_code,
        message,
    }
}

/// `signal 9 (SIGKILL)`, naming the signals a build meets.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal} ({name})")
}

//! The `process` executor: each step of a run is a local process, one after the other, in a
//! fresh work directory of the attempt.
//!
//! A step runs in its own process group (`process_group(0)`) with stdin on `/dev/null` and a
//! clean environment: its own variables plus `PATH` (from [`ProcessConfig::path`]), `HOME`
//! (the work directory), `TROUPE_WORKSPACE` (the work directory, shared by the attempt's
//! steps), `TROUPE_RUN`, `TROUPE_ATTEMPT`, `TROUPE_STEP` and `TROUPE_OUTPUTS` (the file it
//! appends `NAME=VALUE` lines to). Nothing goes through a shell: the command is
//! executed as the argv it is.
//!
//! Stopping a step (cancel, timeout) sends SIGTERM to its group, then SIGKILL to the group when
//! the grace period is over. When a step's process ends, for whatever reason, what is left of
//! its group is killed: no process outlives its step. Its output is read to the end, or for a
//! few seconds more if a process that left the group holds it open.
//!
//! One task drives a run ([`Run::drive`]): it starts the steps, watches them (`step`), gives
//! every line its sequence number, and reports on the handle's channel. It only ever waits on
//! the caller to hand over an event, never to stop a step.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::error::Error;
use super::event::{Phase, RunEvent};
use super::handle::RunHandle;
use super::outputs;
use super::show;
use super::spec::RunSpec;
use super::workdir::WorkDir;

mod step;

/// Events waiting for the caller, at most.
const EVENTS: usize = 256;

/// The `PATH` steps get unless configured otherwise.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the `process` executor runs steps.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// `PATH` of every step (a step may set its own).
    pub path: String,
    /// How long a step over its timeout has between SIGTERM and SIGKILL.
    pub timeout_grace: Duration,
    /// Keep each attempt's work directory after the run, to look at what a build left
    /// (for debugging; the directories are never cleaned up then).
    pub keep_work_dirs: bool,
    /// Longest log line, in bytes; longer lines are cut, with a marker.
    pub max_line_bytes: usize,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            path: DEFAULT_PATH.to_string(),
            timeout_grace: Duration::from_secs(10),
            keep_work_dirs: false,
            max_line_bytes: 16 * 1024,
        }
    }
}

/// Runs builds as local processes.
#[derive(Debug, Clone, Default)]
pub struct ProcessExecutor {
    config: Arc<ProcessConfig>,
}

impl ProcessExecutor {
    /// An executor with this configuration.
    pub fn new(config: ProcessConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// Starts `spec` in a new directory under `root` (`root/run-ID-ATTEMPT/`), on the current
    /// Tokio runtime, and returns at once. Fails, with nothing run, if the spec is refused
    /// ([`RunSpec::validate`]) or the directory cannot be created, or already exists.
    pub fn start(&self, spec: RunSpec, root: &Path) -> Result<RunHandle, Error> {
        spec.validate()?;
        // Steps run inside their work directory: the paths they are given (the workspace,
        // the outputs file) must not be relative to wherever the agent was started.
        let root = std::path::absolute(root).map_err(|source| Error::WorkDir {
            path: root.to_path_buf(),
            source,
        })?;
        let dir = WorkDir::create(&root, &spec.dir_name(), self.config.keep_work_dirs)?;
        let (events, events_rx) = mpsc::channel(EVENTS);
        let (kill_at, cancel) = watch::channel(None);
        let handle = RunHandle::new(events_rx, kill_at, Some(dir.work().to_path_buf()));
        let span = tracing::info_span!("build", run = %spec.run, attempt = spec.attempt);
        let run = Run {
            spec,
            dir,
            events,
            cancel,
            seq: 0,
            config: self.config.clone(),
        };
        tokio::spawn(run.drive().instrument(span));
        Ok(handle)
    }
}

/// One attempt being run.
struct Run {
    spec: RunSpec,
    dir: WorkDir,
    events: mpsc::Sender<RunEvent>,
    /// When the running step is to be killed, once someone has cancelled.
    cancel: watch::Receiver<Option<Instant>>,
    /// The last sequence number given to a line.
    seq: u64,
    config: Arc<ProcessConfig>,
}

impl Run {
    /// Runs the steps, checks the outputs, removes the work directory, reports the end.
    async fn drive(mut self) {
        let Some((mut phase, mut message)) = self.steps().await else {
            tracing::info!("the run's handle was dropped; its step was killed");
            self.dir.remove().await;
            return;
        };
        let mut outputs = BTreeMap::new();
        if phase == Phase::Succeeded {
            match self.outputs().await {
                Ok(reported) => outputs = reported,
                Err(why) => (phase, message) = (Phase::Failed, why),
            }
        }
        tracing::info!(phase = phase.as_str(), %message, "build finished");
        self.dir.remove().await;
        let _ = self
            .events
            .send(RunEvent::Finished {
                phase,
                outputs,
                message,
            })
            .await;
    }

    /// Runs the steps in order until one does not succeed; `None` if the handle was dropped.
    async fn steps(&mut self) -> Option<(Phase, String)> {
        let run_deadline = self
            .spec
            .timeout
            .map(|timeout| (Instant::now() + timeout, timeout));
        for index in 0..self.spec.steps.len() {
            let name = self.spec.steps[index].name.clone();
            if self.cancel.borrow().is_some() {
                let message = format!("cancelled before step {name:?} started");
                return Some((Phase::Cancelled, message));
            }
            if let Some((at, timeout)) = run_deadline
                && Instant::now() >= at
            {
                let message = format!(
                    "the run went over its timeout of {} before step {name:?}",
                    show(timeout)
                );
                return Some((Phase::TimedOut, message));
            }
            let at = SystemTime::now();
            self.emit(RunEvent::StepStarted {
                step: name.clone(),
                at,
            })
            .await?;
            let end = self.step(index, run_deadline).await?;
            let message = format!("step {name:?} {}", end.message);
            self.emit(RunEvent::StepFinished {
                step: name,
                phase: end.phase,
                exit_code: end.exit_code,
                message: end.message,
                at: SystemTime::now(),
            })
            .await?;
            if end.phase != Phase::Succeeded {
                return Some((end.phase, message));
            }
        }
        let count = self.spec.steps.len();
        let message = format!(
            "{count} step{} succeeded",
            if count == 1 { "" } else { "s" }
        );
        Some((Phase::Succeeded, message))
    }

    /// What the steps wrote to the outputs file, if it holds every required output.
    async fn outputs(&self) -> Result<BTreeMap<String, String>, String> {
        let path = self.dir.outputs();
        let unreadable = |e: std::io::Error| format!("reading the outputs file: {e}");
        let meta = tokio::fs::symlink_metadata(path)
            .await
            .map_err(unreadable)?;
        if !meta.is_file() {
            return Err("the outputs file was replaced by something else than a file".into());
        }
        if meta.len() > outputs::MAX_BYTES {
            return Err(format!(
                "the outputs file is over {} bytes",
                outputs::MAX_BYTES
            ));
        }
        let bytes = tokio::fs::read(path).await.map_err(unreadable)?;
        let reported = outputs::parse(&String::from_utf8_lossy(&bytes))?;
        let how = "append NAME=VALUE lines to $TROUPE_OUTPUTS";
        outputs::require(&self.spec.outputs, &reported, how)?;
        Ok(reported)
    }

    /// Hands an event to the caller; `None` if the handle is gone.
    async fn emit(&self, event: RunEvent) -> Option<()> {
        self.events.send(event).await.ok()
    }
}

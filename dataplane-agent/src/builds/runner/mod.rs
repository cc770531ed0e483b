//! The build plane: the attempts this agent runs for the control plane, over whichever
//! stream is open.
//!
//! [`Builds::spawn`] starts one task (`task`) that owns every attempt and outlives sessions.
//! A session attaches its outbound channel once `Welcome` has come ([`Builds::attach`]) and
//! hands over the control plane's `BuildOffer`, `BuildCancel` and `BuildAck`
//! ([`Builds::offer`], [`Builds::cancel`], [`Builds::ack`]); the task answers with
//! `BuildProgress` and `BuildLogs` on the attached channel, waiting for room there in its
//! `select!` and never anywhere else, so a slow control plane holds back neither the task nor
//! the executor: what has not gone out stays buffered in the attempt (`attempt`).
//!
//! Data flows: offer → `offer` maps it to a [`RunSpec`](super::RunSpec) → the executor starts
//! it → one small task per attempt forwards its [`RunEvent`](super::RunEvent)s to the owner
//! task → the attempt's snapshot and unacknowledged lines → the attached session → acks from
//! the control plane drop the lines it stored, and its end once stored forgets the attempt.
//!
//! The lease: the control plane acks every progress; an attempt that hears no ack for its
//! lease (the control plane is gone, or gave it to another agent) cancels itself and keeps its
//! end to report when a stream returns.

mod attempt;
mod offer;
mod task;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use troupe_common::k8s_names::{check_label_value, check_qualified_name};
use troupe_common::pb::v1alpha1::{self as pb, AgentMessage};

use self::task::{Command, Runner};
use super::error::Error;
use super::handle::RunHandle;
use super::kubernetes::{KubeConfig, KubeExecutor};
use super::process::{ProcessConfig, ProcessExecutor};
use super::spec::RunSpec;

/// Attempts run at once unless configured otherwise (`--build-capacity`).
pub const DEFAULT_CAPACITY: u32 = 2;

/// Grace between SIGTERM and SIGKILL when an attempt stops itself for a lost lease, unless
/// configured otherwise (`--build-cancel-grace`).
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(10);

/// What runs the steps of an attempt (`--workflows EXECUTOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// Each step a local process in a fresh work directory ([`ProcessExecutor`]).
    Process,
    /// Each attempt a Job of the agent's cluster, one container per step ([`KubeExecutor`]).
    Kubernetes,
}

impl Executor {
    /// The name `Hello` carries and the flag takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Process => "process",
            Executor::Kubernetes => "kubernetes",
        }
    }
}

impl FromStr for Executor {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "process" => Ok(Executor::Process),
            "kubernetes" => Ok(Executor::Kubernetes),
            other => Err(format!(
                "unknown executor {other:?}; expected `process` (each step a local process) or `kubernetes` (each run a Job)"
            )),
        }
    }
}

/// The executor attempts are started on.
#[derive(Clone)]
pub(super) enum Engine {
    Process(ProcessExecutor),
    Kubernetes(KubeExecutor),
}

impl Engine {
    /// Starts `spec`; the process executor makes its work directory under `root`.
    fn start(&self, spec: RunSpec, root: &std::path::Path) -> Result<RunHandle, Error> {
        match self {
            Engine::Process(executor) => executor.start(spec, root),
            Engine::Kubernetes(executor) => executor.start(spec),
        }
    }
}

/// How the agent runs builds.
#[derive(Debug, Clone)]
pub struct BuildPlaneConfig {
    /// What runs the steps.
    pub executor: Executor,
    /// Labels workflows select this agent by.
    pub labels: BTreeMap<String, String>,
    /// Attempts run at once (at least 1); an offer beyond it fails.
    pub capacity: u32,
    /// Where attempts get their work directories.
    pub root: PathBuf,
    /// Grace between SIGTERM and SIGKILL when an attempt's lease is lost.
    pub cancel_grace: Duration,
    /// How the `process` executor runs steps (and whether it keeps work directories).
    pub process: ProcessConfig,
    /// How the `kubernetes` executor runs Jobs, and on which cluster.
    pub kubernetes: KubeConfig,
}

impl BuildPlaneConfig {
    /// The `process` executor with work directories under `root`, no labels, and the
    /// default capacity and grace.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            executor: Executor::Process,
            labels: BTreeMap::new(),
            capacity: DEFAULT_CAPACITY,
            root: root.into(),
            cancel_grace: DEFAULT_CANCEL_GRACE,
            process: ProcessConfig::default(),
            kubernetes: KubeConfig::default(),
        }
    }

    /// What `Hello` tells the control plane about this build plane.
    pub fn to_build_plane(&self) -> pb::BuildPlane {
        pb::BuildPlane {
            executor: self.executor.as_str().into(),
            labels: self.labels.clone().into_iter().collect(),
            capacity: self.capacity.max(1),
        }
    }
}

/// Parses `KEY=VALUE` (`--build-label`): a Kubernetes label key and value.
pub fn parse_label(flag: &str) -> Result<(String, String), String> {
    let Some((key, value)) = flag.split_once('=') else {
        return Err(format!("{flag:?} is not KEY=VALUE"));
    };
    check_qualified_name(key).map_err(|why| format!("label key {key:?} {why}"))?;
    check_label_value(value).map_err(|why| format!("label value {value:?} {why}"))?;
    Ok((key.to_string(), value.to_string()))
}

/// The agent's build plane: cheap to clone; every clone speaks to the one task that owns the
/// attempts. The task stops, killing what runs, when `shutdown` turns true or every clone
/// is gone.
#[derive(Clone)]
pub struct Builds {
    /// Unbounded on purpose: only a session sends here, one command per message the control
    /// plane sent, and the task takes each in microseconds (it never waits but in its
    /// `select!`). A bound would make the session choose between stalling its stream and
    /// dropping a cancel.
    commands: mpsc::UnboundedSender<Command>,
    plane: Arc<pb::BuildPlane>,
    sessions: Arc<AtomicU64>,
}

impl Builds {
    /// Starts the task that owns the attempts, on the current Tokio runtime. Panics if the
    /// executor is `kubernetes` and its configuration has no client.
    pub fn spawn(config: BuildPlaneConfig, shutdown: watch::Receiver<bool>) -> Self {
        let plane = Arc::new(config.to_build_plane());
        let executor = match config.executor {
            Executor::Process => Engine::Process(ProcessExecutor::new(config.process.clone())),
            Executor::Kubernetes => {
                let client = config.kubernetes.client.clone();
                let client = client.expect("the kubernetes executor needs a cluster client");
                Engine::Kubernetes(KubeExecutor::new(client, config.kubernetes.clone()))
            }
        };
        let (commands, queue) = mpsc::unbounded_channel();
        let runner = Runner::new(config, executor);
        tokio::spawn(runner.run(queue, shutdown));
        Self {
            commands,
            plane,
            sessions: Arc::default(),
        }
    }

    /// What `Hello` carries.
    pub fn build_plane(&self) -> pb::BuildPlane {
        (*self.plane).clone()
    }

    /// Sends through `outbound` from now on, in place of any earlier channel: every attempt's
    /// progress and every line not acknowledged go out again (a new session knows nothing
    /// of what the last one carried). Dropping the returned guard detaches it.
    pub fn attach(&self, outbound: mpsc::Sender<AgentMessage>) -> Attached {
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Attach { session, outbound });
        Attached {
            builds: self.clone(),
            session,
        }
    }

    /// Runs an offered attempt, or, if it already runs, sends again its progress and its
    /// lines after `offer.logged`.
    pub fn offer(&self, offer: pb::BuildOffer) {
        self.send(Command::Offer(offer));
    }

    /// Cancels an attempt; with `forget`, drops it without reporting anything more.
    pub fn cancel(&self, cancel: pb::BuildCancel) {
        self.send(Command::Cancel(cancel));
    }

    /// Takes what the control plane has stored of an attempt.
    pub fn ack(&self, ack: pb::BuildAck) {
        self.send(Command::Ack(ack));
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            tracing::debug!("the build plane has stopped; a build message is dropped");
        }
    }
}

/// A session's channel attached to the build plane; detached when dropped (a later attach
/// is not undone by an earlier guard).
pub struct Attached {
    builds: Builds,
    session: u64,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.builds.send(Command::Detach {
            session: self.session,
        });
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn labels_are_kubernetes_labels() {
        assert_eq!(
            parse_label("troupe.dev/arch=arm64").unwrap(),
            ("troupe.dev/arch".to_string(), "arm64".to_string())
        );
        assert_eq!(parse_label("gpu=").unwrap().1, "");
        assert!(parse_label("arch").unwrap_err().contains("KEY=VALUE"));
        let bad_key = parse_label("Bad_Prefix/x=y").unwrap_err();
        assert!(bad_key.contains("label key"), "{bad_key}");
        let bad_value = parse_label("arch=-arm").unwrap_err();
        assert!(bad_value.contains("label value"), "{bad_value}");
    }

    #[test]
    fn executors_are_process_and_kubernetes() {
        assert_eq!("process".parse::<Executor>(), Ok(Executor::Process));
        assert_eq!("kubernetes".parse::<Executor>(), Ok(Executor::Kubernetes));
        let docker = "docker".parse::<Executor>().unwrap_err();
        assert!(docker.contains("`kubernetes`"), "{docker}");
    }
}

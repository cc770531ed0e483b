//! Builds: the steps of a WorkflowRun executed on this machine, and what they say while they run.
//!
//! The control plane resolves a run completely (templates expanded, parameters in place) and
//! the agent hands it to an executor as a [`RunSpec`]. The executor refuses it before anything
//! runs, or starts it and returns a [`RunHandle`] that yields [`RunEvent`]s: each step's start,
//! its output line by line under one sequence across the attempt, its end, and last the run's
//! [`Phase`] with the outputs it reported. The handle cancels the run with a grace period,
//! and dropping it kills the run.
//!
//! - `spec`: what a run is, and the checks it passes before anything runs.
//! - `event`: what an executor reports.
//! - `handle`: the caller's side of a run.
//! - `process`: the `process` executor, [`ProcessExecutor`]: each step a local process group in
//!   a fresh work directory (`workdir`), with a clean environment, stopped on cancel, timeout,
//!   or when its handle goes (`group`); output cut into bounded lines (`lines`); outputs read
//!   from a file the steps append to (`outputs`).
//! - `kubernetes`: the `kubernetes` executor, [`KubeExecutor`]: each attempt a Job of the
//!   agent's cluster, one container per step, reported from its Pod's status and logs.
//! - `runner`: the build plane, [`Builds`]: the attempts the control plane offers this agent,
//!   run through the executor, reported and kept until the control plane has stored them,
//!   across sessions.

mod error;
mod event;
mod group;
mod handle;
mod kubernetes;
mod lines;
mod outputs;
mod process;
mod runner;
mod spec;
mod workdir;

pub use self::error::Error;
pub use self::event::{LogStream, Phase, RunEvent};
pub use self::handle::{Canceller, RunHandle};
pub use self::kubernetes::{KubeConfig, KubeExecutor};
pub use self::process::{DEFAULT_PATH, ProcessConfig, ProcessExecutor};
pub use self::runner::{
    Attached, BuildPlaneConfig, Builds, DEFAULT_CANCEL_GRACE, DEFAULT_CAPACITY, Executor,
    parse_label,
};
pub use self::spec::{RESERVED_ENV_PREFIX, RunSpec, StepSpec};

#[cfg(test)]
mod tests;

/// A duration as people write timeouts: `30s`, `1500ms`.
pub(crate) fn show(duration: std::time::Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

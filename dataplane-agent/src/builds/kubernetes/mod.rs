//! The `kubernetes` executor: each attempt is a Job in the build namespace of the agent's
//! cluster, one container per step ([`job`]), and the agent reports it from what the API
//! server says: the Pod's container states (a watch, [`pod`]) and each container's log,
//! followed ([`logs`]). One task per attempt ([`run`]) does all of it.
//!
//! A step starts when its container runs (the steps before it exited 0, as init containers
//! do); its lines come from its log, numbered across the attempt like the process executor's;
//! it ends when its container has terminated and its log has been read to the end. Its exit
//! code decides, and its termination message holds its outputs. A container that cannot start
//! (a bad image name, a missing secret) fails its step at once; one whose image cannot be
//! pulled fails it once that has lasted `pull_patience`.
//!
//! Stopping (cancel, a step's or the run's timeout) deletes the Job, then its Pod with the
//! grace period, and the run ends when the Pod is gone (or a little after the grace, if the
//! cluster is slow to say so). A finished run's Job is deleted too, unless kept for
//! debugging; `ttlSecondsAfterFinished` and `activeDeadlineSeconds` on the Job clean up after
//! an agent that went away. A dropped handle deletes the Job at once.

mod job;
mod logs;
mod pod;
mod run;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use self::run::{Current, Run};
use super::error::Error;
use super::handle::RunHandle;
use super::spec::RunSpec;

/// Events waiting for the caller, at most.
const EVENTS: usize = 256;

/// How the `kubernetes` executor runs builds.
#[derive(Clone)]
pub struct KubeConfig {
    /// The cluster build Jobs run on (the agent's kubeconfig); required by the executor.
    pub client: Option<Client>,
    /// The namespace build Jobs run in; created when missing.
    pub namespace: String,
    /// The image of steps that name none.
    pub default_image: String,
    /// The service account build Pods run as; none (and no token mounted) by default.
    pub service_account: Option<String>,
    /// Grace between SIGTERM and SIGKILL for a step over its timeout (and the Pods'
    /// `terminationGracePeriodSeconds`).
    pub cancel_grace: Duration,
    /// How long a step may wait for an image that cannot be pulled before it fails.
    pub pull_patience: Duration,
    /// Longest log line, in bytes; longer lines are cut, with a marker.
    pub max_line_bytes: usize,
    /// Keep each finished attempt's Job and Pod (until the Job's TTL), to look at them.
    pub keep_jobs: bool,
}

impl Default for KubeConfig {
    fn default() -> Self {
        Self {
            client: None,
            namespace: "troupe-builds".into(),
            default_image: "busybox:1.37".into(),
            service_account: None,
            cancel_grace: Duration::from_secs(10),
            pull_patience: Duration::from_secs(120),
            max_line_bytes: 16 * 1024,
            keep_jobs: false,
        }
    }
}

impl std::fmt::Debug for KubeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeConfig")
            .field("client", &self.client.as_ref().map(|_| "kube::Client"))
            .field("namespace", &self.namespace)
            .field("default_image", &self.default_image)
            .field("service_account", &self.service_account)
            .field("cancel_grace", &self.cancel_grace)
            .field("pull_patience", &self.pull_patience)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("keep_jobs", &self.keep_jobs)
            .finish()
    }
}

/// Runs builds as Jobs.
#[derive(Clone)]
pub struct KubeExecutor {
    client: Client,
    config: Arc<KubeConfig>,
}

impl KubeExecutor {
    /// An executor on the cluster of `client`.
    pub fn new(client: Client, config: KubeConfig) -> Self {
        Self {
            client,
            config: Arc::new(config),
        }
    }

    /// Starts `spec` as a Job, on the current Tokio runtime, and returns at once. Fails, with
    /// nothing created, if the spec is refused ([`RunSpec::validate`], or a step name that
    /// cannot name a container). A Job the cluster refuses fails the run.
    pub fn start(&self, spec: RunSpec) -> Result<RunHandle, Error> {
        spec.validate()?;
        for step in &spec.steps {
            let bad = |reason: &str| Error::BadStep {
                run: spec.run.clone(),
                step: step.name.clone(),
                reason: reason.into(),
            };
            if !job::is_dns_label(&step.name) {
                return Err(bad(
                    "the kubernetes executor names a container after each step: a step name must be a DNS label (lowercase letters, digits and `-`, at most 63)",
                ));
            }
            if step.image.as_deref() == Some("") {
                return Err(bad("the step's image is empty"));
            }
        }
        let name = job::job_name(&spec.run, spec.attempt);
        let namespace = &self.config.namespace;
        let (events, events_rx) = mpsc::channel(EVENTS);
        let (kill_at, cancel) = watch::channel(None);
        let (logs_tx, logs_rx) = mpsc::channel(EVENTS);
        let span =
            tracing::info_span!("build", run = %spec.run, attempt = spec.attempt, job = %name);
        let run = Run {
            job: job::build(&spec, &name, &self.config),
            name,
            spec,
            jobs: Api::namespaced(self.client.clone(), namespace),
            pods: Api::namespaced(self.client.clone(), namespace),
            namespaces: Api::all(self.client.clone()),
            config: self.config.clone(),
            events,
            cancel,
            seq: 0,
            pod: None,
            pod_seen: false,
            step: 0,
            current: Current::default(),
            outputs: BTreeMap::new(),
            outputs_error: None,
            stopping: None,
            logs_tx,
            logs_rx,
        };
        tokio::spawn(run.drive().instrument(span));
        Ok(RunHandle::new(events_rx, kill_at, None))
    }
}

//! One attempt as a Job: the task that creates it, watches its Pod, follows each step's log,
//! reports what happens, and stops or deletes it.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::KubeConfig;
use super::job;
use super::logs::{self, LogMsg};
use super::pod::{self, Container};
use crate::builds::event::{LogStream, Phase, RunEvent};
use crate::builds::outputs;
use crate::builds::show;
use crate::builds::spec::RunSpec;

/// How long after a stop's grace the run waits for the cluster to say the Pod is gone.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// A log stream that ended early is read again after this.
const RECONNECT: Duration = Duration::from_millis(500);

/// Reads of an ended container's log that may fail before the rest of it is given up.
const LOG_FAILURES: u32 = 5;

/// The handle was dropped: nobody hears the run any more.
struct Dropped;

/// How a run ended: its phase, the message naming the step, its outputs.
type End = (Phase, String, BTreeMap<String, String>);

/// The step being run.
#[derive(Default)]
pub(super) struct Current {
    /// When its container was seen running.
    started: Option<Instant>,
    /// The task following its log.
    reader: Option<JoinHandle<()>>,
    /// Whole lines of its log reported so far.
    lines: u64,
    /// Its log has been read to the end.
    logs_done: bool,
    /// When to read its log again, after a stream that ended early.
    reconnect_at: Option<Instant>,
    /// Reads that failed since the last that did not.
    log_failures: u32,
    /// Since when its image cannot be pulled.
    pulling_since: Option<Instant>,
}

impl Drop for Current {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// A stop under way: the phase and message the run ends with, and when to stop waiting for
/// the Pod to go.
pub(super) struct Stop {
    phase: Phase,
    message: String,
    give_up_at: Instant,
}

/// One attempt being run.
pub(super) struct Run {
    pub(super) spec: RunSpec,
    pub(super) name: String,
    pub(super) job: Job,
    pub(super) jobs: Api<Job>,
    pub(super) pods: Api<Pod>,
    pub(super) namespaces: Api<Namespace>,
    pub(super) config: Arc<KubeConfig>,
    pub(super) events: mpsc::Sender<RunEvent>,
    pub(super) cancel: watch::Receiver<Option<Instant>>,
    /// The last sequence number given to a line.
    pub(super) seq: u64,
    /// The Pod as last seen.
    pub(super) pod: Option<Pod>,
    /// Whether it was ever seen: a Pod seen and then not is gone.
    pub(super) pod_seen: bool,
    /// The index of the step being run.
    pub(super) step: usize,
    pub(super) current: Current,
    pub(super) outputs: BTreeMap<String, String>,
    /// The first bad termination message, which fails the run once its steps succeed.
    pub(super) outputs_error: Option<String>,
    pub(super) stopping: Option<Stop>,
    pub(super) logs_tx: mpsc::Sender<LogMsg>,
    pub(super) logs_rx: mpsc::Receiver<LogMsg>,
}

impl Run {
    /// Runs the Job, reports its end, and deletes it.
    pub(super) async fn drive(mut self) {
        let end = self.run().await;
        self.current = Current::default();
        match end {
            Err(Dropped) => {
                tracing::info!("the run's handle was dropped; its Job is deleted");
                self.delete(Some(Duration::ZERO)).await;
            }
            Ok((phase, message, outputs)) => {
                tracing::info!(phase = phase.as_str(), %message, "build finished");
                if !self.config.keep_jobs && self.stopping.is_none() {
                    self.delete(None).await;
                }
                let finished = RunEvent::Finished {
                    phase,
                    outputs,
                    message,
                };
                let _ = self.events.send(finished).await;
            }
        }
    }

    async fn run(&mut self) -> Result<End, Dropped> {
        if let Err(why) = self.create().await {
            return Ok((Phase::Failed, why, BTreeMap::new()));
        }
        let selector = format!("{}={}", "batch.kubernetes.io/job-name", self.name);
        let config = watcher::Config::default().labels(&selector);
        let mut pods = pin!(watcher::watcher(self.pods.clone(), config).default_backoff());
        let run_deadline = self.spec.timeout.map(|t| Instant::now() + t);
        let mut cancel_open = true;
        let mut listed = false;
        loop {
            let wake = self.wake_at(run_deadline);
            let sleep = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.events.closed() => return Err(Dropped),
                changed = self.cancel.changed(), if cancel_open => match changed {
                    Err(_) => cancel_open = false,
                    Ok(()) => {
                        let kill_at = *self.cancel.borrow_and_update();
                        if let Some(at) = kill_at {
                            let grace = at.saturating_duration_since(Instant::now());
                            self.stop(Phase::Cancelled, "was cancelled".into(), grace).await;
                        }
                    }
                },
                event = pods.next() => match event {
                    Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                        listed = true;
                        self.pod_seen = true;
                        self.pod = Some(pod);
                    }
                    Some(Ok(Event::Delete(_))) => self.pod = None,
                    Some(Ok(Event::Init)) => listed = false,
                    // Relisted without it: it went while the watch was down.
                    Some(Ok(Event::InitDone)) if !listed => self.pod = None,
                    Some(Ok(Event::InitDone)) => {}
                    Some(Err(error)) => tracing::warn!(%error, "watching the build's pod"),
                    None => {
                        let why = "the watch of the build's pod ended".to_string();
                        return Ok((Phase::Failed, why, BTreeMap::new()));
                    }
                },
                Some(message) = self.logs_rx.recv() => self.on_log(message).await?,
                () = sleep => self.on_time(run_deadline).await,
            }
            if let Some(end) = self.advance().await? {
                return Ok(end);
            }
        }
    }

    /// The next instant something is due: a timeout, a log to read again, an image's
    /// patience, a stop's end.
    fn wake_at(&self, run_deadline: Option<Instant>) -> Option<Instant> {
        if let Some(stop) = &self.stopping {
            return Some(stop.give_up_at);
        }
        let step = self.spec.steps.get(self.step);
        let step_deadline = self
            .current
            .started
            .zip(step.and_then(|s| s.timeout))
            .map(|(started, timeout)| started + timeout);
        let patience = self
            .current
            .pulling_since
            .map(|since| since + self.config.pull_patience);
        [
            run_deadline,
            step_deadline,
            self.current.reconnect_at,
            patience,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whatever came due.
    async fn on_time(&mut self, run_deadline: Option<Instant>) {
        let now = Instant::now();
        if self.current.reconnect_at.is_some_and(|at| at <= now) {
            self.current.reconnect_at = None;
            self.read_log();
        }
        if self.stopping.is_some() {
            return;
        }
        let grace = self.config.cancel_grace;
        if let Some(timeout) = self.spec.timeout
            && run_deadline.is_some_and(|at| at <= now)
        {
            let why = format!("went over the run's timeout of {}", show(timeout));
            self.stop(Phase::TimedOut, why, grace).await;
            return;
        }
        let step = &self.spec.steps[self.step.min(self.spec.steps.len() - 1)];
        if let (Some(started), Some(timeout)) = (self.current.started, step.timeout)
            && started + timeout <= now
        {
            let why = format!("went over its timeout of {}", show(timeout));
            self.stop(Phase::TimedOut, why, grace).await;
        }
    }

    /// A reader's line or end.
    async fn on_log(&mut self, message: LogMsg) -> Result<(), Dropped> {
        match message {
            LogMsg::Line { step, line } if step == self.step => {
                self.current.lines += 1;
                self.line(line).await?;
            }
            LogMsg::End {
                step,
                complete,
                partial,
                error,
            } if step == self.step => {
                self.current.reader = None;
                self.current.lines = complete;
                let ended = matches!(self.state(), Some(Container::Terminated { .. }));
                match error {
                    None => self.current.log_failures = 0,
                    Some(error) => {
                        tracing::debug!(%error, "reading a build step's log");
                        self.current.log_failures += 1;
                    }
                }
                if ended && self.current.log_failures == 0 {
                    if let Some(line) = partial {
                        self.line(line).await?;
                    }
                    self.current.logs_done = true;
                } else if ended && self.current.log_failures >= LOG_FAILURES {
                    let note = "[the rest of this step's log could not be read]".to_string();
                    self.line(note).await?;
                    self.current.logs_done = true;
                } else {
                    self.current.reconnect_at = Some(Instant::now() + RECONNECT);
                }
            }
            // A step that is over: what its reader still had is not this step's.
            _ => {}
        }
        Ok(())
    }

    /// Reports one line of the current step.
    async fn line(&mut self, line: String) -> Result<(), Dropped> {
        self.seq += 1;
        let event = RunEvent::Log {
            seq: self.seq,
            step: self.spec.steps[self.step].name.clone(),
            stream: LogStream::Stdout,
            line,
            at: SystemTime::now(),
        };
        self.emit(event).await
    }

    /// Follows the current step's log from the first line not reported.
    fn read_log(&mut self) {
        let Some(pod) = self.pod.as_ref().and_then(|p| p.metadata.name.clone()) else {
            return;
        };
        let reader = logs::follow(
            self.pods.clone(),
            pod,
            self.spec.steps[self.step].name.clone(),
            self.step,
            self.current.lines,
            self.config.max_line_bytes,
            self.logs_tx.clone(),
        );
        self.current.reader = Some(reader);
    }

    /// The current step's container, if the Pod is there.
    fn state(&self) -> Option<Container> {
        let step = self.spec.steps.get(self.step)?;
        Some(pod::container(self.pod.as_ref()?, &step.name))
    }

    /// Moves the run on from what is known now; its end once it has one.
    async fn advance(&mut self) -> Result<Option<End>, Dropped> {
        if let Some(stop) = &self.stopping {
            let over = self.pod.is_none() || self.pod.as_ref().is_some_and(ended);
            if over || Instant::now() >= stop.give_up_at {
                let (phase, message) = (stop.phase, stop.message.clone());
                return self.fail_step(phase, None, message).await.map(Some);
            }
            return Ok(None);
        }
        loop {
            let Some(step) = self.spec.steps.get(self.step) else {
                return Ok(Some(self.succeeded()));
            };
            let name = step.name.clone();
            let Some(state) = self.state() else {
                if self.pod_seen {
                    let why = "failed: its pod was deleted (by someone else, or evicted)";
                    return self
                        .fail_step(Phase::Failed, None, why.into())
                        .await
                        .map(Some);
                }
                return Ok(None);
            };
            match state {
                Container::Waiting => {
                    self.current.pulling_since = None;
                    let failed = self.pod.as_ref().and_then(pod::failed);
                    if let Some(why) = failed {
                        let why = format!("did not start: the pod failed: {why}");
                        return self.fail_step(Phase::Failed, None, why).await.map(Some);
                    }
                    return Ok(None);
                }
                Container::Pulling(why) => {
                    let since = *self.current.pulling_since.get_or_insert_with(Instant::now);
                    let patience = self.config.pull_patience;
                    if since.elapsed() >= patience {
                        let why = format!("could not start for {}: {why}", show(patience));
                        return self.fail_step(Phase::Failed, None, why).await.map(Some);
                    }
                    return Ok(None);
                }
                Container::Hopeless(why) => {
                    let why = format!("could not start: {why}");
                    return self.fail_step(Phase::Failed, None, why).await.map(Some);
                }
                Container::Running => {
                    self.start_step(&name).await?;
                    return Ok(None);
                }
                Container::Terminated {
                    exit_code,
                    signal,
                    reason,
                    message,
                } => {
                    self.start_step(&name).await?;
                    if !self.current.logs_done {
                        return Ok(None);
                    }
                    if exit_code != 0 {
                        let why = match signal {
                            Some(signal) => format!("was killed by signal {signal} ({reason})"),
                            None if reason == "OOMKilled" => {
                                format!("exited with code {exit_code} (OOMKilled)")
                            }
                            None => format!("exited with code {exit_code}"),
                        };
                        let code = signal.is_none().then_some(exit_code);
                        return self.fail_step(Phase::Failed, code, why).await.map(Some);
                    }
                    if let Err(why) = job::merge_outputs(&mut self.outputs, &name, &message) {
                        self.outputs_error.get_or_insert(why);
                    }
                    self.finish_step(Phase::Succeeded, Some(0), "exited with code 0".into())
                        .await?;
                    self.step += 1;
                    self.current = Current::default();
                }
            }
        }
    }

    /// Reports the current step started, once, and follows its log.
    async fn start_step(&mut self, name: &str) -> Result<(), Dropped> {
        if self.current.started.is_some() {
            return Ok(());
        }
        self.current.started = Some(Instant::now());
        self.current.pulling_since = None;
        self.emit(RunEvent::StepStarted {
            step: name.to_string(),
            at: SystemTime::now(),
        })
        .await?;
        self.read_log();
        Ok(())
    }

    /// Reports the current step's end.
    async fn finish_step(
        &mut self,
        phase: Phase,
        exit_code: Option<i32>,
        message: String,
    ) -> Result<(), Dropped> {
        let step = self.spec.steps[self.step].name.clone();
        if self.current.started.is_none() {
            // It never ran, but its status should say it is the step that ended the run.
            self.emit(RunEvent::StepStarted {
                step: step.clone(),
                at: SystemTime::now(),
            })
            .await?;
        }
        self.emit(RunEvent::StepFinished {
            step,
            phase,
            exit_code,
            message,
            at: SystemTime::now(),
        })
        .await
    }

    /// Ends the run at the current step with `phase`.
    async fn fail_step(
        &mut self,
        phase: Phase,
        exit_code: Option<i32>,
        message: String,
    ) -> Result<End, Dropped> {
        let step = self.spec.steps.get(self.step).map(|s| s.name.clone());
        let Some(step) = step else {
            return Ok((phase, message, BTreeMap::new()));
        };
        self.finish_step(phase, exit_code, message.clone()).await?;
        Ok((phase, format!("step {step:?} {message}"), BTreeMap::new()))
    }

    /// The end of a run whose every step exited 0: its outputs decide.
    fn succeeded(&mut self) -> End {
        let outputs = std::mem::take(&mut self.outputs);
        if let Some(why) = self.outputs_error.take() {
            return (Phase::Failed, why, BTreeMap::new());
        }
        let how = "write NAME=VALUE lines to $TROUPE_OUTPUTS, the container's termination message";
        if let Err(why) = outputs::require(&self.spec.outputs, &outputs, how) {
            return (Phase::Failed, why, BTreeMap::new());
        }
        let count = self.spec.steps.len();
        let s = if count == 1 { "" } else { "s" };
        (
            Phase::Succeeded,
            format!("{count} step{s} succeeded"),
            outputs,
        )
    }

    /// Stops the run: deletes the Job, and its Pod with `grace`. The run ends with `phase`
    /// once the Pod is gone.
    async fn stop(&mut self, phase: Phase, why: String, grace: Duration) {
        if self.stopping.is_some() {
            return;
        }
        let message = format!("{why}; its pod was stopped with a grace of {}", show(grace));
        tracing::info!(phase = phase.as_str(), %message, "stopping a build");
        self.stopping = Some(Stop {
            phase,
            message,
            give_up_at: Instant::now() + grace + STOP_SLACK,
        });
        self.delete(Some(grace)).await;
    }

    /// Creates the Job, and the build namespace first if it is missing. A Job of this name
    /// is this attempt's, created before: it is followed as it is.
    async fn create(&self) -> Result<(), String> {
        let namespace = &self.config.namespace;
        let failed = |e: kube::Error| format!("creating Job {namespace}/{}: {e}", self.name);
        match self.jobs.create(&PostParams::default(), &self.job).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 && s.message.starts_with("namespaces") => {}
            Err(error) => return Err(failed(error)),
        }
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": namespace, "labels": {job::MANAGED_BY.0: job::MANAGED_BY.1}}
        }))
        .expect("a Namespace");
        match self.namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(error) => return Err(format!("creating the build namespace {namespace}: {error}")),
        }
        match self.jobs.create(&PostParams::default(), &self.job).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(error) => Err(failed(error)),
        }
    }

    /// Deletes the Job and its Pods; with a grace, the Pod is deleted with it too (the
    /// garbage collector would use the Pod's own). Failures are logged: the Job's TTL and
    /// deadline are the backstop.
    async fn delete(&self, grace: Option<Duration>) {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        if let Err(error) = self.jobs.delete(&self.name, &params).await
            && !is_not_found(&error)
        {
            tracing::warn!(%error, job = %self.name, "deleting a build Job");
        }
        let (Some(grace), Some(pod)) = (grace, self.pod.as_ref()) else {
            return;
        };
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        let params = DeleteParams {
            grace_period_seconds: Some(grace.as_secs() as u32),
            ..DeleteParams::default()
        };
        if let Err(error) = self.pods.delete(name, &params).await
            && !is_not_found(&error)
        {
            tracing::warn!(%error, pod = %name, "deleting a build pod");
        }
    }

    /// Hands an event to the caller.
    async fn emit(&self, event: RunEvent) -> Result<(), Dropped> {
        self.events.send(event).await.map_err(|_| Dropped)
    }
}

/// Whether a Pod has ended, every container with it.
fn ended(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}

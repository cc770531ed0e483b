//! Which agent runs what: an index of the runs (from a watch on WorkflowRuns), and one loop
//! that offers pending runs to build agents, declares lost the attempts whose lease ran out,
//! and tells agents of cancelled runs to stop.
//!
//! A run is claimed by one status write that only succeeds while it is still `Pending` (the
//! store's write lock orders it against a cancel), and only then offered: a run is never
//! offered twice for one attempt.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use troupe_common::pb::v1alpha1::{self as pb, control_message};
use troupe_common::timestamp::now;
use troupe_common::{Kind, Object, ObjectKey};

use super::inputs;
use super::logs::LogStore;
use super::plan::{self, Plan};
use super::webhook::WebhookSecrets;
use super::{BuildConfig, Builds, finished, run_id};
use crate::resources::{Resources, WatchEventType, WatchRequest};

/// Where, in the data directory, build logs are kept.
pub const LOG_DIR: &str = "build-logs";
/// Where, in the data directory, webhook secrets are kept.
pub const SECRETS_FILE: &str = "webhook-secrets.json";

/// What the scheduler knows of one run.
#[derive(Debug, Clone, Default)]
pub(super) struct RunView {
    /// Its phase; empty (a run nobody looked at yet) counts as `Pending`.
    pub phase: String,
    /// The current attempt.
    pub attempt: u32,
    /// The agent running the current attempt.
    pub agent: Option<ObjectKey>,
    pub cancel_requested: bool,
    /// Until when the agent holds the current attempt.
    pub lease: Option<Instant>,
    /// Creation time, for first come, first served.
    created: (i64, i32),
    /// Why it waits, as last written, so a waiting run is not written every second.
    pub waiting: Option<String>,
}

impl RunView {
    fn pending(&self) -> bool {
        self.phase.is_empty() || self.phase == "Pending"
    }

    fn running_on(&self, plane: &ObjectKey) -> bool {
        self.phase == "Running" && self.agent.as_ref() == Some(plane)
    }
}

/// Every run, by id.
#[derive(Default)]
pub(super) struct RunIndex {
    pub runs: HashMap<String, RunView>,
    /// True once the index holds every run in the store.
    pub loaded: bool,
}

impl Builds {
    /// Starts the build side: the run index and the scheduler. Logs and webhook secrets are
    /// kept in `data_dir` (in memory without one). Stops when `stopping` turns true.
    pub fn start(
        resources: Arc<Resources>,
        config: BuildConfig,
        data_dir: Option<PathBuf>,
        stopping: watch::Receiver<bool>,
    ) -> std::io::Result<Arc<Self>> {
        let log_dir = data_dir.as_ref().map(|d| d.join(LOG_DIR));
        let secrets = WebhookSecrets::load(data_dir.as_ref().map(|d| d.join(SECRETS_FILE)))?;
        let builds = Arc::new(Self {
            resources,
            secrets,
            logs: Arc::new(LogStore::new(log_dir, config.max_log_bytes)),
            config,
            agents: Mutex::default(),
            runs: Mutex::default(),
            wake: Notify::new(),
        });
        tokio::spawn(builds.clone().follow_runs(stopping.clone()));
        tokio::spawn(builds.clone().schedule(stopping));
        Ok(builds)
    }

    /// Keeps the index in line with the store's runs, relisting if the watch is lost.
    async fn follow_runs(self: Arc<Self>, stopping: watch::Receiver<bool>) {
        loop {
            let request = WatchRequest {
                kinds: vec![Kind::WorkflowRun],
                ..Default::default()
            };
            let mut events = match self.resources.watch(request) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "builds could not watch workflow runs");
                    return;
                }
            };
            let mut seen = Some(std::collections::HashSet::new());
            while let Some(event) = events.recv().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::warn!(error = %e, "builds lost their watch on runs; relisting");
                        break;
                    }
                };
                match (event.kind, event.object) {
                    (WatchEventType::Bookmark, _) => {
                        if let Some(seen) = seen.take() {
                            self.loaded(&seen).await;
                        }
                    }
                    (WatchEventType::Deleted, Some(Object::WorkflowRun(run))) => {
                        self.deleted(&run).await;
                    }
                    (_, Some(Object::WorkflowRun(run))) => {
                        let id = self.note(&run);
                        if let Some(seen) = &mut seen {
                            seen.insert(id);
                        }
                    }
                    _ => {}
                }
            }
            if *stopping.borrow() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Records a run's state in the index; returns its id.
    fn note(&self, run: &pb::WorkflowRun) -> String {
        let meta = run.metadata.clone().unwrap_or_default();
        let id = run_id(&meta.namespace, &meta.name);
        let status = run.status.clone().unwrap_or_default();
        let agent = status.attempts.last().and_then(|a| agent_key(&a.agent));
        let mut index = self.index();
        let lease_for = self.config.lease;
        let view = index.runs.entry(id.clone()).or_default();
        let running_before = view.phase == "Running" && view.attempt == status.attempt as u32;
        view.phase = status.phase;
        view.attempt = status.attempt as u32;
        view.agent = agent;
        view.cancel_requested = status.cancel_requested;
        view.created = meta.create_time.map_or((0, 0), |t| (t.seconds, t.nanos));
        if view.phase == "Running" {
            // A running attempt seen for the first time (a restart, another writer) gets a
            // fresh lease: its agent renews it when it reports.
            if !running_before || view.lease.is_none() {
                view.lease = Some(Instant::now() + lease_for);
            }
        } else {
            view.lease = None;
        }
        if !view.pending() {
            view.waiting = None;
        }
        drop(index);
        self.wake.notify_one();
        id
    }

    /// The index holds every run: sweeps the logs of runs deleted while the server was down.
    async fn loaded(&self, seen: &std::collections::HashSet<String>) {
        self.index().loaded = true;
        for run in self.logs.runs_on_disk() {
            if !seen.contains(&run)
                && let Err(e) = self.logs.remove(&run).await
            {
                tracing::warn!(%run, error = %e, "could not remove the logs of a deleted run");
            }
        }
        self.wake.notify_one();
    }

    /// A run was deleted (alone, or with its component): its agent stops it, its logs go.
    async fn deleted(&self, run: &pb::WorkflowRun) {
        let meta = run.metadata.clone().unwrap_or_default();
        let id = run_id(&meta.namespace, &meta.name);
        let view = self.index().runs.remove(&id);
        if let Some(view) = view
            && view.phase == "Running"
            && let Some(agent) = &view.agent
        {
            let cancel = control_message::Message::BuildCancel(pb::BuildCancel {
                run: id.clone(),
                attempt: view.attempt,
                grace_seconds: self.config.cancel_grace.as_secs() as u32,
                reason: "the run was deleted".into(),
                forget: true,
            });
            self.send_to(agent, cancel).await;
        }
        if let Err(e) = self.logs.remove(&id).await {
            tracing::warn!(run = %id, error = %e, "could not remove the logs of a deleted run");
        }
    }

    /// The scheduler: wakes on changes and every second.
    async fn schedule(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            if !self.index().loaded {
                continue;
            }
            self.expire().await;
            self.send_cancels().await;
            self.dispatch_pending().await;
        }
    }

    /// Declares lost every attempt whose lease ran out.
    async fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<(String, RunView)> = self
            .index()
            .runs
            .iter()
            .filter(|(_, v)| v.phase == "Running" && v.lease.is_some_and(|l| l <= now))
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        for (id, view) in expired {
            if let Err(e) = self.lose(&id, &view).await {
                tracing::warn!(run = %id, error = %e, "could not record a lost attempt");
            }
        }
    }

    /// Marks attempt `view.attempt` of run `id` lost, and offers the run again within the
    /// workflow's retries.
    async fn lose(&self, id: &str, view: &RunView) -> Result<(), crate::resources::Error> {
        let key = run_key(id);
        let run: pb::WorkflowRun = self.resources.get_as(&key)?;
        let retries = self.workflow(&run).map_or(0, |spec| spec.retries.max(0));
        let attempt = view.attempt as i32;
        let agent = view.agent.as_ref().map(agent_name).unwrap_or_default();
        self.resources
            .update_status(&key, move |_, object| {
                let Object::WorkflowRun(run) = object else {
                    return;
                };
                let status = run.status.get_or_insert_default();
                if status.phase != "Running" || status.attempt != attempt {
                    return;
                }
                let lost = format!(
                    "attempt {attempt} was lost: build agent {agent} stopped renewing its lease"
                );
                if let Some(last) = status.attempts.last_mut() {
                    last.phase = "Lost".into();
                    last.message = lost.clone();
                    last.completed_at = Some(now());
                }
                let lost_in_a_row = status
                    .attempts
                    .iter()
                    .rev()
                    .take_while(|a| a.phase == "Lost")
                    .count() as i32;
                if status.cancel_requested {
                    status.phase = "Cancelled".into();
                    status.message = format!("cancelled; {lost}");
                    status.completed_at = Some(now());
                } else if lost_in_a_row <= retries {
                    status.phase = "Pending".into();
                    status.message = format!("{lost}; offering it again");
                } else {
                    status.phase = "Failed".into();
                    status.message = format!(
                        "{lost}; no retries left (the workflow's spec.retries is {retries})"
                    );
                    status.completed_at = Some(now());
                }
            })
            .await?;
        if let Some(agent) = &view.agent {
            let cancel = control_message::Message::BuildCancel(pb::BuildCancel {
                run: id.to_string(),
                attempt: view.attempt,
                grace_seconds: self.config.cancel_grace.as_secs() as u32,
                reason: "the lease was lost".into(),
                forget: true,
            });
            self.send_to(agent, cancel).await;
        }
        if let Some(v) = self.index().runs.get_mut(id) {
            v.lease = None;
        }
        Ok(())
    }

    /// Tells the agents of runs being cancelled to stop them, once per session.
    async fn send_cancels(&self) {
        let cancelling: Vec<(String, RunView)> = self
            .index()
            .runs
            .iter()
            .filter(|(_, v)| v.phase == "Running" && v.cancel_requested)
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        for (id, view) in cancelling {
            let Some(agent) = &view.agent else { continue };
            let first = self
                .agents()
                .get_mut(agent)
                .is_some_and(|a| a.cancels_sent.insert((id.clone(), view.attempt)));
            if first {
                let cancel = control_message::Message::BuildCancel(pb::BuildCancel {
                    run: id.clone(),
                    attempt: view.attempt,
                    grace_seconds: self.config.cancel_grace.as_secs() as u32,
                    reason: "the run was cancelled".into(),
                    forget: false,
                });
                self.send_to(agent, cancel).await;
            }
        }
    }

    /// Offers pending runs, oldest first, while agents have room.
    async fn dispatch_pending(&self) {
        let mut pending: Vec<(String, (i64, i32), bool)> = self
            .index()
            .runs
            .iter()
            .filter(|(_, v)| v.pending())
            .map(|(id, v)| (id.clone(), v.created, v.waiting.is_some()))
            .collect();
        if pending.is_empty() {
            return;
        }
        pending.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        for (id, _, waiting) in pending {
            // Runs already told why they wait are looked at again only when some agent has
            // room: a thousand queued runs cost nothing while every agent is busy.
            if waiting && !self.any_room() {
                continue;
            }
            if let Err(e) = self.dispatch(&id).await {
                tracing::warn!(run = %id, error = %e, "could not offer a run");
            }
        }
    }

    /// Offers run `id` to an agent with room, or writes why it waits.
    async fn dispatch(&self, id: &str) -> Result<(), crate::resources::Error> {
        let key = run_key(id);
        let run: pb::WorkflowRun = match self.resources.get_as(&key) {
            Ok(run) => run,
            Err(crate::resources::Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let status = run.status.clone().unwrap_or_default();
        if !(status.phase.is_empty() || status.phase == "Pending") {
            return Ok(());
        }
        if status.cancel_requested {
            return self
                .end_pending(&key, "Cancelled", "cancelled before it started")
                .await;
        }
        let workflow = match self.workflow(&run) {
            Ok(workflow) => workflow,
            Err(e) => return self.end_pending(&key, "Failed", &e).await,
        };
        let spec = workflow;
        let plan = if status.plan.is_empty() {
            match self.resolve(&run, &spec) {
                Ok(plan) => plan,
                Err(e) => return self.end_pending(&key, "Failed", &e).await,
            }
        } else {
            Plan {
                steps: status.plan.clone(),
                timeout_seconds: status.timeout_seconds,
                outputs: plan::outputs(&spec, &run),
            }
        };
        let selector: BTreeMap<String, String> = spec
            .build_plane_selector
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match self.choose(&selector) {
            Ok(agent) => self.claim(id, &key, &agent, plan).await,
            Err(waiting) => self.note_waiting(id, &key, waiting, plan).await,
        }
    }

    /// The workflow a run names.
    pub(super) fn workflow(&self, run: &pb::WorkflowRun) -> Result<pb::WorkflowSpec, String> {
        let meta = run.metadata.clone().unwrap_or_default();
        let w = run
            .spec
            .as_ref()
            .and_then(|s| s.workflow.clone())
            .unwrap_or_default();
        inputs::workflow(&self.resources, &meta.namespace, &w.kind, &w.name)
            .map_err(|e| format!("spec.workflow: {e}"))
    }

    /// Resolves the steps of `run`'s first attempt.
    fn resolve(&self, run: &pb::WorkflowRun, spec: &pb::WorkflowSpec) -> Result<Plan, String> {
        inputs::first_plan(&self.resources, spec, run).map_err(|e| e.to_string())
    }

    /// A connected agent with room whose labels hold `selector`, the one with most room; or
    /// why there is none.
    fn choose(&self, selector: &BTreeMap<String, String>) -> Result<ObjectKey, String> {
        let agents = self.agents();
        let index = self.index();
        let mut matching = 0;
        let mut best: Option<(usize, ObjectKey)> = None;
        for (plane, agent) in agents.iter() {
            if !selector.iter().all(|(k, v)| agent.labels.get(k) == Some(v)) {
                continue;
            }
            matching += 1;
            let busy = index.runs.values().filter(|v| v.running_on(plane)).count();
            let room = agent.capacity.saturating_sub(busy);
            if room > 0
                && best
                    .as_ref()
                    .is_none_or(|(r, p)| room > *r || (room == *r && plane < p))
            {
                best = Some((room, plane.clone()));
            }
        }
        match best {
            Some((_, plane)) => Ok(plane),
            None if matching == 0 => Err(format!(
                "waiting for a build agent{}: none is connected",
                describe_selector(selector)
            )),
            None => Err(format!(
                "waiting for room: every build agent{} ({matching}) is at capacity",
                describe_selector(selector)
            )),
        }
    }

    /// True when some connected build agent has room.
    fn any_room(&self) -> bool {
        let agents = self.agents();
        let index = self.index();
        agents.iter().any(|(plane, agent)| {
            index.runs.values().filter(|v| v.running_on(plane)).count() < agent.capacity
        })
    }

    /// Claims run `id` for `agent` as its next attempt, then offers it.
    async fn claim(
        &self,
        id: &str,
        key: &ObjectKey,
        agent: &ObjectKey,
        plan: Plan,
    ) -> Result<(), crate::resources::Error> {
        let name = agent_name(agent);
        let steps = plan.steps.clone();
        let timeout = plan.timeout_seconds;
        let claimed = self
            .resources
            .update_status(key, move |_, object| {
                let Object::WorkflowRun(run) = object else {
                    return;
                };
                let status = run.status.get_or_insert_default();
                if !(status.phase.is_empty() || status.phase == "Pending")
                    || status.cancel_requested
                {
                    return;
                }
                status.phase = "Running".into();
                status.attempt += 1;
                status.attempts.push(pb::WorkflowRunAttempt {
                    number: status.attempt,
                    agent: name.clone(),
                    phase: "Running".into(),
                    started_at: Some(now()),
                    ..Default::default()
                });
                status.tasks.clear();
                status.outputs.clear();
                status.image.clear();
                status.started_at.get_or_insert_with(now);
                if status.plan.is_empty() {
                    status.plan = steps;
                    status.timeout_seconds = timeout;
                }
                status.message = format!("attempt {} runs on build agent {name}", status.attempt);
            })
            .await?;
        if !claimed {
            return Ok(());
        }
        let run: pb::WorkflowRun = self.resources.get_as(key)?;
        let attempt = run.status.as_ref().map_or(0, |s| s.attempt) as u32;
        self.note(&run);
        if let Some(v) = self.index().runs.get_mut(id) {
            v.lease = Some(Instant::now() + self.config.lease);
        }
        let logged = self.logs.stored(id, attempt).await.unwrap_or(0);
        let offer = control_message::Message::BuildOffer(pb::BuildOffer {
            run: id.to_string(),
            attempt,
            steps: plan.steps,
            timeout_seconds: plan.timeout_seconds,
            outputs: plan.outputs,
            lease_seconds: self.config.lease.as_secs().max(1) as u32,
            logged,
        });
        // An offer that does not arrive is found out by the lease.
        self.send_to(agent, offer).await;
        Ok(())
    }

    /// Writes why a pending run waits (once per reason), with its resolved steps.
    async fn note_waiting(
        &self,
        id: &str,
        key: &ObjectKey,
        waiting: String,
        plan: Plan,
    ) -> Result<(), crate::resources::Error> {
        let noted = self.index().runs.get(id).and_then(|v| v.waiting.clone());
        if noted.as_deref() == Some(waiting.as_str()) {
            return Ok(());
        }
        let message = waiting.clone();
        self.resources
            .update_status(key, move |_, object| {
                let Object::WorkflowRun(run) = object else {
                    return;
                };
                let status = run.status.get_or_insert_default();
                if !(status.phase.is_empty() || status.phase == "Pending") {
                    return;
                }
                status.phase = "Pending".into();
                status.message = message;
                if status.plan.is_empty() {
                    status.plan = plan.steps;
                    status.timeout_seconds = plan.timeout_seconds;
                }
            })
            .await?;
        if let Some(v) = self.index().runs.get_mut(id) {
            v.waiting = Some(waiting);
        }
        Ok(())
    }

    /// Ends a run that has not started, with `phase` and why.
    async fn end_pending(
        &self,
        key: &ObjectKey,
        phase: &'static str,
        message: &str,
    ) -> Result<(), crate::resources::Error> {
        let message = message.to_string();
        self.resources
            .update_status(key, move |_, object| {
                let Object::WorkflowRun(run) = object else {
                    return;
                };
                let status = run.status.get_or_insert_default();
                if finished(&status.phase) || status.phase == "Running" {
                    return;
                }
                status.phase = phase.into();
                status.message = message;
                status.completed_at = Some(now());
            })
            .await?;
        Ok(())
    }
}

/// `{ "k": "v" }` as ` with labels k=v`, nothing for an empty selector.
fn describe_selector(selector: &BTreeMap<String, String>) -> String {
    if selector.is_empty() {
        return String::new();
    }
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(" with labels {}", labels.join(","))
}

/// How status names an agent: its data plane, `NAMESPACE/NAME` (or `NAME` when cluster-wide).
pub(super) fn agent_name(plane: &ObjectKey) -> String {
    if plane.namespace.is_empty() {
        plane.name.clone()
    } else {
        format!("{}/{}", plane.namespace, plane.name)
    }
}

/// The data plane an agent name stands for.
pub(super) fn agent_key(name: &str) -> Option<ObjectKey> {
    if name.is_empty() {
        return None;
    }
    Some(match name.split_once('/') {
        Some((namespace, name)) => ObjectKey::new(Kind::DataPlane, namespace, name),
        None => ObjectKey::new(Kind::ClusterDataPlane, "", name),
    })
}

/// The WorkflowRun a run id names.
pub(super) fn run_key(id: &str) -> ObjectKey {
    let (namespace, name) = id.split_once('/').unwrap_or(("", id));
    ObjectKey::new(Kind::WorkflowRun, namespace, name)
}

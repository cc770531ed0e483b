//! The run index: what the build side knows of every WorkflowRun, kept from a watch (a
//! relist when the watch is lost), and what follows from a run's deletion: its agent stops
//! it and its logs go. After the first full listing, logs of runs deleted while the server
//! was down are swept.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use troupe_common::pb::v1alpha1::{self as pb, control_message};
use troupe_common::{Kind, Object, ObjectKey};

use super::logs::LogStore;
use super::webhook::WebhookSecrets;
use super::{BuildConfig, Builds, run_id};
use crate::resources::{Resources, WatchEventType, WatchRequest};
use crate::shared_state::StateHome;

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
    pub created: (i64, i32),
    /// Why it waits, as last written, so a waiting run is not written every second.
    pub waiting: Option<String>,
    /// When it ended, in seconds since the epoch, once it has.
    pub completed: Option<i64>,
    /// Its workflow: kind (as written) and name.
    pub workflow: (String, String),
}

impl RunView {
    pub fn pending(&self) -> bool {
        self.phase.is_empty() || self.phase == "Pending"
    }
}

/// Every run, by id.
#[derive(Default)]
pub(super) struct RunIndex {
    pub runs: HashMap<String, RunView>,
    /// The runs not finished (pending or running): what the scheduler looks at every tick,
    /// however many finished runs wait for their TTL.
    active: HashSet<String>,
    /// True once the index holds every run in the store.
    pub loaded: bool,
}

impl RunIndex {
    /// The runs not finished, with their views.
    pub fn active(&self) -> impl Iterator<Item = (&String, &RunView)> {
        self.active
            .iter()
            .filter_map(|id| self.runs.get(id).map(|view| (id, view)))
    }

    /// Forgets run `id`.
    pub fn remove(&mut self, id: &str) -> Option<RunView> {
        self.active.remove(id);
        self.runs.remove(id)
    }
}

impl Builds {
    /// Starts the build side: the run index and the scheduler. Logs and webhook secrets are
    /// kept where `home` says (logs in memory for a server alone without a data directory). Stops
    /// when `stopping` turns true.
    pub fn start(
        resources: Arc<Resources>,
        config: BuildConfig,
        home: &StateHome,
        stopping: watch::Receiver<bool>,
    ) -> std::io::Result<Arc<Self>> {
        let secrets = WebhookSecrets::open(home)?;
        let builds = Arc::new(Self {
            resources,
            secrets,
            logs: Arc::new(LogStore::open(home, config.max_log_bytes)),
            config,
            agents: Mutex::default(),
            runs: Mutex::default(),
            settling: Mutex::default(),
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
            let mut seen = Some(HashSet::new());
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
    pub(super) fn note(&self, run: &pb::WorkflowRun) -> String {
        let meta = run.metadata.clone().unwrap_or_default();
        let id = run_id(&meta.namespace, &meta.name);
        let status = run.status.clone().unwrap_or_default();
        let agent = status.attempts.last().and_then(|a| agent_key(&a.agent));
        let ours = !self.config.shared_store
            || agent
                .as_ref()
                .is_some_and(|a| self.agents().contains_key(a));
        let mut index = self.index();
        let lease_for = self.config.lease;
        let view = index.runs.entry(id.clone()).or_default();
        let running_before = view.phase == "Running" && view.attempt == status.attempt as u32;
        view.phase = status.phase.clone();
        view.attempt = status.attempt as u32;
        view.agent = agent;
        view.cancel_requested = status.cancel_requested;
        view.created = meta.create_time.map_or((0, 0), |t| (t.seconds, t.nanos));
        view.completed = status.completed_at.map(|t| t.seconds);
        let workflow = run
            .spec
            .as_ref()
            .and_then(|s| s.workflow.clone())
            .unwrap_or_default();
        view.workflow = (workflow.kind, workflow.name);
        if view.phase == "Running" {
            // A running attempt seen for the first time (a restart, another writer) gets a
            // fresh lease: its agent renews it when it reports. On a shared store, only if
            // its agent is this server's: another server keeps the lease of its own agents.
            if ours && (!running_before || view.lease.is_none()) {
                view.lease = Some(Instant::now() + lease_for);
            }
        } else {
            view.lease = None;
        }
        if !view.pending() {
            view.waiting = None;
        }
        if super::finished(&view.phase) {
            index.active.remove(&id);
        } else {
            index.active.insert(id.clone());
        }
        drop(index);
        self.wake.notify_one();
        id
    }

    /// The index holds every run: sweeps the logs of runs deleted while the server was down.
    async fn loaded(&self, seen: &HashSet<String>) {
        // After a lost watch, runs deleted in the gap are still in the index.
        let gone: Vec<String> = {
            let mut index = self.index();
            index.loaded = true;
            index
                .runs
                .keys()
                .filter(|id| !seen.contains(*id))
                .cloned()
                .collect()
        };
        for id in gone {
            self.forget_run(&id).await;
        }
        let with_logs = match self.logs.runs().await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the runs with logs");
                Vec::new()
            }
        };
        for run in with_logs {
            // On a shared store another server may have made the run since it was listed.
            let gone = !seen.contains(&run)
                && matches!(
                    self.resources.get(&run_key(&run)),
                    Err(crate::resources::Error::NotFound(_))
                );
            if gone && let Err(e) = self.logs.remove(&run).await {
                tracing::warn!(%run, error = %e, "could not remove the logs of a deleted run");
            }
        }
        self.wake.notify_one();
    }

    /// A run was deleted (alone, or with its component).
    async fn deleted(&self, run: &pb::WorkflowRun) {
        let meta = run.metadata.clone().unwrap_or_default();
        self.forget_run(&run_id(&meta.namespace, &meta.name)).await;
    }

    /// Run `id` is gone: its agent stops it, its logs go.
    async fn forget_run(&self, id: &str) {
        let view = self.index().remove(id);
        if let Some(view) = view
            && view.phase == "Running"
            && let Some(agent) = &view.agent
        {
            let cancel = control_message::Message::BuildCancel(pb::BuildCancel {
                run: id.to_string(),
                attempt: view.attempt,
                grace_seconds: self.config.cancel_grace.as_secs() as u32,
                reason: "the run was deleted".into(),
                forget: true,
            });
            self.send_to(agent, cancel).await;
        }
        if let Err(e) = self.logs.remove(id).await {
            tracing::warn!(run = %id, error = %e, "could not remove the logs of a deleted run");
        }
    }
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

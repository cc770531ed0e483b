//! Which agent runs what: one loop, woken by changes and every second, that offers pending
//! runs to build agents, declares lost the attempts whose lease ran out, and tells agents of
//! cancelled runs to stop.
//!
//! A run is claimed by one status write that only succeeds while it is still `Pending` (the
//! write's revision check orders it against a cancel), and only then offered: a run is never
//! offered twice for one attempt.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use troupe_common::pb::v1alpha1::{self as pb, control_message};
use troupe_common::timestamp::now;
use troupe_common::{Object, ObjectKey};

use super::index::{RunView, agent_name, run_key};
use super::plan::{self, Plan};
use super::{Builds, finished, inputs, ttl};

impl Builds {
    /// The scheduler: wakes on changes and every second.
    pub(super) async fn schedule(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let mut last_sweep = Instant::now();
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
            if last_sweep.elapsed() >= ttl::SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep_finished().await;
            }
        }
    }

    /// Declares lost every attempt whose lease ran out; on a shared store, also every
    /// attempt no server keeps a lease of whose agent has been connected to no server for a
    /// lease (it died with the server that held it).
    async fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<(String, RunView)> = self
            .index()
            .active()
            .filter(|(_, v)| v.phase == "Running" && v.lease.is_some_and(|l| l <= now))
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        for (id, view) in expired {
            if let Err(e) = self.lose(&id, &view).await {
                tracing::warn!(run = %id, error = %e, "could not record a lost attempt");
            }
        }
        if self.config.shared_store {
            self.expire_orphans().await;
        }
    }

    /// The shared-store half of [`Builds::expire`].
    async fn expire_orphans(&self) {
        let orphans: Vec<(String, RunView)> = self
            .index()
            .active()
            .filter(|(_, v)| v.phase == "Running" && v.lease.is_none())
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        for (id, view) in orphans {
            let Some(agent) = &view.agent else { continue };
            if !self.gone_for_a_lease(agent) {
                continue;
            }
            let Some(_settling) = self.settle(&id) else {
                continue;
            };
            let why = format!(
                "attempt {} was lost: build agent {} has been connected to no server for {}s",
                view.attempt,
                agent_name(agent),
                self.config.lease.as_secs()
            );
            let lost = self
                .lose_attempt(&run_key(&id), view.attempt as i32, why)
                .await;
            if let Err(e) = lost {
                tracing::warn!(run = %id, error = %e, "could not record a lost attempt");
            }
        }
    }

    /// Whether `agent`'s data plane shows no connection, and has not for a lease.
    fn gone_for_a_lease(&self, agent: &ObjectKey) -> bool {
        let status = match self.resources.get(agent) {
            Ok(Object::DataPlane(dp)) => dp.status,
            Ok(Object::ClusterDataPlane(dp)) => dp.status,
            _ => return false,
        };
        let Some(connection) = status.and_then(|s| s.agent_connection) else {
            return false;
        };
        let since = connection.last_disconnected_time.map_or(0, |t| t.seconds);
        !connection.connected && now().seconds - since >= self.config.lease.as_secs() as i64
    }

    /// Declares attempt `view.attempt` of run `id` lost (its lease ran out), unless its agent
    /// renewed the lease or reported its end meanwhile, and tells the agent to drop it.
    async fn lose(&self, id: &str, view: &RunView) -> Result<(), crate::resources::Error> {
        let Some(_settling) = self.settle(id) else {
            return Ok(());
        };
        let renewed = self
            .index()
            .runs
            .get(id)
            .and_then(|v| v.lease)
            .is_none_or(|lease| lease > Instant::now());
        if renewed {
            return Ok(());
        }
        let agent = view.agent.as_ref().map(agent_name).unwrap_or_default();
        let why = format!(
            "attempt {} was lost: build agent {agent} stopped renewing its lease",
            view.attempt
        );
        self.lose_attempt(&run_key(id), view.attempt as i32, why)
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

    /// Marks `attempt` of the run at `key` lost, for `why`, and offers the run again within
    /// the workflow's retries (counting the attempts lost in a row since the last manual
    /// retry). Returns false when the attempt was no longer the run's running one.
    pub(super) async fn lose_attempt(
        &self,
        key: &ObjectKey,
        attempt: i32,
        why: String,
    ) -> Result<bool, crate::resources::Error> {
        let run: pb::WorkflowRun = self.resources.get_as(key)?;
        let retries = self.workflow(&run).map_or(0, |spec| spec.retries.max(0));
        self.resources
            .update_status(key, move |_, object| {
                let Object::WorkflowRun(run) = object else {
                    return;
                };
                let status = run.status.get_or_insert_default();
                if status.phase != "Running" || status.attempt != attempt {
                    return;
                }
                if let Some(last) = status.attempts.last_mut() {
                    last.phase = "Lost".into();
                    last.message = why.clone();
                    last.completed_at = Some(now());
                }
                let since = status.retried_at;
                // Attempts an agent refused for lack of room never ran: they do not count.
                let lost_in_a_row = status
                    .attempts
                    .iter()
                    .rev()
                    .filter(|a| a.phase != "Refused")
                    .take_while(|a| a.phase == "Lost" && a.number > since)
                    .count() as i32;
                if status.cancel_requested {
                    status.phase = "Cancelled".into();
                    status.message = format!("cancelled; {why}");
                    status.completed_at = Some(now());
                } else if lost_in_a_row <= retries {
                    status.phase = "Pending".into();
                    status.message = format!("{why}; offering it again");
                } else {
                    status.phase = "Failed".into();
                    status.message = format!(
                        "{why}; no retries left (the workflow's spec.retries is {retries})"
                    );
                    status.completed_at = Some(now());
                }
            })
            .await
    }

    /// Tells the agents of runs being cancelled to stop them, once per session.
    async fn send_cancels(&self) {
        let cancelling: Vec<(String, RunView)> = self
            .index()
            .active()
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
            .active()
            .filter(|(_, v)| v.pending())
            .map(|(id, v)| (id.clone(), v.created, v.waiting.is_some()))
            .collect();
        if pending.is_empty() {
            return;
        }
        pending.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        let mut room = self.any_room();
        for (id, _, waiting) in pending {
            // Runs already told why they wait are looked at again only when some agent has
            // room: a thousand queued runs cost nothing while every agent is busy.
            if waiting && !room {
                continue;
            }
            if let Err(e) = self.dispatch(&id).await {
                tracing::warn!(run = %id, error = %e, "could not offer a run");
            }
            room = self.any_room();
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
        if status.plan.is_empty()
            && let Err(e) = inputs::check_allowed(&self.resources, &run)
        {
            return self.end_pending(&key, "Failed", &e).await;
        }
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
        let busy = self.busy();
        let mut matching = 0;
        let mut best: Option<(usize, ObjectKey)> = None;
        for (plane, agent) in agents.iter() {
            if !selector.iter().all(|(k, v)| agent.labels.get(k) == Some(v)) {
                continue;
            }
            matching += 1;
            let room = if agent.full() {
                0
            } else {
                agent
                    .capacity
                    .saturating_sub(busy.get(plane).copied().unwrap_or(0))
            };
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
        let busy = self.busy();
        self.agents().iter().any(|(plane, agent)| {
            !agent.full() && busy.get(plane).copied().unwrap_or(0) < agent.capacity
        })
    }

    /// How many attempts each agent runs now: one pass over the runs not finished.
    fn busy(&self) -> std::collections::HashMap<ObjectKey, usize> {
        let mut busy = std::collections::HashMap::new();
        for (_, view) in self.index().active() {
            if view.phase == "Running"
                && let Some(agent) = &view.agent
            {
                *busy.entry(agent.clone()).or_insert(0) += 1;
            }
        }
        busy
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
                    status.plan = steps.clone();
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
                status.message = message.clone();
                if status.plan.is_empty() {
                    status.plan = plan.steps.clone();
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
                status.message = message.clone();
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

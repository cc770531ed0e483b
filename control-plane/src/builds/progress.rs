//! What build agents report: an attempt's progress becomes the run's status (renewing the
//! attempt's lease), its log lines go to the log store, and both are acknowledged once
//! durable. A succeeded build's image is recorded on the component's Workload before the run
//! says `Succeeded`, so a run that says so has always reached its Workload.
//!
//! Only the agent holding a run's current attempt is listened to: anything about an older
//! attempt, another agent's, or a run that no longer exists is answered with a cancel that
//! tells the agent to drop it.

use std::collections::HashMap;

use tokio::sync::mpsc;
use troupe_common::pb::v1alpha1::{self as pb, control_message};
use troupe_common::timestamp::now;
use troupe_common::{Kind, Object, ObjectKey};

use super::index::{agent_name, run_key};
use super::{Builds, finished, send};
use crate::resources::{Error, Origin, Resources};
use troupe_common::agent::Outgoing;

/// Longest message, output value or step message kept from an agent.
const MAX_TEXT: usize = 4096;
/// Most outputs kept from one attempt.
const MAX_OUTPUTS: usize = 64;

impl Builds {
    /// Takes one attempt's progress from `plane`'s agent, answering through `tx`.
    pub async fn progress(
        &self,
        plane: &ObjectKey,
        progress: pb::BuildProgress,
        tx: &mpsc::Sender<Outgoing>,
    ) {
        let key = run_key(&progress.run);
        let run: pb::WorkflowRun = match self.resources.get_as(&key) {
            Ok(run) => run,
            Err(Error::NotFound(_)) => {
                self.forget(
                    tx,
                    &progress.run,
                    progress.attempt,
                    "the run no longer exists",
                )
                .await;
                return;
            }
            Err(e) => {
                tracing::warn!(run = %progress.run, error = %e, "could not read a run");
                return;
            }
        };
        let status = run.status.clone().unwrap_or_default();
        if let Err(why) = current(&status, plane, progress.attempt) {
            self.forget(tx, &progress.run, progress.attempt, &why).await;
            return;
        }
        let logged = self
            .logs
            .stored(&progress.run, progress.attempt)
            .await
            .unwrap_or(0);
        if status.phase != "Running" {
            // Its end is stored already (the run ended, perhaps retried since): the agent did
            // not hear so.
            self.ack(tx, &progress.run, progress.attempt, logged, true)
                .await;
            return;
        }
        if let Some(view) = self.index().runs.get_mut(&progress.run) {
            view.lease = Some(tokio::time::Instant::now() + self.config.lease);
        }
        let progress = sanitize(progress, status.plan.len());
        let (id, attempt) = (progress.run.clone(), progress.attempt);
        if progress.phase == "Refused" {
            return self.refused(tx, plane, progress, logged).await;
        }
        if !finished(&progress.phase) {
            let written = self
                .resources
                .update_status(&key, move |_, object| {
                    if let Object::WorkflowRun(run) = object {
                        let status = run.status.get_or_insert_default();
                        if status.phase == "Running" && status.attempt as u32 == attempt {
                            status.tasks = progress.steps.clone();
                        }
                    }
                })
                .await;
            match written {
                Ok(_) => self.ack(tx, &id, attempt, logged, false).await,
                Err(e) => {
                    tracing::warn!(run = %id, error = %e, "could not record a build's progress")
                }
            }
            return;
        }
        // An end is settled once: against a lease running out at the same moment.
        let Some(_settling) = self.settle(&id) else {
            return;
        };
        let ended = if progress.phase == "Cancelled" && !status.cancel_requested {
            // Nobody asked: the agent gave the attempt up (it lost its lease), as if lost.
            let why = format!(
                "build agent {} gave attempt {attempt} up: {}",
                agent_name(plane),
                progress.message
            );
            self.lose_attempt(&key, attempt as i32, why).await
        } else {
            self.finish(&key, &run, progress).await
        };
        match ended {
            Ok(true) => self.ack(tx, &id, attempt, logged, true).await,
            Ok(false) => {
                self.forget(tx, &id, attempt, "the attempt was lost meanwhile")
                    .await
            }
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "could not record how a build ended; the agent will report it again")
            }
        }
    }

    /// Stores log lines of an attempt from `plane`'s agent and says how far they are stored.
    /// Fails when the lines could not be stored: the agent sends each line once per session,
    /// so the session must end for it to send them again.
    pub async fn log_lines(
        &self,
        plane: &ObjectKey,
        logs: pb::BuildLogs,
        tx: &mpsc::Sender<Outgoing>,
    ) -> Result<(), String> {
        let view = self.index().runs.get(&logs.run).cloned();
        let Some(view) = view.filter(|v| v.attempt == logs.attempt) else {
            self.forget(tx, &logs.run, logs.attempt, "the attempt is not the run's")
                .await;
            return Ok(());
        };
        if view.agent.as_ref() != Some(plane) {
            self.forget(tx, &logs.run, logs.attempt, "another agent holds the run")
                .await;
            return Ok(());
        }
        match self.logs.append(&logs.run, logs.attempt, logs.lines).await {
            Ok(logged) => {
                let done = finished(&view.phase);
                self.ack(tx, &logs.run, logs.attempt, logged, done).await;
            }
            Err(e) => return Err(format!("storing the build logs of {}: {e}", logs.run)),
        }
        Ok(())
    }

    /// Puts a run whose agent had no room for the attempt back to `Pending` (the attempt
    /// `Refused`, not counted), offers that agent nothing for a third of a lease, and tells
    /// it the refusal is stored.
    async fn refused(
        &self,
        tx: &mpsc::Sender<Outgoing>,
        plane: &ObjectKey,
        progress: pb::BuildProgress,
        logged: u64,
    ) {
        let (id, attempt, why) = (progress.run, progress.attempt, progress.message);
        let Some(_settling) = self.settle(&id) else {
            return;
        };
        if let Some(agent) = self.agents().get_mut(plane) {
            agent.full_until = Some(tokio::time::Instant::now() + self.config.lease / 3);
        }
        let agent = agent_name(plane);
        let written = self
            .resources
            .update_status(&run_key(&id), move |_, object| {
                let Object::WorkflowRun(run) = object else {
                    return;
                };
                let status = run.status.get_or_insert_default();
                if status.phase != "Running" || status.attempt as u32 != attempt {
                    return;
                }
                let why = format!("build agent {agent} refused attempt {attempt}: {why}");
                if let Some(last) = status.attempts.last_mut() {
                    last.phase = "Refused".into();
                    last.message = why.clone();
                    last.completed_at = Some(now());
                }
                if status.cancel_requested {
                    status.phase = "Cancelled".into();
                    status.message = format!("cancelled; {why}");
                    status.completed_at = Some(now());
                } else {
                    status.phase = "Pending".into();
                    status.message = format!("{why}; offering it again");
                }
            })
            .await;
        match written {
            Ok(_) => self.ack(tx, &id, attempt, logged, true).await,
            Err(e) => tracing::warn!(run = %id, error = %e, "could not record a refused offer"),
        }
    }

    /// Records how an attempt ended: the image on the Workload first, then the run's status.
    /// Returns whether the end was recorded (not when the attempt stopped being the run's).
    /// A failure to record the image that may pass (the store, a busy Workload) is an error,
    /// so the agent reports the end again; one that will not pass fails the run.
    async fn finish(
        &self,
        key: &ObjectKey,
        run: &pb::WorkflowRun,
        progress: pb::BuildProgress,
    ) -> Result<bool, Error> {
        let mut phase = progress.phase.clone();
        let mut message = progress.message.clone();
        let image = progress.outputs.get("image").cloned().unwrap_or_default();
        if phase == "Succeeded"
            && let Some(owner) = component_of(run)
        {
            if image.is_empty() {
                phase = "Failed".into();
                message = "the steps succeeded but reported no `image` output".into();
            } else {
                match self.record_run_image(run, &owner, &progress.outputs).await {
                    Ok(()) => {}
                    Err(e @ (Error::Store(_) | Error::Stale { .. })) => return Err(e),
                    Err(e) => {
                        phase = "Failed".into();
                        message =
                            format!("could not record the image on Workload {}: {e}", owner.1);
                    }
                }
            }
        }
        if message.is_empty() {
            message = match phase.as_str() {
                "Succeeded" => format!("attempt {} succeeded", progress.attempt),
                other => format!("attempt {} ended {other}", progress.attempt),
            };
        }
        let attempt = progress.attempt;
        self.resources
            .update_status(key, move |_, object| {
                let Object::WorkflowRun(run) = object else {
                    return;
                };
                let status = run.status.get_or_insert_default();
                if status.phase != "Running" || status.attempt as u32 != attempt {
                    return;
                }
                let cancelled = status.cancel_requested && phase != "Succeeded";
                status.phase = if cancelled {
                    "Cancelled".into()
                } else {
                    phase.clone()
                };
                status.message = message.clone();
                status.tasks = progress.steps.clone();
                status.completed_at = Some(now());
                if status.phase == "Succeeded" {
                    status.outputs = progress.outputs.clone();
                    status.image = image.clone();
                }
                if let Some(last) = status.attempts.last_mut() {
                    last.phase = status.phase.clone();
                    last.message = status.message.clone();
                    last.completed_at = status.completed_at;
                }
            })
            .await
    }

    /// Records a run's image on its component's Workload.
    async fn record_run_image(
        &self,
        run: &pb::WorkflowRun,
        owner: &(String, String, String),
        outputs: &HashMap<String, String>,
    ) -> Result<(), Error> {
        let spec = run.spec.clone().unwrap_or_default();
        let build = pb::WorkloadBuild {
            image: outputs.get("image").cloned().unwrap_or_default(),
            digest: outputs.get("digest").cloned().unwrap_or_default(),
            commit: spec.commit,
            repository: spec.source.map(|s| s.repository).unwrap_or_default(),
            run: run
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            run_url: String::new(),
            time: Some(now()),
        };
        record_build(&self.resources, &owner.0, &owner.1, &owner.2, build).await
    }

    async fn ack(
        &self,
        tx: &mpsc::Sender<Outgoing>,
        run: &str,
        attempt: u32,
        logged: u64,
        finished: bool,
    ) {
        let ack = control_message::Message::BuildAck(pb::BuildAck {
            run: run.to_string(),
            attempt,
            logged,
            finished,
        });
        send(tx, ack).await;
    }

    /// Tells an agent to drop an attempt that is not the run's current one.
    async fn forget(&self, tx: &mpsc::Sender<Outgoing>, run: &str, attempt: u32, why: &str) {
        tracing::info!(%run, attempt, %why, "telling a build agent to drop an attempt");
        let cancel = control_message::Message::BuildCancel(pb::BuildCancel {
            run: run.to_string(),
            attempt,
            grace_seconds: self.config.cancel_grace.as_secs() as u32,
            reason: why.to_string(),
            forget: true,
        });
        send(tx, cancel).await;
    }
}

/// Whether `attempt` reported by `plane` is the run's current attempt, or why not.
fn current(status: &pb::WorkflowRunStatus, plane: &ObjectKey, attempt: u32) -> Result<(), String> {
    let last = status.attempts.last();
    if status.attempt as u32 != attempt || last.is_none() {
        return Err(format!(
            "attempt {attempt} is not the run's current one (that is attempt {})",
            status.attempt
        ));
    }
    let last = last.expect("checked");
    if last.agent != agent_name(plane) {
        return Err(format!(
            "build agent {} holds attempt {attempt}",
            last.agent
        ));
    }
    if last.phase == "Lost" {
        return Err(format!("attempt {attempt} was lost"));
    }
    Ok(())
}

/// The run's component: namespace, component and project names.
fn component_of(run: &pb::WorkflowRun) -> Option<(String, String, String)> {
    let owner = run.spec.as_ref()?.owner.clone()?;
    if owner.component_name.is_empty() {
        return None;
    }
    let namespace = run.metadata.as_ref()?.namespace.clone();
    Some((namespace, owner.component_name, owner.project_name))
}

/// Bounds what an agent reports: no more steps than the plan has, no longer texts.
fn sanitize(mut progress: pb::BuildProgress, steps: usize) -> pb::BuildProgress {
    progress.steps.truncate(steps.max(1));
    for step in &mut progress.steps {
        cut(&mut step.name);
        cut(&mut step.phase);
        cut(&mut step.message);
    }
    cut(&mut progress.message);
    if progress.outputs.len() > MAX_OUTPUTS {
        let keep: Vec<String> = {
            let mut names: Vec<String> = progress.outputs.keys().cloned().collect();
            names.sort();
            names.truncate(MAX_OUTPUTS);
            names
        };
        progress.outputs.retain(|k, _| keep.contains(k));
    }
    for value in progress.outputs.values_mut() {
        cut(value);
    }
    progress
}

fn cut(text: &mut String) {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Records `build` on the Workload of component `component` (project `project`) in
/// `namespace`: its image becomes the container's. Creates the Workload if the component has
/// none. Recording the same run again changes nothing.
pub(crate) async fn record_build(
    resources: &std::sync::Arc<Resources>,
    namespace: &str,
    component: &str,
    project: &str,
    build: pb::WorkloadBuild,
) -> Result<(), Error> {
    let key = ObjectKey::new(Kind::Workload, namespace, component);
    let mut stale = None;
    for _ in 0..5 {
        let mut workload = match resources.get_as::<pb::Workload>(&key) {
            Ok(workload) => workload,
            Err(Error::NotFound(_)) => pb::Workload {
                metadata: Some(pb::ObjectMeta {
                    name: component.to_string(),
                    namespace: namespace.to_string(),
                    ..Default::default()
                }),
                spec: Some(pb::WorkloadSpec {
                    owner: Some(pb::ComponentOwner {
                        project_name: project.to_string(),
                        component_name: component.to_string(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Err(e) => return Err(e),
        };
        let spec = workload.spec.get_or_insert_default();
        let recorded = spec.build.as_ref().is_some_and(|b| {
            (
                b.image.as_str(),
                b.run.as_str(),
                b.run_url.as_str(),
                b.commit.as_str(),
            ) == (
                build.image.as_str(),
                build.run.as_str(),
                build.run_url.as_str(),
                build.commit.as_str(),
            )
        });
        let container = spec.container.get_or_insert_default();
        if recorded && container.image == build.image {
            return Ok(());
        }
        container.image = build.image.clone();
        spec.build = Some(build.clone());
        match resources
            .apply(Object::Workload(workload), Origin::ControlPlane, false)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e @ Error::Stale { .. }) => stale = Some(e),
            Err(e) => return Err(e),
        }
    }
    // Five writers in a row got there first: the caller may try again later.
    Err(stale.expect("only a stale write loops"))
}

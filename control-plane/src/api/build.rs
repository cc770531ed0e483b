//! `troupe.v1alpha1.BuildService` handlers: start a component's build, stream a run's logs,
//! cancel and retry runs, record an image built elsewhere.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::pb::v1alpha1::build_service_server::BuildService;
use troupe_common::{Kind, Object, ObjectKey};

use super::auth::{component_target, stored_target};
use crate::auth::{Auth, Principal, Target, Verb};
use crate::builds::logs::Cursor;
use crate::builds::{BuildRequest, Builds, finished, run_id};
use crate::resources::{Origin, Resources};

pub use pb::build_service_server::BuildServiceServer;

/// The `troupe.v1alpha1.BuildService` implementation.
pub struct BuildApi {
    builds: Arc<Builds>,
    auth: Arc<Auth>,
}

impl BuildApi {
    /// Serves `builds` to whom `auth` allows.
    pub fn new(builds: Arc<Builds>, auth: Arc<Auth>) -> Self {
        Self { builds, auth }
    }

    fn resources(&self) -> &Arc<Resources> {
        self.builds.resources()
    }

    /// Whether `who` may `verb` the stored run `namespace/name`; the run and the target.
    fn allow_run(
        &self,
        who: &Principal,
        verb: Verb,
        namespace: &str,
        name: &str,
    ) -> Result<(pb::WorkflowRun, Target), Status> {
        required("namespace", namespace)?;
        required("name", name)?;
        let key = ObjectKey::new(Kind::WorkflowRun, namespace, name);
        let (stored, target) = stored_target(self.resources(), &key);
        self.auth.allow(who, verb, &target)?;
        match stored? {
            Object::WorkflowRun(run) => Ok((run, target)),
            _ => Err(Status::internal("the store returned another kind")),
        }
    }

    /// Changes run `namespace/name`'s status with `change`, if `check` allows it on the
    /// stored status; returns the run as stored after.
    async fn change_run(
        &self,
        who: &Principal,
        namespace: &str,
        name: &str,
        check: impl Fn(&pb::WorkflowRunStatus) -> Result<(), String>,
        change: impl Fn(&mut pb::WorkflowRunStatus) + Send + Sync + 'static,
    ) -> Result<pb::WorkflowRun, Status> {
        let (run, target) = self.allow_run(who, Verb::Apply, namespace, name)?;
        let key = ObjectKey::new(Kind::WorkflowRun, namespace, name);
        check(&run.status.clone().unwrap_or_default()).map_err(|why| {
            Status::failed_precondition(format!("WorkflowRun {namespace}/{name}: {why}"))
        })?;
        let change = Arc::new(change);
        self.resources()
            .update_status(&key, move |_, object| {
                if let Object::WorkflowRun(run) = object {
                    change(run.status.get_or_insert_default());
                }
            })
            .await?;
        self.builds.wake();
        let run: pb::WorkflowRun = self.resources().get_as(&key)?;
        let revision = run.metadata.as_ref().map(|m| m.resource_version);
        self.auth.record(who, Verb::Apply, &target, revision);
        Ok(run)
    }
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field}: required")));
    }
    Ok(())
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl BuildService for BuildApi {
    async fn start_build(
        &self,
        request: Request<pb::StartBuildRequest>,
    ) -> Result<Response<pb::StartBuildResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        required("component", &r.component)?;
        let target = component_target(
            self.resources(),
            Kind::WorkflowRun,
            &r.namespace,
            &r.component,
        );
        self.auth.allow(&who, Verb::Apply, &target)?;
        let request = BuildRequest {
            namespace: r.namespace,
            component: r.component,
            commit: r.commit,
            set: r.set.into_iter().collect(),
            repository: r.repository,
            r#ref: r.r#ref,
            trigger: pb::WorkflowRunTrigger {
                r#type: "manual".into(),
                by: who.display_name(),
            },
            name: None,
        };
        let (run, _) = self
            .builds
            .start_build(request, Origin::User)
            .await
            .map_err(|e| self.auth.refused(&who, Verb::Apply, &target, e.into()))?;
        let meta = run.metadata.as_ref();
        let target = Target {
            name: meta.map(|m| m.name.clone()).unwrap_or_default(),
            ..target
        };
        self.auth
            .record(&who, Verb::Apply, &target, meta.map(|m| m.resource_version));
        Ok(Response::new(pb::StartBuildResponse { run: Some(run) }))
    }

    type LogsStream = LogStream;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        let (run, _) = self.allow_run(&who, Verb::Get, &r.namespace, &r.name)?;
        let (tx, rx) = mpsc::channel(16);
        let follow = Follow {
            builds: self.builds.clone(),
            key: ObjectKey::new(Kind::WorkflowRun, &r.namespace, &r.name),
            id: run_id(&r.namespace, &r.name),
            request: r,
        };
        let attempt = run.status.map_or(0, |s| s.attempt) as u32;
        tokio::spawn(follow.run(attempt, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        let by = who.display_name();
        let run = self
            .change_run(
                &who,
                &r.namespace,
                &r.name,
                |status| match status.phase.as_str() {
                    phase if finished(phase) => Err(format!("it already ended {phase}")),
                    _ => Ok(()),
                },
                move |status| match status.phase.as_str() {
                    "" | "Pending" => {
                        status.phase = "Cancelled".into();
                        status.message = format!("cancelled by {by} before it started");
                        status.completed_at = Some(troupe_common::timestamp::now());
                    }
                    "Running" => {
                        status.cancel_requested = true;
                        status.message = format!(
                            "cancel requested by {by}; waiting for the build agent to stop attempt {}",
                            status.attempt
                        );
                    }
                    _ => {}
                },
            )
            .await?;
        Ok(Response::new(pb::CancelRunResponse { run: Some(run) }))
    }

    async fn retry_run(
        &self,
        request: Request<pb::RetryRunRequest>,
    ) -> Result<Response<pb::RetryRunResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        let by = who.display_name();
        let run = self
            .change_run(
                &who,
                &r.namespace,
                &r.name,
                |status| {
                    if finished(&status.phase) {
                        Ok(())
                    } else {
                        Err(format!(
                            "it is {}; only a run that ended can be retried",
                            if status.phase.is_empty() {
                                "Pending"
                            } else {
                                &status.phase
                            }
                        ))
                    }
                },
                move |status| {
                    if !finished(&status.phase) {
                        return;
                    }
                    status.phase = "Pending".into();
                    status.message = format!("retry requested by {by}");
                    status.retried_at = status.attempt;
                    status.cancel_requested = false;
                    status.completed_at = None;
                    status.tasks.clear();
                    status.outputs.clear();
                    status.image.clear();
                },
            )
            .await?;
        Ok(Response::new(pb::RetryRunResponse { run: Some(run) }))
    }

    async fn record_image(
        &self,
        request: Request<pb::RecordImageRequest>,
    ) -> Result<Response<pb::RecordImageResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        required("component", &r.component)?;
        required("image", &r.image)?;
        let target = component_target(self.resources(), Kind::Workload, &r.namespace, &r.component);
        self.auth.allow(&who, Verb::Apply, &target)?;
        let component: pb::Component = self.resources().get_as(&ObjectKey::new(
            Kind::Component,
            &r.namespace,
            &r.component,
        ))?;
        let project = component
            .spec
            .and_then(|s| s.owner)
            .map(|o| o.project_name)
            .unwrap_or_default();
        let build = pb::WorkloadBuild {
            image: r.image,
            digest: r.digest,
            commit: r.commit,
            repository: r.repository,
            run: String::new(),
            run_url: r.run_url,
            time: Some(troupe_common::timestamp::now()),
        };
        crate::builds::record_build(
            self.resources(),
            &r.namespace,
            &r.component,
            &project,
            build,
        )
        .await
        .map_err(|e| self.auth.refused(&who, Verb::Apply, &target, e.into()))?;
        let key = ObjectKey::new(Kind::Workload, &r.namespace, &r.component);
        let workload: pb::Workload = self.resources().get_as(&key)?;
        let revision = workload.metadata.as_ref().map(|m| m.resource_version);
        self.auth.record(&who, Verb::Apply, &target, revision);
        Ok(Response::new(pb::RecordImageResponse {
            workload: Some(workload),
        }))
    }

    async fn trace(
        &self,
        request: Request<pb::TraceRequest>,
    ) -> Result<Response<pb::TraceResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        required("query", &r.query)?;
        for kind in [
            Kind::ComponentRelease,
            Kind::ReleaseBinding,
            Kind::WorkflowRun,
        ] {
            let target = Target {
                kind: kind.name().to_string(),
                namespace: r.namespace.clone(),
                ..Target::default()
            };
            self.auth.allow(&who, Verb::List, &target)?;
        }
        let entries = self.builds.trace(&r.namespace, &r.query).await?;
        Ok(Response::new(pb::TraceResponse { entries }))
    }

    async fn create_webhook_secret(
        &self,
        request: Request<pb::CreateWebhookSecretRequest>,
    ) -> Result<Response<pb::CreateWebhookSecretResponse>, Status> {
        let who = self.auth.caller(&request).await?;
        let r = request.into_inner();
        required("namespace", &r.namespace)?;
        required("component", &r.component)?;
        let key = ObjectKey::new(Kind::Component, &r.namespace, &r.component);
        let (stored, target) = stored_target(self.resources(), &key);
        self.auth.allow(&who, Verb::Apply, &target)?;
        stored?;
        let secret = self
            .builds
            .create_webhook_secret(&r.namespace, &r.component)
            .map_err(|e| super::status::io_failure("keeping the webhook secret", e))?;
        self.auth.record(&who, Verb::Apply, &target, None);
        Ok(Response::new(pb::CreateWebhookSecretResponse {
            secret,
            path: crate::builds::webhook::PATH.to_string(),
        }))
    }
}

/// One `Logs` call: reads what is stored, then waits for more while asked to follow.
struct Follow {
    builds: Arc<Builds>,
    key: ObjectKey,
    id: String,
    request: pb::LogsRequest,
}

impl Follow {
    async fn run(self, current: u32, tx: mpsc::Sender<Result<pb::LogsResponse, Status>>) {
        if let Err(status) = self.stream(current, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    }

    async fn stream(
        &self,
        current: u32,
        tx: &mpsc::Sender<Result<pb::LogsResponse, Status>>,
    ) -> Result<(), Status> {
        let r = &self.request;
        let logs = self.builds.logs();
        let mut changes = logs.subscribe(&self.id);
        let mut attempt = if r.attempt > 0 {
            r.attempt
        } else {
            current.max(1)
        };
        let mut cursor = Cursor::default();
        let mut after = r.after_seq;
        // Once the run has ended, one more read catches lines stored just before.
        let mut ending = false;
        loop {
            let (lines, next) = logs
                .read(&self.id, attempt, cursor)
                .await
                .map_err(|e| super::status::io_failure("reading the run's log", e))?;
            cursor = next;
            if !lines.is_empty() {
                let seen = after;
                after = lines
                    .iter()
                    .map(|l| l.seq)
                    .max()
                    .unwrap_or(after)
                    .max(after);
                let lines: Vec<pb::LogLine> = lines
                    .into_iter()
                    .filter(|l| l.seq > seen && (r.step.is_empty() || l.step == r.step))
                    .collect();
                if !lines.is_empty()
                    && tx
                        .send(Ok(pb::LogsResponse { attempt, lines }))
                        .await
                        .is_err()
                {
                    return Ok(());
                }
                continue;
            }
            if !r.follow || ending {
                return Ok(());
            }
            let run: pb::WorkflowRun = match self.builds.resources().get_as(&self.key) {
                Ok(run) => run,
                Err(crate::resources::Error::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let status = run.status.unwrap_or_default();
            let latest = status.attempt as u32;
            if r.attempt == 0 && latest > attempt {
                // The attempt followed was lost or retried: follow the next one.
                attempt = latest;
                cursor = Cursor::default();
                after = 0;
                continue;
            }
            if finished(&status.phase) || (r.attempt > 0 && r.attempt < latest) {
                ending = true;
                continue;
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The run's log was dropped (the run deleted, perhaps made again).
                        changes = logs.subscribe(&self.id);
                    }
                }
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = tx.closed() => return Ok(()),
            }
        }
    }
}

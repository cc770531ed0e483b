//! `troupe build`, `logs`, `cancel` and `retry`: start a WorkflowRun of a component, read its
//! log, stop it, run it again. Each asks the build service for one thing and prints one line
//! about the run; `logs` prints its lines as `[step] text`.
//!
//! `logs -f` and `build --wait` follow a run until it ends. A broken stream (the server
//! restarted, the network dropped) is reopened after the last line printed, so no line shows
//! twice and none is skipped; a stream that ends while the run still runs is reopened too, on
//! the run's new attempt when a lost attempt was handed to another agent.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::RunPhase;
use troupe_common::{Kind, Object};

use super::context::{Builds, Client, Context, server_error};

/// Start a build of a component: a WorkflowRun of its `spec.workflow`.
#[derive(Debug, clap::Args)]
pub struct BuildCmd {
    /// The component.
    component: String,
    /// Namespace of the component.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Commit to build.
    #[arg(long, default_value = "")]
    commit: String,
    /// A workflow parameter over the component's, by dotted path (repeatable; the last of a
    /// key wins): `--set resources.cpu=500m`. The value is JSON if it parses (`3`, `true`,
    /// `["a"]`), else text; a field the schema types as a string always takes the text.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    set: Vec<(String, String)>,
    /// The source repository, recorded on the run.
    #[arg(long, default_value = "")]
    repository: String,
    /// The git ref, recorded on the run, e.g. refs/heads/main.
    #[arg(long = "ref", value_name = "REF", default_value = "")]
    git_ref: String,
    /// Follow the run's logs until it ends; exit 1 unless it Succeeded.
    #[arg(long)]
    wait: bool,
}

impl BuildCmd {
    /// Starts the run and prints its name; with `--wait`, follows it to its end.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let server = Server::connect(ctx, &self.namespace, "").await?;
        let response = server
            .builds
            .clone()
            .start_build(self.request())
            .await
            .map_err(server_error)?
            .into_inner();
        let run = response.run.unwrap_or_default();
        let name = run.metadata.unwrap_or_default().name;
        outln!("workflowrun/{name} created");
        if !self.wait {
            return Ok(ExitCode::SUCCESS);
        }
        let mut server = Server { name, ..server };
        let request = logs_request(&self.namespace, &server.name, "", 0);
        follow(&mut server, request, true, &mut |line| outln!("{line}")).await?;
        let run = server.get().await?;
        outln!("{}", describe(&run));
        Ok(if phase_of(&run) == RunPhase::Succeeded {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    fn request(&self) -> pb::StartBuildRequest {
        pb::StartBuildRequest {
            namespace: self.namespace.clone(),
            component: self.component.clone(),
            commit: self.commit.clone(),
            set: self.set.iter().cloned().collect::<HashMap<_, _>>(),
            repository: self.repository.clone(),
            r#ref: self.git_ref.clone(),
        }
    }
}

/// Print a run's log lines as `[step] text`.
#[derive(Debug, clap::Args)]
pub struct LogsCmd {
    /// The WorkflowRun.
    run: String,
    /// Namespace of the run.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
    /// Only this step's lines.
    #[arg(long, default_value = "")]
    step: String,
    /// The attempt whose lines to print; 0 is the current one.
    #[arg(long, default_value_t = 0)]
    attempt: u32,
    /// Keep printing new lines until the run ends.
    #[arg(short, long)]
    follow: bool,
}

impl LogsCmd {
    /// Prints the lines stored, then, with `-f`, new ones until the run ends.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let mut server = Server::connect(ctx, &self.namespace, &self.run).await?;
        let request = logs_request(&self.namespace, &self.run, &self.step, self.attempt);
        follow(&mut server, request, self.follow, &mut |line| {
            outln!("{line}")
        })
        .await?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Cancel a run: its current step is stopped within the grace period.
#[derive(Debug, clap::Args)]
pub struct CancelCmd {
    /// The WorkflowRun.
    run: String,
    /// Namespace of the run.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
}

impl CancelCmd {
    /// Asks for the cancel and prints the run's phase.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::CancelRunRequest {
            namespace: self.namespace,
            name: self.run,
        };
        let response = ctx.builds().await?.cancel_run(request).await;
        let run = response.map_err(server_error)?.into_inner().run;
        outln!("{}", describe(&run.unwrap_or_default()));
        Ok(ExitCode::SUCCESS)
    }
}

/// Run a finished run again: a new attempt with the same inputs.
#[derive(Debug, clap::Args)]
pub struct RetryCmd {
    /// The WorkflowRun.
    run: String,
    /// Namespace of the run.
    #[arg(short, long, env = "TROUPE_NAMESPACE")]
    namespace: String,
}

impl RetryCmd {
    /// Starts the new attempt and prints the run's phase.
    pub(super) async fn run(self, ctx: &Context) -> anyhow::Result<ExitCode> {
        let request = pb::RetryRunRequest {
            namespace: self.namespace,
            name: self.run,
        };
        let response = ctx.builds().await?.retry_run(request).await;
        let run = response.map_err(server_error)?.into_inner().run;
        outln!("{}", describe(&run.unwrap_or_default()));
        Ok(ExitCode::SUCCESS)
    }
}

/// `KEY=VALUE` of `--set`: the key is what comes before the first `=`.
fn parse_set(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!(
            "{text:?} is not KEY=VALUE (e.g. --set resources.cpu=500m)"
        )),
    }
}

fn logs_request(namespace: &str, run: &str, step: &str, attempt: u32) -> pb::LogsRequest {
    pb::LogsRequest {
        namespace: namespace.to_string(),
        name: run.to_string(),
        attempt,
        step: step.to_string(),
        follow: false,
        after_seq: 0,
    }
}

/// One log line as the CLI prints it: `[step] text`.
fn log_line(line: &pb::LogLine) -> String {
    format!("[{}] {}", line.step, line.text)
}

/// One line about a run: `workflowrun/NAME: PHASE (attempt N): MESSAGE`.
fn describe(run: &pb::WorkflowRun) -> String {
    let name = run.metadata.as_ref().map_or("", |m| m.name.as_str());
    let status = run.status.clone().unwrap_or_default();
    let phase = if status.phase.is_empty() {
        RunPhase::Pending.as_str()
    } else {
        status.phase.as_str()
    };
    let mut line = format!("workflowrun/{name}: {phase}");
    if status.attempt > 1 {
        line.push_str(&format!(" (attempt {})", status.attempt));
    }
    if !status.message.is_empty() {
        line.push_str(&format!(": {}", status.message));
    }
    line
}

/// The run's phase; a phase this CLI does not know counts as not finished.
fn phase_of(run: &pb::WorkflowRun) -> RunPhase {
    let phase = run.status.as_ref().map_or("", |s| s.phase.as_str());
    RunPhase::of_status(phase).unwrap_or(RunPhase::Running)
}

/// A stream of log batches, or the error that broke it.
type LogStream = BoxStream<'static, Result<pb::LogsResponse, tonic::Status>>;

/// What following a run's log needs: the server's lines and how the run stands, and a way
/// to wait before reopening a stream.
trait RunSource {
    /// Opens a stream of the lines `request` asks for.
    async fn open(&mut self, request: pb::LogsRequest) -> Result<LogStream, tonic::Status>;
    /// The run's phase and current attempt.
    async fn state(&mut self) -> Result<(RunPhase, u32), tonic::Status>;
    /// Waits `delay` before the next reopening.
    async fn pause(&mut self, delay: Duration);
}

/// The build and resource services on one connection, about one run.
struct Server {
    builds: Builds,
    resources: Client,
    namespace: String,
    name: String,
}

impl Server {
    async fn connect(ctx: &Context, namespace: &str, name: &str) -> anyhow::Result<Self> {
        let connection = ctx.channel().await?;
        Ok(Server {
            builds: Builds::new(connection.clone()),
            resources: Client::new(connection),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    async fn get(&self) -> anyhow::Result<pb::WorkflowRun> {
        self.fetch().await.map_err(server_error)
    }

    async fn fetch(&self) -> Result<pb::WorkflowRun, tonic::Status> {
        let request = pb::GetRequest {
            kind: Kind::WorkflowRun.name().into(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        };
        let object = self.resources.clone().get(request).await?.into_inner();
        match object.resource.and_then(|r| r.object) {
            Some(Object::WorkflowRun(run)) => Ok(run),
            _ => Err(tonic::Status::internal(
                "the server answered without the run",
            )),
        }
    }
}

impl RunSource for Server {
    async fn open(&mut self, request: pb::LogsRequest) -> Result<LogStream, tonic::Status> {
        Ok(self.builds.logs(request).await?.into_inner().boxed())
    }

    async fn state(&mut self) -> Result<(RunPhase, u32), tonic::Status> {
        let run = self.fetch().await?;
        let attempt = run.status.as_ref().map_or(0, |s| s.attempt);
        Ok((phase_of(&run), u32::try_from(attempt).unwrap_or(0)))
    }

    async fn pause(&mut self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

/// Consecutive broken streams (or failed looks at the run) without a new line before
/// following gives up: about two minutes with the backoff below, long enough for a control
/// plane to restart.
const MAX_FAILURES: u32 = 30;

/// Where a log stream stands: the attempt it reads and the last line printed of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    attempt: u32,
    after_seq: u64,
}

/// Prints `request`'s lines through `print`; with `follow`, keeps going until the run ends,
/// reopening the stream after the last line printed whenever it ends or breaks before that.
/// Returns the phase the run ended in (with `follow`).
async fn follow(
    source: &mut impl RunSource,
    request: pb::LogsRequest,
    follow: bool,
    print: &mut impl FnMut(String),
) -> anyhow::Result<Option<RunPhase>> {
    // An attempt the user named stays the one read; otherwise the current one, whichever
    // that is as the run goes on.
    let pinned = request.attempt != 0;
    let mut cursor = Cursor {
        attempt: request.attempt,
        after_seq: request.after_seq,
    };
    // Consecutive broken streams, and consecutive quiet ends, since the last new line.
    let (mut failures, mut quiet) = (0, 0);
    loop {
        let asked = pb::LogsRequest {
            attempt: cursor.attempt,
            after_seq: cursor.after_seq,
            follow,
            ..request.clone()
        };
        let before = cursor;
        let ended = read(source, asked, &mut cursor, print).await;
        if !follow {
            return ended.map(|()| None).map_err(server_error);
        }
        if cursor != before {
            (failures, quiet) = (0, 0);
        }
        let broken = match ended {
            Err(status) if reopens(&status) => Some(status),
            Err(status) => return Err(server_error(status)),
            // The stream ended: the run did, or the server let go of it early.
            Ok(()) => match source.state().await {
                Ok((phase, _)) if phase.is_finished() => return Ok(Some(phase)),
                Ok((phase, current)) if cursor.attempt != 0 && current > cursor.attempt => {
                    // The attempt read ended and another took over (its lease was lost).
                    if pinned {
                        return Ok(Some(phase));
                    }
                    eprintln!(
                        "attempt {} ended; following attempt {current}",
                        cursor.attempt
                    );
                    cursor = Cursor {
                        attempt: current,
                        after_seq: 0,
                    };
                    continue;
                }
                Ok(_) => None,
                Err(status) if reopens(&status) => Some(status),
                Err(status) => return Err(server_error(status)),
            },
        };
        let step = match broken {
            Some(status) => {
                failures += 1;
                if failures > MAX_FAILURES {
                    anyhow::bail!(
                        "lost the log stream {MAX_FAILURES} times in a row: {}",
                        status.message()
                    );
                }
                failures
            }
            None => {
                quiet += 1;
                quiet
            }
        };
        let delay = troupe_common::backoff::doubling(
            Duration::from_millis(200),
            Duration::from_secs(5),
            step,
        );
        source.pause(delay).await;
    }
}

/// Reads one stream to its end, printing each line after `cursor` and moving it on. A
/// batch of another attempt than the cursor's (the server moved on to a new one) starts
/// that attempt from its first line.
async fn read(
    source: &mut impl RunSource,
    request: pb::LogsRequest,
    cursor: &mut Cursor,
    print: &mut impl FnMut(String),
) -> Result<(), tonic::Status> {
    let mut stream = source.open(request).await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.attempt != cursor.attempt {
            if cursor.attempt != 0 {
                eprintln!(
                    "attempt {} ended; following attempt {}",
                    cursor.attempt, batch.attempt
                );
            }
            *cursor = Cursor {
                attempt: batch.attempt,
                after_seq: 0,
            };
        }
        for line in &batch.lines {
            // A line already printed (a server that resends after a reopening) is skipped.
            if line.seq <= cursor.after_seq {
                continue;
            }
            print(log_line(line));
            cursor.after_seq = line.seq;
        }
    }
    Ok(())
}

/// True for errors that say the stream broke rather than that it was refused.
fn reopens(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled | Code::Aborted
    )
}

#[cfg(test)]
mod tests;

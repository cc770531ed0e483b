//! `troupe-bench builds`: concurrent builds through in-process build agents, and a run's log
//! end to end.
//!
//! One server in this process (sled in a temporary directory, plain gRPC on loopback) holds
//! the example platform, a workflow whose one step is a shell script that prints `--lines`
//! lines and reports an image, and `--runs` components built by it. `--agents` build agents
//! run in this process too, each the real `troupe_agent` client over its own TCP + mTLS
//! connection for its own DataPlane (`acme/builder-N`), with the `process` executor and room
//! for every run at once.
//!
//! 1. Trigger to Succeeded: every component's build is started at once (`StartBuild`); each
//!    is timed from just before its call until a watch of WorkflowRuns shows it `Succeeded`.
//! 2. Log throughput: one more run prints `--log-lines` lines while a `Logs` call with
//!    `follow` (opened right after `StartBuild`, as `troupe logs -f` would) reads them; lines
//!    per second from the first line received to the last, every sequence number checked.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use troupe_agent::Event;
use troupe_agent::builds::BuildPlaneConfig;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::build_service_client::BuildServiceClient;
use troupe_common::pb::v1alpha1::data_plane_service_client::DataPlaneServiceClient;
use troupe_common::pb::v1alpha1::{
    CreateBootstrapTokenRequest, DataPlaneIdentity, LogsRequest, StartBuildRequest,
};
use troupe_common::status::RunPhase;
use troupe_common::{Kind, Object};

use super::agents::MemoryApplier;
use super::api::{Api, ApiAddr, LocalServer};
use super::rerender::apply_all;
use super::{PLATFORM, percentile, round2};

/// What to measure.
pub struct Options {
    /// Builds started at once.
    pub runs: usize,
    /// Build agents they share.
    pub agents: usize,
    /// Lines each of those builds prints.
    pub lines: usize,
    /// Lines of the run whose log is followed (0 skips it).
    pub log_lines: usize,
}

/// The longest any one wait may take: a call, a watch event, a log message.
const PATIENCE: Duration = Duration::from_secs(120);

/// The workflow, the component type allowing it, and nothing else of the build tests' fixture.
const BUILD_YAML: &str = r#"apiVersion: troupe.dev/v1alpha1
kind: Workflow
metadata: {name: bench-build, namespace: acme}
spec:
  parameters:
    type: object
    properties:
      lines: {type: integer, default: 200, minimum: 0}
  steps:
    - name: build
      env:
        LINES: "${{ parameters.lines }}"
        IMAGE: "registry.local/acme/${{ component.name }}:bench"
      script: |
        i=0
        while [ $i -lt "$LINES" ]; do echo "line $i"; i=$((i+1)); done
        echo "image=$IMAGE" >> "$TROUPE_OUTPUTS"
---
apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: built, namespace: acme}
spec:
  workloadType: deployment
  allowedWorkflows: [{name: bench-build}]
  resources:
    - id: deployment
      template:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: "${{ metadata.name }}", namespace: "${{ metadata.namespace }}"}
        spec:
          selector: {matchLabels: "${{ metadata.podSelectors }}"}
          template:
            metadata: {labels: "${{ metadata.podSelectors }}"}
            spec:
              containers: [{name: main, image: "${{ workload.container.image }}"}]
"#;

/// A component of project shop built by the bench workflow, printing `lines` lines.
fn mk_component(name: &str, lines: usize) -> anyhow::Result<Vec<Object>> {
    Ok(from_yaml(&format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: {name}, namespace: acme}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/built}}
  workflow: {{name: bench-build, parameters: {{lines: {lines}}}}}
"
    ))?)
}

/// Build data plane `acme/builder-{i}`.
fn mk_builder(i: usize) -> anyhow::Result<Vec<Object>> {
    Ok(from_yaml(&format!(
        "apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {{name: builder-{i}, namespace: acme}}
spec: {{planeId: builder-{i}}}
"
    ))?)
}

/// The build agents running in this process.
struct Builders {
    /// `Synced` events so far, over all agents.
    synced: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Builders {
    /// Starts `count` agents, each registered with its own bootstrap token for DataPlane
    /// `acme/builder-N`, each running up to `capacity` builds at once.
    async fn start(server: &LocalServer, count: usize, capacity: u32) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut tokens = DataPlaneServiceClient::new(server.api.connect().await?);
        let synced = Arc::new(AtomicUsize::new(0));
        let stop = watch::channel(false).0;
        let applier = Arc::new(MemoryApplier::default());
        let mut tasks = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("builder-{i}");
            let token = tokens
                .create_bootstrap_token(CreateBootstrapTokenRequest {
                    data_plane: Some(DataPlaneIdentity {
                        namespace: "acme".into(),
                        name: name.clone(),
                    }),
                    ttl_seconds: 3600,
                })
                .await?
                .into_inner()
                .token;
            let state = dir.path().join(&name);
            let mut config = troupe_agent::Config::new(
                format!("https://{}", server.agents),
                DataPlaneIdentity::parse(&format!("acme/{name}")).map_err(anyhow::Error::msg)?,
                state.clone(),
                applier.clone(),
            );
            config.token = Some(token);
            config.ca_cert = Some(server.agent_ca.clone());
            config.builds = Some(BuildPlaneConfig {
                capacity,
                ..BuildPlaneConfig::new(state.join("builds"))
            });
            let counter = synced.clone();
            config.on_event = Some(Arc::new(move |event| {
                if let Event::Synced = event {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }));
            let stopping = stop.subscribe();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = troupe_agent::run(config, stopping).await {
                    eprintln!("build agent {name}: {e:#}");
                }
            }));
        }
        let builders = Self {
            synced,
            stop,
            tasks,
            _dir: dir,
        };
        builders.wait_synced(count).await?;
        Ok(builders)
    }

    /// Waits until `count` agents have connected and finished their first sync.
    async fn wait_synced(&self, count: usize) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.synced.load(Ordering::Relaxed) < count {
            anyhow::ensure!(
                start.elapsed() < PATIENCE,
                "only {} of {count} build agents connected within {PATIENCE:?}",
                self.synced.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stops every agent (killing what they still run) and waits for them, boundedly.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .map_err(|_| anyhow::anyhow!("a build agent did not stop within 30 s"))??;
        }
        Ok(())
    }
}

/// A run that ended: its phase, its message, when the watch showed it.
struct Ended {
    phase: RunPhase,
    message: String,
    at: Instant,
}

/// Forwards every WorkflowRun of `acme` that reaches a final phase, by name, as the watch
/// shows it.
async fn follow_runs(api: &ApiAddr) -> anyhow::Result<mpsc::UnboundedReceiver<(String, Ended)>> {
    let mut watch = api.watch(Kind::WorkflowRun).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(event)) = watch.message().await {
            let at = Instant::now();
            let Some(Object::WorkflowRun(run)) = event.resource.and_then(|r| r.object) else {
                continue;
            };
            let status = run.status.unwrap_or_default();
            let Ok(phase) = RunPhase::of_status(&status.phase) else {
                continue;
            };
            let name = run.metadata.map(|m| m.name).unwrap_or_default();
            if phase.is_finished() {
                let ended = Ended {
                    phase,
                    message: status.message,
                    at,
                };
                if tx.send((name, ended)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// Starts component `component`'s build; the run's name.
async fn start_build(
    client: &mut BuildServiceClient<Api>,
    component: &str,
) -> anyhow::Result<String> {
    let request = StartBuildRequest {
        namespace: "acme".into(),
        component: component.into(),
        ..Default::default()
    };
    let response = tokio::time::timeout(PATIENCE, client.start_build(request))
        .await
        .map_err(|_| anyhow::anyhow!("StartBuild of {component} took over {PATIENCE:?}"))??;
    Ok(response
        .into_inner()
        .run
        .and_then(|r| r.metadata)
        .map(|m| m.name)
        .unwrap_or_default())
}

/// Waits until every run of `names` has ended; each one's end. A run that ends other than
/// `Succeeded` is an error naming it.
async fn wait_ended(
    ended: &mut mpsc::UnboundedReceiver<(String, Ended)>,
    seen: &mut HashMap<String, Ended>,
    names: &[&str],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE * 5;
    while let Some(missing) = names.iter().find(|n| !seen.contains_key(**n)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some((name, end))) = tokio::time::timeout(left, ended.recv()).await else {
            anyhow::bail!(
                "run {missing} (and {} more) did not end in time",
                names.iter().filter(|n| !seen.contains_key(**n)).count() - 1
            );
        };
        seen.entry(name).or_insert(end);
    }
    for name in names {
        let end = &seen[*name];
        anyhow::ensure!(
            end.phase == RunPhase::Succeeded,
            "run {name} ended {}: {}",
            end.phase.as_str(),
            end.message
        );
    }
    Ok(())
}

/// Figures of the log measurement.
struct LogFigures {
    lines_per_s: f64,
    first_line_ms: f64,
    last_line_s: f64,
}

/// Starts component `logs`'s build, follows its log from right after `StartBuild` to its end,
/// and checks that lines 1..=`lines` each came once, in order, with the text printed.
async fn follow_log(
    api: &ApiAddr,
    ended: &mut mpsc::UnboundedReceiver<(String, Ended)>,
    seen: &mut HashMap<String, Ended>,
    lines: usize,
) -> anyhow::Result<LogFigures> {
    let mut client = BuildServiceClient::new(api.connect().await?);
    let t0 = Instant::now();
    let run = start_build(&mut client, "logs").await?;
    let request = LogsRequest {
        namespace: "acme".into(),
        name: run.clone(),
        follow: true,
        ..Default::default()
    };
    let mut stream = tokio::time::timeout(PATIENCE, client.logs(request))
        .await
        .map_err(|_| anyhow::anyhow!("Logs of {run} took over {PATIENCE:?} to open"))??
        .into_inner();
    let (mut received, mut out_of_place) = (0u64, 0u64);
    let (mut first, mut last) = (None, t0);
    let mut last_text = String::new();
    loop {
        let message = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .map_err(|_| anyhow::anyhow!("no log of {run} for {PATIENCE:?}"))??;
        let Some(message) = message else { break };
        let at = Instant::now();
        first.get_or_insert(at);
        last = at;
        for line in message.lines {
            received += 1;
            if line.seq != received || line.text != format!("line {}", received - 1) {
                out_of_place += 1;
            }
            last_text = line.text;
        }
    }
    wait_ended(ended, seen, &[&run]).await?;
    // The server keeps a bounded log per run and ends a longer one with a marker line.
    anyhow::ensure!(
        !last_text.starts_with("[troupe]"),
        "the log of {run} passed the server's bound after {} lines ({last_text:?}): use fewer --log-lines",
        received - 1
    );
    anyhow::ensure!(
        received == lines as u64 && out_of_place == 0,
        "the log of {run} had {received} lines ({out_of_place} out of place), expected lines 1..={lines} each once"
    );
    let first = first.unwrap_or(last);
    Ok(LogFigures {
        lines_per_s: lines.saturating_sub(1) as f64
            / last.duration_since(first).as_secs_f64().max(1e-6),
        first_line_ms: first.duration_since(t0).as_secs_f64() * 1000.0,
        last_line_s: last.duration_since(t0).as_secs_f64(),
    })
}

/// Runs every measurement and returns the figures.
pub async fn run(options: Options) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    anyhow::ensure!(
        options.runs > 0 && options.agents > 0,
        "--runs and --agents must be at least 1"
    );
    let server = LocalServer::start().await?;
    let api = server.api.clone();
    eprintln!(
        "setting up {} components and {} build agents …",
        options.runs, options.agents
    );
    let mut objects: Vec<Object> = from_yaml(PLATFORM)?
        .into_iter()
        .filter(|o| !matches!(o, Object::Component(_) | Object::Workload(_)))
        .collect();
    objects.extend(from_yaml(BUILD_YAML)?);
    for i in 0..options.agents {
        objects.extend(mk_builder(i)?);
    }
    apply_all(&api, objects, 1).await?;
    let mut components = mk_component("logs", options.log_lines)?;
    for i in 0..options.runs {
        components.extend(mk_component(&format!("c{i}"), options.lines)?);
    }
    apply_all(&api, components, 8).await?;
    let capacity = u32::try_from(options.runs.div_ceil(options.agents))?;
    let builders = Builders::start(&server, options.agents, capacity).await?;

    // 1. Trigger to Succeeded.
    let mut ended = follow_runs(&api).await?;
    let client = BuildServiceClient::new(api.connect().await?);
    eprintln!("starting {} builds at once …", options.runs);
    let wall = Instant::now();
    let started = futures::future::try_join_all((0..options.runs).map(|i| {
        let mut client = client.clone();
        async move {
            let t0 = Instant::now();
            let run = start_build(&mut client, &format!("c{i}")).await?;
            anyhow::Ok((run, t0))
        }
    }))
    .await?;
    let mut seen = HashMap::new();
    let names: Vec<&str> = started.iter().map(|(n, _)| n.as_str()).collect();
    wait_ended(&mut ended, &mut seen, &names).await?;
    let mut latencies: Vec<Duration> = started
        .iter()
        .map(|(name, t0)| seen[name].at.duration_since(*t0))
        .collect();
    let wall_s = names
        .iter()
        .map(|n| seen[*n].at)
        .max()
        .map_or(0.0, |end| end.duration_since(wall).as_secs_f64());
    latencies.sort();
    let max_ms = latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0);

    let mut figures = serde_json::Map::new();
    let mut put = |name: &str, value: f64, unit: &str| {
        println!("{name} {} {unit}", round2(value));
        figures.insert(name.into(), round2(value).into());
    };
    put("builds_runs", options.runs as f64, "runs");
    put("builds_agents", options.agents as f64, "agents");
    put("builds_lines_per_run", options.lines as f64, "lines");
    put(
        "builds_trigger_to_succeeded_p50_ms",
        percentile(&latencies, 0.50),
        "ms",
    );
    put(
        "builds_trigger_to_succeeded_p99_ms",
        percentile(&latencies, 0.99),
        "ms",
    );
    put("builds_trigger_to_succeeded_max_ms", max_ms, "ms");
    put("builds_wall_s", wall_s, "s");

    // 2. Log throughput, alone on the agents.
    if options.log_lines > 0 {
        eprintln!(
            "following the log of one build of {} lines …",
            options.log_lines
        );
        let log = follow_log(&api, &mut ended, &mut seen, options.log_lines).await?;
        put("build_log_lines", options.log_lines as f64, "lines");
        put("build_log_lines_per_s", log.lines_per_s, "lines/s");
        put(
            "build_log_trigger_to_first_line_ms",
            log.first_line_ms,
            "ms",
        );
        put("build_log_trigger_to_last_line_s", log.last_line_s, "s");
    }

    builders.stop().await?;
    server.stop().await?;
    Ok(figures)
}

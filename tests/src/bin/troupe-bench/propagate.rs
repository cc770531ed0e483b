//! `troupe-bench propagate`: the wall time from one ComponentType change to every affected
//! Release applied and acknowledged by its agent, through a `troupe server` process (the
//! `troupe` binary next to this one) and one in-process agent per data plane (see `agents.rs`).
//!
//! Each `--components` count runs against a fresh server and data dir holding `--data-planes`
//! DataPlanes `dp-I`, each with an Environment `env-I`, a DeploymentPipeline `pipe-I` whose
//! only environment is `env-I`, and a Project `proj-I`; and N `autoDeploy` Components of a
//! minimal `deployment/bench` type (one Deployment), spread round-robin over the projects.
//! Once every first Release is acknowledged, the type's Deployment template changes (its
//! `BENCH_SEQ` variable goes from 1 to 2) and the clock runs until every Release carries the
//! change and its `status.appliedGeneration` is its `metadata.generation`.
//!
//! Progress comes from two watches (ComponentReleases: cut; Releases: rendered, then acked in
//! status) and from the agents' own acknowledgements of what their applier saw (applied).
//! Nothing lists.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use troupe_common::Object;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;
use troupe_common::pb::v1alpha1::{EventType, WatchRequest};

use super::agents::{self, ControlPlane, Fleet, MemoryApplier};
use super::api::Api;
use super::rerender::apply_all;
use super::round2;

/// What to measure.
pub struct Options {
    /// autoDeploy components of each run.
    pub components: Vec<usize>,
    /// Data planes, each with its environment, pipeline, project and agent.
    pub data_planes: usize,
}

/// The component type under test; `@seq@` is the `BENCH_SEQ` value the change sets.
const COMPONENT_TYPE: &str = r#"apiVersion: troupe.dev/v1alpha1
kind: ComponentType
metadata: {name: bench, namespace: acme}
spec:
  workloadType: deployment
  resources:
    - id: deployment
      template:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: "${{ metadata.name }}", namespace: "${{ metadata.namespace }}"}
        spec:
          selector:
            matchLabels: ${{ metadata.podSelectors }}
          template:
            metadata:
              labels: ${{ metadata.podSelectors }}
            spec:
              containers:
                - name: main
                  image: ${{ workload.container.image }}
                  env: [{name: BENCH_SEQ, value: "@seq@"}]
"#;

/// Connections the components and workloads are applied over.
const APPLY_CLIENTS: usize = 64;
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// A phase fails when nothing moves for this long.
const STALL: Duration = Duration::from_secs(120);

fn component_type(seq: u64) -> anyhow::Result<Vec<Object>> {
    Ok(from_yaml(
        &COMPONENT_TYPE.replace("@seq@", &seq.to_string()),
    )?)
}

/// A data plane's objects of one kind, in the order they refer to each other.
fn platform(data_planes: usize) -> anyhow::Result<[Vec<Object>; 4]> {
    let of = |f: &dyn Fn(usize) -> String| -> anyhow::Result<Vec<Object>> {
        let yaml: Vec<String> = (0..data_planes).map(f).collect();
        Ok(from_yaml(&yaml.join("---\n"))?)
    };
    Ok([
        of(&|i| {
            format!(
                "apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {{name: dp-{i}, namespace: acme}}
spec: {{planeId: dp-{i}}}
"
            )
        })?,
        of(&|i| {
            format!(
                "apiVersion: troupe.dev/v1alpha1
kind: Environment
metadata: {{name: env-{i}, namespace: acme}}
spec: {{dataPlaneRef: {{kind: DataPlane, name: dp-{i}}}}}
"
            )
        })?,
        of(&|i| {
            format!(
                "apiVersion: troupe.dev/v1alpha1
kind: DeploymentPipeline
metadata: {{name: pipe-{i}, namespace: acme}}
spec:
  promotionPaths: [{{sourceEnvironment: env-{i}, targets: []}}]
"
            )
        })?,
        of(&|i| {
            format!(
                "apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {{name: proj-{i}, namespace: acme}}
spec: {{deploymentPipelineRef: pipe-{i}}}
"
            )
        })?,
    ])
}

/// Component `c{i}` and its Workload (in that order), in project `proj-{i % data_planes}`.
fn component_and_workload(i: usize, data_planes: usize) -> anyhow::Result<Vec<Object>> {
    let project = i % data_planes;
    let yaml = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: proj-{project}}}
  componentType: {{name: deployment/bench}}
  autoDeploy: true
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: proj-{project}, componentName: c{i}}}
  container: {{image: ghcr.io/acme/c{i}:1.0.0}}
"
    );
    Ok(from_yaml(&yaml)?)
}

/// What a watch saw, reduced to what the progress needs.
enum Seen {
    /// A ComponentRelease of `component` was cut from a type carrying `seq`.
    Cut { component: String, seq: Option<u64> },
    /// A Release as written: the `seq` its Deployment carries, its generation and the
    /// generation its agent last acknowledged.
    Release {
        name: String,
        seq: Option<u64>,
        generation: i64,
        applied: i64,
    },
    /// The watch of `kind` ended.
    Ended { kind: &'static str, error: String },
}

fn to_seen(object: Object) -> Option<Seen> {
    match object {
        Object::ComponentRelease(cr) => {
            let spec = cr.spec?;
            let template = spec
                .component_type
                .and_then(|t| t.spec)
                .and_then(|s| s.resources.into_iter().find(|r| r.id == "deployment"))
                .and_then(|r| r.template);
            Some(Seen::Cut {
                component: spec.owner?.component_name,
                seq: template.and_then(|t| agents::deployment_seq(&serde_json::to_value(t).ok()?)),
            })
        }
        Object::Release(r) => Some(Seen::Release {
            name: r.metadata.as_ref()?.name.clone(),
            seq: r
                .spec
                .as_ref()
                .and_then(|s| MemoryApplier::seq_of(&s.resources)),
            generation: r.metadata.as_ref()?.generation,
            applied: r.status.as_ref().map_or(0, |s| s.applied_generation),
        }),
        _ => None,
    }
}

/// Follows every change to objects of `kind` in `acme`, from now on.
async fn watch(
    channel: Api,
    kind: &'static str,
    tx: mpsc::UnboundedSender<Seen>,
) -> anyhow::Result<JoinHandle<()>> {
    let mut stream = ResourceServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .watch(WatchRequest {
            kind: kind.into(),
            namespace: "acme".into(),
            label_selector: String::new(),
            since_revision: 0,
        })
        .await?
        .into_inner();
    Ok(tokio::spawn(async move {
        let error = loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    if event.r#type() == EventType::Deleted {
                        continue;
                    }
                    if let Some(seen) = event.resource.and_then(|r| r.object).and_then(to_seen)
                        && tx.send(seen).is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break "the stream ended".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        let _ = tx.send(Seen::Ended { kind, error });
    }))
}

/// How far the components have got towards carrying one `BENCH_SEQ` value.
struct Progress {
    seq: u64,
    total: usize,
    start: Instant,
    /// Components with a ComponentRelease carrying `seq`.
    cut: HashSet<String>,
    /// Releases whose spec carries `seq`.
    rendered: HashSet<String>,
    /// Releases whose spec carries `seq` and whose applied generation is their generation.
    acked: HashSet<String>,
    /// Releases whose agent acknowledged applying `seq`.
    applied: HashSet<String>,
    /// Seconds from `start` until each of the above reached `total`.
    cut_s: Option<f64>,
    rendered_s: Option<f64>,
    acked_s: Option<f64>,
    applied_s: Option<f64>,
}

impl Progress {
    fn new(seq: u64, total: usize, start: Instant) -> Self {
        Self {
            seq,
            total,
            start,
            cut: HashSet::new(),
            rendered: HashSet::new(),
            acked: HashSet::new(),
            applied: HashSet::new(),
            cut_s: None,
            rendered_s: None,
            acked_s: None,
            applied_s: None,
        }
    }

    fn see(&mut self, seen: Seen) -> anyhow::Result<()> {
        let now = self.start.elapsed().as_secs_f64();
        match seen {
            Seen::Cut { component, seq } if seq == Some(self.seq) => {
                self.cut.insert(component);
                reached(&mut self.cut_s, self.cut.len(), self.total, now);
            }
            Seen::Release {
                name,
                seq,
                generation,
                applied,
            } if seq == Some(self.seq) => {
                // A later generation with the same content waits for its own acknowledgement.
                if applied == generation {
                    self.acked.insert(name.clone());
                } else {
                    self.acked.remove(&name);
                }
                self.rendered.insert(name);
                reached(&mut self.rendered_s, self.rendered.len(), self.total, now);
                reached(&mut self.acked_s, self.acked.len(), self.total, now);
            }
            Seen::Ended { kind, error } => anyhow::bail!("the {kind} watch ended: {error}"),
            Seen::Cut { .. } | Seen::Release { .. } => {}
        }
        Ok(())
    }

    fn agent_acked(&mut self, release: String, seq: Option<u64>, at: Instant) {
        if seq == Some(self.seq) {
            self.applied.insert(release);
            let at = at.saturating_duration_since(self.start).as_secs_f64();
            reached(&mut self.applied_s, self.applied.len(), self.total, at);
        }
    }

    /// Every Release acknowledged in status, and by its agent.
    fn done(&self) -> bool {
        self.acked_s.is_some() && self.applied_s.is_some()
    }

    fn moved(&self) -> usize {
        self.cut.len() + self.rendered.len() + self.acked.len() + self.applied.len()
    }

    fn line(&self) -> String {
        format!(
            "{:>6.1}s: {} cut, {} rendered, {} acked in status, {} applied by agents (of {})",
            self.start.elapsed().as_secs_f64(),
            self.cut.len(),
            self.rendered.len(),
            self.acked.len(),
            self.applied.len(),
            self.total
        )
    }

    /// Follows the watches and the agents until [`Progress::done`], printing progress.
    async fn follow(
        &mut self,
        seen: &mut mpsc::UnboundedReceiver<Seen>,
        fleet: &mut Fleet,
    ) -> anyhow::Result<()> {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        let (mut moved, mut last_move) = (0, Instant::now());
        while !self.done() {
            tokio::select! {
                event = seen.recv() => match event {
                    Some(event) => self.see(event)?,
                    None => anyhow::bail!("the watches ended"),
                },
                Some((release, at)) = fleet.acks.recv() => {
                    let seq = fleet.applier.seqs.lock().unwrap().get(&release).copied();
                    self.agent_acked(release, seq, at);
                }
                _ = tick.tick() => {
                    eprintln!("{}", self.line());
                    if self.moved() != moved {
                        (moved, last_move) = (self.moved(), Instant::now());
                    }
                    anyhow::ensure!(
                        last_move.elapsed() < STALL,
                        "no progress for {} s: {}",
                        STALL.as_secs(),
                        self.line()
                    );
                }
            }
        }
        Ok(())
    }
}

fn reached(at: &mut Option<f64>, count: usize, total: usize, now: f64) {
    if at.is_none() && count >= total {
        *at = Some(now);
    }
}

/// Figures of one run, in seconds.
struct Run {
    apply_s: f64,
    first_deploy_s: f64,
    setup_s: f64,
    cut_s: f64,
    rendered_s: f64,
    acked_s: f64,
    applied_s: f64,
}

/// Sets up a fresh server with `components` components and measures one change.
async fn run_once(components: usize, data_planes: usize) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (cp, _) = ControlPlane::start(&data, &agents::free_loopback_address()?)?;
    let ca = data.join("pki").join("ca.crt");
    let url = cp.api_addr()?;
    let channel = url.connect().await?;
    eprintln!("{components} components over {data_planes} data planes: setting up …");
    let setup = Instant::now();
    let namespace =
        from_yaml("apiVersion: troupe.dev/v1alpha1\nkind: Namespace\nmetadata: {name: acme}\n")?;
    apply_all(&url, namespace, 1).await?;
    apply_all(&url, component_type(1)?, 1).await?;
    for objects in platform(data_planes)? {
        apply_all(&url, objects, 16).await?;
    }
    let mut fleet = Fleet::new(dir.path());
    fleet.start(&cp, &ca, 0, data_planes).await?;
    fleet.wait_synced(data_planes, "agents").await?;

    let (tx, mut seen) = mpsc::unbounded_channel();
    let watches = [
        watch(channel.clone(), "ComponentRelease", tx.clone()).await?,
        watch(channel.clone(), "Release", tx).await?,
    ];
    let mut objects = Vec::with_capacity(2 * components);
    for i in 0..components {
        objects.extend(component_and_workload(i, data_planes)?);
    }
    let first = Instant::now();
    let mut progress = Progress::new(1, components, first);
    let applying = {
        let url = url.clone();
        tokio::spawn(async move {
            apply_all(&url, objects, APPLY_CLIENTS).await?;
            anyhow::Ok(first.elapsed().as_secs_f64())
        })
    };
    // Follow while applying, so the watches never fall far behind.
    let followed = progress.follow(&mut seen, &mut fleet).await;
    let apply_s = applying.await??;
    followed?;
    let first_deploy_s = progress.acked_s.unwrap_or_default();
    let setup_s = setup.elapsed().as_secs_f64();
    println!(
        "{components} components: set up in {setup_s:.1} s (components and workloads applied in {apply_s:.1} s, every first Release acked {first_deploy_s:.1} s after the first apply)"
    );

    // Leftover first deliveries are not part of the measurement.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while seen.try_recv().is_ok() {}
    while fleet.acks.try_recv().is_ok() {}

    let change = component_type(2)?;
    let start = Instant::now();
    let mut progress = Progress::new(2, components, start);
    apply_all(&url, change, 1).await?;
    progress.follow(&mut seen, &mut fleet).await?;
    let run = Run {
        apply_s,
        first_deploy_s,
        setup_s,
        cut_s: progress.cut_s.unwrap_or_default(),
        rendered_s: progress.rendered_s.unwrap_or_default(),
        acked_s: progress.acked_s.unwrap_or_default(),
        applied_s: progress.applied_s.unwrap_or_default(),
    };
    println!(
        "{components} components: ComponentType change → all ComponentReleases cut {:.1} s, all Releases rendered {:.1} s, applied by agents {:.1} s, acked in status {:.1} s ({:.0} per s)",
        run.cut_s,
        run.rendered_s,
        run.applied_s,
        run.acked_s,
        components as f64 / run.acked_s
    );

    for watch in watches {
        watch.abort();
    }
    fleet.stop.send_replace(true);
    cp.stop()?;
    Ok(run)
}

/// `1000` → `1k`, `10000` → `10k`, others as they are.
fn count_label(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// Runs every measurement and returns the figures.
pub async fn run(options: Options) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    anyhow::ensure!(options.data_planes > 0, "--data-planes must be at least 1");
    let mut figures = serde_json::Map::new();
    figures.insert("data_planes".into(), options.data_planes.into());
    for &components in &options.components {
        let run = run_once(components, options.data_planes).await?;
        let n = count_label(components);
        for (name, value) in [
            (format!("propagate_{n}_s"), run.acked_s),
            (format!("propagate_{n}_cut_s"), run.cut_s),
            (format!("propagate_{n}_rendered_s"), run.rendered_s),
            (format!("propagate_{n}_agents_applied_s"), run.applied_s),
            (format!("setup_{n}_s"), run.setup_s),
            (format!("apply_{n}_s"), run.apply_s),
            (format!("first_deploy_{n}_s"), run.first_deploy_s),
        ] {
            figures.insert(name, round2(value).into());
        }
    }
    Ok(figures)
}

//! `troupe-bench agents`: many agents in this process, each running the real `troupe_agent`
//! client and protocol code over its own TCP + mTLS connection to a `troupe server` process
//! (the `troupe` binary next to this one), with an in-memory applier.
//!
//! 1. Latency: with `--agents` agents connected, ReleaseBindings change at `--rate` per second
//!    (each change sets a container variable, so each is a new Release generation); each change
//!    is timed from just before its Apply to the agent's acknowledgement of the generation that
//!    carries it.
//! 2. Memory: the control plane's resident memory before and after `--resync-agents` more
//!    agents connect and go idle, per agent.
//! 3. Resync: the control plane is stopped (SIGTERM) and started again on the same data and
//!    port; the time from its ready line until every agent has reconnected and finished its
//!    delta resync (`SyncComplete`).
//! 4. Floor: a raw tonic unary round trip (gRPC health check) on loopback.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::transport::Channel;

use super::api::{Api, ApiAddr};
use troupe_agent::Event;
use troupe_agent::apply::{Applied, Applier, describe};
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::data_plane_service_client::DataPlaneServiceClient;
use troupe_common::pb::v1alpha1::release_service_client::ReleaseServiceClient;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;
use troupe_common::pb::v1alpha1::{
    ApplyRequest, ClusterInfo, CreateBootstrapTokenRequest, CreateReleaseRequest,
    DataPlaneIdentity, ReleaseResource, ReleaseResourceStatus,
};
use troupe_common::status::Health;

use super::{PLATFORM, percentile, round2};

/// What to measure.
pub struct Options {
    /// Agents connected during the latency measurement.
    pub agents: usize,
    /// Binding changes per second.
    pub rate: u64,
    /// Seconds of changes.
    pub seconds: u64,
    /// Agents connected for the memory and restart measurements (including the first ones).
    pub resync_agents: usize,
}

/// A `troupe server` process.
pub(crate) struct ControlPlane {
    child: Child,
    /// Address of the API (`HOST:PORT`).
    pub(crate) api: String,
    /// Address of the agent endpoint (`HOST:PORT`).
    pub(crate) agents: String,
    /// The admin token the server wrote to its data directory.
    token: String,
}

/// A free loopback address for the agent endpoint, fixed so a restarted server keeps it.
pub(crate) fn free_loopback_address() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

impl ControlPlane {
    /// Starts `troupe server` on `data_dir`; returns once it is ready, with when it was.
    pub(crate) fn start(data_dir: &Path, agent_listen: &str) -> anyhow::Result<(Self, Instant)> {
        Self::start_with(data_dir, agent_listen, &[])
    }

    /// [`ControlPlane::start`] with `extra` server arguments.
    pub(crate) fn start_with(
        data_dir: &Path,
        agent_listen: &str,
        extra: &[String],
    ) -> anyhow::Result<(Self, Instant)> {
        let exe = std::env::current_exe()?.with_file_name("troupe");
        anyhow::ensure!(
            exe.exists(),
            "{} is missing: build it with `cargo build --release --bins`",
            exe.display()
        );
        let mut child = Command::new(exe)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--agent-listen",
                agent_listen,
                // Plain gRPC on loopback: the figures stay comparable with earlier runs.
                "--plaintext",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        let api = line
            .trim()
            .trim_start_matches("troupe server listening on ")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        line.clear();
        out.read_line(&mut line)?;
        let ready = Instant::now();
        let agents = line
            .trim()
            .trim_start_matches("troupe agent endpoint listening on ")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let token = std::fs::read_to_string(data_dir.join("admin.token"))?;
        let server = Self {
            child,
            api,
            agents,
            token,
        };
        Ok((server, ready))
    }

    /// The API, called with the admin token.
    pub(crate) fn api_addr(&self) -> anyhow::Result<ApiAddr> {
        ApiAddr::new(format!("http://{}", self.api), &self.token)
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Kills the server (SIGKILL): nothing of it runs on.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server (SIGTERM) and waits for it to exit.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Applies in memory; remembers the `BENCH_SEQ` container variable each release last carried.
#[derive(Default)]
pub(crate) struct MemoryApplier {
    /// Release id → the `BENCH_SEQ` it last carried.
    pub(crate) seqs: Mutex<HashMap<String, u64>>,
}

impl MemoryApplier {
    /// The `BENCH_SEQ` variable of a release's Deployment, if it has one.
    pub(crate) fn seq_of(resources: &[ReleaseResource]) -> Option<u64> {
        let deployment = resources.iter().find(|r| r.id.starts_with("Deployment/"))?;
        deployment_seq(&serde_json::to_value(&deployment.object).ok()?)
    }
}

/// The `BENCH_SEQ` variable of a Deployment (or of a Deployment template), if it has one.
pub(crate) fn deployment_seq(deployment: &serde_json::Value) -> Option<u64> {
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array()?;
    env.iter()
        .find(|e| e["name"] == "BENCH_SEQ")
        .and_then(|e| e["value"].as_str()?.parse().ok())
}

impl Applier for MemoryApplier {
    fn apply<'a>(
        &'a self,
        release: &'a str,
        resources: &'a [ReleaseResource],
    ) -> BoxFuture<'a, Result<Applied, troupe_agent::apply::Error>> {
        Box::pin(async move {
            if let Some(seq) = Self::seq_of(resources) {
                self.seqs.lock().unwrap().insert(release.to_string(), seq);
            }
            Ok(Applied::done(
                resources
                    .iter()
                    .map(|r| ReleaseResourceStatus {
                        health: Health::Healthy.as_str().into(),
                        ..describe(r)
                    })
                    .collect(),
            ))
        })
    }

    fn prune<'a>(
        &'a self,
        _release: &'a str,
    ) -> BoxFuture<'a, Result<(), troupe_agent::apply::Error>> {
        Box::pin(async { Ok(()) })
    }

    fn info(&self) -> BoxFuture<'_, ClusterInfo> {
        Box::pin(async {
            ClusterInfo {
                platform: "bench".into(),
                ..Default::default()
            }
        })
    }
}

pub(crate) fn binding_yaml(i: usize, release: &str, seq: Option<u64>) -> String {
    let overrides = seq.map_or(String::new(), |s| {
        format!(
            "  workloadOverrides: {{container: {{env: [{{key: BENCH_SEQ, value: \"{s}\"}}]}}}}\n"
        )
    });
    format!(
        "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {{name: api-env-{i}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: api}}
  environment: env-{i}
  releaseName: {release}
{overrides}"
    )
}

pub(crate) async fn apply_yaml(
    client: &mut ResourceServiceClient<Api>,
    yaml: &str,
) -> anyhow::Result<()> {
    for object in from_yaml(yaml)? {
        client
            .apply(ApplyRequest {
                resource: Some(object.into()),
                dry_run: false,
            })
            .await?;
    }
    Ok(())
}

/// The example data plane's spec (its gateways), as YAML flow text.
fn data_plane_spec() -> String {
    let doc = PLATFORM
        .split("\n---\n")
        .find(|d| d.lines().any(|l| l == "kind: DataPlane"))
        .expect("the example platform has a DataPlane");
    let object = from_yaml(doc)
        .expect("the example DataPlane parses")
        .remove(0);
    let json = troupe_common::document::to_json(&object);
    json["spec"].to_string()
}

/// Data planes, environments and bindings `from..to`, 32 at a time.
async fn populate(api: &ApiAddr, from: usize, to: usize, release: &str) -> anyhow::Result<()> {
    let spec = data_plane_spec();
    let channel = api.connect().await?;
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in from..to {
        let mut client = ResourceServiceClient::new(channel.clone());
        let permit = limit.clone().acquire_owned().await?;
        let release = release.to_string();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let yaml = format!(
                "apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {{name: dp-{i}, namespace: acme}}
spec: {spec}
---
apiVersion: troupe.dev/v1alpha1
kind: Environment
metadata: {{name: env-{i}, namespace: acme}}
spec: {{dataPlaneRef: {{kind: DataPlane, name: dp-{i}}}}}
---
{}",
                binding_yaml(i, &release, None)
            );
            let result = apply_yaml(&mut client, &yaml).await;
            drop(permit);
            result
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The agents, and what they report.
pub(crate) struct Fleet {
    /// Where every agent applies.
    pub(crate) applier: Arc<MemoryApplier>,
    /// `Synced` events so far, over all agents.
    pub(crate) synced: Arc<AtomicUsize>,
    /// Each acknowledgement: the release id and when the agent reported it.
    pub(crate) acks: mpsc::UnboundedReceiver<(String, Instant)>,
    acks_tx: mpsc::UnboundedSender<(String, Instant)>,
    /// Set to stop every agent.
    pub(crate) stop: watch::Sender<bool>,
    root: PathBuf,
}

impl Fleet {
    /// No agents yet; their state goes under `root`.
    pub(crate) fn new(root: &Path) -> Self {
        let (acks_tx, acks) = mpsc::unbounded_channel();
        Self {
            applier: Arc::default(),
            synced: Arc::default(),
            acks,
            acks_tx,
            stop: watch::channel(false).0,
            root: root.to_path_buf(),
        }
    }

    /// Starts agents for data planes `acme/dp-{from..to}`, registering each with its own token.
    pub(crate) async fn start(
        &self,
        cp: &ControlPlane,
        ca: &Path,
        from: usize,
        to: usize,
    ) -> anyhow::Result<()> {
        self.start_at(cp, &format!("https://{}", cp.agents), ca, from, to)
            .await
    }

    /// [`Fleet::start`] with the agents given `url` (several endpoints, comma-separated).
    pub(crate) async fn start_at(
        &self,
        cp: &ControlPlane,
        url: &str,
        ca: &Path,
        from: usize,
        to: usize,
    ) -> anyhow::Result<()> {
        let channel = cp.api_addr()?.connect().await?;
        for i in from..to {
            let token = DataPlaneServiceClient::new(channel.clone())
                .create_bootstrap_token(CreateBootstrapTokenRequest {
                    data_plane: Some(DataPlaneIdentity {
                        namespace: "acme".into(),
                        name: format!("dp-{i}"),
                    }),
                    ttl_seconds: 3600,
                })
                .await?
                .into_inner()
                .token;
            let mut config = troupe_agent::Config::new(
                url.to_string(),
                DataPlaneIdentity::parse(&format!("acme/dp-{i}")).map_err(anyhow::Error::msg)?,
                self.root.join(format!("agent-{i}")),
                self.applier.clone(),
            );
            config.token = Some(token);
            config.ca_cert = Some(ca.to_path_buf());
            config.resync_every = Duration::from_secs(3600);
            let (synced, acks) = (self.synced.clone(), self.acks_tx.clone());
            config.on_event = Some(Arc::new(move |event| match event {
                Event::Synced => {
                    synced.fetch_add(1, Ordering::Relaxed);
                }
                Event::Acked { release, .. } => {
                    let _ = acks.send((release, Instant::now()));
                }
                Event::Disconnected { .. } => {}
            }));
            let stop = self.stop.subscribe();
            tokio::spawn(async move {
                if let Err(e) = troupe_agent::run(config, stop).await {
                    eprintln!("agent {i}: {e:#}");
                }
            });
            // A gentle ramp: registration is a TLS handshake and a durable write each.
            if i % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Waits until `count` `Synced` events have arrived; `what` names them in the error.
    pub(crate) async fn wait_synced(&self, count: usize, what: &str) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while self.synced.load(Ordering::Relaxed) < count {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(600),
                "{what}: only {} of {count} agents synced after 10 minutes",
                self.synced.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(start.elapsed())
    }
}

async fn raw_rtt(api: &str) -> anyhow::Result<(f64, f64)> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = Channel::from_shared(format!("http://{api}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    let mut samples = Vec::with_capacity(2000);
    for i in 0..2200 {
        let t = Instant::now();
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        if i >= 200 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// The example platform's namespace, types, traits and component `api`, with data plane,
/// environment and binding `i` for each of `agents` agents, through `cp`; returns the
/// release of api every binding names.
pub(crate) async fn prepare(cp: &ControlPlane, agents: usize) -> anyhow::Result<String> {
    let channel = cp.api_addr()?.connect().await?;
    let mut resources = ResourceServiceClient::new(channel.clone());
    // The example platform's namespace, types, traits and component; the bench brings its own
    // data planes, environments and pipeline.
    let kind_of = |doc: &str| {
        doc.lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let docs: Vec<&str> = PLATFORM.split("\n---\n").collect();
    let of_kinds = |kinds: &[&str]| -> Vec<&str> {
        docs.iter()
            .copied()
            .filter(|d| kinds.contains(&kind_of(d).as_str()))
            .collect()
    };
    let first = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: DataPlane
metadata: {{name: dp-0, namespace: acme}}
spec: {}
---
apiVersion: troupe.dev/v1alpha1
kind: Environment
metadata: {{name: env-0, namespace: acme}}
spec: {{dataPlaneRef: {{kind: DataPlane, name: dp-0}}}}
---
",
        data_plane_spec()
    ) + "apiVersion: troupe.dev/v1alpha1
kind: DeploymentPipeline
metadata: {name: default, namespace: acme}
spec:
  promotionPaths: [{sourceEnvironment: env-0, targets: []}]
---
apiVersion: troupe.dev/v1alpha1
kind: Project
metadata: {name: shop, namespace: acme}
spec: {deploymentPipelineRef: default}
";
    for doc in of_kinds(&["Namespace", "ComponentType", "Trait"]) {
        apply_yaml(&mut resources, doc).await?;
    }
    apply_yaml(&mut resources, &first).await?;
    for doc in of_kinds(&["Component", "Workload"]) {
        apply_yaml(&mut resources, doc).await?;
    }
    let release = ReleaseServiceClient::new(channel.clone())
        .create_release(CreateReleaseRequest {
            namespace: "acme".into(),
            component: "api".into(),
        })
        .await?
        .into_inner()
        .release
        .and_then(|r| r.metadata)
        .map(|m| m.name)
        .unwrap_or_default();
    populate(&cp.api_addr()?, 0, agents, &release).await?;
    Ok(release)
}

/// Runs every measurement and returns the figures.
pub async fn run(options: Options) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let agent_listen = free_loopback_address()?;
    let (cp, _) = ControlPlane::start(&data, &agent_listen)?;
    let ca = data.join("pki").join("ca.crt");
    let channel = cp.api_addr()?.connect().await?;
    let resources = ResourceServiceClient::new(channel.clone());
    let total = options.resync_agents.max(options.agents);
    eprintln!("setting up {} agents' data planes …", options.agents);
    let setup = Instant::now();
    let release = prepare(&cp, options.agents).await?;
    let mut fleet = Fleet::new(dir.path());
    fleet.start(&cp, &ca, 0, options.agents).await?;
    fleet.wait_synced(options.agents, "first agents").await?;
    // Every agent holds its release before the clock starts.
    let mut delivered = 0;
    while delivered < options.agents {
        match tokio::time::timeout(Duration::from_secs(60), fleet.acks.recv()).await {
            Ok(Some(_)) => delivered += 1,
            _ => anyhow::bail!(
                "only {delivered} of {} first releases were delivered",
                options.agents
            ),
        }
    }
    eprintln!(
        "{} agents connected and in sync after {:.1}s; changing bindings at {}/s for {}s …",
        options.agents,
        setup.elapsed().as_secs_f64(),
        options.rate,
        options.seconds
    );
    // Let the first deliveries settle before timing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while fleet.acks.try_recv().is_ok() {}

    // 1. Latency.
    let started: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let changes = options.rate * options.seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate as f64));
    let mut latencies = Vec::new();
    let mut pending = Vec::new();
    let record = |release: String, at: Instant, latencies: &mut Vec<Duration>| {
        let seq = fleet.applier.seqs.lock().unwrap().get(&release).copied();
        if let Some(seq) = seq
            && let Some(t0) = started.lock().unwrap().remove(&seq)
        {
            latencies.push(at.saturating_duration_since(t0));
        }
    };
    for seq in 1..=changes {
        ticker.tick().await;
        let i = (seq as usize) % options.agents;
        let yaml = binding_yaml(i, &release, Some(seq));
        let mut client = resources.clone();
        let started = started.clone();
        pending.push(tokio::spawn(async move {
            started.lock().unwrap().insert(seq, Instant::now());
            apply_yaml(&mut client, &yaml).await
        }));
        while let Ok((release, at)) = fleet.acks.try_recv() {
            record(release, at, &mut latencies);
        }
    }
    for task in pending {
        task.await??;
    }
    let drain = Instant::now();
    while !started.lock().unwrap().is_empty() && drain.elapsed() < Duration::from_secs(10) {
        if let Ok(Some((release, at))) =
            tokio::time::timeout(Duration::from_millis(100), fleet.acks.recv()).await
        {
            record(release, at, &mut latencies);
        }
    }
    let missed = started.lock().unwrap().len();
    latencies.sort();
    let (ack_p50, ack_p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    eprintln!(
        "ack latency over {} changes: p50 {ack_p50:.1} ms, p99 {ack_p99:.1} ms ({missed} not acknowledged)",
        latencies.len()
    );

    // 4. Floor.
    let (rtt_p50, rtt_p99) = raw_rtt(&cp.api).await?;
    eprintln!("raw tonic unary round trip: p50 {rtt_p50:.3} ms, p99 {rtt_p99:.3} ms");

    let mut figures = serde_json::Map::new();
    figures.insert("agents".into(), options.agents.into());
    figures.insert("changes".into(), latencies.len().into());
    figures.insert("missed_acks".into(), missed.into());
    figures.insert("ack_p50_ms".into(), round2(ack_p50).into());
    figures.insert("ack_p99_ms_1k".into(), round2(ack_p99).into());
    figures.insert("raw_rtt_p50_ms".into(), round2(rtt_p50).into());
    figures.insert("raw_rtt_p99_ms".into(), round2(rtt_p99).into());
    if total <= options.agents {
        fleet.stop.send_replace(true);
        return Ok(figures);
    }

    // 2. Memory per idle agent.
    eprintln!("setting up {} more data planes …", total - options.agents);
    populate(&cp.api_addr()?, options.agents, total, &release).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = cp.rss_bytes();
    fleet.start(&cp, &ca, options.agents, total).await?;
    let took = fleet.wait_synced(total, "all agents").await?;
    eprintln!(
        "{total} agents connected and in sync ({:.1}s to connect the rest)",
        took.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = cp.rss_bytes();
    let per_agent = after.saturating_sub(before) / (total - options.agents) as u64;
    eprintln!(
        "control plane resident memory {:.0} MiB → {:.0} MiB: {per_agent} bytes per idle agent",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );

    // 3. Restart and resync.
    cp.stop()?;
    let synced_before = fleet.synced.load(Ordering::Relaxed);
    let (cp, ready) = ControlPlane::start(&data, &agent_listen)?;
    while fleet.synced.load(Ordering::Relaxed) < synced_before + total {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(600),
            "only {} of {total} agents resynced after 10 minutes",
            fleet.synced.load(Ordering::Relaxed) - synced_before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resync = ready.elapsed().as_secs_f64();
    eprintln!("{total} agents reconnected and resynced {resync:.1}s after the restart");
    fleet.stop.send_replace(true);
    drop(cp);

    figures.insert("resync_agents".into(), total.into());
    let name = if total == 10_000 {
        "resync_10k_s".to_string()
    } else {
        format!("resync_{total}_s")
    };
    figures.insert(name, round2(resync).into());
    figures.insert("bytes_per_idle_agent".into(), per_agent.into());
    Ok(figures)
}

//! The `troupe-agent` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use troupe_agent::Config;
use troupe_agent::apply::Applier;
use troupe_agent::apply::dir::DirApplier;
use troupe_agent::apply::kubernetes::KubeApplier;
use troupe_agent::builds::{BuildPlaneConfig, Executor, parse_label};
use troupe_agent::metrics::Metrics;
use troupe_agent::probes::{self, Readiness};
use troupe_common::pb::v1alpha1::DataPlaneIdentity;

/// The Troupe data-plane agent: registers a cluster (or a directory) as a DataPlane, applies
/// the Releases bound to it and reports their health.
#[derive(Debug, Parser)]
#[command(name = "troupe-agent", version, about)]
struct Args {
    /// The control plane's agent endpoint, e.g. `https://troupe.example.com:50052`; or the
    /// endpoints of several replicas, comma-separated: the agent starts at one (chosen by its
    /// data plane's name) and moves to the next whenever its stream ends.
    #[arg(
        long,
        env = "TROUPE_CONTROL_PLANE",
        required_unless_present = "print_rbac"
    )]
    control_plane: Option<String>,
    /// The data plane this agent speaks for: `NAMESPACE/NAME` (a DataPlane) or `NAME` (a
    /// ClusterDataPlane).
    #[arg(
        long = "dataplane",
        env = "TROUPE_DATAPLANE",
        required_unless_present = "print_rbac"
    )]
    data_plane: Option<String>,
    /// Bootstrap token from `troupe dataplane token create`; needed on the first start only.
    #[arg(long, env = "TROUPE_AGENT_TOKEN")]
    token: Option<String>,
    /// PEM file of the agent endpoint's CA, instead of trusting the CA the token pins.
    #[arg(long, env = "TROUPE_AGENT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Where the agent keeps its identity and the last acknowledged desired state.
    #[arg(
        long,
        env = "TROUPE_AGENT_STATE_DIR",
        required_unless_present = "print_rbac"
    )]
    state_dir: Option<PathBuf>,
    /// Where objects go: `kubernetes` applies them to the cluster of the kubeconfig (or the
    /// one the agent runs in); `dir:PATH` writes one YAML file per object under PATH.
    #[arg(long, default_value = "dir:./troupe-dataplane")]
    apply: String,
    /// Seconds between re-applying everything held, to correct drift.
    #[arg(long, default_value_t = 30)]
    resync_interval: u64,
    /// Longest wait, in seconds, between attempts at objects that failed to apply (the wait
    /// starts at one second and doubles).
    #[arg(long, default_value_t = 60)]
    retry_max: u64,
    /// How many releases are applied (or pruned) at once. Changes to one release are applied
    /// one after the other, in the order they came; a release whose apply is slow or hangs
    /// holds up only its own later changes while up to N-1 others go through.
    #[arg(long, env = "TROUPE_AGENT_APPLY_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    apply_concurrency: u16,
    /// Largest release accepted, in bytes of manifests.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_release_bytes: usize,
    /// Namespaced kinds the agent applies, as GROUP/KIND (an empty group is the core group,
    /// `*` a whole group), comma-separated or repeated. Default: Troupe's default kinds
    /// (Deployment, Service, ConfigMap, Secret, Job, Ingress, …). Objects of other kinds fail
    /// alone, `Degraded`.
    #[arg(long, env = "TROUPE_AGENT_ALLOW_KINDS", value_delimiter = ',')]
    allow_kinds: Vec<String>,
    /// Cluster-scoped kinds the agent applies, as GROUP/KIND (`/Namespace`). Default: none.
    #[arg(long, env = "TROUPE_AGENT_ALLOW_CLUSTER_KINDS", value_delimiter = ',')]
    allow_cluster_kinds: Vec<String>,
    /// Serve `/healthz` (200 while running), `/readyz` (200 while connected to the control
    /// plane and in sync, else 503 and why) and `/metrics` (Prometheus text format) over plain
    /// HTTP on HOST:PORT. Default: off.
    #[arg(long, env = "TROUPE_AGENT_HEALTH_ADDR", value_name = "HOST:PORT")]
    health_addr: Option<SocketAddr>,
    /// Print the Kubernetes ClusterRole and ClusterRoleBinding this agent needs for the kinds
    /// of --allow-kinds and --allow-cluster-kinds (YAML), then exit. With `--workflows
    /// kubernetes`, also the build namespace and a Role in it for build Jobs.
    #[arg(long)]
    print_rbac: bool,
    /// Also take builds from the control plane, run by EXECUTOR: `process` (each step a local
    /// process in a fresh work directory) or `kubernetes` (each run a Job of the cluster of
    /// the kubeconfig, one container per step). Default: no builds.
    #[arg(long, env = "TROUPE_AGENT_WORKFLOWS", value_name = "EXECUTOR", value_parser = clap::value_parser!(Executor))]
    workflows: Option<Executor>,
    /// A label workflows select this build agent by (`spec.buildPlaneSelector`), as
    /// KEY=VALUE with a Kubernetes label key and value; repeatable.
    #[arg(long = "build-label", value_name = "KEY=VALUE", value_parser = parse_label, requires = "workflows")]
    build_labels: Vec<(String, String)>,
    /// How many build attempts run at once.
    #[arg(long, default_value_t = troupe_agent::builds::DEFAULT_CAPACITY, value_parser = clap::value_parser!(u32).range(1..), requires = "workflows")]
    build_capacity: u32,
    /// Where build attempts get their work directories. Default: STATE_DIR/builds.
    #[arg(long, value_name = "DIR", requires = "workflows")]
    build_root: Option<PathBuf>,
    /// Keep each attempt's work directory (`process`) or Job (`kubernetes`, until its TTL of
    /// an hour) after it ends, to look at what a build left. Nothing cleans directories up then.
    #[arg(long, requires = "workflows")]
    keep_work_dirs: bool,
    /// The namespace build Jobs run in (`kubernetes` executor); created when missing.
    #[arg(
        long,
        value_name = "NAMESPACE",
        default_value = "troupe-builds",
        requires = "workflows"
    )]
    build_namespace: String,
    /// The image of build steps that name none (`kubernetes` executor).
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "busybox:1.37",
        requires = "workflows"
    )]
    build_image: String,
    /// The service account build Pods run as (`kubernetes` executor). Default: none, and no
    /// API token mounted in them.
    #[arg(long, value_name = "NAME", requires = "workflows")]
    build_service_account: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when a build stops itself because the control
    /// plane stopped renewing its lease.
    #[arg(long, value_name = "SECS", default_value_t = troupe_agent::builds::DEFAULT_CANCEL_GRACE.as_secs(), requires = "workflows")]
    build_cancel_grace: u64,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// A client of the cluster of the kubeconfig (or the one the agent runs in); `flag` names
/// what needs it in errors.
async fn cluster(flag: &str) -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .with_context(|| format!("{flag}: no kubeconfig and not running in a cluster"))?;
    kube::Client::try_from(config).with_context(|| flag.to_string())
}

async fn applier(spec: &str, state_dir: &Path) -> anyhow::Result<Arc<dyn Applier>> {
    match spec.split_once(':') {
        Some(("dir", path)) if !path.is_empty() => Ok(Arc::new(DirApplier::new(path))),
        _ if spec == "kubernetes" => {
            let client = cluster("--apply kubernetes").await?;
            Ok(Arc::new(KubeApplier::new(
                client,
                state_dir.join("kubernetes"),
            )))
        }
        _ => anyhow::bail!("--apply {spec:?}: expected kubernetes or dir:PATH"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_rbac {
        return match troupe_agent::rbac::manifests(&args.allow_kinds, &args.allow_cluster_kinds) {
            Ok(yaml) => {
                print!("{yaml}");
                if args.workflows == Some(Executor::Kubernetes) {
                    print!(
                        "{}",
                        troupe_agent::rbac::build_manifests(&args.build_namespace)
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // Clap requires these unless --print-rbac, which returned earlier.
    let (Some(control_plane), Some(data_plane), Some(state_dir)) =
        (args.control_plane, args.data_plane, args.state_dir)
    else {
        anyhow::bail!("--control-plane, --dataplane and --state-dir are required");
    };
    let data_plane = DataPlaneIdentity::parse(&data_plane).map_err(anyhow::Error::msg)?;
    let policy = troupe_agent::policy::from_flags(&args.allow_kinds, &args.allow_cluster_kinds)
        .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let applier = applier(&args.apply, &state_dir).await?;
        let mut config = Config::new(control_plane, data_plane, state_dir, applier);
        config.token = args.token;
        config.policy = Arc::new(policy);
        config.ca_cert = args.ca_cert;
        config.resync_every = Duration::from_secs(args.resync_interval.max(1));
        config.retry_max = Duration::from_secs(args.retry_max.max(1));
        config.max_release_bytes = args.max_release_bytes;
        config.apply_concurrency = usize::from(args.apply_concurrency);
        if let Some(executor) = args.workflows {
            let root = args
                .build_root
                .unwrap_or_else(|| config.state_dir.join("builds"));
            let mut builds = BuildPlaneConfig::new(root);
            builds.executor = executor;
            builds.labels = args.build_labels.into_iter().collect();
            builds.capacity = args.build_capacity;
            builds.cancel_grace = Duration::from_secs(args.build_cancel_grace);
            builds.process.keep_work_dirs = args.keep_work_dirs;
            if executor == Executor::Kubernetes {
                let kube = &mut builds.kubernetes;
                kube.client = Some(cluster("--workflows kubernetes").await?);
                kube.namespace = args.build_namespace;
                kube.default_image = args.build_image;
                kube.service_account = args.build_service_account;
                kube.cancel_grace = builds.cancel_grace;
                kube.keep_jobs = args.keep_work_dirs;
            }
            config.builds = Some(builds);
        }
        let (stop, stopping) = tokio::sync::watch::channel(false);
        if let Some(addr) = args.health_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--health-addr {addr}"))?;
            let readiness = Readiness::default();
            let metrics = Arc::new(Metrics::new());
            config.on_event = Some(readiness.on_event());
            config.metrics = Some(metrics.clone());
            tokio::spawn(probes::serve(
                listener,
                readiness,
                metrics,
                stopping.clone(),
            ));
        }
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        troupe_agent::run(config, stopping).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

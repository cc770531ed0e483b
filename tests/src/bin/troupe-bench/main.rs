//! `troupe-bench`: prints performance figures; asserts nothing.
//!
//! `troupe-bench agents` drives many in-process agents against a `troupe server` process: see
//! `agents.rs`.
//!
//! `troupe-bench propagate` times one ComponentType change through to every affected Release
//! acknowledged by its agent, with the same server process and in-process agents: see
//! `propagate.rs`.
//!
//! `troupe-bench write` measures durable Apply throughput and latency with and without
//! authentication, against raw sled, or with `--store etcd://…` on etcd against raw etcd puts
//! (`raw_etcd.rs`, feature `etcd`): see `write.rs`.
//!
//! `troupe-bench list` times `List` pages as the store grows: see `list.rs`.
//!
//! `troupe-bench render` times one render (with and without network policies), then one
//! ComponentType change through thousands of components (`rerender.rs`) and one visibility
//! change through the policies of a thousand (`policies.rs`).
//!
//! `troupe-bench builds` times concurrent builds from `StartBuild` to `Succeeded` over
//! in-process build agents, and one build's log from the agent to a following `Logs` call:
//! see `builds.rs`.
//!
//! `troupe-bench status` (feature `etcd`) times Release status writes on an etcd store and
//! reads what each costs etcd, against writing the whole Release: see `status.rs`.
//!
//! `troupe-bench failover` (feature `etcd`) kills the leader of three servers on one etcd and
//! times the new leader, its first reconcile and every agent back in sync: see `failover.rs`.

/// The allocator the `troupe` binary uses, so the servers the bench runs in this process
/// allocate as a deployed one does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agents;
mod api;
#[cfg(feature = "etcd")]
mod bare;
mod builds;
#[cfg(feature = "etcd")]
mod failover;
mod kube;
mod list;
mod policies;
mod propagate;
#[cfg(feature = "etcd")]
mod raw_etcd;
mod render;
mod rerender;
#[cfg(feature = "etcd")]
mod status;
mod write;

use std::time::Duration;

use clap::{Parser, Subcommand};
use troupe_common::Object;
use troupe_common::document::from_yaml;

#[derive(Parser)]
#[command(about = "Troupe benchmarks: print numbers, assert nothing")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Durable Apply throughput vs raw sled insert + flush (or, with --store, raw etcd puts).
    Write {
        /// Seconds to run each measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Client counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        clients: Vec<usize>,
        /// Serve from the in-memory store instead of sled, to see the cost of everything but
        /// the disk.
        #[arg(long, conflicts_with = "store")]
        in_memory: bool,
        /// Serve from etcd instead (etcd://HOST:PORT[,HOST:PORT…][/PREFIX]; each server and
        /// the raw puts under a prefix of their own below PREFIX, removed at the end), and
        /// measure raw etcd puts and a bare server in front of etcd beside it. Needs a troupe-bench
        /// built with `--features etcd`.
        #[arg(long, value_name = "URL")]
        store: Option<troupe_control_plane::store::StoreLocation>,
    },
    /// List page by page as the store grows: time per page at each size.
    List {
        /// Components in the store at each measurement (ascending; one store grows).
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        sizes: Vec<usize>,
    },
    /// Render throughput of one component release vs raw minijinja.
    Render {
        /// Seconds to run each measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// autoDeploy components re-rendered by one ComponentType change (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        components: usize,
        /// Components whose network policies one visibility change updates (0 skips it).
        #[arg(long, default_value_t = 1000)]
        policy_components: usize,
    },
    /// Agents over mTLS against a `troupe server` process: ack latency under a change rate,
    /// memory per idle agent, resync after a restart, next to a raw unary round trip.
    Agents {
        /// Agents connected while bindings change.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Binding changes per second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Seconds of changes.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Agents connected for the memory and restart measurements (at most --agents skips
        /// them).
        #[arg(long, default_value_t = 10_000)]
        resync_agents: usize,
        /// Instead: one agent on the Kubernetes applier against the test API server, and the
        /// requests it sends, idle and per change.
        #[arg(long)]
        kubernetes: bool,
        /// With --kubernetes: releases the agent holds.
        #[arg(long, default_value_t = 100)]
        releases: usize,
        /// With --kubernetes: seconds of idle counting.
        #[arg(long, default_value_t = 120)]
        idle_seconds: u64,
        /// With --kubernetes: the agent's drift pass interval, seconds.
        #[arg(long, default_value_t = 30)]
        resync_interval: u64,
    },
    /// A ComponentType change through to every affected Release acknowledged by its agent,
    /// against a `troupe server` process with one in-process agent per data plane.
    Propagate {
        /// autoDeploy components per run; each run has a fresh server and data dir.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        components: Vec<usize>,
        /// Data planes, each with its environment, pipeline, project and agent.
        #[arg(long, default_value_t = 100)]
        data_planes: usize,
    },
    /// Concurrent builds over in-process build agents: time from StartBuild to Succeeded,
    /// and a followed log's lines per second.
    Builds {
        /// Builds started at once, one per component.
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Build agents (each its own data plane) with room for every run at once.
        #[arg(long, default_value_t = 4)]
        agents: usize,
        /// Lines each build prints.
        #[arg(long, default_value_t = 200)]
        lines: usize,
        /// Lines of the one build whose log is followed, after the others (0 skips it). About
        /// 140,000 fit in the server's log of a run (16 MiB).
        #[arg(long, default_value_t = 20_000)]
        log_lines: usize,
    },
    /// Three servers on one etcd with agents spread over them: the leader is killed; time
    /// to a new leader, to its first reconcile, to every agent back in sync. Needs a
    /// troupe-bench built with `--features etcd`.
    Failover {
        /// Agents, spread over the three servers.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// The servers' leader lease, seconds.
        #[arg(long, default_value_t = 15)]
        lease_seconds: u64,
        /// The etcd to use (etcd://HOST:PORT[/PREFIX]; the run keeps under a prefix of its
        /// own); without it, one is started (Debian etcd-server).
        #[arg(long, value_name = "URL")]
        store: Option<troupe_control_plane::store::StoreLocation>,
    },
    /// Release status writes on an etcd store (the status alone, its manifests written once)
    /// against writes of the whole Release, with what each costs etcd (its WAL and watch
    /// bytes). Needs a troupe-bench built with `--features etcd`.
    Status {
        /// The etcd (etcd://HOST:PORT[/PREFIX], plain HTTP: its metrics are read); the run
        /// keeps under a prefix of its own and removes what it wrote.
        #[arg(long, value_name = "URL")]
        store: troupe_control_plane::store::StoreLocation,
        /// Releases written round robin.
        #[arg(long, default_value_t = 100)]
        releases: usize,
        /// KiB of manifests per Release.
        #[arg(long, default_value_t = 32)]
        manifest_kib: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

const PLATFORM: &str = include_str!("../../../../examples/platform.yaml");

/// A small Component, as a team would write it.
fn mk_component(name: &str) -> Object {
    let yaml = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: {name}, namespace: acme, labels: {{team: bench}}}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/service}}
  parameters: {{port: 8080}}
"
    );
    from_yaml(&yaml).expect("valid component").remove(0)
}

struct Measured {
    ops_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn summarize(mut latencies: Vec<Duration>, elapsed: Duration) -> Measured {
    latencies.sort();
    Measured {
        ops_s: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().bench {
        Bench::Write {
            seconds,
            clients,
            in_memory,
            store,
        } => write::write(seconds, clients, in_memory, store.unwrap_or_default()).await,
        Bench::List { sizes } => {
            let figures = list::run(sizes).await?;
            println!("{}", serde_json::Value::Object(figures));
            Ok(())
        }
        Bench::Render {
            seconds,
            components,
            policy_components,
        } => {
            let mut figures = render::run(Duration::from_secs_f64(seconds))?;
            if policy_components > 0 {
                let measured = policies::run(policy_components).await?;
                figures.insert(
                    format!("policies_{policy_components}_update_s"),
                    round2(measured.update_s).into(),
                );
                figures.insert(
                    format!("policies_{policy_components}_first_deploy_s"),
                    round2(measured.first_deploy_s).into(),
                );
            }
            if components > 0 {
                let measured = rerender::run(components).await?;
                let name = if components == 10_000 {
                    "rerender_10k_s".to_string()
                } else {
                    format!("rerender_{components}_s")
                };
                figures.insert(name, round2(measured.rerender_s).into());
                figures.insert(
                    "first_deploy_s".into(),
                    round2(measured.first_deploy_s).into(),
                );
                figures.insert("apply_components_s".into(), round2(measured.apply_s).into());
            }
            println!("{}", serde_json::Value::Object(figures));
            Ok(())
        }
        Bench::Agents {
            kubernetes: true,
            releases,
            idle_seconds,
            resync_interval,
            ..
        } => {
            let options = kube::Options {
                releases,
                seconds: idle_seconds,
                resync_interval,
            };
            let figures = kube::run(options).await?;
            println!("{}", serde_json::Value::Object(figures));
            Ok(())
        }
        Bench::Agents {
            agents,
            rate,
            seconds,
            resync_agents,
            ..
        } => {
            let options = agents::Options {
                agents,
                rate,
                seconds,
                resync_agents,
            };
            let figures = agents::run(options).await?;
            println!("{}", serde_json::Value::Object(figures));
            Ok(())
        }
        Bench::Propagate {
            components,
            data_planes,
        } => {
            let options = propagate::Options {
                components,
                data_planes,
            };
            let figures = propagate::run(options).await?;
            println!("{}", serde_json::Value::Object(figures));
            Ok(())
        }
        Bench::Builds {
            runs,
            agents,
            lines,
            log_lines,
        } => {
            let options = builds::Options {
                runs,
                agents,
                lines,
                log_lines,
            };
            let figures = builds::run(options).await?;
            println!("{}", serde_json::Value::Object(figures));
            Ok(())
        }
        #[cfg(feature = "etcd")]
        Bench::Failover {
            agents,
            lease_seconds,
            store,
        } => {
            let options = failover::Options {
                agents,
                lease_seconds,
                store,
            };
            let figures = failover::run(options).await?;
            println!("{}", serde_json::Value::Object(figures));
            Ok(())
        }
        #[cfg(feature = "etcd")]
        Bench::Status {
            store,
            releases,
            manifest_kib,
            seconds,
        } => {
            let troupe_control_plane::store::StoreLocation::Etcd(store) = store else {
                anyhow::bail!("--store must name an etcd (etcd://HOST:PORT)");
            };
            let options = status::Options {
                store,
                releases,
                manifest_kib,
                seconds,
            };
            let figures = tokio::task::spawn_blocking(move || status::run(options)).await??;
            println!("{}", serde_json::Value::Object(figures));
            Ok(())
        }
        #[cfg(not(feature = "etcd"))]
        Bench::Status { .. } => anyhow::bail!(
            "this troupe-bench was built without etcd support; build it with `cargo build \
             -p troupe-tests --features etcd --bin troupe-bench`"
        ),
        #[cfg(not(feature = "etcd"))]
        Bench::Failover { .. } => anyhow::bail!(
            "this troupe-bench was built without etcd support; build it with `cargo build \
             -p troupe-tests --features etcd --bin troupe-bench`"
        ),
    }
}

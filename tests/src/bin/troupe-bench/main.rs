//! `troupe-bench`: prints performance figures; asserts nothing.
//!
//! `troupe-bench agents` drives many in-process agents against a `troupe server` process: see
//! `agents.rs`.
//!
//! `troupe-bench propagate` times one ComponentType change through to every affected Release
//! acknowledged by its agent, with the same server process and in-process agents: see
//! `propagate.rs`.
//!
//! `troupe-bench write` measures durable Apply throughput and latency (small Components; 1, 8
//! and 64 concurrent clients, each on its own TCP connection to a server in this process with a
//! sled store on disk), and, in the same run, raw sled insert + flush with the same payloads and
//! concurrency: the ceiling for a store that acknowledges only what is on disk. The last line
//! is one JSON object with every figure.

mod agents;
mod propagate;
mod render;
mod rerender;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use prost::Message;
use tonic::transport::Channel;
use troupe_common::Object;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;
use troupe_common::pb::v1alpha1::{ApplyRequest, Resource};
use troupe_control_plane::server::{ApiTransport, ServerConfig};

#[derive(Parser)]
#[command(about = "Troupe benchmarks: print numbers, assert nothing")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Durable Apply throughput vs raw sled insert + flush.
    Write {
        /// Seconds to run each measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Client counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        clients: Vec<usize>,
        /// Serve from the in-memory store instead of sled, to see the cost of everything but
        /// the disk.
        #[arg(long)]
        in_memory: bool,
    },
    /// Render throughput of one component release vs raw minijinja.
    Render {
        /// Seconds to run each measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// autoDeploy components re-rendered by one ComponentType change (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        components: usize,
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

async fn bench_apply(url: &str, clients: usize, run: Duration, round: usize) -> Measured {
    let start = Instant::now();
    let deadline = start + run;
    let mut tasks = Vec::new();
    for c in 0..clients {
        // One TCP connection per client.
        let channel = Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let mut client = ResourceServiceClient::new(channel);
        let template = mk_component("template");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let mut object = template.clone();
                object.meta_mut().name = format!("b{round}-{c}-{i}");
                let t = Instant::now();
                client
                    .apply(ApplyRequest {
                        resource: Some(object.into()),
                        dry_run: false,
                    })
                    .await
                    .expect("apply");
                latencies.push(t.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    summarize(all, start.elapsed())
}

fn bench_raw_sled(clients: usize, run: Duration) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let payload = Resource {
        object: Some(mk_component("b0-0-0")),
    }
    .encode_to_vec();
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let db = db.clone();
            let payload = payload.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    db.insert(n.to_be_bytes(), payload.as_slice()).unwrap();
                    db.flush().unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap());
    }
    summarize(all, start.elapsed())
}

async fn write(seconds: f64, clients: Vec<usize>, in_memory: bool) -> anyhow::Result<()> {
    let run = Duration::from_secs_f64(seconds);
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::local((!in_memory).then(|| dir.path().to_path_buf()));
    // Plain gRPC on loopback: the figures measure the server, not TLS.
    config.api_transport = ApiTransport::Plaintext { insecure: false };
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(troupe_control_plane::server::run(
        config,
        async {
            let _ = stop_rx.await;
        },
        move |ready| {
            let _ = addr_tx.send(ready.api);
        },
    ));
    let url = format!("http://{}", addr_rx.await?);

    // The platform the components refer to (everything in the examples but the component).
    let channel = Channel::from_shared(url.clone())?.connect().await?;
    let mut client = ResourceServiceClient::new(channel);
    for object in from_yaml(PLATFORM)? {
        if matches!(object, Object::Component(_) | Object::Workload(_)) {
            continue;
        }
        client
            .apply(ApplyRequest {
                resource: Some(object.into()),
                dry_run: false,
            })
            .await?;
    }
    let payload_bytes = Resource {
        object: Some(mk_component("b0-0-0")),
    }
    .encoded_len();
    println!("payload: one Component, {payload_bytes} bytes encoded; {seconds} s per measurement");
    println!(
        "{:<26} {:>8} {:>12} {:>10} {:>10}",
        "measurement", "clients", "ops/s", "p50 ms", "p99 ms"
    );

    let mut figures = serde_json::Map::new();
    figures.insert("payload_bytes".into(), payload_bytes.into());
    for (round, &c) in clients.iter().enumerate() {
        let apply = bench_apply(&url, c, run, round).await;
        let raw = std::thread::Builder::new()
            .name("raw-sled".into())
            .spawn(move || bench_raw_sled(c, run))?
            .join()
            .expect("raw sled bench panicked");
        for (name, m) in [
            ("durable apply (gRPC/TCP)", &apply),
            ("raw sled insert+flush", &raw),
        ] {
            println!(
                "{name:<26} {c:>8} {:>12.0} {:>10.2} {:>10.2}",
                m.ops_s, m.p50_ms, m.p99_ms
            );
        }
        figures.insert(format!("apply_ops_s_{c}"), round2(apply.ops_s).into());
        figures.insert(format!("apply_p50_ms_{c}"), round2(apply.p50_ms).into());
        figures.insert(format!("apply_p99_ms_{c}"), round2(apply.p99_ms).into());
        figures.insert(format!("raw_sled_ops_s_{c}"), round2(raw.ops_s).into());
        figures.insert(format!("raw_sled_p50_ms_{c}"), round2(raw.p50_ms).into());
        figures.insert(format!("raw_sled_p99_ms_{c}"), round2(raw.p99_ms).into());
        figures.insert(
            format!("ratio_vs_raw_sled_{c}"),
            round2(apply.ops_s / raw.ops_s).into(),
        );
    }
    let _ = stop_tx.send(());
    server.await??;
    println!("{}", serde_json::Value::Object(figures));
    Ok(())
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
        } => write(seconds, clients, in_memory).await,
        Bench::Render {
            seconds,
            components,
        } => {
            let mut figures = render::run(Duration::from_secs_f64(seconds))?;
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
            agents,
            rate,
            seconds,
            resync_agents,
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
    }
}

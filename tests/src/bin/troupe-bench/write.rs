//! `troupe-bench write`: durable Apply throughput and latency (small Components; 1, 8 and 64
//! concurrent clients, each on its own TCP connection to a server in this process with a sled
//! store on disk), measured twice per client count:
//!
//! - **no auth**: a server with authentication turned off (what an embedded server can do;
//!   `troupe server` always authenticates);
//! - **token + role**: the default server, each call carrying an API token whose user is a
//!   `developer` of project shop through a RoleBinding, so every Apply pays for the token
//!   lookup, the role check and an audit line.
//!
//! and, in the same run, raw sled insert + flush with the same payloads and concurrency: the
//! ceiling for a store that acknowledges only what is on disk. With `--store etcd://…` both
//! servers keep their objects in that etcd (each under a prefix of its own), the ceiling is
//! raw etcd puts of the same payloads from as many concurrent writers over one client, as the
//! store has (`raw_etcd.rs`), and a bare server in front of etcd (`bare.rs`) shows what one
//! more hop costs any server; everything the bench wrote is removed at the end. The servers
//! serve plain gRPC on loopback, so the figures measure the server, not TLS; the measurements
//! take turns in slices so drift in the machine's speed falls on all. The last line is one
//! JSON object with every figure.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use troupe_common::Object;
use troupe_common::document::from_yaml;
use troupe_common::pb::v1alpha1::auth_service_client::AuthServiceClient;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;
use troupe_common::pb::v1alpha1::{ApplyRequest, CreateTokenRequest, Resource};
use troupe_control_plane::server::{ApiTransport, ServerConfig};
use troupe_control_plane::store::StoreLocation;

use crate::{Measured, PLATFORM, mk_component, round2, summarize};

/// The RoleBinding that makes the bench's token user a developer of project shop.
const BENCH_ACCESS: &str = "apiVersion: troupe.dev/v1alpha1
kind: RoleBinding
metadata: {name: bench-developers, namespace: acme}
spec:
  roleRef: {kind: ClusterRole, name: developer}
  subjects: [{kind: Group, name: bench}]
  scope: {project: shop}
";

/// A server in this process, and how to call it.
struct BenchServer {
    url: String,
    /// `Bearer …` for the bench user; `None` without authentication.
    bearer: Option<MetadataValue<tonic::metadata::Ascii>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BenchServer {
    /// Starts a server over `dir` (in memory without one) and `store`, with or without
    /// authentication, and loads the example platform (everything but its component).
    async fn start(dir: Option<&Path>, store: StoreLocation, auth: bool) -> anyhow::Result<Self> {
        let mut config = ServerConfig::local(dir.map(Path::to_path_buf));
        config.store = store;
        config.api_transport = ApiTransport::Plaintext { insecure: false };
        config.auth.enabled = auth;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(troupe_control_plane::server::run(
            config,
            async {
                let _ = stop_rx.await;
            },
            move |ready| {
                let _ = ready_tx.send((ready.api, ready.admin_token));
            },
        ));
        let Ok((addr, admin)) = ready_rx.await else {
            // The server stopped before it was ready: say why.
            task.await??;
            anyhow::bail!("the bench's server stopped before it was ready");
        };
        let url = format!("http://{addr}");
        let admin: MetadataValue<_> = format!("Bearer {admin}").parse()?;
        let channel = Channel::from_shared(url.clone())?.connect().await?;
        let mut client = ResourceServiceClient::new(channel.clone());
        let mut yaml = from_yaml(PLATFORM)?;
        if auth {
            yaml.extend(from_yaml(BENCH_ACCESS)?);
        }
        for object in yaml {
            if matches!(object, Object::Component(_) | Object::Workload(_)) {
                continue;
            }
            let mut request = tonic::Request::new(ApplyRequest {
                resource: Some(object.into()),
                dry_run: false,
            });
            request
                .metadata_mut()
                .insert("authorization", admin.clone());
            client.apply(request).await?;
        }
        let bearer = if auth {
            let mut request = tonic::Request::new(CreateTokenRequest {
                name: "bench".into(),
                groups: vec!["bench".into()],
                ttl_seconds: 3600,
            });
            request.metadata_mut().insert("authorization", admin);
            let token = AuthServiceClient::new(channel)
                .create_token(request)
                .await?
                .into_inner()
                .token;
            Some(format!("Bearer {token}").parse()?)
        } else {
            None
        };
        Ok(Self {
            url,
            bearer,
            stop,
            task,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Applies from `clients` connections to the server at `url` (with `bearer`, if any) for
/// `run`; every Apply's latency, and how long it took.
async fn bench_apply(
    url: &str,
    bearer: Option<&MetadataValue<tonic::metadata::Ascii>>,
    clients: usize,
    run: Duration,
    round: &str,
) -> (Vec<Duration>, Duration) {
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
        let bearer = bearer.cloned();
        let round = round.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let mut object = template.clone();
                object.meta_mut().name = format!("b{round}-{c}-{i}");
                let mut request = tonic::Request::new(ApplyRequest {
                    resource: Some(object.into()),
                    dry_run: false,
                });
                if let Some(bearer) = &bearer {
                    request
                        .metadata_mut()
                        .insert("authorization", bearer.clone());
                }
                let t = Instant::now();
                client.apply(request).await.expect("apply");
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
    (all, start.elapsed())
}

/// Slices each measurement is cut into. The measurements run in turn, slice by slice, each
/// going first in one of them, so a machine whose speed drifts during the run (this one's
/// does, by a tenth or more over seconds) weighs on all of them alike.
const SLICES: usize = 4;

/// A measurement's latencies, and the time its slices took.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    took: Duration,
}

impl Samples {
    fn add(&mut self, (latencies, took): (Vec<Duration>, Duration)) {
        self.latencies.extend(latencies);
        self.took += took;
    }
}

/// Apply without and with authentication, the raw ceiling and, if there is one, the bare
/// server at `bare`, `run` each, in turns of [`SLICES`] slices; their figures in that order.
async fn measure(
    open: &BenchServer,
    authed: &BenchServer,
    raw: &Raw,
    bare: Option<&str>,
    clients: usize,
    run: Duration,
    round: usize,
) -> anyhow::Result<Vec<Measured>> {
    /// What a slice measures: Apply on the server at a URL (with a bearer), or the raw ceiling.
    enum Side<'a> {
        Apply(&'a str, Option<&'a MetadataValue<tonic::metadata::Ascii>>),
        Raw,
    }
    let mut sides = vec![
        Side::Apply(&open.url, None),
        Side::Apply(&authed.url, authed.bearer.as_ref()),
        Side::Raw,
    ];
    sides.extend(bare.map(|url| Side::Apply(url, None)));
    let slice = run / SLICES as u32;
    let mut samples: Vec<Samples> = sides.iter().map(|_| Samples::default()).collect();
    for i in 0..SLICES {
        for k in 0..sides.len() {
            let side = (i + k) % sides.len();
            let name = format!("{round}-{i}-{side}");
            let sample = match sides[side] {
                Side::Apply(url, bearer) => bench_apply(url, bearer, clients, slice, &name).await,
                Side::Raw => raw.measure(clients, slice, &name).await?,
            };
            samples[side].add(sample);
        }
    }
    Ok(samples
        .into_iter()
        .map(|s| summarize(s.latencies, s.took))
        .collect())
}

fn bench_raw_sled(clients: usize, run: Duration) -> (Vec<Duration>, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let payload = payload();
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
    (all, start.elapsed())
}

/// The ceiling the servers are measured against: the store's engine alone.
enum Raw {
    /// sled insert + flush in a fresh directory.
    Sled,
    /// etcd puts under this store URL's prefix.
    #[cfg(feature = "etcd")]
    Etcd(troupe_control_plane::store::EtcdUrl),
}

impl Raw {
    /// The raw measurement beside servers on `store`, whose bench keys go under `root`.
    fn new(store: &StoreLocation, root: &str) -> anyhow::Result<Self> {
        match store {
            StoreLocation::DataDir => Ok(Raw::Sled),
            #[cfg(feature = "etcd")]
            StoreLocation::Etcd(url) => Ok(Raw::Etcd(under(url, root, "raw"))),
            #[cfg(not(feature = "etcd"))]
            StoreLocation::Etcd(_) => {
                let _ = root;
                anyhow::bail!(
                    "--store etcd://…: this troupe-bench was built without etcd support; build \
                     it with `cargo build -p troupe-tests --features etcd --bin troupe-bench`"
                )
            }
        }
    }

    /// (Name in the table, key in the JSON.)
    fn names(&self) -> (&'static str, &'static str) {
        match self {
            Raw::Sled => ("raw sled insert+flush", "raw_sled"),
            #[cfg(feature = "etcd")]
            Raw::Etcd(_) => ("raw etcd put", "raw_etcd"),
        }
    }

    /// Writes from `clients` writers for `run` (keys named after `round`); every write's
    /// latency, and how long it took.
    async fn measure(
        &self,
        clients: usize,
        run: Duration,
        round: &str,
    ) -> anyhow::Result<(Vec<Duration>, Duration)> {
        match self {
            Raw::Sled => Ok(std::thread::Builder::new()
                .name("raw-sled".into())
                .spawn(move || {
                    let _ = round;
                    bench_raw_sled(clients, run)
                })?
                .join()
                .expect("raw sled bench panicked")),
            #[cfg(feature = "etcd")]
            Raw::Etcd(url) => crate::raw_etcd::bench(url, round, &payload(), clients, run).await,
        }
    }
}

/// `url` with its prefix moved to `ROOT/NAME` below its own.
#[cfg(feature = "etcd")]
fn under(
    url: &troupe_control_plane::store::EtcdUrl,
    root: &str,
    name: &str,
) -> troupe_control_plane::store::EtcdUrl {
    troupe_control_plane::store::EtcdUrl {
        prefix: format!("{}/{root}/{name}", url.prefix),
        ..url.clone()
    }
}

/// Where a server of the bench keeps its objects: `store`, under a prefix of its own.
fn server_store(store: &StoreLocation, root: &str, name: &str) -> StoreLocation {
    match store {
        #[cfg(feature = "etcd")]
        StoreLocation::Etcd(url) => StoreLocation::Etcd(under(url, root, name)),
        other => {
            let _ = (root, name);
            other.clone()
        }
    }
}

/// The encoded Component every write carries.
fn payload() -> Vec<u8> {
    Resource {
        object: Some(mk_component("b0-0-0")),
    }
    .encode_to_vec()
}

/// Runs the write benchmark and prints its table and JSON line.
pub async fn write(
    seconds: f64,
    clients: Vec<usize>,
    in_memory: bool,
    store: StoreLocation,
) -> anyhow::Result<()> {
    let run = Duration::from_secs_f64(seconds);
    let root = format!("bench-{}", std::process::id());
    let raw = Raw::new(&store, &root)?;
    let (raw_name, raw_key) = raw.names();
    let (open_dir, auth_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let dir = |d: &tempfile::TempDir| (!in_memory).then(|| d.path().to_path_buf());
    let open_store = server_store(&store, &root, "open");
    let open = BenchServer::start(dir(&open_dir).as_deref(), open_store, false).await?;
    let auth_store = server_store(&store, &root, "auth");
    let authed = BenchServer::start(dir(&auth_dir).as_deref(), auth_store, true).await?;
    // With etcd, the floor of any server in front of it, measured with the same clients.
    #[cfg(feature = "etcd")]
    let bare = match &store {
        StoreLocation::Etcd(url) => Some(
            crate::bare::Bare::start(&under(url, &root, "bare"))
                .await?
                .url,
        ),
        _ => None,
    };
    #[cfg(not(feature = "etcd"))]
    let bare: Option<String> = None;
    let payload_bytes = payload().len();
    println!("payload: one Component, {payload_bytes} bytes encoded; {seconds} s per measurement");
    println!(
        "{:<30} {:>8} {:>12} {:>10} {:>10}",
        "measurement", "clients", "ops/s", "p50 ms", "p99 ms"
    );

    let mut figures = serde_json::Map::new();
    figures.insert("payload_bytes".into(), payload_bytes.into());
    for (round, &c) in clients.iter().enumerate() {
        let measured = measure(&open, &authed, &raw, bare.as_deref(), c, run, round).await?;
        let (plain, auth, raw_measured) = (&measured[0], &measured[1], &measured[2]);
        for (name, m) in [
            ("durable apply, no auth", plain),
            ("durable apply, token + role", auth),
            (raw_name, raw_measured),
        ] {
            println!(
                "{name:<30} {c:>8} {:>12.0} {:>10.2} {:>10.2}",
                m.ops_s, m.p50_ms, m.p99_ms
            );
        }
        for (key, m) in [
            ("apply", plain),
            ("apply_auth", auth),
            (raw_key, raw_measured),
        ] {
            figures.insert(format!("{key}_ops_s_{c}"), round2(m.ops_s).into());
            figures.insert(format!("{key}_p50_ms_{c}"), round2(m.p50_ms).into());
            figures.insert(format!("{key}_p99_ms_{c}"), round2(m.p99_ms).into());
        }
        figures.insert(
            format!("auth_cost_pct_{c}"),
            round2(100.0 * (1.0 - auth.ops_s / plain.ops_s)).into(),
        );
        let ratio = plain.ops_s / raw_measured.ops_s;
        println!(
            "{:<30} {c:>8} {ratio:>12.2}",
            format!("ratio apply / {raw_key}")
        );
        figures.insert(format!("ratio_vs_{raw_key}_{c}"), round2(ratio).into());
        if let Some(m) = measured.get(3) {
            println!(
                "{:<30} {c:>8} {:>12.0} {:>10.2} {:>10.2}",
                "bare server, one txn", m.ops_s, m.p50_ms, m.p99_ms
            );
            let floor = m.ops_s / raw_measured.ops_s;
            println!(
                "{:<30} {c:>8} {floor:>12.2}",
                format!("ratio bare / {raw_key}")
            );
            figures.insert(format!("bare_ops_s_{c}"), round2(m.ops_s).into());
            figures.insert(format!("bare_p50_ms_{c}"), round2(m.p50_ms).into());
            figures.insert(format!("bare_p99_ms_{c}"), round2(m.p99_ms).into());
            figures.insert(format!("ratio_bare_vs_{raw_key}_{c}"), round2(floor).into());
        }
    }
    open.stop().await?;
    authed.stop().await?;
    #[cfg(feature = "etcd")]
    if let StoreLocation::Etcd(url) = &store {
        crate::raw_etcd::remove(&under(url, &root, "")).await?;
    }
    println!("{}", serde_json::Value::Object(figures));
    Ok(())
}

//! `troupe-bench status`: Release status writes on an etcd store, as the store makes them (the
//! head alone: the status, beside manifests written once) against what it made before (the
//! whole Release, manifests included, with every write), in the same run on the same etcd.
//!
//! Each write checks the Release's revision, as the server's status writes do, and changes
//! only its head. The figures: writes per second from one writer, and what each write costs
//! etcd, read from its own metrics (`/metrics` on the first member; plain HTTP only): bytes
//! appended to its write-ahead log, and bytes it sent to its clients (mostly the store's
//! watch, which every replica keeps).

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use troupe_common::{Kind, ObjectKey};
use troupe_control_plane::store::{EtcdStore, EtcdUrl, Precondition, Revision, Store, Txn};

use crate::{round2, summarize};

/// What to measure.
pub struct Options {
    pub store: EtcdUrl,
    pub releases: usize,
    pub manifest_kib: usize,
    pub seconds: f64,
}

/// etcd's counters a write moves.
#[derive(Clone, Copy)]
struct Counters {
    wal_bytes: f64,
    sent_bytes: f64,
}

/// Reads etcd's counters from `endpoint` (`http://HOST:PORT`).
fn counters(endpoint: &str) -> anyhow::Result<Counters> {
    let address = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("etcd's metrics are read over plain HTTP only"))?;
    let mut stream = std::net::TcpStream::connect(address)?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let read = |name: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .ok_or_else(|| anyhow::anyhow!("etcd's metrics have no {name}"))?
            .trim()
            .parse()
            .map_err(Into::into)
    };
    Ok(Counters {
        wal_bytes: read("etcd_disk_wal_write_bytes_total")?,
        sent_bytes: read("etcd_network_client_grpc_sent_bytes_total")?,
    })
}

/// Manifests of about `kib` KiB, as a render would make them.
fn manifests(kib: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(kib * 1024 + 256);
    let mut i = 0;
    while out.len() < kib * 1024 {
        out.extend_from_slice(
            format!(
                r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cfg-{i}","namespace":"shop-dev"}},"data":{{"key-{i}":"value-{i}"}}}}"#
            )
            .as_bytes(),
        );
        i += 1;
    }
    out
}

/// One way of writing a status.
#[derive(Clone, Copy)]
enum Mode {
    /// As the store does: the head, with the manifests as the shared part.
    Shared,
    /// As it did before: the whole value.
    Whole,
}

fn write(
    store: &EtcdStore,
    key: &ObjectKey,
    at: Revision,
    head: String,
    tail: &[u8],
    mode: Mode,
) -> anyhow::Result<Revision> {
    let txn = Txn::default().check(key.clone(), Precondition::AtRevision(at));
    let txn = match mode {
        Mode::Shared => txn.put_shared(key.clone(), head.into_bytes(), tail.to_vec()),
        Mode::Whole => txn.put(key.clone(), [head.as_bytes(), tail].concat()),
    };
    Ok(store.commit(txn)?)
}

/// Status writes in `mode` for `run`, round robin over `keys` (each at the revision given);
/// prints a row and returns the figures.
fn measure(
    store: &EtcdStore,
    endpoint: &str,
    keys: &mut [(ObjectKey, Revision)],
    tail: &[u8],
    mode: Mode,
    run: Duration,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    // One write of each first, untimed: the first shared write of a whole value brings its
    // manifests.
    for (key, at) in keys.iter_mut() {
        *at = write(store, key, *at, "status warm".into(), tail, mode)?;
    }
    let before = counters(endpoint)?;
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < run {
        let (key, at) = &mut keys[n % keys.len()];
        let t = Instant::now();
        *at = write(store, key, *at, format!("status {n}"), tail, mode)?;
        latencies.push(t.elapsed());
        n += 1;
    }
    let elapsed = start.elapsed();
    let after = counters(endpoint)?;
    let measured = summarize(latencies, elapsed);
    let writes = n.max(1) as f64;
    let wal = (after.wal_bytes - before.wal_bytes) / writes;
    let sent = (after.sent_bytes - before.sent_bytes) / writes;
    let name = match mode {
        Mode::Shared => "head alone (the store)",
        Mode::Whole => "whole Release (before)",
    };
    println!(
        "{name:<26} {:>10.0} {:>8.2} {:>8.2} {:>12.0} {:>12.0}",
        measured.ops_s, measured.p50_ms, measured.p99_ms, wal, sent
    );
    let tag = match mode {
        Mode::Shared => "shared",
        Mode::Whole => "whole",
    };
    let mut out = serde_json::Map::new();
    out.insert(format!("{tag}_writes_s"), round2(measured.ops_s).into());
    out.insert(format!("{tag}_p50_ms"), round2(measured.p50_ms).into());
    out.insert(format!("{tag}_wal_bytes_per_write"), wal.round().into());
    out.insert(format!("{tag}_sent_bytes_per_write"), sent.round().into());
    Ok(out)
}

/// Runs the measurement; everything it wrote is removed at the end.
pub fn run(options: Options) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut url = options.store.clone();
    url.prefix = format!(
        "{}/status-bench-{}",
        url.prefix.trim_end_matches('/'),
        std::process::id()
    );
    let endpoint = url.endpoints[0].clone();
    let store = EtcdStore::open(&url)?;
    let tail = manifests(options.manifest_kib);
    let mut keys = Vec::new();
    for i in 0..options.releases {
        let key = ObjectKey::new(Kind::Release, "acme", format!("r{i:04}"));
        let txn = Txn::default()
            .check(key.clone(), Precondition::Absent)
            .put_shared(key.clone(), b"status new".to_vec(), tail.clone());
        let at = store.commit(txn)?;
        keys.push((key, at));
    }
    println!(
        "{} Releases of {} bytes of manifests, one writer, {} s per measurement",
        options.releases,
        tail.len(),
        options.seconds
    );
    println!(
        "{:<26} {:>10} {:>8} {:>8} {:>12} {:>12}",
        "status write", "writes/s", "p50 ms", "p99 ms", "WAL B/write", "sent B/write"
    );
    let run = Duration::from_secs_f64(options.seconds);
    let mut figures = measure(&store, &endpoint, &mut keys, &tail, Mode::Whole, run)?;
    figures.extend(measure(
        &store,
        &endpoint,
        &mut keys,
        &tail,
        Mode::Shared,
        run,
    )?);
    figures.insert("manifest_bytes".into(), tail.len().into());
    let mut txn = Txn::default().divisible();
    for (key, _) in &keys {
        txn = txn.delete(key.clone());
    }
    store.commit(txn)?;
    Ok(figures)
}

//! Raw etcd puts, the ceiling of a server on etcd: the same payloads from as many concurrent
//! writers as the bench has clients, over one etcd client (one HTTP/2 connection per member,
//! as the store has, and over TLS when the store URL names a CA, as the store's is), each put
//! acknowledged once a quorum has it on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use troupe_control_plane::store::{EtcdUrl, connect_etcd};

/// Puts `payload` under `url`'s prefix (keys named after `round`) from `clients` writers for
/// `run`; every put's latency, and how long it took.
pub async fn bench(
    url: &EtcdUrl,
    round: &str,
    payload: &[u8],
    clients: usize,
    run: Duration,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let client = connect_etcd(url).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut kv = client.kv_client();
        let counter = counter.clone();
        let payload = payload.to_vec();
        let prefix = format!("{}/{round}", url.prefix);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                kv.put(format!("{prefix}/{n:012}"), payload.clone(), None)
                    .await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all, start.elapsed()))
}

/// Deletes every key under `url`'s prefix.
pub async fn remove(url: &EtcdUrl) -> anyhow::Result<()> {
    let mut client = connect_etcd(url).await?;
    let options = etcd_client::DeleteOptions::new().with_prefix();
    client.delete(url.prefix.clone(), Some(options)).await?;
    Ok(())
}

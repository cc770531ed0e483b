//! `troupe-bench failover` (feature `etcd`): three `troupe server` processes on one etcd
//! prefix, `--agents` in-process agents given all three agent endpoints (each starts on the
//! one its data plane's name picks), every agent in sync with its release. Then the leader is
//! killed with SIGKILL and, at once, one binding is changed through a surviving server. Timed
//! from the kill:
//!
//! - until another server holds the leader key (the lease, plus up to a second of retry);
//! - until the change is acknowledged by its agent: rendered by the new leader, sent by
//!   whichever server holds that agent's session (the first reconcile by the new leader, as
//!   a user sees it);
//! - until every agent that was on the dead server has reconnected to another and finished
//!   its resync.
//!
//! The etcd is `--store`'s, else one started for the run (Debian `etcd-server`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;
use troupe_control_plane::store::{EtcdUrl, StoreLocation};
use troupe_tests::LocalEtcd;

use super::agents::{
    ControlPlane, Fleet, apply_yaml, binding_yaml, free_loopback_address, prepare,
};
use super::round2;

/// What to measure.
pub struct Options {
    /// Agents, spread over the three servers.
    pub agents: usize,
    /// The servers' `--leader-lease-seconds`.
    pub lease_seconds: u64,
    /// Where etcd is; `None` starts one.
    pub store: Option<StoreLocation>,
}

const SERVERS: usize = 3;

/// Runs the measurement and returns the figures.
pub async fn run(options: Options) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let (_etcd, url) = etcd(options.store)?;
    let dir = tempfile::tempdir()?;
    let lease = options.lease_seconds.to_string();
    let mut servers = Vec::new();
    for i in 0..SERVERS {
        let name = format!("r{i}");
        let args = [
            "--store",
            &url.to_string(),
            "--replica",
            &name,
            "--leader-lease-seconds",
            &lease,
        ]
        .map(String::from);
        let data = dir.path().join(format!("data-{i}"));
        let (cp, _) = ControlPlane::start_with(&data, &free_loopback_address()?, &args)?;
        servers.push(Some(cp));
    }
    let first = servers[0].as_ref().expect("started");
    let ca = dir.path().join("data-0").join("pki").join("ca.crt");
    eprintln!("setting up {} data planes …", options.agents);
    let release = prepare(first, options.agents).await?;
    let endpoints: Vec<String> = servers
        .iter()
        .flatten()
        .map(|cp| format!("https://{}", cp.agents))
        .collect();
    let mut fleet = Fleet::new(dir.path());
    fleet
        .start_at(first, &endpoints.join(","), &ca, 0, options.agents)
        .await?;
    fleet.wait_synced(options.agents, "the agents").await?;
    let mut delivered = 0;
    while delivered < options.agents {
        match tokio::time::timeout(Duration::from_secs(60), fleet.acks.recv()).await {
            Ok(Some(_)) => delivered += 1,
            _ => anyhow::bail!("only {delivered} of {} releases delivered", options.agents),
        }
    }

    let leading = leader(&url)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no server leads"))?;
    let lead: usize = leading.trim_start_matches('r').parse()?;
    let on_leader = (0..options.agents)
        .filter(|i| first_endpoint(&format!("acme/dp-{i}")) == lead)
        .count();
    let survivor = servers[(lead + 1) % SERVERS].take().expect("started");
    eprintln!(
        "{} agents in sync, {on_leader} of them on the leader {leading}; killing it …",
        options.agents
    );
    let synced_before = fleet.synced.load(Ordering::Relaxed);
    let mut client = ResourceServiceClient::new(survivor.api_addr()?.connect().await?);
    let changed = options.agents - 1;
    const SEQ: u64 = 1;

    let killed = Instant::now();
    servers[lead].take().expect("started").kill();
    apply_yaml(&mut client, &binding_yaml(changed, &release, Some(SEQ))).await?;
    let (mut new_leader, mut reconciled, mut reconverged) = (None, None, None);
    while new_leader.is_none() || reconciled.is_none() || reconverged.is_none() {
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(300),
            "not recovered after 5 minutes: leader {new_leader:?}, change {reconciled:?}, agents {reconverged:?} ({} of {on_leader} resynced)",
            fleet.synced.load(Ordering::Relaxed) - synced_before
        );
        while fleet.acks.try_recv().is_ok() {}
        if new_leader.is_none() && leader(&url).await?.is_some_and(|l| l != leading) {
            new_leader = Some(killed.elapsed());
        }
        let seqs = fleet
            .applier
            .seqs
            .lock()
            .unwrap()
            .values()
            .any(|s| *s == SEQ);
        if reconciled.is_none() && seqs {
            reconciled = Some(killed.elapsed());
        }
        if reconverged.is_none()
            && fleet.synced.load(Ordering::Relaxed) >= synced_before + on_leader
        {
            reconverged = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fleet.stop.send_replace(true);
    let seconds = |d: Option<Duration>| round2(d.unwrap_or_default().as_secs_f64());
    eprintln!(
        "after the kill: new leader {:.2}s, first change applied {:.2}s, {on_leader} agents back in sync {:.2}s (lease {}s)",
        seconds(new_leader),
        seconds(reconciled),
        seconds(reconverged),
        options.lease_seconds
    );
    let mut figures = serde_json::Map::new();
    figures.insert("agents".into(), options.agents.into());
    figures.insert("agents_on_leader".into(), on_leader.into());
    figures.insert("lease_s".into(), options.lease_seconds.into());
    figures.insert("new_leader_s".into(), seconds(new_leader).into());
    figures.insert("first_reconcile_s".into(), seconds(reconciled).into());
    figures.insert("agents_reconverged_s".into(), seconds(reconverged).into());
    Ok(figures)
}

/// The etcd of `store` under a prefix of this run's own, or a fresh one (kept running while
/// the first part lives).
fn etcd(store: Option<StoreLocation>) -> anyhow::Result<(Option<LocalEtcd>, EtcdUrl)> {
    let run = format!("failover-{}", std::process::id());
    match store {
        Some(StoreLocation::Etcd(mut url)) => {
            url.prefix = format!("{}/{run}", url.prefix.trim_end_matches('/'));
            Ok((None, url))
        }
        Some(StoreLocation::DataDir) => anyhow::bail!("--store must name etcd: etcd://HOST:PORT"),
        None => {
            let etcd = LocalEtcd::start()?;
            let url = match etcd
                .url(&run)
                .parse::<StoreLocation>()
                .map_err(anyhow::Error::msg)?
            {
                StoreLocation::Etcd(url) => url,
                StoreLocation::DataDir => unreachable!("an etcd URL"),
            };
            Ok((Some(etcd), url))
        }
    }
}

/// The name of the server holding the leader key, if one does.
async fn leader(url: &EtcdUrl) -> anyhow::Result<Option<String>> {
    let mut client = troupe_control_plane::store::connect_etcd(url).await?;
    let key = format!("{}/leader", url.prefix.trim_end_matches('/'));
    let answer = client.get(key, None).await?;
    Ok(answer
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

/// The endpoint an agent of `data_plane` starts on, as the agent picks it.
fn first_endpoint(data_plane: &str) -> usize {
    (troupe_common::fnv::fnv1a(data_plane.as_bytes()) % SERVERS as u64) as usize
}

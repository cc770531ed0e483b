//! `troupe-bench agents --kubernetes`: what one agent on the Kubernetes applier costs the API
//! server. A `troupe server` process, the test API server (`troupe_tests::kube_api`) and the
//! real agent code (`troupe_agent::run` with the Kubernetes applier) in this process.
//!
//! 1. `--releases` components of the example `service` type (a Deployment, a ConfigMap of files
//!    and a Service each) deploy on their own (`autoDeploy`) to one environment.
//! 2. Idle: once every object exists and the agent has settled, the API server's requests are
//!    counted for `--seconds` (drift passes every `--resync-interval` seconds included): requests
//!    per release per minute.
//! 3. A change: one component's workload gets a new variable, so its Deployment changes; the
//!    requests from the change until the new Deployment is on the API server, and the agent has
//!    had `--resync-interval` to settle, per object that changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_agent::apply::kubernetes::KubeApplier;
use troupe_common::pb::v1alpha1::CreateBootstrapTokenRequest;
use troupe_common::pb::v1alpha1::DataPlaneIdentity;
use troupe_common::pb::v1alpha1::data_plane_service_client::DataPlaneServiceClient;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;
use troupe_tests::kube_api::KubeApi;
use troupe_tests::service_component;

use super::agents::{ControlPlane, apply_yaml, free_loopback_address};
use super::{PLATFORM, round2};

/// What to measure.
pub struct Options {
    /// Releases the agent holds.
    pub releases: usize,
    /// Seconds of idle counting.
    pub seconds: u64,
    /// The agent's drift pass interval, seconds.
    pub resync_interval: u64,
}

/// The resourceVersion of every object the API server holds of the kinds a release has.
fn versions(kube: &KubeApi) -> BTreeMap<String, String> {
    ["deployments", "configmaps", "services"]
        .iter()
        .flat_map(|plural| {
            kube.list(plural, "").into_iter().map(move |o| {
                let meta = &o["metadata"];
                (
                    format!("{plural} {}/{}", meta["namespace"], meta["name"]),
                    meta["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
        })
        .collect()
}

/// The agent's requests so far (the bench's own reads of the API server do not go over HTTP).
fn count(kube: &KubeApi) -> usize {
    kube.request_log().len()
}

/// Polls `done` every 100 ms for up to `limit`.
async fn until(limit: Duration, what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(start.elapsed() < limit, "{what} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub async fn run(options: Options) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (cp, _) = ControlPlane::start(&data, &free_loopback_address()?)?;
    let channel = cp.api_addr()?.connect().await?;
    let mut resources = ResourceServiceClient::new(channel.clone());
    // The example platform without its component; the bench brings its own.
    for doc in PLATFORM.split("\n---\n") {
        if !doc
            .lines()
            .any(|l| l == "kind: Component" || l == "kind: Workload")
        {
            apply_yaml(&mut resources, doc).await?;
        }
    }
    let kube = KubeApi::start().await;
    let token = DataPlaneServiceClient::new(channel.clone())
        .create_bootstrap_token(CreateBootstrapTokenRequest {
            data_plane: Some(DataPlaneIdentity {
                namespace: "acme".into(),
                name: "local".into(),
            }),
            ttl_seconds: 3600,
        })
        .await?
        .into_inner()
        .token;
    let applier = Arc::new(KubeApplier::new(
        kube.client(),
        dir.path().join("agent/kubernetes"),
    ));
    let mut config = troupe_agent::Config::new(
        format!("https://{}", cp.agents),
        DataPlaneIdentity::parse("acme/local").map_err(anyhow::Error::msg)?,
        dir.path().join("agent"),
        applier,
    );
    config.token = Some(token);
    config.ca_cert = Some(data.join("pki").join("ca.crt"));
    config.resync_every = Duration::from_secs(options.resync_interval);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(troupe_agent::run(config, stopping));

    eprintln!("deploying {} releases …", options.releases);
    let started = Instant::now();
    for i in 0..options.releases {
        apply_yaml(&mut resources, &service_component(i, 0)).await?;
    }
    let expected = options.releases;
    until(
        Duration::from_secs(600),
        "not every Deployment exists",
        || {
            kube.list("deployments", "").len() >= expected
                && kube.list("services", "").len() >= expected
        },
    )
    .await?;
    let deployed_s = started.elapsed().as_secs_f64();
    let first_requests = count(&kube);
    // Let one drift pass run over everything before counting.
    tokio::time::sleep(Duration::from_secs(options.resync_interval + 1)).await;

    eprintln!("counting requests for {} s of idle …", options.seconds);
    kube.clear_requests();
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    let idle = count(&kube);
    let minutes = idle_start.elapsed().as_secs_f64() / 60.0;
    let verbs = by_verb(&kube);

    eprintln!("changing one component …");
    let before = versions(&kube);
    kube.clear_requests();
    apply_yaml(&mut resources, &service_component(0, 1)).await?;
    until(
        Duration::from_secs(120),
        "the change did not arrive",
        || {
            kube.list("deployments", "").iter().any(|d| {
                d["spec"]["template"]["spec"]["containers"][0]["env"]
                    .as_array()
                    .is_some_and(|env| env.iter().any(|e| e["name"] == "SEQ" && e["value"] == "1"))
            })
        },
    )
    .await?;
    let arrived = started.elapsed();
    tokio::time::sleep(Duration::from_secs(options.resync_interval + 1)).await;
    let change_window_min = (started.elapsed() - arrived).as_secs_f64() / 60.0;
    let after = versions(&kube);
    let changed = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .count()
        .max(1);
    let idle_per_min = idle as f64 / minutes;
    // The requests of the change, less what idling would have cost in the same time.
    let change_requests = (count(&kube) as f64 - idle_per_min * change_window_min).max(0.0);

    let _ = stop.send(true);
    let _ = agent.await;
    cp.stop()?;
    let mut figures = serde_json::Map::new();
    figures.insert("releases".into(), options.releases.into());
    figures.insert("objects".into(), (options.releases * 3).into());
    figures.insert("resync_interval_s".into(), options.resync_interval.into());
    figures.insert("deploy_s".into(), round2(deployed_s).into());
    figures.insert("deploy_requests".into(), first_requests.into());
    figures.insert("idle_requests".into(), idle.into());
    figures.insert("idle_minutes".into(), round2(minutes).into());
    figures.insert(
        "idle_requests_per_release_per_min".into(),
        round2(idle_per_min / options.releases as f64).into(),
    );
    figures.insert("idle_requests_by_verb".into(), verbs.into());
    figures.insert("changed_objects".into(), changed.into());
    figures.insert(
        "requests_per_changed_object".into(),
        round2(change_requests / changed as f64).into(),
    );
    Ok(figures)
}

/// The requests logged so far, counted by verb.
fn by_verb(kube: &KubeApi) -> serde_json::Map<String, serde_json::Value> {
    let mut verbs = BTreeMap::<String, usize>::new();
    for request in kube.request_log() {
        *verbs.entry(request.verb).or_default() += 1;
    }
    verbs.into_iter().map(|(k, v)| (k, v.into())).collect()
}

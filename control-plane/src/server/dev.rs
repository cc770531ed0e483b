//! Dev mode: the sample platform loaded on the first start, and an agent in this process for
//! DataPlane `acme/local` that applies into a directory and runs builds as local processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::{DEV_DATA_PLANE, SAMPLE_PLATFORM, ServerConfig};
use crate::agents::pki::Pki;
use crate::agents::tokens::Tokens;
use crate::resources::{Origin, Resources};

/// Loads the sample platform, on the first start of a dev-mode server only, so later starts
/// keep the user's changes to it.
pub(super) async fn load_samples(
    config: &ServerConfig,
    resources: &Arc<Resources>,
) -> anyhow::Result<()> {
    if config.dev && first_start(resources) {
        let loaded = load_documents(resources, SAMPLE_PLATFORM).await?;
        tracing::info!(objects = loaded, "dev mode: sample platform loaded");
    }
    Ok(())
}

/// In dev mode, starts the in-process agent; returns the folder it writes manifests to.
pub(super) fn start_agent(
    config: &ServerConfig,
    pki: &Pki,
    tokens: &Tokens,
    agent_addr: SocketAddr,
    stopping: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(target) = dev_data_plane_dir(config) else {
        return Ok(None);
    };
    let state_dir = match &config.data_dir {
        Some(dir) => dir.join("agent-local"),
        None => target.with_extension("agent"),
    };
    start_dev_agent(
        pki,
        tokens,
        agent_addr,
        &target,
        state_dir,
        stopping.clone(),
    )?;
    Ok(Some(target))
}

/// Whether this is the first start on this store: the sample platform is loaded on the first
/// start only, so later starts keep the user's changes to it.
fn first_start(resources: &Resources) -> bool {
    resources
        .get(&troupe_common::ObjectKey::new(
            troupe_common::Kind::Namespace,
            "",
            "acme",
        ))
        .is_err()
}

/// In dev mode, the folder the in-process agent writes manifests to.
fn dev_data_plane_dir(config: &ServerConfig) -> Option<PathBuf> {
    match (&config.dev, &config.data_dir) {
        (true, Some(dir)) => Some(dir.join("dataplane-local")),
        (true, None) => {
            Some(std::env::temp_dir().join(format!("troupe-dev-{}", std::process::id())))
        }
        _ => None,
    }
}

/// Applies every object of a YAML stream, in order.
async fn load_documents(resources: &Arc<Resources>, yaml: &str) -> anyhow::Result<usize> {
    let objects = troupe_common::document::from_yaml(yaml)?;
    let count = objects.len();
    for object in objects {
        let key = object.key();
        resources
            .apply(object, Origin::User, false)
            .await
            .with_context(|| format!("loading {key}"))?;
    }
    Ok(count)
}

/// Starts dev mode's agent in this process: registered with a fresh token over the real
/// agent endpoint, applying with the directory applier.
fn start_dev_agent(
    pki: &Pki,
    tokens: &Tokens,
    agent_addr: SocketAddr,
    target: &std::path::Path,
    state_dir: PathBuf,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let data_plane = troupe_common::pb::v1alpha1::DataPlaneIdentity::parse(DEV_DATA_PLANE)
        .map_err(anyhow::Error::msg)?;
    let (token, _) = tokens.create(
        &data_plane,
        std::time::Duration::from_secs(3600),
        pki.ca_pin(),
    )?;
    let url = format!("https://127.0.0.1:{}", agent_addr.port());
    let applier = Arc::new(troupe_agent::apply::dir::DirApplier::new(target));
    let mut config = troupe_agent::Config::new(url, data_plane, state_dir.clone(), applier);
    config.token = Some(token.to_string());
    config.resync_every = std::time::Duration::from_secs(5);
    // The dev data plane also runs builds, as local processes.
    config.builds = Some(troupe_agent::builds::BuildPlaneConfig::new(
        state_dir.join("builds"),
    ));
    tokio::spawn(async move {
        if let Err(e) = troupe_agent::run(config, stopping).await {
            tracing::error!(error = %format!("{e:#}"), "the dev-mode agent stopped");
        }
    });
    Ok(())
}

//! `troupe server`: opens the store, builds the services and serves them over gRPC with
//! reflection and health, until SIGINT or SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::{ReleaseApi, ReleaseServiceServer, ResourceApi, ResourceServiceServer};
use crate::controllers::binding::BindingController;
use crate::controllers::deploy::DeployController;
use crate::releases::Releases;
use crate::resources::Resources;
use crate::store::{MemoryStore, SledStore, Store};

/// Default largest gRPC message the server accepts or sends.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the sled store; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
}

/// Runs the server until `shutdown` resolves. `on_ready` gets the bound address once the
/// listener is open and the store is loaded.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = match &config.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
            Arc::new(
                SledStore::open(dir)
                    .with_context(|| format!("opening the store in {}", dir.display()))?,
            )
        }
        None => Arc::new(MemoryStore::new()),
    };
    let resources = Arc::new(Resources::new(store.clone()));
    let releases = Arc::new(Releases::new(resources.clone()));
    let binding_controller = BindingController::new(resources.clone(), releases.clone());
    tokio::spawn(binding_controller.run());
    tokio::spawn(DeployController::new(resources.clone(), releases.clone()).run());

    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    let resource_service = ResourceServiceServer::new(ResourceApi::new(resources, stopping))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let release_service = ReleaseServiceServer::new(ReleaseApi::new(releases))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ResourceServiceServer<ResourceApi>>()
        .await;
    health_reporter
        .set_serving::<ReleaseServiceServer<ReleaseApi>>()
        .await;
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = ?config.data_dir, revision = store.revision(), "troupe server ready");
    on_ready(addr);

    tonic::transport::Server::builder()
        .trace_fn(|request| tracing::info_span!("rpc", path = %request.uri().path()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(resource_service)
        .add_service(release_service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    tracing::info!("troupe server stopped");
    Ok(())
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(troupe_common::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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
    tracing::info!("shutdown requested; finishing in-flight requests");
}

//! `troupe server`: opens the store, builds the services and serves them over gRPC with
//! reflection and health, until SIGINT or SIGTERM.
//!
//! The API endpoint speaks TLS unless told otherwise ([`ApiTransport`]): by default with the
//! certificate the server's own CA signs (the agent endpoint's, valid for the API names too),
//! or with one the operator brings. Plain gRPC is for loopback only unless explicitly made
//! insecure, since API calls carry bearer tokens.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::agents::pki::Pki;
use crate::agents::tokens::Tokens;
use crate::agents::{Hub, HubConfig};
use crate::api::agent::{AgentApi, AgentServiceServer, DataPlaneApi, DataPlaneServiceServer};
use crate::api::auth::{AuthApi, AuthServiceServer};
use crate::api::promotion::{PromotionApi, PromotionServiceServer};
use crate::api::servers::{Roster, ServerApi, ServerServiceServer};
use crate::api::{
    BuildApi, BuildServiceServer, ReleaseApi, ReleaseServiceServer, ResourceApi,
    ResourceServiceServer,
};
use crate::auth::rbac::Rbac;
use crate::auth::tokens::ApiTokens;
use crate::auth::{Auth, AuthConfig};
use crate::builds::{BuildConfig, Builds};
use crate::metrics::Metrics;
use crate::promotions::Promotions;
use crate::releases::Releases;
use crate::render::template::Limits;
use crate::resources::Resources;
use crate::shared_state::StateHome;
use crate::store::{Retention, Store, StoreLocation};
use leadership::{Controllers, Replica};

mod dev;
mod leadership;
mod open;

/// Default largest gRPC message the server accepts or sends.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory of the sled store (unless `store` says otherwise), the PKI, tokens, build
    /// logs and the audit log; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Where the objects live: sled in `data_dir` (the default), or etcd.
    pub store: StoreLocation,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// Address of the agent endpoint (TLS, client certificates); port 0 picks a free port.
    pub agent_listen: SocketAddr,
    /// Host names and addresses the agent endpoint's certificate is valid for.
    pub agent_names: Vec<String>,
    /// How the API endpoint secures its transport.
    pub api_transport: ApiTransport,
    /// Host names and addresses clients reach the API by; the server certificate is valid
    /// for these and the agent names.
    pub api_names: Vec<String>,
    /// How agent sessions run.
    pub hub: HubConfig,
    /// How builds run: leases, cancel grace, log bounds.
    pub builds: BuildConfig,
    /// Dev mode: load the sample platform and run an in-process agent for DataPlane
    /// `acme/local` that writes to `DATA_DIR/dataplane-local/`.
    pub dev: bool,
    /// Authentication, OIDC issuers and the audit log.
    pub auth: AuthConfig,
    /// The budget of each render (fuel, output bytes, objects, forEach iterations).
    pub render: Limits,
    /// What the store's event log keeps (revisions and bytes).
    pub retention: Retention,
    /// Watches one client connection may hold open.
    pub max_watches_per_connection: usize,
    /// Where to serve `GET /metrics` (Prometheus); `None` serves no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve the push webhook (`POST /webhooks/github`); `None` serves none.
    pub webhook_listen: Option<SocketAddr>,
    /// On a store several servers share (etcd), how long a leader that stops renewing its
    /// lease keeps the leadership: the longest the controllers stand still after it dies.
    pub leader_lease: std::time::Duration,
    /// The name this server goes by among the servers of its store (the leader's key, the
    /// data planes it serves); `None`: `HOSTNAME:API_PORT`.
    pub replica: Option<String>,
}

impl ServerConfig {
    /// A server on free loopback ports over `data_dir` (in memory if `None`), with defaults
    /// for the rest: what tests and benchmarks start.
    pub fn local(data_dir: Option<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            agent_names: vec!["localhost".into(), "127.0.0.1".into()],
            api_transport: ApiTransport::OwnCa,
            api_names: vec!["localhost".into(), "127.0.0.1".into()],
            hub: HubConfig::default(),
            builds: BuildConfig::default(),
            render: Limits::default(),
            store: StoreLocation::DataDir,
            retention: Retention::default(),
            max_watches_per_connection: crate::api::DEFAULT_MAX_WATCHES_PER_CONNECTION,
            metrics_listen: None,
            webhook_listen: None,
            leader_lease: DEFAULT_LEADER_LEASE,
            replica: None,
            dev: false,
            auth: AuthConfig {
                enabled: true,
                oidc: vec![],
                audit_log: data_dir.as_ref().map(|d| d.join(AUDIT_LOG)),
            },
            data_dir,
        }
    }

    /// Every name the server certificate is valid for: the agent names, then the API names
    /// not among them.
    fn server_names(&self) -> Vec<String> {
        let mut names = self.agent_names.clone();
        for name in &self.api_names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// Refuses plain gRPC on a non-loopback address unless insecure was asked for: tokens
    /// would cross the network in clear.
    fn check_transport(&self) -> anyhow::Result<()> {
        if let ApiTransport::Plaintext { insecure: false } = self.api_transport
            && !self.listen.ip().is_loopback()
        {
            anyhow::bail!(
                "refusing to serve the API in plaintext on {}, which is not a loopback address: \
                 bearer tokens would cross the network unencrypted; listen on 127.0.0.1, drop \
                 --plaintext, or add --insecure to accept that",
                self.listen
            );
        }
        Ok(())
    }
}

/// How the API endpoint secures its transport. Clients never present certificates to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTransport {
    /// TLS with the server certificate the server's own CA signs (the default).
    OwnCa,
    /// TLS with the operator's certificate chain and private key (PEM files).
    Operator {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key of the leaf.
        key: PathBuf,
    },
    /// Plain gRPC. Refused on a non-loopback address unless `insecure`.
    Plaintext {
        /// Serve plaintext on any address.
        insecure: bool,
    },
}

impl ApiTransport {
    /// Whether the endpoint speaks TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, ApiTransport::Plaintext { .. })
    }
}

/// How long a leader keeps the leadership without renewing it, unless told otherwise: what
/// Kubernetes' controllers use.
pub const DEFAULT_LEADER_LEASE: std::time::Duration = std::time::Duration::from_secs(15);

/// The audit log's file in the data directory.
pub const AUDIT_LOG: &str = "audit.log";

/// The bootstrap admin token's file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The file `troupe migrate` leaves in a data directory whose store it moved to etcd: a
/// server refuses to serve that directory's sled store, left behind.
pub const MIGRATED_FILE: &str = "MIGRATED";
/// The file `troupe migrate --from-etcd` keeps in a data directory while it moves an etcd
/// store into it: a server refuses that directory's store, not whole yet.
pub const IMPORTING_FILE: &str = "IMPORTING";

/// How long a stopping server waits to resign its leadership and withdraw its announcement.
const LEAVING: std::time::Duration = std::time::Duration::from_secs(5);

/// The data plane of dev mode, from the sample platform.
pub const DEV_DATA_PLANE: &str = "acme/local";

/// The sample platform dev mode loads (`examples/platform.yaml`).
pub const SAMPLE_PLATFORM: &str = include_str!("../../examples/platform.yaml");

/// Where a started server listens.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The API endpoint.
    pub api: SocketAddr,
    /// How the API endpoint secures its transport.
    pub api_transport: ApiTransport,
    /// PEM of the CA API clients trust the API endpoint by, when the server's own CA signs
    /// its certificate (`None` in plaintext or with the operator's certificate).
    pub api_ca_pem: Option<String>,
    /// Where that CA is on disk, unless the server keeps everything in memory.
    pub api_ca_path: Option<PathBuf>,
    /// The agent endpoint (gRPC over TLS).
    pub agents: SocketAddr,
    /// The metrics endpoint, if one was asked for.
    pub metrics: Option<SocketAddr>,
    /// The push webhook's endpoint, if one was asked for.
    pub webhook: Option<SocketAddr>,
    /// PEM of the CA agents trust the agent endpoint by.
    pub ca_pem: String,
    /// Where that CA is on disk, unless the server keeps everything in memory.
    pub ca_path: Option<PathBuf>,
    /// In dev mode, where the in-process agent writes manifests.
    pub dev_dataplane_dir: Option<PathBuf>,
    /// The bootstrap admin token (also in `DATA_DIR/admin.token`).
    pub admin_token: String,
    /// Where the admin token is on disk, unless the server keeps everything in memory.
    pub admin_token_path: Option<PathBuf>,
}

impl Ready {
    /// The URL clients reach the API by: `https://` or `http://`, with the listen address (a
    /// loopback address when the server listens on every interface).
    pub fn api_url(&self) -> String {
        let scheme = if self.api_transport.is_tls() {
            "https"
        } else {
            "http"
        };
        let mut addr = self.api;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("{scheme}://{addr}")
    }
}

/// Runs the server until `shutdown` resolves. `on_ready` gets the bound addresses once the
/// listeners are open and the store is loaded.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(Ready),
) -> anyhow::Result<()> {
    config.check_transport()?;
    let (listener, agent_listener) = bind(&config).await?;
    let (addr, agent_addr) = (listener.local_addr()?, agent_listener.local_addr()?);
    let replica = Replica::named(&config, addr, agent_addr);
    let (store, election, home) = open::store(&config)?;
    let admin_token_path = config.data_dir.as_ref().map(|d| d.join(ADMIN_TOKEN_FILE));
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let (domain, admin_token) = Domain::start(
        store.clone(),
        &config,
        &home,
        admin_token_path.as_deref(),
        election.roster(&replica),
        &replica.name,
        &stopping,
    )
    .await?;
    let metrics = domain.metrics.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };

    let pki = Arc::new(Pki::open(&home, &config.server_names())?);
    let tokens = Arc::new(Tokens::open(&home)?);
    let hub_config = HubConfig {
        server: replica.name.clone(),
        ..config.hub.clone()
    };
    let hub = Hub::start(domain.resources.clone(), &hub_config, stopping.clone());
    metrics.watch_hub(hub.clone());
    let webhook_addr =
        crate::builds::webhook::serve(config.webhook_listen, domain.builds.clone(), &stopping)
            .await
            .context("serving the push webhook (--webhook-addr)")?;
    hub.serve_builds(domain.builds.clone());
    dev::load_samples(&config, &domain.resources).await?;

    let metrics_addr = crate::metrics::serve(config.metrics_listen, metrics.clone(), &stopping)
        .await
        .context("serving metrics (--metrics-addr)")?;
    let presence = election.announce(&replica).await?;
    tracing::info!(%addr, agents = %agent_addr, replica = %replica.name, data_dir = ?config.data_dir, store = ?config.store, revision = store.revision(), "troupe server ready");
    let leading = tokio::spawn(leadership::lead(
        election,
        replica,
        presence,
        domain.controllers(),
        stopping.clone(),
    ));
    let dev_dataplane_dir = dev::start_agent(&config, &pki, &tokens, agent_addr, &stopping)?;
    let own_ca = config.api_transport == ApiTransport::OwnCa;
    on_ready(Ready {
        api: addr,
        api_transport: config.api_transport.clone(),
        api_ca_pem: own_ca.then(|| pki.ca_pem().to_string()),
        api_ca_path: pki.ca_path().filter(|_| own_ca),
        agents: agent_addr,
        metrics: metrics_addr,
        webhook: webhook_addr,
        ca_pem: pki.ca_pem().to_string(),
        ca_path: pki.ca_path(),
        dev_dataplane_dir,
        admin_token,
        admin_token_path,
    });

    let agent_server = serve_agents(
        &config,
        hub,
        &pki,
        &tokens,
        agent_listener,
        stopping.clone(),
        &metrics,
    )?;
    let api_server =
        serve_api(&config, domain, &pki, &tokens, listener, stopping, shutdown).await?;
    let (api, agents) = tokio::join!(api_server, agent_server);
    // A leader resigns and the server withdraws its announcement before the process ends,
    // so another server takes over at once and `troupe servers` no longer lists this one.
    if tokio::time::timeout(LEAVING, leading).await.is_err() {
        tracing::warn!(
            "the leadership and this server's announcement did not end within {} s; they end \
             with their leases",
            LEAVING.as_secs()
        );
    }
    api?;
    agents?;
    tracing::info!("troupe server stopped");
    Ok(())
}

/// The API endpoint's listener and the agent endpoint's.
async fn bind(config: &ServerConfig) -> anyhow::Result<(TcpListener, TcpListener)> {
    let api = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let agents = TcpListener::bind(config.agent_listen)
        .await
        .with_context(|| format!("listening for agents on {}", config.agent_listen))?;
    Ok((api, agents))
}

/// The domain services over one store.
struct Domain {
    resources: Arc<Resources>,
    releases: Arc<Releases>,
    promotions: Arc<Promotions>,
    /// WorkflowRuns offered to build agents, their logs and webhook secrets.
    builds: Arc<Builds>,
    /// The servers of the store, for `ServerService`.
    roster: Arc<dyn Roster>,
    /// Who may call the API, and the audit log.
    auth: Arc<Auth>,
    /// Every figure of the server: the store, renders, queues, the endpoints' calls.
    metrics: Arc<Metrics>,
}

impl Domain {
    /// Starts the services over `store` (the controllers start when this server leads:
    /// [`leadership`]), and authentication as `config` says (audit lines naming `server`),
    /// with the store and renders
    /// measured; API tokens and webhook secrets live where
    /// `home` says. Returns them with the bootstrap admin token
    /// (written to `admin_token_path` on the first start).
    async fn start(
        store: Arc<dyn Store>,
        config: &ServerConfig,
        home: &StateHome,
        admin_token_path: Option<&std::path::Path>,
        roster: Arc<dyn Roster>,
        server: &str,
        stopping: &tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<(Self, String)> {
        let metrics = Metrics::new();
        let store = metrics.meter_store(store);
        let resources = Arc::new(Resources::with_render_limits(store, config.render));
        let releases = Arc::new(Releases::new(resources.clone()));
        releases.observe_renders(metrics.render_observer());
        let promotions = Arc::new(Promotions::new(resources.clone()));
        let builds = Builds::start(
            resources.clone(),
            BuildConfig {
                shared_store: matches!(config.store, StoreLocation::Etcd(_)),
                ..config.builds.clone()
            },
            home,
            stopping.clone(),
        )
        .context("loading the build logs and webhook secrets")?;
        let api_tokens = ApiTokens::open(home)?;
        let admin_token = api_tokens.admin_token(admin_token_path)?;
        let rbac = Rbac::start(resources.clone()).await?;
        let auth = Arc::new(Auth::new(&config.auth, api_tokens, rbac, server)?);
        let domain = Domain {
            resources,
            releases,
            promotions,
            builds,
            roster,
            auth,
            metrics,
        };
        Ok((domain, admin_token))
    }
}

impl Domain {
    /// What the controllers work on, for whenever this server leads.
    fn controllers(&self) -> Controllers {
        Controllers {
            resources: self.resources.clone(),
            releases: self.releases.clone(),
            promotions: self.promotions.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The connections `listener` accepts, each sending what it is given at once (`TCP_NODELAY`,
/// as tonic sets on listeners of its own): a reply's last frames are not held back until the
/// peer acknowledges its first.
fn accepted(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The agent endpoint: TLS with client certificates, the agent service only.
fn serve_agents(
    config: &ServerConfig,
    hub: Arc<Hub>,
    pki: &Arc<Pki>,
    tokens: &Arc<Tokens>,
    listener: TcpListener,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    metrics: &Metrics,
) -> anyhow::Result<impl Future<Output = Result<(), tonic::transport::Error>>> {
    let agent_service = AgentServiceServer::new(AgentApi::new(hub, pki.clone(), tokens.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(
            config
                .max_message_bytes
                .max(2 * troupe_common::agent::CHUNK_BYTES),
        );
    Ok(tonic::transport::Server::builder()
        .tls_config(pki.server_tls())?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .layer(metrics.grpc_layer())
        .trace_fn(|request| tracing::info_span!("agent-rpc", path = %request.uri().path()))
        .add_service(agent_service)
        .serve_with_incoming_shutdown(accepted(listener), async move {
            let _ = stopping.wait_for(|s| *s).await;
        }))
}

/// The API endpoint: every user-facing service, health and reflection.
async fn serve_api(
    config: &ServerConfig,
    domain: Domain,
    pki: &Arc<Pki>,
    tokens: &Arc<Tokens>,
    listener: TcpListener,
    stopping: tokio::sync::watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = Result<(), tonic::transport::Error>>> {
    let max = config.max_message_bytes;
    let auth = domain.auth;
    let data_plane_service =
        DataPlaneServiceServer::new(DataPlaneApi::new(pki.clone(), tokens.clone(), auth.clone()));
    let auth_service = AuthServiceServer::new(AuthApi::new(auth.clone(), domain.resources.clone()));
    let resource_service = ResourceServiceServer::new(
        ResourceApi::new(domain.resources.clone(), auth.clone(), stopping)
            .with_max_watches_per_connection(config.max_watches_per_connection),
    )
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let release_service = ReleaseServiceServer::new(ReleaseApi::new(
        domain.releases,
        domain.resources.clone(),
        auth.clone(),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let promotion_service = PromotionServiceServer::new(PromotionApi::new(
        domain.promotions,
        domain.resources,
        auth.clone(),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let build_service = BuildServiceServer::new(BuildApi::new(domain.builds, auth.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let server_service = ServerServiceServer::new(ServerApi::new(domain.roster, auth.clone()));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ResourceServiceServer<ResourceApi>>()
        .await;
    health_reporter
        .set_serving::<ReleaseServiceServer<ReleaseApi>>()
        .await;
    health_reporter
        .set_serving::<DataPlaneServiceServer<DataPlaneApi>>()
        .await;
    health_reporter
        .set_serving::<PromotionServiceServer<PromotionApi>>()
        .await;
    health_reporter
        .set_serving::<AuthServiceServer<AuthApi>>()
        .await;
    health_reporter
        .set_serving::<BuildServiceServer<BuildApi>>()
        .await;
    health_reporter
        .set_serving::<ServerServiceServer<ServerApi>>()
        .await;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = api_tls(&config.api_transport, pki)? {
        builder = builder.tls_config(tls)?;
    }
    Ok(builder
        .layer(domain.metrics.grpc_layer())
        .trace_fn(|request| tracing::info_span!("rpc", path = %request.uri().path()))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(resource_service)
        .add_service(release_service)
        .add_service(promotion_service)
        .add_service(data_plane_service)
        .add_service(auth_service)
        .add_service(build_service)
        .add_service(server_service)
        .serve_with_incoming_shutdown(accepted(listener), shutdown))
}

/// The API endpoint's TLS configuration, `None` for plaintext.
fn api_tls(
    transport: &ApiTransport,
    pki: &Pki,
) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    Ok(match transport {
        ApiTransport::OwnCa => Some(pki.api_tls()),
        ApiTransport::Operator { cert, key } => {
            let read = |path: &PathBuf| {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))
            };
            let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
            Some(tonic::transport::ServerTlsConfig::new().identity(identity))
        }
        ApiTransport::Plaintext { .. } => None,
    })
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

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

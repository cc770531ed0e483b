//! `troupe server`: runs the control plane (API, agent endpoint and, with `--dev`, a sample
//! platform with an in-process agent) until interrupted, printing where it listens. In dev
//! mode it also writes the CLI context `dev`, so client verbs in another shell need no setup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::agents::HubConfig;
use crate::auth::AuthConfig;
use crate::auth::oidc::IssuerConfig;
use crate::builds::BuildConfig;
use crate::render::template::Limits;
use crate::server::{
    AUDIT_LOG, ApiTransport, DEFAULT_LEADER_LEASE, DEFAULT_MAX_MESSAGE_BYTES, Ready, ServerConfig,
};
use crate::store::{Retention, StoreLocation};

/// `println!` for the server's announcements, which never panics: a server whose standard
/// output has been closed keeps serving.
macro_rules! announce {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Run the control plane server.
#[derive(Debug, clap::Args)]
pub struct ServerCmd {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// A host name or address clients reach the API by (the server certificate is valid
    /// for these, the agent names, `localhost` and `127.0.0.1`). Repeatable.
    #[arg(long = "api-name")]
    api_names: Vec<String>,
    /// PEM certificate chain the API endpoint presents instead of one from the server's CA.
    #[arg(long, requires = "api_tls_key", conflicts_with = "plaintext")]
    api_tls_cert: Option<PathBuf>,
    /// PEM private key of --api-tls-cert.
    #[arg(long, requires = "api_tls_cert")]
    api_tls_key: Option<PathBuf>,
    /// Serve the API as plain gRPC, without TLS: only on a loopback address unless
    /// --insecure is given too.
    #[arg(long)]
    plaintext: bool,
    /// Allow --plaintext on a non-loopback address: tokens cross the network in clear.
    #[arg(long, requires = "plaintext")]
    insecure: bool,
    /// Directory of the on-disk store (created if missing; sled, unless --store names
    /// another), the PKI, tokens, build logs and the audit log; `./troupe-dev` with --dev.
    #[arg(long, env = "TROUPE_DATA_DIR", required_unless_present_any = ["in_memory", "dev"])]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory instead (lost when the server stops).
    #[arg(long, conflicts_with = "data_dir")]
    in_memory: bool,
    /// Keep the objects in etcd instead of --data-dir: etcd://HOST:PORT[,HOST:PORT…][/PREFIX]
    /// (default prefix /troupe; plain HTTP). Needs a troupe built with the `etcd` feature.
    /// Several servers may share one store; they elect one to run the controllers. If etcd was started
    /// with higher --max-txn-ops or --max-request-bytes, say so:
    /// `…?max-txn-ops=N&max-request-bytes=B`; TLS: `…&ca=CA.pem&cert=C.pem&key=K.pem`; an
    /// etcd user: `…&user=NAME&password-file=FILE`.
    #[arg(long, env = "TROUPE_STORE", value_name = "URL")]
    store: Option<StoreLocation>,
    /// With --store etcd://…: seconds a leader that stops renewing its lease keeps the
    /// leadership (the controllers run on one leader among the servers of a store).
    #[arg(long, default_value_t = DEFAULT_LEADER_LEASE.as_secs())]
    leader_lease_seconds: u64,
    /// The name this server goes by among the servers of its store (the leader's key, the
    /// data planes it serves); default HOSTNAME:API_PORT.
    #[arg(long, env = "TROUPE_REPLICA")]
    replica: Option<String>,
    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Address of the agent endpoint (TLS; agents connect here). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:50052")]
    agent_listen: SocketAddr,
    /// A host name or address agents reach the agent endpoint by (its certificate is
    /// valid for these, `localhost` and `127.0.0.1`). Repeatable.
    #[arg(long = "agent-name")]
    agent_names: Vec<String>,
    /// Seconds between heartbeats on agent streams; three missed end a stream.
    #[arg(long, default_value_t = 10)]
    agent_heartbeat_seconds: u64,
    /// Largest release sent to an agent, in bytes of manifests; a larger one fails alone.
    #[arg(long, default_value_t = HubConfig::default().max_release_bytes)]
    agent_max_release_bytes: usize,
    /// Releases sent to one agent and not yet acknowledged, at most.
    #[arg(long, default_value_t = HubConfig::default().window)]
    agent_window: usize,
    /// Agent sessions sending their initial diff at once; a session holds its turn for three
    /// heartbeat intervals at most.
    #[arg(long, default_value_t = HubConfig::default().concurrent_resyncs)]
    agent_concurrent_resyncs: usize,
    /// Seconds a build agent holds an attempt without reporting; a silent agent's attempt
    /// is lost after it and offered again within the workflow's retries.
    #[arg(long, default_value_t = BuildConfig::default().lease.as_secs())]
    build_lease_seconds: u64,
    /// Seconds between SIGTERM and SIGKILL when a build is cancelled.
    #[arg(long, default_value_t = BuildConfig::default().cancel_grace.as_secs())]
    build_cancel_grace_seconds: u64,
    /// Log bytes kept per WorkflowRun; later lines are dropped, with a line saying so.
    #[arg(long, default_value_t = BuildConfig::default().max_log_bytes)]
    build_max_log_bytes: u64,
    /// Fuel of one render: every expression of a component's type and traits together.
    #[arg(long, default_value_t = Limits::default().fuel)]
    render_fuel: u64,
    /// Bytes of output one render may build, its objects and patch values together.
    #[arg(long, default_value_t = Limits::default().max_output_bytes)]
    render_max_bytes: usize,
    /// Objects one render may produce.
    #[arg(long, default_value_t = Limits::default().max_objects)]
    render_max_objects: usize,
    /// forEach items one render may iterate, resource entries and patches together.
    #[arg(long, default_value_t = Limits::default().max_iterations)]
    render_max_iterations: usize,
    /// Revisions the event log keeps: a watch resumes from any of them; one further behind
    /// must list again.
    #[arg(long, default_value_t = Retention::default().revisions)]
    event_log_revisions: u64,
    /// Bytes of events the event log keeps at most, whatever the revisions (the newest commit
    /// always stays).
    #[arg(long, default_value_t = Retention::default().bytes)]
    event_log_max_bytes: u64,
    /// Watches one client connection may hold open; one more is refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = crate::api::DEFAULT_MAX_WATCHES_PER_CONNECTION)]
    max_watches_per_connection: usize,
    /// Serve Prometheus metrics as plain HTTP `GET /metrics` on HOST:PORT (port 0 picks a
    /// free port), e.g. 127.0.0.1:9464. Unauthenticated: keep it on a private network.
    /// Default: off.
    #[arg(long, env = "TROUPE_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Serve the push webhook (`POST /webhooks/github`, GitHub's push event, signed with a
    /// component's secret from `troupe webhook-secret`) as plain HTTP on HOST:PORT, e.g.
    /// 0.0.0.0:9465; put TLS in front of it. Default: off.
    #[arg(long, env = "TROUPE_WEBHOOK_ADDR", value_name = "HOST:PORT")]
    webhook_addr: Option<SocketAddr>,
    /// Dev mode: load the sample platform and run an agent in this process for DataPlane
    /// acme/local, writing manifests under DATA_DIR/dataplane-local/.
    #[arg(long)]
    dev: bool,
    /// Where the audit log goes: a file (default DATA_DIR/audit.log), or `-` for the log
    /// stream (target `troupe::audit`).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Accept OIDC JWTs from this issuer (its `iss`; keys are found through
    /// URL/.well-known/openid-configuration). HTTPS, or HTTP to a loopback address. Repeatable.
    #[arg(long = "oidc-issuer", value_name = "URL", requires = "oidc_audiences")]
    oidc_issuers: Vec<String>,
    /// An `aud` accepted in OIDC tokens (from every issuer); a token must name one. Repeatable.
    #[arg(long = "oidc-audience", value_name = "AUD", requires = "oidc_issuers")]
    oidc_audiences: Vec<String>,
    /// The OIDC claim holding the user name.
    #[arg(long, default_value = "sub", value_name = "CLAIM")]
    oidc_username_claim: String,
    /// The OIDC claim holding the user's groups (a string or an array of strings).
    #[arg(long, default_value = "groups", value_name = "CLAIM")]
    oidc_groups_claim: String,
    /// Prefix added to OIDC user and group names (`oidc:` makes `alice` `oidc:alice`), so
    /// they cannot be mistaken for names of Troupe tokens.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    oidc_prefix: String,
}

impl ServerCmd {
    /// Serves until a shutdown signal.
    pub(super) async fn run(self) -> anyhow::Result<ExitCode> {
        let config = self.config();
        let dev_data_dir = config.data_dir.clone().filter(|_| config.dev);
        let on_ready = move |ready: Ready| {
            announce(&ready);
            if let Some(dir) = dev_data_dir {
                write_dev_context(&ready, &dir);
            }
        };
        crate::server::run(config, crate::server::shutdown_signal(), on_ready).await?;
        Ok(ExitCode::SUCCESS)
    }

    /// The server configuration the flags describe.
    fn config(self) -> ServerConfig {
        let data_dir = match (self.in_memory, self.data_dir, self.dev) {
            (true, _, _) => None,
            (false, None, true) => Some(PathBuf::from("troupe-dev")),
            (false, dir, _) => dir,
        };
        let audit_log = match self.audit_log {
            Some(path) if path.as_os_str() == "-" => None,
            Some(path) => Some(path),
            None => data_dir.as_ref().map(|d| d.join(AUDIT_LOG)),
        };
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(self.agent_names);
        let mut api_names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        api_names.extend(self.api_names);
        let api_transport = match (self.plaintext, self.api_tls_cert, self.api_tls_key) {
            (true, _, _) => ApiTransport::Plaintext {
                insecure: self.insecure,
            },
            (false, Some(cert), Some(key)) => ApiTransport::Operator { cert, key },
            (false, _, _) => ApiTransport::OwnCa,
        };
        ServerConfig {
            listen: self.listen,
            data_dir,
            store: self.store.unwrap_or_default(),
            max_message_bytes: self.max_message_bytes,
            agent_listen: self.agent_listen,
            agent_names: names,
            api_transport,
            api_names,
            hub: HubConfig {
                heartbeat: std::time::Duration::from_secs(self.agent_heartbeat_seconds.max(1)),
                max_release_bytes: self.agent_max_release_bytes,
                window: self.agent_window.max(1),
                concurrent_resyncs: self.agent_concurrent_resyncs.max(1),
                ..HubConfig::default()
            },
            builds: BuildConfig {
                lease: std::time::Duration::from_secs(self.build_lease_seconds.max(1)),
                cancel_grace: std::time::Duration::from_secs(self.build_cancel_grace_seconds),
                max_log_bytes: self.build_max_log_bytes,
                ..BuildConfig::default()
            },
            render: Limits {
                fuel: self.render_fuel,
                max_output_bytes: self.render_max_bytes,
                max_objects: self.render_max_objects,
                max_iterations: self.render_max_iterations,
                ..Limits::default()
            },
            max_watches_per_connection: self.max_watches_per_connection.max(1),
            retention: Retention {
                revisions: self.event_log_revisions.max(1),
                bytes: self.event_log_max_bytes,
            },
            metrics_listen: self.metrics_addr,
            webhook_listen: self.webhook_addr,
            leader_lease: std::time::Duration::from_secs(self.leader_lease_seconds.max(2)),
            replica: self.replica,
            dev: self.dev,
            auth: AuthConfig {
                enabled: true,
                oidc: self
                    .oidc_issuers
                    .iter()
                    .map(|url| IssuerConfig {
                        url: url.clone(),
                        audiences: self.oidc_audiences.clone(),
                        username_claim: self.oidc_username_claim.clone(),
                        groups_claim: self.oidc_groups_claim.clone(),
                        prefix: self.oidc_prefix.clone(),
                    })
                    .collect(),
                audit_log,
            },
        }
    }
}

/// Prints where the server listens. Scripts and tests read these lines to find a server
/// started on port 0.
fn announce(ready: &Ready) {
    let transport = match (&ready.api_transport, &ready.api_ca_path) {
        (ApiTransport::Plaintext { .. }, _) => "plaintext".to_string(),
        (ApiTransport::Operator { cert, .. }, _) => format!("TLS, certificate {}", cert.display()),
        (ApiTransport::OwnCa, Some(ca)) => format!("TLS, CA {}", ca.display()),
        (ApiTransport::OwnCa, None) => "TLS, CA in memory".to_string(),
    };
    announce!("troupe server listening on {} ({transport})", ready.api);
    let ca = ready
        .ca_path
        .as_ref()
        .map_or("in memory".to_string(), |p| p.display().to_string());
    announce!(
        "troupe agent endpoint listening on {} (CA {ca})",
        ready.agents
    );
    match &ready.admin_token_path {
        Some(path) => announce!("admin token in {}", path.display()),
        // Nothing on disk: this line is the only way to the token.
        None => announce!(
            "admin token (in memory, until the server stops): {}",
            ready.admin_token
        ),
    }
    if let Some(addr) = ready.metrics {
        announce!(
            "troupe metrics listening on http://{addr}{}",
            crate::metrics::PATH
        );
    }
    if let Some(addr) = ready.webhook {
        announce!(
            "troupe push webhook listening on http://{addr}{}",
            crate::builds::webhook::PATH
        );
    }
    if let Some(dir) = &ready.dev_dataplane_dir {
        announce!(
            "dev mode: data plane {} applies manifests under {}",
            crate::server::DEV_DATA_PLANE,
            dir.display()
        );
    }
}

/// Writes the CLI context `dev` for this server (a failure is a warning: the server runs).
fn write_dev_context(ready: &Ready, data_dir: &std::path::Path) {
    let token = data_dir.join("admin.token");
    match super::config::write_dev_context(ready.api_url(), ready.api_ca_path.as_deref(), &token) {
        Ok(path) => announce!(
            "dev mode: CLI context {} written to {}",
            super::config::DEV_CONTEXT,
            path.display()
        ),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "dev mode: could not write the CLI context")
        }
    }
}

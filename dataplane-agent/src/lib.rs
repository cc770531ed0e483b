//! `troupe-agent`: runs next to a cluster (or a directory), registers it as a DataPlane, and
//! keeps it in line with the Releases the control plane binds to it (DESIGN §6).
//!
//! - [`builds`]: build steps run on this machine (the `process` executor), their logs and ends,
//!   and the build plane ([`builds::Builds`]) that runs the attempts the control plane offers.
//! - [`identity`]: registration with a bootstrap token, and the mTLS identity after it.
//! - [`state`]: the last acknowledged desired state, on disk.
//! - [`apply`]: where objects go: [`apply::kubernetes`] applies them to a cluster,
//!   [`apply::dir`] writes files.
//! - [`policy`]: the kinds this agent accepts, whatever the control plane sends.
//! - [`rbac`]: the Kubernetes RBAC those kinds need (`--print-rbac`).
//! - [`probes`]: `/healthz`, `/readyz` and `/metrics` over HTTP (`--health-addr`), readiness
//!   following the stream's [`Event`]s.
//! - [`metrics`]: apply latency and failures, releases held and retrying, sessions; measured
//!   around the applier and from the [`Event`]s, when [`Config::metrics`] is set.
//! - [`stream`]: the one long-lived stream: Hello with what the agent holds, upserts and
//!   removals passed on and acknowledged as each is done, health reports, heartbeats, and
//!   reconnects with full-jitter backoff.
//! - `worker`: the one task that owns the applier and the state: it applies (several
//!   releases at once, each one's changes in order), records, prunes, corrects drift and
//!   follows health, and answers whichever stream is open.
//!
//! The agent deletes objects only on an explicit removal from the control plane, never
//! because a connection dropped; while disconnected it keeps re-applying what it holds.

pub mod apply;
pub mod builds;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod probes;
pub mod rbac;
pub mod state;
pub mod stream;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use troupe_common::pb::v1alpha1::DataPlaneIdentity;
use troupe_common::policy::Policy;

/// The agent's version, sent in `Hello` and at registration.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How an agent runs.
#[derive(Clone)]
pub struct Config {
    /// The control plane's agent endpoint, `https://HOST:PORT`, or several replicas'
    /// endpoints, comma-separated ([`Config::endpoints`]).
    pub control_plane: String,
    /// The data plane this agent speaks for.
    pub data_plane: DataPlaneIdentity,
    /// Bootstrap token, needed only until the agent has registered.
    pub token: Option<String>,
    /// CA of the agent endpoint, instead of finding it by the token's pin.
    pub ca_cert: Option<PathBuf>,
    /// Where the agent keeps its identity and desired state.
    pub state_dir: PathBuf,
    /// Where objects are applied.
    pub applier: Arc<dyn apply::Applier>,
    /// The kinds the agent applies; objects of other kinds fail alone.
    pub policy: Arc<Policy>,
    /// How often everything held is re-applied to correct drift.
    pub resync_every: Duration,
    /// Before an apply that left objects failing is tried again; doubled for each attempt.
    pub retry_base: Duration,
    /// The longest wait between two attempts at a failing apply.
    pub retry_max: Duration,
    /// How many releases are applied (or pruned) at once. One release's changes are
    /// applied one after the other; a release whose apply hangs holds up only itself.
    pub apply_concurrency: usize,
    /// Largest release accepted, in bytes of manifests; a larger one is refused alone.
    pub max_release_bytes: usize,
    /// First reconnect delay bound; doubles per failed attempt up to `backoff_max`.
    pub backoff_base: Duration,
    /// Largest reconnect delay bound.
    pub backoff_max: Duration,
    /// Told about the stream's progress: the readiness probe ([`probes::Readiness`]), or a
    /// program that embeds the agent (dev mode, benchmarks).
    pub on_event: Option<Arc<dyn Fn(Event) + Send + Sync>>,
    /// Where the agent's figures go (served by [`probes`]); `None` measures nothing.
    pub metrics: Option<Arc<metrics::Metrics>>,
    /// Set when the agent also runs builds (`--workflows`): offered in `Hello`, run by
    /// [`builds::Builds`]. `None` takes no builds.
    pub builds: Option<builds::BuildPlaneConfig>,
}

/// Progress an embedding program can follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A stream is open and everything that differed at its start has been handled
    /// (`SyncComplete` arrived).
    Synced,
    /// A generation of a release was applied, recorded and acknowledged.
    Acked {
        /// Release id, `NAMESPACE/NAME`.
        release: String,
        /// The generation.
        generation: i64,
    },
    /// A stream ended, or could not be opened; the agent reconnects after a backoff.
    Disconnected {
        /// Why, in one line: the error, or that the control plane ended the stream.
        reason: String,
    },
}

impl Config {
    /// The agent endpoints of [`Config::control_plane`], in order; the agent starts at one
    /// chosen by its data plane's name (so a fleet spreads over the replicas) and moves to
    /// the next whenever a stream ends or cannot be opened.
    pub fn endpoints(&self) -> Vec<&str> {
        self.control_plane
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// A configuration with the defaults for everything but the essentials.
    pub fn new(
        control_plane: impl Into<String>,
        data_plane: DataPlaneIdentity,
        state_dir: impl Into<PathBuf>,
        applier: Arc<dyn apply::Applier>,
    ) -> Self {
        Self {
            control_plane: control_plane.into(),
            data_plane,
            token: None,
            ca_cert: None,
            state_dir: state_dir.into(),
            applier,
            policy: Arc::new(Policy::default()),
            resync_every: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            apply_concurrency: 4,
            max_release_bytes: 256 * 1024 * 1024,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            on_event: None,
            metrics: None,
            builds: None,
        }
    }
}

/// Runs the agent until `shutdown` turns true: registers if needed, then keeps a stream open,
/// reconnecting with backoff, and corrects drift meanwhile ([`stream::run`]). With
/// [`Config::metrics`], the applier is metered and the stream's events counted first.
pub async fn run(mut config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    if let Some(metrics) = config.metrics.clone() {
        config.applier = Arc::new(metrics::Metered::new(config.applier, metrics.clone()));
        let on_event = config.on_event.take();
        config.on_event = Some(Arc::new(move |event: Event| {
            metrics.observe(&event);
            if let Some(on_event) = &on_event {
                on_event(event);
            }
        }));
    }
    stream::run(config, shutdown).await
}

/// Resolves once `shutdown` turns true.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

//! Builds: WorkflowRuns executed by build agents over their agent sessions (DESIGN §6).
//!
//! A `troupe-agent` started with `--workflows` says so in its `Hello` (executor, labels,
//! capacity) and [`Builds`] counts it as a build agent while its session lasts. The
//! [`scheduler`] offers each pending run, oldest first, to a connected agent whose labels match
//! the workflow's `buildPlaneSelector` and that has room, with the steps resolved once by
//! [`plan`] and kept in the run's status (every later attempt runs the same). The agent holds
//! the attempt under a lease it renews by reporting progress; an attempt whose lease runs out
//! is lost and, within the workflow's `retries`, offered again. [`progress`] turns what agents
//! report into the run's status, stores its log lines ([`logs`]) before acknowledging them, and
//! records a succeeded build's image on the component's Workload, so `autoDeploy` takes it from
//! there.
//!
//! Leases live in memory: after a restart every running attempt gets a fresh lease, which its
//! agent renews when it reconnects.

mod index;
mod inputs;
pub mod logs;
pub mod plan;
mod progress;
mod scheduler;
mod start;
mod trace;
mod ttl;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use troupe_common::ObjectKey;
use troupe_common::pb::v1alpha1::{self as pb, ControlMessage, control_message};
use troupe_common::status::RunPhase;

use crate::resources::Resources;
use index::RunIndex;
use logs::LogStore;
pub(crate) use progress::record_build;
pub use start::BuildRequest;
use troupe_common::agent::Outgoing;

/// How builds are run.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// How long an agent holds an attempt without reporting; an attempt whose agent is silent
    /// this long is lost.
    pub lease: Duration,
    /// Between SIGTERM and SIGKILL when a run is cancelled.
    pub cancel_grace: Duration,
    /// The most log bytes kept per run.
    pub max_log_bytes: u64,
    /// Several servers share the store: an attempt's lease is kept by the server that
    /// offered it or hears from its agent, never by one that only saw it in the store, so no
    /// server declares lost an attempt that an agent on another server runs.
    pub shared_store: bool,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(10),
            max_log_bytes: 16 * 1024 * 1024,
            shared_store: false,
        }
    }
}

/// One connected build agent.
struct Agent {
    session: u64,
    labels: BTreeMap<String, String>,
    capacity: usize,
    tx: mpsc::Sender<Outgoing>,
    /// Attempts this session was told to cancel, so each is told once.
    cancels_sent: std::collections::HashSet<(String, u32)>,
    /// Until when it counts as full: it refused an offer for lack of room (it still holds
    /// an attempt the control plane no longer counts, one it gave up and is stopping).
    full_until: Option<tokio::time::Instant>,
}

impl Agent {
    /// Whether it is to be offered nothing now, whatever its count says.
    fn full(&self) -> bool {
        self.full_until
            .is_some_and(|until| until > tokio::time::Instant::now())
    }
}

/// The build side of the control plane.
pub struct Builds {
    resources: Arc<Resources>,
    logs: Arc<LogStore>,
    config: BuildConfig,
    agents: Mutex<HashMap<ObjectKey, Agent>>,
    runs: Mutex<RunIndex>,
    wake: Notify,
    /// The push webhook's secrets, by component.
    secrets: webhook::WebhookSecrets,
    /// Runs whose attempt's end is being recorded, or whose attempt is being declared lost:
    /// one of the two at a time.
    settling: Mutex<std::collections::HashSet<String>>,
}

/// Holds a run in [`Builds::settle`] until dropped.
struct Settling<'a> {
    builds: &'a Builds,
    run: String,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.builds
            .settling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.run);
    }
}

/// True when `phase` (a run's `status.phase`) is one a run ends in.
pub fn finished(phase: &str) -> bool {
    RunPhase::of_status(phase).is_ok_and(RunPhase::is_finished)
}

impl Builds {
    /// The log store.
    pub fn logs(&self) -> &Arc<LogStore> {
        &self.logs
    }

    /// Makes a new push-webhook secret for `namespace/component`.
    pub fn create_webhook_secret(
        &self,
        namespace: &str,
        component: &str,
    ) -> std::io::Result<String> {
        self.secrets.create(namespace, component)
    }

    /// The resource layer.
    pub fn resources(&self) -> &Arc<Resources> {
        &self.resources
    }

    /// Counts `plane`'s agent, on session `session`, as a build agent until
    /// [`Builds::disconnect`]; messages for it go through `tx`.
    pub fn connect(
        &self,
        plane: &ObjectKey,
        session: u64,
        build_plane: &pb::BuildPlane,
        tx: mpsc::Sender<Outgoing>,
    ) {
        let agent = Agent {
            session,
            labels: build_plane
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            capacity: build_plane.capacity.max(1) as usize,
            tx,
            cancels_sent: Default::default(),
            full_until: None,
        };
        tracing::info!(plane = %index::agent_name(plane), executor = %build_plane.executor, capacity = agent.capacity, "build agent connected");
        self.agents().insert(plane.clone(), agent);
        self.wake.notify_one();
    }

    /// Stops counting session `session` of `plane` as a build agent.
    pub fn disconnect(&self, plane: &ObjectKey, session: u64) {
        let mut agents = self.agents();
        if agents.get(plane).is_some_and(|a| a.session == session) {
            agents.remove(plane);
        }
    }

    /// Claims run `id` for settling how its attempt ended; `None` while another claim holds it.
    fn settle(&self, id: &str) -> Option<Settling<'_>> {
        let mut settling = self.settling.lock().unwrap_or_else(PoisonError::into_inner);
        settling.insert(id.to_string()).then(|| Settling {
            builds: self,
            run: id.to_string(),
        })
    }

    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Agent>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, RunIndex> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the scheduler to look at the runs now (after a cancel, a retry, a new run).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends `message` to `plane`'s build agent, if it is connected; gives up when the agent
    /// has not read its stream for `timeout` (its session ends on its own then).
    async fn send_to(&self, plane: &ObjectKey, message: control_message::Message) -> bool {
        let tx = match self.agents().get(plane) {
            Some(agent) => agent.tx.clone(),
            None => return false,
        };
        send(&tx, message).await
    }
}

/// Queues `message` on a session's stream.
async fn send(tx: &mpsc::Sender<Outgoing>, message: control_message::Message) -> bool {
    let message = Box::new(Ok(ControlMessage {
        message: Some(message),
    }));
    matches!(
        tokio::time::timeout(Duration::from_secs(30), tx.send(message)).await,
        Ok(Ok(()))
    )
}

/// The id of a run in the agent protocol, `NAMESPACE/NAME`.
pub fn run_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod scheduler_tests;
#[cfg(test)]
mod tests;

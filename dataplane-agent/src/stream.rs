//! The agent's side of `AgentService.Session`, and the loop that keeps it open.
//!
//! One [`Core`] holds the applier, the on-disk state and the last observed health; the stream,
//! the drift loop and, for appliers that watch health, the health follower take turns on it.
//! Each upsert is applied, then recorded on disk, then acknowledged; each removal is pruned,
//! then forgotten, then acknowledged. A chunked upsert is applied only once all its chunks
//! are in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use troupe_common::agent::{CHUNK_BYTES, PROTOCOL_VERSION, decode_manifests};
use troupe_common::pb::v1alpha1::agent_service_client::AgentServiceClient;
use troupe_common::pb::v1alpha1::{
    self as pb, AgentMessage, ReleaseResourceStatus, agent_message, control_message,
};

use troupe_common::timestamp::now_seconds;

use crate::Config;
use crate::apply::Applier;
use crate::identity::{self, AgentIdentity};
use crate::state::{Held, State};

/// The applier, the desired state and the health the agent last saw.
struct Core {
    applier: Arc<dyn Applier>,
    state: State,
    held: BTreeMap<String, Held>,
    health: HashMap<String, (i64, Vec<ReleaseResourceStatus>)>,
    /// Releases whose health changed since it was last reported.
    unreported: BTreeSet<String>,
}

impl Core {
    async fn upsert(&mut self, upsert: Assembled) -> Result<(), String> {
        if let Some(held) = self.held.get(&upsert.release)
            && (held.generation > upsert.generation
                || (held.generation == upsert.generation
                    && held.content_hash == upsert.content_hash))
        {
            // A resend of what is applied already, or an old generation: nothing to do.
            return Ok(());
        }
        let resources = decode_manifests(&upsert.manifests)?;
        if !self.held.contains_key(&upsert.release) {
            // Written ahead of a first apply: if the agent dies between the apply and the
            // record below, the release is still reported in `Hello` (as generation 0), so
            // the control plane sends it again or, if it is gone, a removal for what the
            // apply created.
            self.state
                .save(&Held::pending(&upsert.release))
                .map_err(|e| format!("recording the release in the agent's state: {e}"))?;
        }
        let statuses = self.applier.apply(&upsert.release, &resources).await?;
        let held = Held {
            release: upsert.release.clone(),
            generation: upsert.generation,
            content_hash: upsert.content_hash,
            resources,
        };
        self.state
            .save(&held)
            .map_err(|e| format!("recording the release in the agent's state: {e}"))?;
        self.held.insert(upsert.release.clone(), held);
        self.observed(&upsert.release, upsert.generation, statuses);
        Ok(())
    }

    async fn remove(&mut self, release: &str) -> Result<(), String> {
        self.applier.prune(release).await?;
        self.state
            .remove(release)
            .map_err(|e| format!("forgetting the release in the agent's state: {e}"))?;
        self.held.remove(release);
        self.health.remove(release);
        self.unreported.remove(release);
        Ok(())
    }

    fn observed(&mut self, release: &str, generation: i64, statuses: Vec<ReleaseResourceStatus>) {
        let new = (generation, statuses);
        if self.health.get(release) != Some(&new) {
            self.health.insert(release.to_string(), new);
            self.unreported.insert(release.to_string());
        }
    }

    /// Re-applies everything held, correcting drift. Returns true when health changed.
    async fn correct_drift(&mut self) -> bool {
        let releases: Vec<Held> = self.held.values().cloned().collect();
        let before = self.unreported.len();
        // A release only written ahead of its first apply has nothing acknowledged to keep.
        for held in releases.into_iter().filter(|h| !h.is_pending()) {
            let statuses = match self.applier.apply(&held.release, &held.resources).await {
                Ok(statuses) => statuses,
                Err(e) => {
                    tracing::warn!(release = %held.release, error = %e, "could not re-apply");
                    continue;
                }
            };
            self.observed(&held.release, held.generation, statuses);
        }
        self.unreported.len() != before
    }

    /// Takes the health the applier watched change since the last apply. Returns true when
    /// health changed.
    fn refresh_health(&mut self) -> bool {
        let held: Vec<(String, i64)> = self
            .held
            .values()
            .map(|h| (h.release.clone(), h.generation))
            .collect();
        let before = self.unreported.len();
        for (release, generation) in held {
            if let Some(statuses) = self.applier.health(&release) {
                self.observed(&release, generation, statuses);
            }
        }
        self.unreported.len() != before
    }

    fn report(&mut self, release: &str) -> Option<AgentMessage> {
        let (generation, resources) = self.health.get(release)?.clone();
        Some(message(agent_message::Message::Status(pb::StatusReport {
            release: release.to_string(),
            generation,
            resources: stamp(resources),
        })))
    }
}

fn stamp(mut resources: Vec<ReleaseResourceStatus>) -> Vec<ReleaseResourceStatus> {
    let now = now_seconds();
    for r in &mut resources {
        r.last_observed_time = Some(now);
    }
    resources
}

/// A whole upsert, its chunks joined.
struct Assembled {
    release: String,
    generation: i64,
    content_hash: String,
    manifests: Vec<u8>,
}

/// Collects the chunks of one upsert.
#[derive(Default)]
struct Chunks {
    /// The first chunk, the bytes so far and the index expected next.
    current: Option<(pb::ReleaseUpsert, Vec<u8>, u32)>,
    /// A release refused for its size: its remaining chunks are skipped.
    refused: Option<(String, i64)>,
}

enum Step {
    Incomplete,
    Complete(Assembled),
    Refused(String, i64, String),
}

impl Chunks {
    fn add(&mut self, chunk: pb::ReleaseUpsert, max_bytes: usize) -> Step {
        let key = (chunk.release.clone(), chunk.generation);
        if self.refused.as_ref() == Some(&key) {
            if chunk.chunk_index + 1 == chunk.chunk_count {
                self.refused = None;
            }
            return Step::Incomplete;
        }
        if chunk.chunk_index == 0 {
            let announced = (chunk.chunk_count as usize).saturating_mul(CHUNK_BYTES);
            if announced > max_bytes.saturating_add(CHUNK_BYTES) {
                let error = format!(
                    "the release has {} chunks (up to {announced} bytes); this agent accepts at most {max_bytes} bytes (--max-release-bytes)",
                    chunk.chunk_count
                );
                if chunk.chunk_count > 1 {
                    self.refused = Some(key.clone());
                }
                return Step::Refused(key.0, key.1, error);
            }
            self.current = None;
        }
        let (head, mut buffer) = match self.current.take() {
            Some((head, buffer, next))
                if head.release == chunk.release
                    && head.generation == chunk.generation
                    && chunk.chunk_index == next =>
            {
                (head, buffer)
            }
            _ if chunk.chunk_index == 0 => (chunk.clone(), Vec::new()),
            _ => {
                return Step::Refused(
                    key.0,
                    key.1,
                    format!("chunk {} arrived out of order", chunk.chunk_index),
                );
            }
        };
        buffer.extend_from_slice(&chunk.manifests);
        if buffer.len() > max_bytes {
            self.refused = (chunk.chunk_index + 1 < chunk.chunk_count).then(|| key.clone());
            return Step::Refused(
                key.0,
                key.1,
                format!("the release is over {max_bytes} bytes (--max-release-bytes)"),
            );
        }
        if chunk.chunk_index + 1 < chunk.chunk_count {
            self.current = Some((head, buffer, chunk.chunk_index + 1));
            return Step::Incomplete;
        }
        Step::Complete(Assembled {
            release: head.release,
            generation: head.generation,
            content_hash: head.content_hash,
            manifests: buffer,
        })
    }
}

/// Runs the agent until `shutdown` turns true: registers if needed, then keeps a stream open,
/// reconnecting with full-jitter exponential backoff, and corrects drift meanwhile.
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let state = State::open(&config.state_dir)
        .with_context(|| format!("opening the state in {}", config.state_dir.display()))?;
    let held = state.load().context("reading the agent's state")?;
    tracing::info!(releases = held.len(), state = %config.state_dir.display(), "agent state loaded");
    let identity = tokio::select! {
        identity = identity::load_or_register(
            &config.state_dir,
            &config.control_plane,
            &config.data_plane,
            config.token.as_deref(),
            config.ca_cert.as_deref(),
        ) => identity?,
        _ = stopped(&mut shutdown) => return Ok(()),
    };
    let core = Arc::new(Mutex::new(Core {
        applier: config.applier.clone(),
        state,
        held,
        health: HashMap::new(),
        unreported: BTreeSet::new(),
    }));
    let health_changed = Arc::new(Notify::new());
    tokio::spawn(correct_drift(
        core.clone(),
        config.resync_every,
        health_changed.clone(),
        shutdown.clone(),
    ));
    if let Some(changes) = config.applier.health_changes() {
        tokio::spawn(follow_health(
            core.clone(),
            changes,
            health_changed.clone(),
            shutdown.clone(),
        ));
    }

    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = session(&config, &identity, &core, &health_changed) => outcome,
            _ = stopped(&mut shutdown) => return Ok(()),
        };
        match outcome {
            Ok(()) => tracing::info!("stream ended; reconnecting"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "stream failed; reconnecting"),
        }
        // A stream that lived a while resets the backoff: it was a disconnect, not a failure
        // to connect.
        if started.elapsed() > Duration::from_secs(30) {
            attempt = 0;
        }
        let delay = backoff(&config, attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut shutdown) => return Ok(()),
        }
    }
}

/// Full jitter: a uniformly random delay up to the exponential bound.
fn backoff(config: &Config, attempt: u32) -> Duration {
    let bound = config
        .backoff_base
        .saturating_mul(1u32 << attempt.min(16))
        .min(config.backoff_max);
    let millis = bound.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

async fn correct_drift(
    core: Arc<Mutex<Core>>,
    every: Duration,
    health_changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        if core.lock().await.correct_drift().await {
            health_changed.notify_one();
        }
    }
}

/// Passes on health the applier saw change between applies.
async fn follow_health(
    core: Arc<Mutex<Core>>,
    changes: Arc<Notify>,
    health_changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = changes.notified() => {}
            _ = stopped(&mut shutdown) => return,
        }
        if core.lock().await.refresh_health() {
            health_changed.notify_one();
        }
    }
}

/// Resolves once `shutdown` turns true.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn message(m: agent_message::Message) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

/// One stream, from Hello until it ends.
async fn session(
    config: &Config,
    identity: &AgentIdentity,
    core: &Mutex<Core>,
    health_changed: &Notify,
) -> anyhow::Result<()> {
    let channel = identity
        .endpoint(&config.control_plane)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", config.control_plane))?;
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(4 * CHUNK_BYTES)
        .max_encoding_message_size(4 * CHUNK_BYTES);
    let (tx, rx) = mpsc::unbounded_channel();
    let known = {
        let core = core.lock().await;
        core.held
            .values()
            .map(|h| {
                let known = pb::KnownRelease {
                    generation: h.generation,
                    content_hash: h.content_hash.clone(),
                };
                (h.release.clone(), known)
            })
            .collect()
    };
    let info = config.applier.info().await;
    tx.send(message(agent_message::Message::Hello(pb::Hello {
        agent_version: crate::VERSION.into(),
        protocol_version: PROTOCOL_VERSION,
        known,
        cluster_info: Some(info),
    })))
    .expect("the receiver is alive");
    let mut inbound = client
        .session(UnboundedReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?
        .into_inner();
    let welcome = match tokio::time::timeout(Duration::from_secs(60), inbound.message()).await {
        Ok(Ok(Some(pb::ControlMessage {
            message: Some(control_message::Message::Welcome(w)),
        }))) => w,
        Ok(Ok(other)) => anyhow::bail!("expected Welcome, got {other:?}"),
        Ok(Err(s)) => anyhow::bail!("{} ({:?})", s.message(), s.code()),
        Err(_) => anyhow::bail!("no Welcome within 60 s"),
    };
    let interval = Duration::from_secs(u64::from(welcome.heartbeat_interval_seconds.max(1)));
    tracing::info!(session = %welcome.session_id, "connected");
    let mut heartbeat = tokio::time::interval(interval);
    let mut last_heard = Instant::now();
    let mut chunks = Chunks::default();
    let mut synced = false;
    let send = |m: agent_message::Message| tx.send(message(m)).is_ok();
    loop {
        tokio::select! {
            received = inbound.message() => {
                let received = match received {
                    Ok(Some(m)) => m,
                    Ok(None) => return Ok(()),
                    Err(s) => anyhow::bail!("{} ({:?})", s.message(), s.code()),
                };
                last_heard = Instant::now();
                match received.message {
                    Some(control_message::Message::Upsert(chunk)) => {
                        let ack = match chunks.add(chunk, config.max_release_bytes) {
                            Step::Incomplete => continue,
                            Step::Refused(release, generation, error) => {
                                tracing::warn!(%release, generation, %error, "release refused");
                                pb::Ack { release, generation, ok: false, error }
                            }
                            Step::Complete(upsert) => {
                                let (release, generation) = (upsert.release.clone(), upsert.generation);
                                let mut core = core.lock().await;
                                let result = core.upsert(upsert).await;
                                let report = core.unreported.remove(&release).then(|| core.report(&release)).flatten();
                                drop(core);
                                if let Err(e) = &result {
                                    tracing::warn!(%release, generation, error = %e, "apply failed");
                                }
                                let ok = result.is_ok();
                                let ack = pb::Ack { release: release.clone(), generation, ok, error: result.err().unwrap_or_default() };
                                send(agent_message::Message::Ack(ack));
                                if ok && let Some(on_event) = &config.on_event {
                                    on_event(crate::Event::Acked { release, generation });
                                }
                                if let Some(report) = report {
                                    let _ = tx.send(report);
                                }
                                continue;
                            }
                        };
                        send(agent_message::Message::Ack(ack));
                    }
                    Some(control_message::Message::Remove(remove)) => {
                        let result = core.lock().await.remove(&remove.release).await;
                        if let Err(e) = &result {
                            tracing::warn!(release = %remove.release, error = %e, "prune failed");
                        }
                        send(agent_message::Message::Ack(pb::Ack {
                            release: remove.release,
                            generation: remove.generation,
                            ok: result.is_ok(),
                            error: result.err().unwrap_or_default(),
                        }));
                    }
                    Some(control_message::Message::SyncComplete(done)) => {
                        tracing::info!(upserts = done.upserts, removes = done.removes, unchanged = done.unchanged, "in sync");
                        synced = true;
                        if let Some(on_event) = &config.on_event {
                            on_event(crate::Event::Synced);
                        }
                        // The control plane may have restarted: tell it every health, once.
                        let mut core = core.lock().await;
                        let releases: Vec<String> = core.health.keys().cloned().collect();
                        core.unreported.clear();
                        for release in releases {
                            if let Some(report) = core.report(&release) {
                                let _ = tx.send(report);
                            }
                        }
                    }
                    Some(control_message::Message::Heartbeat(_)) => {}
                    Some(control_message::Message::Welcome(_)) | None => {}
                }
            }
            _ = health_changed.notified(), if synced => {
                let mut core = core.lock().await;
                let releases = std::mem::take(&mut core.unreported);
                for release in releases {
                    if let Some(report) = core.report(&release) {
                        let _ = tx.send(report);
                    }
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > interval * 3 {
                    anyhow::bail!("no message from the control plane for three heartbeat intervals");
                }
                send(agent_message::Message::Heartbeat(pb::Heartbeat { time: Some(now_seconds()) }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;

    /// An applier that gets as far as creating objects, then fails (a crash mid-apply, as
    /// far as the state on disk can tell), and counts what it is asked to do.
    #[derive(Default)]
    struct Failing {
        applies: std::sync::atomic::AtomicUsize,
    }

    impl Applier for Failing {
        fn apply<'a>(
            &'a self,
            _release: &'a str,
            _resources: &'a [pb::ReleaseResource],
        ) -> BoxFuture<'a, Result<Vec<ReleaseResourceStatus>, String>> {
            self.applies
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Err("the target went away mid-apply".to_string()) })
        }

        fn prune<'a>(&'a self, _release: &'a str) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }

        fn info(&self) -> BoxFuture<'_, pb::ClusterInfo> {
            Box::pin(async { pb::ClusterInfo::default() })
        }
    }

    #[tokio::test]
    async fn a_first_apply_is_on_record_before_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let applier = Arc::new(Failing::default());
        let mut core = Core {
            applier: applier.clone(),
            state: State::open(dir.path()).unwrap(),
            held: BTreeMap::new(),
            health: HashMap::new(),
            unreported: BTreeSet::new(),
        };
        let upsert = Assembled {
            release: "acme/api-eu".into(),
            generation: 4,
            content_hash: "h".into(),
            manifests: b"[]".to_vec(),
        };
        assert!(core.upsert(upsert).await.is_err());
        // After a restart the agent reports it (generation 0), so a removal can reach it…
        let held = State::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(held.get("acme/api-eu"), Some(&Held::pending("acme/api-eu")));
        // …and never re-applies it on its own: nothing of it was acknowledged.
        core.held = held;
        core.correct_drift().await;
        assert_eq!(applier.applies.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    fn chunk(index: u32, count: u32, bytes: &[u8]) -> pb::ReleaseUpsert {
        pb::ReleaseUpsert {
            release: "acme/big".into(),
            generation: 2,
            content_hash: "h".into(),
            chunk_index: index,
            chunk_count: count,
            manifests: bytes.to_vec(),
        }
    }

    #[test]
    fn chunks_join_in_order_and_an_oversized_release_is_refused_alone() {
        let mut chunks = Chunks::default();
        let full = vec![7u8; CHUNK_BYTES];
        assert!(matches!(
            chunks.add(chunk(0, 3, &full), usize::MAX),
            Step::Incomplete
        ));
        assert!(matches!(
            chunks.add(chunk(1, 3, &full), usize::MAX),
            Step::Incomplete
        ));
        match chunks.add(chunk(2, 3, b"tail"), usize::MAX) {
            Step::Complete(a) => assert_eq!(a.manifests.len(), 2 * CHUNK_BYTES + 4),
            _ => panic!("expected the whole release"),
        }

        // Announced too big: refused at once, its other chunks skipped, the next one fine.
        assert!(matches!(
            chunks.add(chunk(0, 5, &full), CHUNK_BYTES),
            Step::Refused(..)
        ));
        for i in 1..5 {
            assert!(matches!(
                chunks.add(chunk(i, 5, &full), CHUNK_BYTES),
                Step::Incomplete
            ));
        }
        let mut small = chunk(0, 1, b"[]");
        small.release = "acme/small".into();
        assert!(matches!(chunks.add(small, CHUNK_BYTES), Step::Complete(_)));

        // A chunk out of order is refused.
        assert!(matches!(
            chunks.add(chunk(1, 2, &full), usize::MAX),
            Step::Refused(..)
        ));
    }
}

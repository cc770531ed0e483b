//! One agent stream, from `Hello` to its end.
//!
//! The session keeps what the agent holds (`held`: from `Hello.known`, then from acks) and a
//! queue of release ids to look at. Looking at an id compares the index with `held`:
//! an upsert if the content differs, a removal if the agent holds something the store no longer
//! wants, nothing if they agree. Each id has at most one generation in flight, and at most
//! `window` ids are in flight at once; an id that changes meanwhile is looked at again after
//! its ack, with whatever is newest then. A generation the agent failed to apply is sent
//! again with backoff ([`Retries`]).
//!
//! A session goes through [`Session::hello`] (the handshake), [`Session::resync`] (queue every
//! id either side knows), [`Session::stream`] (one `select!` over the agent's messages, new
//! work, displacement, shutdown, heartbeats and data-plane reports) and, if it was still the
//! data plane's session, [`Session::disconnected`]. Status goes to the hub's status writer.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{SemaphorePermit, mpsc, watch};
use tokio::time::Instant;
use tonic::Status;
use troupe_common::agent::{PROTOCOL_VERSION, chunks, encode_manifests, parse_release_id};
use troupe_common::pb::v1alpha1::{
    self as pb, AgentMessage, ControlMessage, agent_message, control_message,
};
use troupe_common::timestamp::now_seconds;
use troupe_common::{Kind, Object, ObjectKey};

use super::retry::Retries;
use super::stream::{ControlStream, Outgoing};
use super::{Desired, Hub, Item, Work};
use crate::status::plane::PlaneReport;

mod acks;

/// The agent's half of a stream.
pub type Inbound = Pin<Box<dyn Stream<Item = Result<AgentMessage, Status>> + Send>>;

/// Messages buffered towards the agent.
const OUTBOUND: usize = 32;
/// How often the data plane's status (releases in sync, last heartbeat) may be written.
const PLANE_REPORT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct InFlight {
    generation: i64,
    content_hash: String,
    remove: bool,
}

impl Hub {
    /// Opens a session for `plane`'s agent over `inbound`. Fails if the data plane does not
    /// exist; everything after that (a late or wrong `Hello`, displacement) ends the stream
    /// with a status.
    pub fn connect(
        self: &Arc<Self>,
        plane: ObjectKey,
        inbound: Inbound,
    ) -> Result<ControlStream, Status> {
        if self.resources.get(&plane).is_err() {
            return Err(Status::not_found(format!(
                "{} {} does not exist; it may have been deleted after the agent registered",
                plane.kind.name(),
                display(&plane)
            )));
        }
        let (tx, rx) = mpsc::channel(OUTBOUND);
        let session = Session {
            hub: self.clone(),
            plane,
            tx,
            held: HashMap::new(),
            in_flight: HashMap::new(),
            failed: HashMap::new(),
            retries: Retries::new(self.config.retry_base, self.config.retry_max),
            report: PlaneReport::default(),
            report_due: false,
            counts: pb::SyncComplete::default(),
            stalled: AtomicBool::new(false),
            fault: None,
        };
        tokio::spawn(session.run(inbound));
        Ok(ControlStream::new(rx))
    }
}

struct Session {
    hub: Arc<Hub>,
    plane: ObjectKey,
    tx: mpsc::Sender<Outgoing>,
    /// What the agent holds: generation and content hash per release id.
    held: HashMap<String, (i64, String)>,
    in_flight: HashMap<String, InFlight>,
    /// Generations the agent failed to apply (or that are too big to send); not sent again
    /// until the release changes or, for an upsert, its retry is due.
    failed: HashMap<String, i64>,
    /// When to send each failed upsert again.
    retries: Retries,
    report: PlaneReport,
    report_due: bool,
    /// Upserts, removals and unchanged releases of the initial diff.
    counts: pb::SyncComplete,
    /// Set when the agent stopped reading its stream.
    stalled: AtomicBool,
    /// Set when the store failed under the session; it ends, and the agent's next session
    /// starts over.
    fault: Option<String>,
}

enum End {
    /// The stream is over; say this to the agent if it still listens.
    Status(Status),
    /// The agent went away.
    Gone(String),
}

impl Session {
    async fn run(mut self, mut inbound: Inbound) {
        let end = self.serve(&mut inbound).await;
        let reason = match end {
            End::Status(status) => {
                let reason = status.message().to_string();
                let _ = self.tx.send(Box::new(Err(status))).await;
                reason
            }
            End::Gone(reason) => reason,
        };
        tracing::info!(plane = %display(&self.plane), %reason, "agent session ended");
    }

    /// Runs the session from `Hello` to its end, and says why it ended.
    async fn serve(&mut self, inbound: &mut Inbound) -> End {
        let hub = self.hub.clone();
        let hello = match self.hello(inbound).await {
            Ok(hello) => hello,
            Err(end) => return end,
        };
        // Wait for the index to hold every Release: a diff against a half-loaded index
        // would tell the agent to prune what merely was not read yet.
        let mut loaded = hub.loaded.clone();
        if loaded.wait_for(|l| *l).await.is_err() {
            return End::Status(Status::unavailable("the control plane is stopping"));
        }
        let Ok(permit) = hub.resyncs.acquire().await else {
            return End::Status(Status::unavailable("the control plane is stopping"));
        };
        let work = Arc::new(Work::default());
        let (session_id, displaced) = hub.attach(&self.plane, work.clone());
        self.resync(hello.known, &work);
        self.report = PlaneReport {
            sessions: 1,
            agent_version: hello.agent_version.clone(),
            cluster_info: hello.cluster_info.clone(),
            last_connected: Some(now_seconds()),
            last_heartbeat: Some(now_seconds()),
            server: hub.config.server.clone(),
            ..Default::default()
        };
        self.send_plane_report();
        let welcome = control_message::Message::Welcome(pb::Welcome {
            protocol_version: PROTOCOL_VERSION,
            session_id: session_id.to_string(),
            heartbeat_interval_seconds: hub.config.heartbeat.as_secs().max(1) as u32,
        });
        if !self.send(welcome).await {
            hub.detach(&self.plane, session_id);
            return End::Gone("closed before Welcome".into());
        }
        tracing::info!(plane = %display(&self.plane), session = session_id, agent = %hello.agent_version, "agent connected");
        // Only after Welcome: the agent takes nothing else as its first message.
        let builds = hub.builds().filter(|_| hello.build_plane.is_some());
        if let (Some(builds), Some(build_plane)) = (builds, &hello.build_plane) {
            builds.connect(&self.plane, session_id, build_plane, self.tx.clone());
        }
        let end = self.stream(inbound, &work, displaced, permit).await;
        if let Some(builds) = builds {
            builds.disconnect(&self.plane, session_id);
        }
        if hub.detach(&self.plane, session_id) {
            self.disconnected(&end);
        }
        end
    }

    /// Waits for the agent's `Hello` and checks that it speaks our protocol.
    async fn hello(&self, inbound: &mut Inbound) -> Result<pb::Hello, End> {
        let deadline = self.hub.config.hello_deadline;
        let hello = match tokio::time::timeout(deadline, inbound.next()).await {
            Err(_) => {
                return Err(End::Status(Status::deadline_exceeded(format!(
                    "no Hello within {deadline:?} of opening the stream"
                ))));
            }
            Ok(None) => return Err(End::Gone("closed before Hello".into())),
            Ok(Some(Err(e))) => return Err(End::Gone(e.message().to_string())),
            Ok(Some(Ok(AgentMessage {
                message: Some(agent_message::Message::Hello(hello)),
            }))) => hello,
            Ok(Some(Ok(_))) => {
                return Err(End::Status(Status::invalid_argument(
                    "the first message must be Hello",
                )));
            }
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(End::Status(Status::failed_precondition(format!(
                "the agent speaks protocol version {}; this control plane speaks {PROTOCOL_VERSION}",
                hello.protocol_version
            ))));
        }
        Ok(hello)
    }

    /// Takes what the agent says it holds, and queues every release id either side knows,
    /// then the end of the initial diff.
    fn resync(&mut self, known: HashMap<String, pb::KnownRelease>, work: &Work) {
        self.held = known
            .into_iter()
            .filter(|(id, _)| parse_release_id(id).is_some())
            .map(|(id, k)| (id, (k.generation, k.content_hash)))
            .collect();
        let mut ids: Vec<String> = self.hub.desired_set(&self.plane).into_keys().collect();
        ids.extend(self.held.keys().cloned());
        ids.sort();
        ids.dedup();
        for id in ids {
            work.push(Item::Release(id));
        }
        work.push(Item::SyncComplete);
    }

    /// The session proper: sends work while the window has room, handles what the agent
    /// sends, beats the heart and reports the data plane, until something ends it. The resync
    /// `permit` is given back once the initial diff is sent.
    async fn stream(
        &mut self,
        inbound: &mut Inbound,
        work: &Work,
        mut displaced: watch::Receiver<bool>,
        permit: SemaphorePermit<'_>,
    ) -> End {
        let hub = self.hub.clone();
        let mut stopping = hub.stopping.clone();
        let mut permit = Some(permit);
        let mut heartbeat = tokio::time::interval(hub.config.heartbeat);
        let mut report = tokio::time::interval(PLANE_REPORT_EVERY);
        let mut last_heard = Instant::now();
        // A session that cannot finish its initial diff in time (its agent acknowledges
        // nothing, or reads nothing) lets the next one start all the same.
        let permit_deadline = Instant::now() + hub.config.heartbeat * 3;
        loop {
            let retry = self.retries.next_due();
            self.send_work(work, &mut permit).await;
            if let Some(fault) = self.fault.take() {
                return End::Status(Status::unavailable(fault));
            }
            if self.stalled.load(Ordering::Relaxed) {
                return End::Status(Status::deadline_exceeded(format!(
                    "the agent has not read its stream for {:?}; reconnect",
                    hub.config.heartbeat * 3
                )));
            }
            if self.tx.is_closed() {
                return End::Gone("the stream closed".into());
            }
            let room = self.in_flight.len() < hub.config.window;
            tokio::select! {
                biased;
                _ = displaced.changed() => {
                    return End::Status(Status::aborted(format!(
                        "displaced by a newer session of data plane {}",
                        display(&self.plane)
                    )));
                }
                _ = stopped(&mut stopping) => {
                    return End::Status(Status::unavailable("the control plane is stopping; reconnect"));
                }
                message = inbound.next() => match message {
                    Some(Ok(message)) => {
                        last_heard = Instant::now();
                        let message = match self.build_message(message).await {
                            Ok(Some(message)) => message,
                            Ok(None) => continue,
                            Err(status) => return End::Status(status),
                        };
                        if let Err(status) = self.receive(message, work) {
                            return End::Status(status);
                        }
                    }
                    Some(Err(e)) => return End::Gone(e.message().to_string()),
                    None => return End::Gone("the agent closed the stream".into()),
                },
                _ = work.ready.notified(), if room => {}
                _ = tokio::time::sleep_until(permit_deadline), if permit.is_some() => {
                    tracing::info!(plane = %display(&self.plane), "the initial diff is taking long; the next session may resync");
                    permit = None;
                }
                _ = tokio::time::sleep_until(retry.unwrap_or(permit_deadline)), if retry.is_some() => {
                    for id in self.retries.take_due(Instant::now()) {
                        self.failed.remove(&id);
                        work.push(Item::Release(id));
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > hub.config.heartbeat * 3 {
                        return End::Status(Status::deadline_exceeded("no message from the agent for three heartbeat intervals"));
                    }
                    let beat = control_message::Message::Heartbeat(pb::Heartbeat { time: Some(now_seconds()) });
                    self.send(beat).await;
                }
                _ = report.tick() => {
                    if self.report_due {
                        self.send_plane_report();
                    }
                }
            }
        }
    }

    /// Takes work while the window has room; stops early if the stream closed (the caller
    /// notices). Gives the resync permit back once the initial diff is sent.
    async fn send_work(&mut self, work: &Work, permit: &mut Option<SemaphorePermit<'_>>) {
        while self.in_flight.len() < self.hub.config.window {
            let Some(item) = work.pop() else { break };
            match item {
                Item::Release(id) => {
                    if !self.look_at(&id).await {
                        return;
                    }
                }
                Item::SyncComplete => {
                    let done = control_message::Message::SyncComplete(self.counts);
                    self.send(done).await;
                    *permit = None;
                    self.report_due = true;
                }
            }
        }
    }

    /// Hands a build agent's report to the build side; gives any other message back. Fails
    /// when log lines could not be stored: a new session sends them again.
    async fn build_message(&self, message: AgentMessage) -> Result<Option<AgentMessage>, Status> {
        match message.message {
            Some(agent_message::Message::BuildProgress(progress)) => {
                if let Some(builds) = self.hub.builds() {
                    builds.progress(&self.plane, progress, &self.tx).await;
                }
                Ok(None)
            }
            Some(agent_message::Message::BuildLogs(logs)) => {
                if let Some(builds) = self.hub.builds() {
                    builds
                        .log_lines(&self.plane, logs, &self.tx)
                        .await
                        .map_err(|e| Status::unavailable(format!("{e}; reconnect")))?;
                }
                Ok(None)
            }
            message => Ok(Some(AgentMessage { message })),
        }
    }

    /// Reports the data plane disconnected, with why the session ended.
    fn disconnected(&mut self, end: &End) {
        let reason = match end {
            End::Status(s) => s.message().to_string(),
            End::Gone(r) => r.clone(),
        };
        self.report.sessions = 0;
        self.report.last_disconnected = Some(now_seconds());
        self.report.message = format!("agent disconnected: {reason}");
        self.send_plane_report();
    }

    /// Brings one release id in line. Returns false when the session must end (the stream
    /// closed, or the store failed).
    async fn look_at(&mut self, id: &str) -> bool {
        if self.in_flight.contains_key(id) {
            // Looked at again once its ack arrives.
            return true;
        }
        let desired = self.hub.desired(&self.plane, id);
        let held = self.held.get(id).cloned();
        match (desired, held) {
            (Some(d), held) if !d.terminating => {
                if held
                    .as_ref()
                    .is_some_and(|(_, hash)| *hash == d.content_hash)
                {
                    // Same content (perhaps at a newer generation): nothing to send.
                    self.counts.unchanged += 1;
                    self.held
                        .insert(id.to_string(), (d.generation, d.content_hash));
                    if d.applied < d.generation {
                        self.hub.status.applied(release_key(id), d.generation);
                    }
                    return true;
                }
                if self.failed.get(id) == Some(&d.generation) {
                    return true;
                }
                self.counts.upserts += 1;
                self.upsert(id, &d).await
            }
            (Some(d), Some(_)) => {
                if self.failed.get(id) == Some(&d.generation) {
                    // The agent retries a failed prune on its own and acks when it is done.
                    return true;
                }
                self.counts.removes += 1;
                self.remove(id, d.generation).await
            }
            (Some(d), None) => {
                // Waiting for a prune the agent has nothing for: done.
                let (resources, key) = (self.hub.resources.clone(), release_key(id));
                tokio::spawn(async move {
                    let _ = resources.purge_release(&key, d.generation).await;
                });
                true
            }
            (None, Some((generation, _))) => {
                if self.failed.get(id) == Some(&(generation + 1)) {
                    return true;
                }
                self.counts.removes += 1;
                self.remove(id, generation + 1).await
            }
            (None, None) => true,
        }
    }

    async fn upsert(&mut self, id: &str, desired: &Desired) -> bool {
        let key = release_key(id);
        let Ok(Object::Release(release)) = self.hub.resources.get(&key) else {
            // Gone since the index saw it; its deletion event brings the id back.
            return true;
        };
        let meta = release.metadata.clone().unwrap_or_default();
        // The store may hold content newer than the index saw, not yet on disk: an agent
        // must never apply what a crash could take back.
        if let Err(e) = self.hub.resources.durable(meta.resource_version).await {
            self.fault = Some(format!("the control plane's store failed: {e}; reconnect"));
            return false;
        }
        let spec = release.spec.unwrap_or_default();
        let generation = meta.generation.max(desired.generation);
        let manifests = encode_manifests(&spec.resources);
        if manifests.len() > self.hub.config.max_release_bytes {
            let error = format!(
                "the release is {} bytes; the agent endpoint sends at most {} bytes per release (--agent-max-release-bytes)",
                manifests.len(),
                self.hub.config.max_release_bytes
            );
            self.failed.insert(id.to_string(), generation);
            self.hub.status.failed(key, generation, error);
            return true;
        }
        let parts = chunks(&manifests);
        let count = parts.len() as u32;
        for (index, part) in parts.into_iter().enumerate() {
            let upsert = control_message::Message::Upsert(pb::ReleaseUpsert {
                release: id.to_string(),
                generation,
                content_hash: spec.content_hash.clone(),
                chunk_index: index as u32,
                chunk_count: count,
                manifests: part.to_vec(),
            });
            if !self.send(upsert).await {
                return false;
            }
        }
        self.in_flight.insert(
            id.to_string(),
            InFlight {
                generation,
                content_hash: spec.content_hash,
                remove: false,
            },
        );
        true
    }

    async fn remove(&mut self, id: &str, generation: i64) -> bool {
        let remove = control_message::Message::Remove(pb::ReleaseRemove {
            release: id.to_string(),
            generation,
        });
        if !self.send(remove).await {
            return false;
        }
        self.in_flight.insert(
            id.to_string(),
            InFlight {
                generation,
                content_hash: String::new(),
                remove: true,
            },
        );
        true
    }

    /// Queues `message` for the agent; false when the stream is gone or the agent has not
    /// read it for three heartbeat intervals (HTTP/2 flow control holds the queue full), in
    /// which case [`Session::stalled`] is set and the session ends.
    async fn send(&self, message: control_message::Message) -> bool {
        let message = Box::new(Ok(ControlMessage {
            message: Some(message),
        }));
        match tokio::time::timeout(self.hub.config.heartbeat * 3, self.tx.send(message)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.stalled.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    fn send_plane_report(&mut self) {
        let desired = self.hub.desired_set(&self.plane);
        let in_sync = desired
            .iter()
            .filter(|(id, d)| {
                !d.terminating
                    && self
                        .held
                        .get(*id)
                        .is_some_and(|(_, h)| *h == d.content_hash)
            })
            .count() as i32;
        let failed = desired
            .iter()
            .filter(|(id, d)| self.failed.get(*id) == Some(&d.generation))
            .count() as i32;
        self.report.in_sync = in_sync;
        self.report.pending = desired.len() as i32 - in_sync;
        self.report.failed = failed;
        self.report_due = false;
        self.hub
            .status
            .plane(self.plane.clone(), self.report.clone());
    }
}

/// Resolves once `stopping` turns true.
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

fn release_key(id: &str) -> ObjectKey {
    let (namespace, name) = parse_release_id(id).unwrap_or(("", id));
    ObjectKey::new(Kind::Release, namespace, name)
}

fn display(plane: &ObjectKey) -> String {
    if plane.namespace.is_empty() {
        plane.name.clone()
    } else {
        format!("{}/{}", plane.namespace, plane.name)
    }
}

//! One stream to the control plane, from `Hello` until it ends.
//!
//! [`session`] connects, asks the worker what the agent holds, sends `Hello` and hands the
//! stream to [`Session::serve`], which waits for `Welcome` and then loops over four things:
//! messages from the control plane (upsert chunks are joined by [`Chunks`]; whole upserts,
//! refusals, removals and `SyncComplete` are queued to the worker in the order they came),
//! the worker's answers (acks and health reports go out, progress goes to
//! [`Config::on_event`]), the heartbeat tick, and, when the worker's queue is full, room in
//! it. The loop never waits for an apply: while one runs, heartbeats still go out. While the
//! queue is full the loop stops reading the stream, so the control plane waits instead of
//! the agent buffering without bound.
//!
//! When the agent takes builds, the session attaches its outbound channel to the build plane
//! ([`Builds`](crate::builds::Builds)) once `Welcome` has come, and detaches it when it ends;
//! `BuildOffer`, `BuildCancel` and `BuildAck` go straight to the build plane, which sends
//! progress and logs itself and buffers them while this channel is full, so builds never
//! hold the stream's loop.

use std::time::Duration;

use anyhow::Context;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use troupe_common::agent::{CHUNK_BYTES, PROTOCOL_VERSION};
use troupe_common::pb::v1alpha1::agent_service_client::AgentServiceClient;
use troupe_common::pb::v1alpha1::{self as pb, AgentMessage, agent_message, control_message};
use troupe_common::timestamp::now_seconds;

use super::chunks::{Chunks, Step};
use crate::Config;
use crate::builds::Builds;
use crate::identity::AgentIdentity;
use crate::worker::{Command, Handle as WorkerHandle, Replies, Reply, message};

/// Room for messages waiting to go out on the stream.
const OUTBOUND: usize = 64;
/// Room for the worker's answers waiting for the session. The worker waits a while for room
/// and then gives up on the session, which then ends at its next heartbeat tick (see
/// [`Replies`]).
const REPLIES: usize = 64;

/// One stream, from Hello until it ends.
pub(super) async fn session(
    config: &Config,
    url: &str,
    identity: &AgentIdentity,
    worker: &WorkerHandle,
) -> anyhow::Result<()> {
    let channel = identity
        .endpoint(url)?
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tracing::info!(endpoint = url, "connected to the control plane");
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(4 * CHUNK_BYTES)
        .max_encoding_message_size(4 * CHUNK_BYTES);
    let (session, outbound) = Session::open(config, worker).await?;
    let inbound = client
        .session(ReceiverStream::new(outbound))
        .await
        .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?
        .into_inner();
    session.serve(inbound).await
}

/// One stream of the agent: [`Session::open`] registers it with the worker and queues its
/// `Hello`; [`Session::serve`] runs it over whatever carries the control plane's messages.
pub struct Session<'a> {
    config: &'a Config,
    worker: &'a WorkerHandle,
    /// What goes out on the stream.
    outbound: mpsc::Sender<AgentMessage>,
    /// Handed to the worker with each command: where its answers come back.
    replies_tx: Replies,
    replies: mpsc::Receiver<Reply>,
    chunks: Chunks,
    /// A command the worker's full queue has no room for yet; the stream is not read
    /// meanwhile.
    pending: Option<Command>,
}

impl<'a> Session<'a> {
    /// A session and the receiving end of its outbound messages (the request stream).
    pub(super) fn new(
        config: &'a Config,
        worker: &'a WorkerHandle,
    ) -> (Self, mpsc::Receiver<AgentMessage>) {
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND);
        let (replies_tx, replies) = Replies::channel(REPLIES);
        let session = Self {
            config,
            worker,
            outbound,
            replies_tx,
            replies,
            chunks: Chunks::default(),
            pending: None,
        };
        (session, outbound_rx)
    }

    /// Starts a session: tells the worker, and queues `Hello` with what the agent holds.
    /// Returns the session and the messages it sends (the request stream), `Hello` first.
    pub async fn open(
        config: &'a Config,
        worker: &'a WorkerHandle,
    ) -> anyhow::Result<(Self, mpsc::Receiver<AgentMessage>)> {
        let (session, outbound) = Self::new(config, worker);
        let known = session.connect().await?;
        let info = config.applier.info().await;
        let hello = message(agent_message::Message::Hello(pb::Hello {
            agent_version: crate::VERSION.into(),
            protocol_version: PROTOCOL_VERSION,
            known: known.into_iter().collect(),
            cluster_info: Some(info),
            build_plane: worker.builds.as_ref().map(|b| b.build_plane()),
        }));
        session
            .outbound
            .try_send(hello)
            .expect("the channel is empty");
        Ok((session, outbound))
    }

    /// Tells the worker this session starts, and returns what the agent holds, for `Hello`.
    pub(super) async fn connect(&self) -> anyhow::Result<Vec<(String, pb::KnownRelease)>> {
        self.worker.connect(self.replies_tx.clone()).await
    }

    /// Waits for `Welcome`, then serves the stream until it ends; `Hello` has been sent.
    /// Ends with `Ok` when the control plane closed the stream or stopped reading it, with an
    /// error when it failed or fell silent; the agent reconnects either way.
    pub async fn serve<S>(mut self, mut inbound: S) -> anyhow::Result<()>
    where
        S: Stream<Item = Result<pb::ControlMessage, tonic::Status>> + Unpin,
    {
        let welcome = welcome(&mut inbound).await?;
        let interval = Duration::from_secs(u64::from(welcome.heartbeat_interval_seconds.max(1)));
        tracing::info!(session = %welcome.session_id, "connected");
        // Detached when this returns, whichever way.
        let _builds = self
            .worker
            .builds
            .as_ref()
            .map(|builds| builds.attach(self.outbound.clone()));
        let mut heartbeat = tokio::time::interval(interval);
        let mut last_heard = Instant::now();
        let worker = self.worker;
        loop {
            tokio::select! {
                received = inbound.next(), if self.pending.is_none() => {
                    let received = match received {
                        Some(Ok(m)) => m,
                        None => return Ok(()),
                        Some(Err(s)) => anyhow::bail!("{} ({:?})", s.message(), s.code()),
                    };
                    last_heard = Instant::now();
                    self.pending = self.on_message(received);
                }
                room = worker.commands.reserve(), if self.pending.is_some() => {
                    let room = room.map_err(|_| anyhow::anyhow!("the agent's worker has stopped"))?;
                    room.send(self.pending.take().expect("a command is pending"));
                }
                Some(reply) = self.replies.recv() => {
                    if !self.on_reply(reply).await {
                        return Ok(());
                    }
                }
                _ = heartbeat.tick() => {
                    // While the worker's queue is full the stream is not read: silence then
                    // says nothing about the control plane.
                    if self.pending.is_some() {
                        last_heard = Instant::now();
                    }
                    if self.replies_tx.gave_up() {
                        anyhow::bail!("the agent fell behind sending its answers; reconnecting to resync");
                    }
                    if last_heard.elapsed() > interval * 3 {
                        anyhow::bail!("no message from the control plane for three heartbeat intervals");
                    }
                    let beat = pb::Heartbeat { time: Some(now_seconds()) };
                    if self.outbound.send(message(agent_message::Message::Heartbeat(beat))).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// What to ask of the worker for one message from the control plane, if anything.
    fn on_message(&mut self, received: pb::ControlMessage) -> Option<Command> {
        let replies = self.replies_tx.clone();
        match received.message? {
            control_message::Message::Upsert(chunk) => {
                match self.chunks.add(chunk, self.config.max_release_bytes) {
                    Step::Incomplete => None,
                    Step::Refused(release, generation, error) => {
                        tracing::warn!(%release, generation, %error, "release refused");
                        let ack = pb::Ack {
                            release,
                            generation,
                            ok: false,
                            error,
                        };
                        Some(Command::Refuse { ack, replies })
                    }
                    Step::Complete(upsert) => Some(Command::Upsert { upsert, replies }),
                }
            }
            control_message::Message::Remove(remove) => Some(Command::Remove {
                release: remove.release,
                generation: remove.generation,
                replies,
            }),
            control_message::Message::SyncComplete(done) => {
                tracing::info!(
                    upserts = done.upserts,
                    removes = done.removes,
                    unchanged = done.unchanged,
                    "in sync"
                );
                Some(Command::Synced { replies })
            }
            control_message::Message::BuildOffer(offer) => {
                self.builds("BuildOffer")?.offer(offer);
                None
            }
            control_message::Message::BuildCancel(cancel) => {
                self.builds("BuildCancel")?.cancel(cancel);
                None
            }
            control_message::Message::BuildAck(ack) => {
                self.builds("BuildAck")?.ack(ack);
                None
            }
            control_message::Message::Heartbeat(_) | control_message::Message::Welcome(_) => None,
        }
    }

    /// The build plane, for a build message; `None` (and a warning) when the agent takes no
    /// builds: the control plane offers builds only to agents whose `Hello` has a build plane.
    fn builds(&self, what: &str) -> Option<&'a Builds> {
        let builds = self.worker.builds.as_ref();
        if builds.is_none() {
            tracing::warn!(
                message = what,
                "a build message, but this agent takes no builds (--workflows)"
            );
        }
        builds
    }

    /// Passes on one answer of the worker; false when the stream is gone.
    async fn on_reply(&self, reply: Reply) -> bool {
        match reply {
            Reply::Message(m) => self.outbound.send(m).await.is_ok(),
            Reply::Event(event) => {
                if let Some(on_event) = &self.config.on_event {
                    on_event(event);
                }
                true
            }
        }
    }
}

async fn welcome<S>(inbound: &mut S) -> anyhow::Result<pb::Welcome>
where
    S: Stream<Item = Result<pb::ControlMessage, tonic::Status>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(60), inbound.next()).await {
        Ok(Some(Ok(pb::ControlMessage {
            message: Some(control_message::Message::Welcome(w)),
        }))) => Ok(w),
        Ok(Some(Err(s))) => anyhow::bail!("{} ({:?})", s.message(), s.code()),
        Ok(other) => anyhow::bail!("expected Welcome, got {:?}", other.and_then(Result::ok)),
        Err(_) => anyhow::bail!("no Welcome within 60 s"),
    }
}

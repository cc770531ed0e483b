//! The simulated network between the agent and the control plane's hub.
//!
//! A connection is two links, one per direction; each is FIFO, as a TCP stream is, and
//! delays every message by a random latency. Messages are never duplicated nor reordered
//! within a link (TCP cannot do that); a connection is cut instead, either at random per
//! message (while faults are on), by the driver, or because either side crashed:
//!
//! - a random suffix of what was in flight is lost (a **drop**), the rest still arrives;
//! - a **reset** is noticed by each side after its own random delay: the stream fails there,
//!   and a side that goes on sending finds it closed;
//! - a **silent** cut (a half-open connection) is never noticed: each side goes on sending
//!   into the void until its heartbeat timeout (or, on the control plane, a newer session of
//!   the same data plane) ends its session.
//!
//! So the agent may reconnect while its previous session is still open on the control
//! plane, which then handles the old connection's tail after the new one started
//! (**reordering** across connections), and upserts, removals and acks lost with one
//! connection are sent again on the next (**duplicates**).
//!
//! Every message is observed as it enters the network: what the hub sent (per connection),
//! and every ok ack the agent sends, which the cluster must explain at that moment
//! (invariant 3).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use troupe_common::pb::v1alpha1::{AgentMessage, ControlMessage, agent_message, control_message};
use troupe_common::{Kind, ObjectKey};
use troupe_control_plane::agents::Hub;

use crate::cluster::Cluster;
use crate::content::{DATA_PLANE, NAMESPACE};
use crate::oracle::Oracle;

/// How the network misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    /// Chance, per message while faults are on, that the connection is cut there.
    pub cut_per_message: f64,
    /// Chance that a cut is silent rather than a reset.
    pub silent: f64,
    /// The longest latency of one message.
    pub max_latency: Duration,
    /// The longest a side takes to notice a reset.
    pub max_notice: Duration,
}

/// How a connection was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Each side's stream fails, after its own delay.
    Reset,
    /// Neither side hears anything more.
    Silent,
}

/// What the hub sent for a (release, generation).
#[derive(Debug, Clone)]
enum Sent {
    Upsert(String),
    Remove,
}

type SentMap = HashMap<(String, i64), Sent>;

struct Conn {
    id: u64,
    cut: watch::Sender<Option<Cut>>,
    sent: Mutex<SentMap>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The network, and the one control-plane endpoint behind it (none while it is down).
pub struct Network {
    faults: NetFaults,
    faults_on: AtomicBool,
    rng: Mutex<StdRng>,
    server: Mutex<Option<Arc<Hub>>>,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// What the hub sent last for each (release, generation), on any connection.
    sent: Mutex<SentMap>,
    next: AtomicU64,
    cluster: Arc<Cluster>,
    oracle: Arc<Oracle>,
}

/// The agent's end of one direction of a connection.
pub type Inbound = ReceiverStream<Result<ControlMessage, Status>>;

impl Network {
    /// A network with no control plane behind it yet.
    pub fn new(
        faults: NetFaults,
        seed: u64,
        cluster: Arc<Cluster>,
        oracle: Arc<Oracle>,
    ) -> Arc<Self> {
        Arc::new(Self {
            faults,
            faults_on: AtomicBool::new(true),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            server: Mutex::default(),
            conns: Mutex::default(),
            sent: Mutex::default(),
            next: AtomicU64::new(0),
            cluster,
            oracle,
        })
    }

    /// Puts a hub behind the endpoint, or none (connections are refused).
    pub fn serve(&self, hub: Option<Arc<Hub>>) {
        *lock(&self.server) = hub;
    }

    /// Whether a connection would be accepted now.
    pub fn is_up(&self) -> bool {
        lock(&self.server).is_some()
    }

    /// Stops cutting connections at random.
    pub fn faults_off(&self) {
        self.faults_on.store(false, Ordering::SeqCst);
    }

    /// Cuts one open connection at random, if any; returns whether one was cut.
    pub fn cut_one(&self) -> bool {
        let conns = self.open_conns();
        if conns.is_empty() {
            return false;
        }
        let conn = conns[lock(&self.rng).random_range(0..conns.len())].clone();
        self.cut(&conn, self.random_cut());
        true
    }

    /// Cuts every connection: `how`, or at random per connection when `None`.
    pub fn cut_all(&self, how: Option<Cut>) {
        for conn in self.open_conns() {
            let how = how.unwrap_or_else(|| self.random_cut());
            self.cut(&conn, how);
        }
    }

    fn open_conns(&self) -> Vec<Arc<Conn>> {
        let mut conns = lock(&self.conns);
        conns.retain(|c| c.cut.borrow().is_none() && c.cut.receiver_count() > 0);
        conns.clone()
    }

    fn cut(&self, conn: &Conn, how: Cut) {
        if conn.cut.borrow().is_none() {
            self.oracle
                .trace(format!("net: connection {} cut ({how:?})", conn.id));
            let _ = conn.cut.send(Some(how));
        }
    }

    fn random_cut(&self) -> Cut {
        if lock(&self.rng).random_bool(self.faults.silent) {
            Cut::Silent
        } else {
            Cut::Reset
        }
    }

    /// Connects the agent's `outbound` messages to the hub; returns what the hub sends.
    pub fn dial(
        self: &Arc<Self>,
        outbound: mpsc::Receiver<AgentMessage>,
    ) -> Result<Inbound, String> {
        let hub = lock(&self.server)
            .clone()
            .ok_or_else(|| "connection refused: the control plane is down".to_string())?;
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::SeqCst) + 1,
            cut: watch::channel(None).0,
            sent: Mutex::default(),
        });
        let (up, up_rx) = mpsc::channel(16);
        let plane = ObjectKey::new(Kind::DataPlane, NAMESPACE, DATA_PLANE);
        let control = hub
            .connect(plane, Box::pin(ReceiverStream::new(up_rx)))
            .map_err(|s| s.message().to_string())?;
        let (down, down_rx) = mpsc::channel(16);
        self.oracle
            .trace(format!("net: connection {} open", conn.id));
        lock(&self.conns).push(conn.clone());
        let from_agent = ReceiverStream::new(outbound).map(Ok);
        tokio::spawn(
            self.clone()
                .link(conn.clone(), from_agent, up, Self::sent_by_agent),
        );
        tokio::spawn(self.clone().link(conn, control, down, Self::sent_by_hub));
        Ok(ReceiverStream::new(down_rx))
    }

    /// Notes what the hub sent.
    fn sent_by_hub(&self, conn: &Conn, message: &ControlMessage) {
        let (key, sent) = match &message.message {
            Some(control_message::Message::Upsert(u)) if u.chunk_index == 0 => {
                self.oracle.trace(format!(
                    "hub -> {}: upsert {} generation {} ({})",
                    conn.id, u.release, u.generation, u.content_hash
                ));
                (
                    (u.release.clone(), u.generation),
                    Sent::Upsert(u.content_hash.clone()),
                )
            }
            Some(control_message::Message::Remove(r)) => {
                self.oracle.trace(format!(
                    "hub -> {}: remove {} generation {}",
                    conn.id, r.release, r.generation
                ));
                ((r.release.clone(), r.generation), Sent::Remove)
            }
            Some(control_message::Message::SyncComplete(_)) => {
                self.oracle
                    .trace(format!("hub -> {}: sync complete", conn.id));
                return;
            }
            _ => return,
        };
        lock(&conn.sent).insert(key.clone(), sent.clone());
        lock(&self.sent).insert(key, sent);
    }

    /// Checks every ok ack the agent sends against the cluster (invariant 3).
    fn sent_by_agent(&self, conn: &Conn, message: &AgentMessage) {
        let Some(agent_message::Message::Ack(ack)) = &message.message else {
            return;
        };
        let key = (ack.release.clone(), ack.generation);
        let sent = lock(&conn.sent)
            .get(&key)
            .or(lock(&self.sent).get(&key))
            .cloned();
        self.oracle.trace(format!(
            "agent -> {}: ack {} generation {} ok={} of {sent:?} {}",
            conn.id, ack.release, ack.generation, ack.ok, ack.error
        ));
        if !ack.ok {
            return;
        }
        let hash = match &sent {
            Some(Sent::Upsert(hash)) => Some(hash.as_str()),
            Some(Sent::Remove) => None,
            None => {
                self.oracle.violation(format!(
                    "the agent acknowledged {} generation {}, which the control plane never sent",
                    ack.release, ack.generation
                ));
                return;
            }
        };
        if !self.cluster.explains_ack(&ack.release, hash) {
            self.oracle.violation(format!(
                "the agent acknowledged {} generation {} ({}) while the cluster holds {}",
                ack.release,
                ack.generation,
                hash.unwrap_or("removal"),
                self.cluster.describe(&ack.release)
            ));
        }
    }

    fn roll(&self, chance: f64) -> bool {
        self.faults_on.load(Ordering::SeqCst) && lock(&self.rng).random_bool(chance)
    }

    fn latency(&self) -> Duration {
        lock(&self.rng).random_range(Duration::ZERO..=self.faults.max_latency)
    }

    /// Carries one direction of `conn` from `src` to `dst`, noting each message with
    /// `observe`, until either end closes or the connection is cut.
    async fn link<M, S>(
        self: Arc<Self>,
        conn: Arc<Conn>,
        mut src: S,
        dst: mpsc::Sender<Result<M, Status>>,
        observe: fn(&Self, &Conn, &M),
    ) where
        S: Stream<Item = Result<M, Status>> + Unpin,
    {
        let mut queue: VecDeque<(Instant, Result<M, Status>)> = VecDeque::new();
        let mut cut = conn.cut.subscribe();
        let mut last = Instant::now();
        let mut closing = false;
        loop {
            let how = *cut.borrow_and_update();
            if let Some(how) = how {
                return self.after_cut(how, queue, src, dst).await;
            }
            if closing && queue.is_empty() {
                // The sender closed its half: the stream ends here.
                return;
            }
            let due = queue.front().map(|(at, _)| *at);
            tokio::select! {
                biased;
                _ = cut.changed() => {}
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let (_, message) = queue.pop_front().expect("a message is due");
                    if dst.send(message).await.is_err() {
                        // The receiver hung up: the sender finds the stream closed.
                        return;
                    }
                }
                message = src.next(), if !closing => match message {
                    Some(message) => {
                        if let Ok(m) = &message {
                            observe(&self, &conn, m);
                        }
                        last = last.max(Instant::now() + self.latency());
                        queue.push_back((last, message));
                        if self.roll(self.faults.cut_per_message) {
                            self.cut(&conn, self.random_cut());
                        }
                    }
                    None => closing = true,
                },
            }
        }
    }

    /// Ends a link that was cut: a suffix of what was in flight is lost, the rest arrives;
    /// then, on a reset, the stream fails once the receiver notices, while on a silent cut
    /// nothing more happens until both ends have given up.
    async fn after_cut<M, S>(
        &self,
        how: Cut,
        mut queue: VecDeque<(Instant, Result<M, Status>)>,
        mut src: S,
        dst: mpsc::Sender<Result<M, Status>>,
    ) where
        S: Stream<Item = Result<M, Status>> + Unpin,
    {
        let (kept, notice) = {
            let mut rng = lock(&self.rng);
            let kept = rng.random_range(0..=queue.len());
            let notice = rng.random_range(Duration::ZERO..=self.faults.max_notice);
            (kept, notice)
        };
        queue.truncate(kept);
        let notice = (how == Cut::Reset).then(|| Instant::now() + notice);
        let (mut src_done, mut dst_done) = (false, false);
        loop {
            let due = queue.front().map(|(at, _)| *at);
            tokio::select! {
                biased;
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    let (_, message) = queue.pop_front().expect("a message is due");
                    dst_done |= dst.send(message).await.is_err();
                }
                _ = sleep_until(notice.unwrap_or_else(Instant::now)), if notice.is_some() && due.is_none() => {
                    let _ = dst.try_send(Err(Status::unavailable("connection reset (simulated)")));
                    return;
                }
                _ = dst.closed(), if !dst_done => dst_done = true,
                message = src.next(), if !src_done => src_done = message.is_none(),
            }
            if src_done && dst_done {
                return;
            }
        }
    }
}

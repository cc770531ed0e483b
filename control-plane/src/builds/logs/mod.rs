//! Build logs: every attempt's lines, kept durably and bounded per run, dropped with the run.
//!
//! [`LogStore`] is what builds and the `Logs` RPC call; where the lines live is its
//! [`Backing`]'s: [`files`] for a server alone (a file per attempt in the data directory,
//! memory without one), [`etcd`] for servers sharing an etcd store, so that `troupe logs`
//! through any of them reads and follows every run's log, and a server's death loses none.
//!
//! Either way, lines are stored before the agent is told they are (the agent keeps a line
//! until then, so a crash on either side loses nothing acknowledged). Each sequence number is
//! stored once, in order: a batch is taken from the line after the last one stored, so lines
//! sent again after a reconnect are not stored twice, and a gap (a line that never arrived)
//! ends the batch there ([`Batch`]). A run's log is bounded by `max_bytes` over all its
//! attempts: past it, lines are counted (the agent is told they are stored, so it does not
//! hold them forever) but not kept, and one line says so.
//!
//! Followers learn of new lines through a per-run counter they wait on ([`LogStore::subscribe`]),
//! moved by this server's appends and, on etcd, by a watch on the run's log, whichever server
//! stored the lines; they then read on from their [`Cursor`].

#[cfg(feature = "etcd")]
mod etcd;
mod files;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use troupe_common::pb::v1alpha1 as pb;

use crate::shared_state::StateHome;

/// The directory of the logs in a server's data directory.
pub const DIR: &str = "build-logs";

/// How the line standing for what a run's bound dropped begins.
const MARKER: &str = "[troupe]";

/// The most bytes one read returns (whole lines; at least one line).
const READ_BYTES: u64 = 1024 * 1024;

/// Where the lines live. Calls block (disk, etcd): [`LogStore`] makes them off the runtime.
trait Backing: Send + Sync {
    /// Stores the lines of `attempt` that follow the last one stored; returns the last
    /// sequence number stored (or counted, past the bound) and whether it moved.
    fn append(
        &self,
        run: &str,
        attempt: u32,
        lines: Vec<pb::BuildLogLine>,
    ) -> std::io::Result<(u64, bool)>;

    /// The last sequence number stored for `attempt` (0 for none).
    fn stored(&self, run: &str, attempt: u32) -> std::io::Result<u64>;

    /// The lines of `attempt` from `cursor` on (about [`READ_BYTES`] at most).
    fn read(
        &self,
        run: &str,
        attempt: u32,
        cursor: Cursor,
    ) -> std::io::Result<(Vec<pb::LogLine>, Cursor)>;

    /// Drops every line of `run`.
    fn remove(&self, run: &str) -> std::io::Result<()>;

    /// Every run with stored lines.
    fn runs(&self) -> std::io::Result<Vec<String>>;

    /// The attempts of `run` with lines stored, in order (what `troupe migrate` copies).
    #[cfg(feature = "etcd")]
    fn attempts(&self, run: &str) -> std::io::Result<Vec<u32>>;

    /// Moves `changes` whenever another server stores lines of `run`, until nobody follows
    /// it any more; nothing where no other server can.
    fn watch(&self, _run: &str, _changes: Arc<Changes>) {}
}

/// A run's stored lines, and where to read on from.
pub struct LogStore {
    backing: Arc<dyn Backing>,
    changes: Mutex<HashMap<String, Arc<Changes>>>,
}

/// The counter followers of one run wait on.
struct Changes {
    counter: watch::Sender<u64>,
    /// Whether a watch moves the counter (etcd): started by the first follower, ended after
    /// the last.
    watched: Mutex<bool>,
}

impl Changes {
    fn bump(&self) {
        self.counter.send_modify(|n| *n += 1);
    }
}

/// Where a reader stands in one attempt's log: a byte offset in its file, or (etcd) the
/// last sequence number read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor(u64);

/// Copies the logs of every run kept in `data_dir` into `state` (`troupe migrate`), each run
/// bounded by `max_bytes` there too; returns how many runs.
#[cfg(feature = "etcd")]
pub fn copy_to_etcd(
    data_dir: &std::path::Path,
    state: &crate::shared_state::EtcdState,
    max_bytes: u64,
) -> std::io::Result<usize> {
    let from = files::Files::new(Some(data_dir.join(DIR)), max_bytes);
    let to = etcd::EtcdLogs::new(state.clone(), max_bytes);
    copy(&from, &to)
}

/// Copies the logs of every run kept in `state` into `data_dir` (`troupe migrate
/// --from-etcd`), each run bounded by `max_bytes` there too; returns how many runs.
#[cfg(feature = "etcd")]
pub fn copy_from_etcd(
    state: &crate::shared_state::EtcdState,
    data_dir: &std::path::Path,
    max_bytes: u64,
) -> std::io::Result<usize> {
    let from = etcd::EtcdLogs::new(state.clone(), max_bytes);
    let to = files::Files::new(Some(data_dir.join(DIR)), max_bytes);
    copy(&from, &to)
}

/// Copies every run's lines, attempt by attempt, from one backing to another.
#[cfg(feature = "etcd")]
fn copy(from: &dyn Backing, to: &dyn Backing) -> std::io::Result<usize> {
    let runs = from.runs()?;
    for run in &runs {
        for attempt in from.attempts(run)? {
            let mut cursor = Cursor::default();
            loop {
                let (lines, next) = from.read(run, attempt, cursor)?;
                if lines.is_empty() {
                    break;
                }
                let lines = lines
                    .into_iter()
                    .map(|l| pb::BuildLogLine {
                        seq: l.seq,
                        step: l.step,
                        stream: l.stream,
                        text: l.text,
                        time: l.time,
                    })
                    .collect();
                to.append(run, attempt, lines)?;
                cursor = next;
            }
        }
    }
    Ok(runs.len())
}

impl LogStore {
    /// Logs under `dir` (created when first written), or in memory without one; at most
    /// `max_bytes` kept per run.
    pub fn new(dir: Option<PathBuf>, max_bytes: u64) -> Self {
        Self::with(Arc::new(files::Files::new(dir, max_bytes)))
    }

    /// Logs where `home` keeps the server's state: in etcd for servers sharing an etcd
    /// store, else in [`DIR`] of the data directory (memory without one).
    pub fn open(home: &StateHome, max_bytes: u64) -> Self {
        #[cfg(feature = "etcd")]
        if let Some(state) = home.etcd() {
            return Self::with(Arc::new(etcd::EtcdLogs::new(state.clone(), max_bytes)));
        }
        Self::new(home.data_dir().map(|d| d.join(DIR)), max_bytes)
    }

    fn with(backing: Arc<dyn Backing>) -> Self {
        Self {
            backing,
            changes: Mutex::default(),
        }
    }

    fn changes(&self, run: &str) -> Arc<Changes> {
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        changes
            .entry(run.to_string())
            .or_insert_with(|| {
                Arc::new(Changes {
                    counter: watch::channel(0).0,
                    watched: Mutex::new(false),
                })
            })
            .clone()
    }

    /// Runs `call` on the backing off the runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Backing) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let backing = self.backing.clone();
        tokio::task::spawn_blocking(move || call(backing.as_ref()))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Stores the lines of `attempt` that follow the last one stored, and returns the last
    /// sequence number stored (or counted, past the bound).
    pub async fn append(
        &self,
        run: &str,
        attempt: u32,
        lines: Vec<pb::BuildLogLine>,
    ) -> std::io::Result<u64> {
        let id = run.to_string();
        let (last, grew) = self
            .blocking(move |b| b.append(&id, attempt, lines))
            .await?;
        if grew {
            self.changes(run).bump();
        }
        Ok(last)
    }

    /// The last sequence number stored for `attempt` (0 for none).
    pub async fn stored(&self, run: &str, attempt: u32) -> std::io::Result<u64> {
        let run = run.to_string();
        self.blocking(move |b| b.stored(&run, attempt)).await
    }

    /// The lines of `attempt` from `cursor` on (whole lines, about a megabyte at most), and
    /// where to go on from.
    pub async fn read(
        &self,
        run: &str,
        attempt: u32,
        cursor: Cursor,
    ) -> std::io::Result<(Vec<pb::LogLine>, Cursor)> {
        let run = run.to_string();
        self.blocking(move |b| b.read(&run, attempt, cursor)).await
    }

    /// A counter that moves whenever lines of `run` are stored (by any server sharing the
    /// logs). A reader that reads after each move misses no line.
    pub fn subscribe(&self, run: &str) -> watch::Receiver<u64> {
        let changes = self.changes(run);
        let mut watched = changes
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let receiver = changes.counter.subscribe();
        if !*watched {
            *watched = true;
            self.backing.watch(run, changes.clone());
        }
        receiver
    }

    /// Drops every line of `run`.
    pub async fn remove(&self, run: &str) -> std::io::Result<()> {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(run);
        let run = run.to_string();
        self.blocking(move |b| b.remove(&run)).await
    }

    /// Every run with stored lines, `NAMESPACE/NAME`, for sweeping the logs of runs deleted
    /// while no server saw it.
    pub async fn runs(&self) -> std::io::Result<Vec<String>> {
        self.blocking(|b| b.runs()).await
    }
}

/// Waits until nobody follows the run of `changes`; then the watch moving its counter ends
/// (a follower coming meanwhile keeps it).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
async fn unfollowed(changes: Arc<Changes>) {
    loop {
        changes.counter.closed().await;
        let mut watched = changes
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if changes.counter.receiver_count() == 0 {
            *watched = false;
            return;
        }
    }
}

/// Says so when a batch stored nothing because a line before it never arrived.
fn warn_gap(run: &str, attempt: u32, last: u64, first: Option<u64>) {
    let expected = last + 1;
    if let Some(first) = first.filter(|f| *f > expected) {
        tracing::warn!(%run, attempt, expected, got = first, "a gap in a build log; waiting for the missing lines");
    }
}

/// What one append stores: the encoded lines that follow the last one stored, and where the
/// run's log stands after them.
struct Batch {
    /// Each line kept: its sequence number and its encoding.
    lines: Vec<(u64, Vec<u8>)>,
    last: u64,
    kept: u64,
    truncated: bool,
}

impl Batch {
    /// Takes the lines after `last` in order, up to a gap; past `max` bytes kept for the run,
    /// one marker line, then lines are only counted.
    fn take(
        lines: Vec<pb::BuildLogLine>,
        mut last: u64,
        mut kept: u64,
        mut truncated: bool,
        max: u64,
    ) -> std::io::Result<Self> {
        let mut taken = Vec::new();
        for line in lines {
            if line.seq <= last {
                continue;
            }
            if truncated {
                // Nothing more is kept: every later line only counts (after a restart the
                // lines counted before it are unknown, so there is no gap to wait for).
                last = line.seq;
                continue;
            }
            if line.seq != last + 1 {
                break;
            }
            last = line.seq;
            let stored = pb::LogLine {
                seq: line.seq,
                step: line.step,
                stream: line.stream,
                text: line.text,
                time: line.time,
            };
            let mut encoded = encode(&stored)?;
            if kept + encoded.len() as u64 > max {
                truncated = true;
                // The marker takes the number of the first line it stands for.
                encoded = encode(&pb::LogLine {
                    seq: line.seq,
                    step: stored.step,
                    stream: "stderr".into(),
                    text: format!(
                        "{MARKER} the log of this run is over {max} bytes; later lines are not kept"
                    ),
                    time: stored.time,
                })?;
            }
            kept += encoded.len() as u64;
            taken.push((line.seq, encoded));
        }
        Ok(Self {
            lines: taken,
            last,
            kept,
            truncated,
        })
    }

    /// The lines kept, one after the other.
    fn text(&self) -> Vec<u8> {
        self.lines
            .iter()
            .flat_map(|(_, l)| l.iter().copied())
            .collect()
    }
}

/// One line of a log: the JSON of `line` and a newline.
fn encode(line: &pb::LogLine) -> std::io::Result<Vec<u8>> {
    let mut encoded = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    encoded.push(b'\n');
    Ok(encoded)
}

/// The whole lines at the start of `bytes`, and how many bytes they take.
fn parse_lines(bytes: &[u8]) -> (Vec<pb::LogLine>, u64) {
    let mut lines = Vec::new();
    let mut used = 0usize;
    for chunk in bytes.split_inclusive(|b| *b == b'\n') {
        if chunk.last() != Some(&b'\n') {
            break;
        }
        used += chunk.len();
        if let Ok(line) = serde_json::from_slice::<pb::LogLine>(chunk) {
            lines.push(line);
        }
    }
    (lines, used as u64)
}

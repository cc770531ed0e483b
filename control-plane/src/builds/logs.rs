//! Build logs: every attempt's lines, kept durably and bounded per run, dropped with the run.
//!
//! One file per attempt, `DIR/NAMESPACE/RUN/ATTEMPT.jsonl`, one JSON [`pb::LogLine`] per line,
//! appended and fsynced before the agent is told the lines are stored (the agent keeps a line
//! until then, so a crash on either side loses nothing acknowledged). Each sequence number is
//! stored once, in order: a batch is taken from the line after the last one stored, so lines
//! sent again after a reconnect are not stored twice, and a gap (a line that never arrived)
//! ends the batch there. A server without a data directory keeps the lines in memory.
//!
//! A run's log is bounded by `max_bytes` over all its attempts: past it, lines are counted
//! (the agent is told they are stored, so it does not hold them forever) but not kept, and one
//! line says so. Followers learn of new lines through a per-run counter they can wait on.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use troupe_common::pb::v1alpha1 as pb;

/// How the line standing for what a run's bound dropped begins.
const MARKER: &str = "[troupe]";

/// The most bytes one read returns (whole lines; at least one line).
const READ_BYTES: u64 = 1024 * 1024;

/// A run's stored lines, and where to read on from.
pub struct LogStore {
    dir: Option<PathBuf>,
    max_bytes: u64,
    runs: Mutex<HashMap<String, Arc<RunLog>>>,
}

/// One run's log.
struct RunLog {
    state: Mutex<Option<RunState>>,
    changed: watch::Sender<u64>,
}

/// Loaded on first use.
#[derive(Default)]
struct RunState {
    bytes: u64,
    truncated: bool,
    /// Set when the run's logs were removed: a late append stores nothing.
    removed: bool,
    attempts: BTreeMap<u32, Segment>,
}

#[derive(Default)]
struct Segment {
    last_seq: u64,
    len: u64,
    /// The lines, when the store has no directory.
    memory: Vec<u8>,
}

/// Where a reader stands in one attempt's log: a byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor(u64);

impl LogStore {
    /// Logs under `dir` (created when first written), or in memory without one; at most
    /// `max_bytes` kept per run.
    pub fn new(dir: Option<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes,
            runs: Mutex::default(),
        }
    }

    fn run(&self, run: &str) -> Arc<RunLog> {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.entry(run.to_string())
            .or_insert_with(|| {
                Arc::new(RunLog {
                    state: Mutex::new(None),
                    changed: watch::channel(0).0,
                })
            })
            .clone()
    }

    fn run_dir(&self, run: &str) -> Option<PathBuf> {
        let (namespace, name) = run.split_once('/')?;
        Some(self.dir.as_ref()?.join(namespace).join(name))
    }

    /// Stores the lines of `attempt` that follow the last one stored, and returns the last
    /// sequence number stored (or counted, past the bound).
    pub async fn append(
        self: &Arc<Self>,
        run: &str,
        attempt: u32,
        lines: Vec<pb::BuildLogLine>,
    ) -> std::io::Result<u64> {
        let this = self.clone();
        let log = self.run(run);
        let run = run.to_string();
        let changed = log.changed.clone();
        let first_seq = lines.first().map(|l| l.seq);
        let (last, grew) = tokio::task::spawn_blocking(move || {
            let mut guard = log.state.lock().unwrap_or_else(PoisonError::into_inner);
            let state = this.load(&run, &mut guard)?;
            if state.removed {
                return Ok((0, false));
            }
            let dir = this.run_dir(&run);
            let max = this.max_bytes;
            let segment = state.attempts.entry(attempt).or_default();
            let expected = segment.last_seq + 1;
            let batch = Batch::take(lines, segment.last_seq, state.bytes, state.truncated, max)?;
            let Batch {
                text,
                last,
                kept,
                truncated,
            } = batch;
            if last == segment.last_seq {
                if let Some(first) = first_seq.filter(|f| *f > expected) {
                    tracing::warn!(%run, attempt, expected, got = first, "a gap in a build log; waiting for the missing lines");
                }
                return Ok((last, false));
            }
            if !text.is_empty() {
                match &dir {
                    Some(dir) => {
                        let path = dir.join(format!("{attempt}.jsonl"));
                        let new = !path.exists();
                        create_dirs_durably(dir)?;
                        let mut file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)?;
                        file.write_all(&text)?;
                        file.sync_data()?;
                        if new {
                            // The file's name must be on disk too.
                            std::fs::File::open(dir)?.sync_all()?;
                        }
                    }
                    None => segment.memory.extend_from_slice(&text),
                }
            }
            segment.len += text.len() as u64;
            segment.last_seq = last;
            state.bytes = kept;
            state.truncated = truncated;
            Ok::<_, std::io::Error>((last, true))
        })
        .await
        .map_err(std::io::Error::other)??;
        if grew {
            changed.send_modify(|n| *n += 1);
        }
        Ok(last)
    }

    /// The last sequence number stored for `attempt` (0 for none).
    pub async fn stored(self: &Arc<Self>, run: &str, attempt: u32) -> std::io::Result<u64> {
        let this = self.clone();
        let log = self.run(run);
        let run = run.to_string();
        tokio::task::spawn_blocking(move || {
            let mut guard = log.state.lock().unwrap_or_else(PoisonError::into_inner);
            let state = this.load(&run, &mut guard)?;
            Ok(state.attempts.get(&attempt).map_or(0, |s| s.last_seq))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The lines of `attempt` from `cursor` on (whole lines, about a megabyte at most), and
    /// where to go on from.
    pub async fn read(
        self: &Arc<Self>,
        run: &str,
        attempt: u32,
        cursor: Cursor,
    ) -> std::io::Result<(Vec<pb::LogLine>, Cursor)> {
        let this = self.clone();
        let log = self.run(run);
        let run = run.to_string();
        tokio::task::spawn_blocking(move || {
            let (len, memory) = {
                let mut guard = log.state.lock().unwrap_or_else(PoisonError::into_inner);
                let state = this.load(&run, &mut guard)?;
                let Some(segment) = state.attempts.get(&attempt) else {
                    return Ok((Vec::new(), cursor));
                };
                let memory = this.dir.is_none().then(|| {
                    let end = segment.len.min(cursor.0 + READ_BYTES) as usize;
                    segment.memory[(cursor.0 as usize).min(end)..end].to_vec()
                });
                (segment.len, memory)
            };
            if len <= cursor.0 {
                return Ok((Vec::new(), cursor));
            }
            if let Some(bytes) = memory {
                return Ok(parse_lines(&bytes, cursor));
            }
            // Appends only ever add after `len`: reading up to it needs no lock.
            let path = this
                .run_dir(&run)
                .expect("a store with a directory")
                .join(format!("{attempt}.jsonl"));
            let mut file = std::fs::File::open(path)?;
            file.seek(SeekFrom::Start(cursor.0))?;
            let mut bytes = Vec::new();
            (&mut file)
                .take(READ_BYTES.min(len - cursor.0))
                .read_to_end(&mut bytes)?;
            if !bytes.contains(&b'\n') {
                // One line longer than a read: take it whole.
                (&mut file)
                    .take(len - cursor.0 - bytes.len() as u64)
                    .read_to_end(&mut bytes)?;
            }
            Ok(parse_lines(&bytes, cursor))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// A counter that moves whenever lines of `run` are stored.
    pub fn subscribe(&self, run: &str) -> watch::Receiver<u64> {
        self.run(run).changed.subscribe()
    }

    /// Drops every line of `run`.
    pub async fn remove(self: &Arc<Self>, run: &str) -> std::io::Result<()> {
        let dir = self.run_dir(run);
        let log = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(run);
        if let Some(log) = log {
            // An append already holding this log must not write the files back.
            let mut state = log.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.get_or_insert_with(RunState::default).removed = true;
        }
        if let Some(dir) = dir {
            tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .await
            .map_err(std::io::Error::other)??;
        }
        Ok(())
    }

    /// Every run with lines on disk, `NAMESPACE/NAME`, for sweeping the logs of runs deleted
    /// while the server was down.
    pub fn runs_on_disk(&self) -> Vec<String> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut runs = Vec::new();
        for namespace in read_dir_names(dir) {
            for name in read_dir_names(&dir.join(&namespace)) {
                runs.push(format!("{namespace}/{name}"));
            }
        }
        runs
    }

    /// Loads what the files of `run` hold, the first time it is used.
    fn load<'a>(
        &self,
        run: &str,
        state: &'a mut Option<RunState>,
    ) -> std::io::Result<&'a mut RunState> {
        if state.is_none() {
            let mut loaded = RunState::default();
            if let Some(dir) = self.run_dir(run) {
                for file in read_dir_names(&dir) {
                    let Some(attempt) = file
                        .strip_suffix(".jsonl")
                        .and_then(|a| a.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    let (segment, marked) = load_segment(&dir.join(&file))?;
                    loaded.truncated |= marked;
                    loaded.bytes += segment.len;
                    loaded.attempts.insert(attempt, segment);
                }
                loaded.truncated |= loaded.bytes >= self.max_bytes;
            }
            *state = Some(loaded);
        }
        Ok(state.as_mut().expect("just loaded"))
    }
}

/// Reads a segment's last sequence number and length, cutting a line a crash left half
/// written; says whether it holds the marker of a run over its bound.
fn load_segment(path: &Path) -> std::io::Result<(Segment, bool)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut reader = std::io::BufReader::new(&file);
    let (mut len, mut last_seq, mut marked) = (0u64, 0u64, false);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break;
        }
        if let Ok(parsed) = serde_json::from_slice::<pb::LogLine>(&line) {
            last_seq = last_seq.max(parsed.seq);
            marked |= parsed.text.starts_with(MARKER);
        }
        len += read as u64;
    }
    if file.metadata()?.len() != len {
        file.set_len(len)?;
        file.sync_data()?;
    }
    Ok((
        Segment {
            last_seq,
            len,
            memory: Vec::new(),
        },
        marked,
    ))
}

/// What one append stores: the encoded lines that follow the last one stored, and where the
/// run's log stands after them.
struct Batch {
    text: Vec<u8>,
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
        let mut text = Vec::new();
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
            text.extend_from_slice(&encoded);
        }
        Ok(Self {
            text,
            last,
            kept,
            truncated,
        })
    }
}

/// One line of a segment: the JSON of `line` and a newline.
fn encode(line: &pb::LogLine) -> std::io::Result<Vec<u8>> {
    let mut encoded = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    encoded.push(b'\n');
    Ok(encoded)
}

/// Creates `dir` and its missing parents, each new entry on disk before this returns.
fn create_dirs_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn parse_lines(bytes: &[u8], cursor: Cursor) -> (Vec<pb::LogLine>, Cursor) {
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
    (lines, Cursor(cursor.0 + used as u64))
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

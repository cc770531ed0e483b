//! Build logs of a server alone: one file per attempt, `DIR/NAMESPACE/RUN/ATTEMPT.jsonl`, one
//! JSON [`pb::LogLine`] per line, appended and fsynced before [`Backing::append`] returns; in
//! memory when the server has no data directory. A run's totals are read from its files the
//! first time it is used, a line a crash left half written cut off.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use troupe_common::pb::v1alpha1 as pb;

use super::{Backing, Batch, Cursor, MARKER, READ_BYTES, parse_lines};

/// Logs in files under a directory, or in memory.
pub(super) struct Files {
    dir: Option<PathBuf>,
    max_bytes: u64,
    runs: Mutex<HashMap<String, Arc<Mutex<Option<RunState>>>>>,
}

/// One run's totals, loaded on first use.
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

impl Files {
    /// Logs under `dir` (created when first written), or in memory without one.
    pub(super) fn new(dir: Option<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes,
            runs: Mutex::default(),
        }
    }

    fn run(&self, run: &str) -> Arc<Mutex<Option<RunState>>> {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.entry(run.to_string()).or_default().clone()
    }

    fn run_dir(&self, run: &str) -> Option<PathBuf> {
        let (namespace, name) = run.split_once('/')?;
        Some(self.dir.as_ref()?.join(namespace).join(name))
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

    /// Appends `text` to the file of `attempt`, on disk when this returns.
    fn write(dir: &Path, attempt: u32, text: &[u8]) -> std::io::Result<()> {
        let path = dir.join(format!("{attempt}.jsonl"));
        let new = !path.exists();
        create_dirs_durably(dir)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(text)?;
        file.sync_data()?;
        if new {
            // The file's name must be on disk too.
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Backing for Files {
    fn append(
        &self,
        run: &str,
        attempt: u32,
        lines: Vec<pb::BuildLogLine>,
    ) -> std::io::Result<(u64, bool)> {
        let log = self.run(run);
        let mut guard = log.lock().unwrap_or_else(PoisonError::into_inner);
        let state = self.load(run, &mut guard)?;
        if state.removed {
            return Ok((0, false));
        }
        let segment = state.attempts.entry(attempt).or_default();
        let first_seq = lines.first().map(|l| l.seq);
        let batch = Batch::take(
            lines,
            segment.last_seq,
            state.bytes,
            state.truncated,
            self.max_bytes,
        )?;
        if batch.last == segment.last_seq {
            super::warn_gap(run, attempt, segment.last_seq, first_seq);
            return Ok((batch.last, false));
        }
        let text = batch.text();
        if !text.is_empty() {
            match self.run_dir(run) {
                Some(dir) => Self::write(&dir, attempt, &text)?,
                None => segment.memory.extend_from_slice(&text),
            }
        }
        segment.len += text.len() as u64;
        segment.last_seq = batch.last;
        state.bytes = batch.kept;
        state.truncated = batch.truncated;
        Ok((batch.last, true))
    }

    fn stored(&self, run: &str, attempt: u32) -> std::io::Result<u64> {
        let log = self.run(run);
        let mut guard = log.lock().unwrap_or_else(PoisonError::into_inner);
        let state = self.load(run, &mut guard)?;
        Ok(state.attempts.get(&attempt).map_or(0, |s| s.last_seq))
    }

    fn read(
        &self,
        run: &str,
        attempt: u32,
        cursor: Cursor,
    ) -> std::io::Result<(Vec<pb::LogLine>, Cursor)> {
        let log = self.run(run);
        let (len, memory) = {
            let mut guard = log.lock().unwrap_or_else(PoisonError::into_inner);
            let state = self.load(run, &mut guard)?;
            let Some(segment) = state.attempts.get(&attempt) else {
                return Ok((Vec::new(), cursor));
            };
            let memory = self.dir.is_none().then(|| {
                let end = segment.len.min(cursor.0 + READ_BYTES) as usize;
                segment.memory[(cursor.0 as usize).min(end)..end].to_vec()
            });
            (segment.len, memory)
        };
        if len <= cursor.0 {
            return Ok((Vec::new(), cursor));
        }
        if let Some(bytes) = memory {
            let (lines, used) = parse_lines(&bytes);
            return Ok((lines, Cursor(cursor.0 + used)));
        }
        // Appends only ever add after `len`: reading up to it needs no lock.
        let path = self
            .run_dir(run)
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
        let (lines, used) = parse_lines(&bytes);
        Ok((lines, Cursor(cursor.0 + used)))
    }

    fn remove(&self, run: &str) -> std::io::Result<()> {
        let log = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(run);
        if let Some(log) = log {
            // An append already holding this log must not write the files back.
            let mut state = log.lock().unwrap_or_else(PoisonError::into_inner);
            state.get_or_insert_with(RunState::default).removed = true;
        }
        if let Some(dir) = self.run_dir(run) {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn runs(&self) -> std::io::Result<Vec<String>> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let mut runs = Vec::new();
        for namespace in read_dir_names(dir) {
            for name in read_dir_names(&dir.join(&namespace)) {
                runs.push(format!("{namespace}/{name}"));
            }
        }
        Ok(runs)
    }

    #[cfg(feature = "etcd")]
    fn attempts(&self, run: &str) -> std::io::Result<Vec<u32>> {
        let state = self.run(run);
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(self
            .load(run, &mut state)?
            .attempts
            .keys()
            .copied()
            .collect())
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

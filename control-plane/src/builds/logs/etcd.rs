//! Build logs in etcd, shared by every server on the store (keys relative to `PREFIX/s/`):
//!
//! - `build-logs/NS/RUN/ATTEMPT/SEQ`: the lines of one batch an agent sent, from sequence
//!   number `SEQ` (zero-padded, so keys sort as numbers) on, as JSON lines like a file's. A
//!   batch is one transaction; one larger than a transaction may be (`--max-request-bytes`)
//!   is split over several, each whole lines, each stored before the next.
//! - `build-log-runs/NS/RUN`: the run's [`Tally`]: bytes kept over all attempts, whether the
//!   bound was reached, the last sequence number stored per attempt.
//!
//! Every append compares the tally's revision with the one it was computed from and writes
//! the lines and the new tally together, so two servers storing lines of one run (an agent
//! that moved) neither store a line twice nor go past the bound between them: the loser
//! reads the tally again and stores only what is still missing. Readers page through an
//! attempt's keys from the one after the last line read; followers are woken by a watch on
//! the run's `build-logs/NS/RUN/` (see [`EtcdState::on_change`]). Deleting a run deletes that
//! prefix and its tally in one transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use troupe_common::pb::v1alpha1 as pb;

use super::{Backing, Batch, Changes, Cursor, READ_BYTES, parse_lines, unfollowed};
use crate::shared_state::{EtcdState, Write};

/// Lines per key at most (bytes; a longer line is a key of its own): a read returns whole
/// keys, about [`READ_BYTES`] of them, so keys are smaller than that.
const KEY_BYTES: usize = 256 * 1024;

/// Keys one read fetches at most.
const PAGE_KEYS: i64 = 16;

/// Room a transaction needs beyond its values: keys, framing, the compare.
const TXN_SLACK: usize = 16 * 1024;

/// Times an append reads the tally again after another server wrote it first.
const TRIES: usize = 8;

/// Logs in etcd.
pub(super) struct EtcdLogs {
    state: EtcdState,
    max_bytes: u64,
    runs: Mutex<HashMap<String, Arc<Mutex<Head>>>>,
}

/// What this server last knew of a run's tally.
#[derive(Default)]
struct Head {
    /// The tally and the revision it was read or written at.
    tally: Option<(Tally, i64)>,
    /// The run's logs were removed: a late append stores nothing.
    removed: bool,
}

/// A run's totals, kept beside its lines.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tally {
    bytes: u64,
    truncated: bool,
    /// The last sequence number stored (or counted past the bound), by attempt.
    attempts: BTreeMap<u32, u64>,
}

fn lines_dir(run: &str) -> String {
    format!("build-logs/{run}/")
}

fn attempt_dir(run: &str, attempt: u32) -> String {
    format!("build-logs/{run}/{attempt}/")
}

fn line_key(run: &str, attempt: u32, seq: u64) -> String {
    format!("build-logs/{run}/{attempt}/{seq:020}")
}

const TALLIES: &str = "build-log-runs/";

/// Reads of a run's totals a deletion makes at most while other servers' appends change them.
const ATTEMPTS: usize = 5;

fn tally_key(run: &str) -> String {
    format!("{TALLIES}{run}")
}

/// Keeps a store failure whole inside the I/O error, so that the API can tell its code.
fn etcd_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> std::io::Error {
    std::io::Error::other(e)
}

impl EtcdLogs {
    /// Logs in `state`'s etcd; at most `max_bytes` kept per run.
    pub(super) fn new(state: EtcdState, max_bytes: u64) -> Self {
        Self {
            state,
            max_bytes,
            runs: Mutex::default(),
        }
    }

    fn head(&self, run: &str) -> Arc<Mutex<Head>> {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.entry(run.to_string()).or_default().clone()
    }

    /// The run's tally as etcd has it now, and its revision (0: none yet).
    fn load(&self, run: &str) -> std::io::Result<(Tally, i64)> {
        match self.state.get(&tally_key(run)).map_err(etcd_error)? {
            Some(item) => {
                let tally = serde_json::from_slice(&item.value).map_err(etcd_error)?;
                Ok((tally, item.mod_revision))
            }
            None => Ok((Tally::default(), 0)),
        }
    }

    /// The longest text a line may have: escaped (up to six bytes a byte) it must still fit
    /// in a transaction.
    fn max_line_text(&self) -> usize {
        (self
            .state
            .limits()
            .max_request_bytes
            .saturating_sub(TXN_SLACK)
            / 8)
        .max(1024)
    }

    /// Writes `batch` of `attempt` over `tally` (read at `revision`), in as many
    /// transactions as it needs. Returns the tally written and its revision, or `None` when
    /// another server changed the tally first (then what was written before stays written).
    fn write(
        &self,
        run: &str,
        attempt: u32,
        batch: &Batch,
        mut tally: Tally,
        mut revision: i64,
    ) -> std::io::Result<Option<(Tally, i64)>> {
        let limits = self.state.limits();
        let steps = steps(&batch.lines, limits.max_request_bytes, limits.max_ops);
        let count = steps.len();
        for (i, step) in steps.into_iter().enumerate() {
            let last_step = i + 1 == count;
            let mut writes = Vec::with_capacity(step.len() + 1);
            for key in step {
                let bytes: Vec<u8> = key.iter().flat_map(|(_, l)| l.iter().copied()).collect();
                tally.bytes += bytes.len() as u64;
                let first = key.first().expect("a key holds a line").0;
                let last = key.last().expect("a key holds a line").0;
                tally.attempts.insert(attempt, last);
                writes.push(Write::Put(line_key(run, attempt, first), bytes));
            }
            if last_step {
                // Lines counted past the bound move the last sequence number further.
                tally.attempts.insert(attempt, batch.last);
                tally.truncated = batch.truncated;
                tally.bytes = batch.kept;
            }
            let value = serde_json::to_vec(&tally).map_err(etcd_error)?;
            writes.push(Write::Put(tally_key(run), value));
            let key = tally_key(run);
            match self
                .state
                .commit_at(&[(key.as_str(), revision)], writes)
                .map_err(etcd_error)?
            {
                Some(written) => revision = written,
                None => return Ok(None),
            }
        }
        Ok(Some((tally, revision)))
    }
}

/// The lines one key holds: each line's sequence number and encoding.
type KeyLines = Vec<(u64, Vec<u8>)>;

/// Splits lines into keys of about [`KEY_BYTES`], and the keys into transactions within
/// `max_request_bytes` and `max_ops` writes (one of them the tally). No lines: one step that
/// writes the tally alone.
fn steps(lines: &[(u64, Vec<u8>)], max_request_bytes: usize, max_ops: usize) -> Vec<Vec<KeyLines>> {
    let mut keys: Vec<KeyLines> = Vec::new();
    let mut size = 0;
    for line in lines {
        if keys.is_empty() || size + line.1.len() > KEY_BYTES {
            keys.push(Vec::new());
            size = 0;
        }
        size += line.1.len();
        keys.last_mut().expect("just pushed").push(line.clone());
    }
    let budget = max_request_bytes.saturating_sub(TXN_SLACK);
    let mut steps: Vec<Vec<KeyLines>> = vec![Vec::new()];
    let mut size = 0;
    for key in keys {
        let bytes: usize = key.iter().map(|(_, l)| l.len()).sum();
        let step = steps.last().expect("one step at least");
        if !step.is_empty() && (size + bytes > budget || step.len() + 1 >= max_ops.max(2)) {
            steps.push(Vec::new());
            size = 0;
        }
        size += bytes;
        steps.last_mut().expect("one step at least").push(key);
    }
    steps
}

impl Backing for EtcdLogs {
    fn append(
        &self,
        run: &str,
        attempt: u32,
        mut lines: Vec<pb::BuildLogLine>,
    ) -> std::io::Result<(u64, bool)> {
        let max_text = self.max_line_text();
        for line in &mut lines {
            cut(&mut line.text, max_text);
        }
        let head = self.head(run);
        let mut head = head.lock().unwrap_or_else(PoisonError::into_inner);
        if head.removed {
            return Ok((0, false));
        }
        let first_seq = lines.first().map(|l| l.seq);
        for _ in 0..TRIES {
            let (tally, revision) = match head.tally.take() {
                Some(known) => known,
                None => self.load(run)?,
            };
            let last = tally.attempts.get(&attempt).copied().unwrap_or(0);
            let batch = Batch::take(
                lines.clone(),
                last,
                tally.bytes,
                tally.truncated,
                self.max_bytes,
            )?;
            if batch.last == last {
                super::warn_gap(run, attempt, last, first_seq);
                head.tally = Some((tally, revision));
                return Ok((last, false));
            }
            if let Some(written) = self.write(run, attempt, &batch, tally, revision)? {
                head.tally = Some(written);
                return Ok((batch.last, true));
            }
            // Another server wrote the tally since: read it again.
        }
        Err(std::io::Error::other(format!(
            "the build log of {run} kept changing while storing lines; try again"
        )))
    }

    fn stored(&self, run: &str, attempt: u32) -> std::io::Result<u64> {
        // Read afresh: another server may have stored lines since.
        let (tally, revision) = self.load(run)?;
        let head = self.head(run);
        let mut head = head.lock().unwrap_or_else(PoisonError::into_inner);
        if head.removed {
            return Ok(0);
        }
        let last = tally.attempts.get(&attempt).copied().unwrap_or(0);
        head.tally = Some((tally, revision));
        Ok(last)
    }

    fn read(
        &self,
        run: &str,
        attempt: u32,
        cursor: Cursor,
    ) -> std::io::Result<(Vec<pb::LogLine>, Cursor)> {
        let from = line_key(run, attempt, cursor.0 + 1);
        let items = self
            .state
            .page(&attempt_dir(run, attempt), &from, PAGE_KEYS)
            .map_err(etcd_error)?;
        let (mut lines, mut next, mut bytes) = (Vec::new(), cursor, 0u64);
        for item in items {
            if bytes >= READ_BYTES {
                break;
            }
            bytes += item.value.len() as u64;
            let first = item
                .key
                .rsplit('/')
                .next()
                .and_then(|seq| seq.parse::<u64>().ok())
                .unwrap_or(next.0 + 1);
            let (parsed, _) = parse_lines(&item.value);
            next = Cursor(
                parsed
                    .iter()
                    .map(|l| l.seq)
                    .max()
                    .unwrap_or(first)
                    .max(next.0),
            );
            lines.extend(parsed);
        }
        Ok((lines, next))
    }

    fn remove(&self, run: &str) -> std::io::Result<()> {
        let head = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(run);
        let head = head.unwrap_or_default();
        let mut removed = head.lock().unwrap_or_else(PoisonError::into_inner);
        // An append already holding this run must not write its lines back.
        removed.removed = true;
        removed.tally = None;
        // Checking the totals it deletes as read, so the delete lands once however often it
        // is sent (again when its etcd member stalls); read again if another server's append
        // changed them in between.
        let key = tally_key(run);
        for _ in 0..ATTEMPTS {
            let Some(tally) = self.state.get(&key).map_err(etcd_error)? else {
                // No totals: nothing was stored, or another server deleted the run.
                let writes = vec![Write::DeleteDir(lines_dir(run))];
                self.state.commit(&[], writes).map_err(etcd_error)?;
                return Ok(());
            };
            let writes = vec![Write::DeleteDir(lines_dir(run)), Write::Delete(key.clone())];
            let expect = [(key.as_str(), tally.mod_revision)];
            if self.state.commit(&expect, writes).map_err(etcd_error)? {
                return Ok(());
            }
        }
        Err(etcd_error(format!(
            "the logs of run {run} kept changing while they were deleted; delete the run again"
        )))
    }

    fn runs(&self) -> std::io::Result<Vec<String>> {
        let (items, _) = self.state.list(TALLIES).map_err(etcd_error)?;
        Ok(items
            .into_iter()
            .filter_map(|item| item.key.strip_prefix(TALLIES).map(str::to_string))
            .collect())
    }

    fn attempts(&self, run: &str) -> std::io::Result<Vec<u32>> {
        Ok(self.load(run)?.0.attempts.into_keys().collect())
    }

    fn watch(&self, run: &str, changes: Arc<Changes>) {
        let waker = changes.clone();
        self.state
            .on_change(&lines_dir(run), move || waker.bump(), unfollowed(changes));
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests;

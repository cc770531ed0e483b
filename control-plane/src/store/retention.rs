//! How much of the event log a store keeps: the last so many revisions, and no more than so
//! many bytes. Counting revisions alone let a log of large objects (Releases of a megabyte,
//! rewritten on every status change) grow to a hundred thousand full copies; the byte budget
//! bounds it whatever the objects weigh.

use std::collections::VecDeque;

use troupe_common::ObjectKey;

use super::{Event, Revision};

/// Number of revisions the event log keeps by default.
pub const DEFAULT_EVENT_RETENTION: u64 = 100_000;

/// Bytes of events the log keeps by default.
pub const DEFAULT_EVENT_LOG_BYTES: u64 = 256 * 1024 * 1024;

/// What the event log keeps: the last `revisions` revisions, within `bytes`. The newest
/// commit always stays, however large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Revisions kept at most.
    pub revisions: u64,
    /// Bytes of events kept at most (keys and values).
    pub bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            revisions: DEFAULT_EVENT_RETENTION,
            bytes: DEFAULT_EVENT_LOG_BYTES,
        }
    }
}

impl Retention {
    /// Keeps the last `revisions` revisions, within the default byte budget.
    pub fn revisions(revisions: u64) -> Self {
        Self {
            revisions,
            ..Self::default()
        }
    }
}

/// The bytes an event takes in the log, as the byte budget counts them.
pub(super) fn event_bytes(event: &Event) -> u64 {
    stored_bytes(&event.key, event.value.len())
}

/// The bytes an event of `key` whose value takes `value_bytes` weighs in the log.
pub(super) fn stored_bytes(key: &ObjectKey, value_bytes: usize) -> u64 {
    // The key's parts, the value, and the revisions and type around them.
    (key.namespace.len() + key.name.len() + value_bytes + 24) as u64
}

/// The size of each commit the log holds, oldest first: where the floor must go follows from
/// it without reading the log.
#[derive(Debug, Default)]
pub(super) struct LogSize {
    commits: VecDeque<(Revision, u64)>,
    total: u64,
}

impl LogSize {
    /// Counts `bytes` more for commit `revision`, the newest (or, while rebuilding, the same
    /// one again).
    pub(super) fn add(&mut self, revision: Revision, bytes: u64) {
        match self.commits.back_mut() {
            Some((last, size)) if *last == revision => *size += bytes,
            _ => self.commits.push_back((revision, bytes)),
        }
        self.total += bytes;
    }

    /// Bytes of the log.
    #[cfg(test)]
    pub(super) fn total(&self) -> u64 {
        self.total
    }

    /// Whether the log has outgrown its byte budget.
    pub(super) fn over(&self, retention: &Retention) -> bool {
        self.total > retention.bytes
    }

    /// Drops the oldest commits until the log keeps within `retention` (down to nine tenths
    /// of the byte budget once over it, so a full log is not compacted on every commit), and
    /// returns the new floor: every event at or below it may go. Never drops the newest
    /// commit, so the floor stays below `head`.
    pub(super) fn compact(&mut self, retention: &Retention, head: Revision) -> Revision {
        let mut floor = head.saturating_sub(retention.revisions.max(1));
        let target = if self.over(retention) {
            retention.bytes / 10 * 9
        } else {
            u64::MAX
        };
        while let Some(&(revision, bytes)) = self.commits.front() {
            let too_old = revision <= floor;
            let too_big = self.total > target && self.commits.len() > 1;
            if !too_old && !too_big {
                break;
            }
            self.commits.pop_front();
            self.total -= bytes;
            floor = floor.max(revision);
        }
        floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_within_both_budgets_and_always_the_newest_commit() {
        let retention = Retention {
            revisions: 100,
            bytes: 1_000,
        };
        let mut log = LogSize::default();
        for revision in 1..=50 {
            log.add(revision, 10);
        }
        assert_eq!(log.compact(&retention, 50), 0, "within both budgets");
        for revision in 51..=60 {
            log.add(revision, 100);
        }
        let floor = log.compact(&retention, 60);
        assert!(log.total() <= 900, "{} bytes kept", log.total());
        assert!(floor >= 51, "the small old commits went first: {floor}");
        assert!(floor < 60);

        log.add(61, 5_000);
        assert_eq!(
            log.compact(&retention, 61),
            60,
            "only the newest, too large, stays"
        );
        assert_eq!(log.total(), 5_000);

        let mut log = LogSize::default();
        for revision in 1..=300 {
            log.add(revision, 1);
        }
        assert_eq!(log.compact(&retention, 300), 200, "the last 100 revisions");
    }
}

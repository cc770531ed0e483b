//! Sending again what the agent failed to apply. An apply can fail for a passing reason (the
//! API server unreachable, a full disk), and the agent does not try a failed upsert again by
//! itself: without a retry, the release would stay as it was until it changed or the agent
//! reconnected. So a session sends a failed generation again after a delay that doubles with
//! each failure of the same generation, up to a cap; its failure shows on the Release's
//! status meanwhile. Removals are not retried here: the agent retries a failed prune itself.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use troupe_common::backoff::doubling;

/// When to send each failed release again.
#[derive(Debug)]
pub(super) struct Retries {
    base: Duration,
    max: Duration,
    /// Per release id: the generation that failed, how often in a row, and when to send it
    /// again (none once taken, until it fails again).
    entries: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    generation: i64,
    failures: u32,
    due: Option<Instant>,
}

impl Retries {
    /// The first retry comes `base` after a failure; the delay doubles up to `max`.
    pub(super) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            entries: HashMap::new(),
        }
    }

    /// The agent failed to apply `generation` of `id` at `now`: returns when to send it again.
    pub(super) fn failed(&mut self, id: &str, generation: i64, now: Instant) -> Instant {
        let entry = self.entries.entry(id.to_string()).or_insert(Entry {
            generation,
            failures: 0,
            due: None,
        });
        if entry.generation != generation {
            entry.generation = generation;
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        let due = now + doubling(self.base, self.max, entry.failures);
        entry.due = Some(due);
        due
    }

    /// `id` was applied or removed: a later failure starts from the shortest delay again.
    pub(super) fn forget(&mut self, id: &str) {
        self.entries.remove(id);
    }

    /// When the next retry is due, if any.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.due).min()
    }

    /// Takes the ids due at `now`, in order; each is due again only after its next failure.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due: Vec<String> = self
            .entries
            .iter_mut()
            .filter(|(_, e)| e.due.is_some_and(|d| d <= now))
            .map(|(id, e)| {
                e.due = None;
                id.clone()
            })
            .collect();
        due.sort();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_generation_is_due_again_after_a_delay_that_doubles_up_to_the_cap() {
        let mut retries = Retries::new(Duration::from_secs(1), Duration::from_secs(5));
        let t0 = Instant::now();
        let delays: Vec<Duration> = (0..5)
            .map(|_| retries.failed("acme/api", 3, t0) - t0)
            .collect();
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 5, 5]);

        // Due only once its time has come, and then once.
        assert_eq!(retries.next_due(), Some(t0 + Duration::from_secs(5)));
        assert!(retries.take_due(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(retries.take_due(t0 + Duration::from_secs(5)), ["acme/api"]);
        assert!(retries.take_due(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(retries.next_due(), None);

        // A newer generation, or a success in between, starts from the shortest delay.
        assert_eq!(
            retries.failed("acme/api", 4, t0) - t0,
            Duration::from_secs(1)
        );
        retries.forget("acme/api");
        assert_eq!(
            retries.failed("acme/api", 4, t0) - t0,
            Duration::from_secs(1)
        );
    }
}

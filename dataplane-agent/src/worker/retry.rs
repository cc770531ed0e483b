//! Trying again: a release whose last apply left objects failing (or a removal that failed)
//! is applied again after a backoff that doubles with each attempt, up to a ceiling, until
//! nothing fails or a newer generation replaces it. The failed objects' statuses say so:
//! `retrying (attempt N, next in 4s): <what the target said>`.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;
use troupe_common::backoff::doubling;
use troupe_common::pb::v1alpha1::ReleaseResourceStatus;

/// How long to wait between attempts, and how often to correct drift.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Between two drift passes over everything held.
    pub resync_every: Duration,
    /// Before the first retry; doubled for each attempt after it.
    pub retry_base: Duration,
    /// The longest wait between two attempts.
    pub retry_max: Duration,
}

/// The next attempt at a release.
#[derive(Debug, Clone)]
pub(super) struct Retry {
    /// How many attempts failed so far.
    pub attempt: u32,
    /// How long until the next.
    pub delay: Duration,
    /// When it is due.
    pub at: Instant,
    /// The ids of the objects that failed.
    pub failed: BTreeSet<String>,
}

impl Retry {
    /// The retry after `previous` (none for a first failure) of objects `failed`.
    pub fn after(previous: Option<&Retry>, failed: &[String], timing: &Timing) -> Self {
        let attempt = previous.map_or(1, |p| p.attempt.saturating_add(1));
        let delay = doubling(timing.retry_base, timing.retry_max, attempt);
        Self {
            attempt,
            delay,
            at: Instant::now() + delay,
            failed: failed.iter().cloned().collect(),
        }
    }

    /// Says on each failed object's status that it is being retried.
    pub fn mark(&self, mut statuses: Vec<ReleaseResourceStatus>) -> Vec<ReleaseResourceStatus> {
        for status in statuses.iter_mut().filter(|s| self.failed.contains(&s.id)) {
            status.message = format!(
                "retrying (attempt {}, next in {}): {}",
                self.attempt,
                human(self.delay),
                status.message
            );
        }
        statuses
    }
}

/// `4s`, `1m30s`, `250ms`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        _ if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        _ => format!("{}m{}s", secs / 60, secs % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            resync_every: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_wait_doubles_up_to_the_ceiling_and_the_status_says_so() {
        let failed = ["svc".to_string()];
        let mut retry = Retry::after(None, &failed, &timing());
        let mut delays = vec![retry.delay.as_secs()];
        for _ in 0..8 {
            retry = Retry::after(Some(&retry), &failed, &timing());
            delays.push(retry.delay.as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let statuses = vec![
            ReleaseResourceStatus {
                id: "svc".into(),
                message: "applying Service shop/web: Forbidden (403): no".into(),
                ..Default::default()
            },
            ReleaseResourceStatus {
                id: "web".into(),
                ..Default::default()
            },
        ];
        let marked = retry.mark(statuses);
        assert_eq!(
            marked[0].message,
            "retrying (attempt 9, next in 1m): applying Service shop/web: Forbidden (403): no"
        );
        assert_eq!(marked[1].message, "");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}

//! The one backoff every retry in Troupe waits by: a delay that doubles with each attempt,
//! up to a ceiling.

use std::time::Duration;

/// The delay before retry number `attempt` (1 for the first): `first`, doubled for each
/// attempt after it, never more than `max`.
pub fn doubling(first: Duration, max: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    first.saturating_mul(1 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_the_first_up_to_the_ceiling() {
        let delays: Vec<u64> = (0..=6)
            .map(|attempt| {
                doubling(Duration::from_secs(1), Duration::from_secs(10), attempt).as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 1, 2, 4, 8, 10, 10]);
        assert_eq!(
            doubling(Duration::from_secs(1), Duration::MAX, u32::MAX),
            Duration::from_secs(1 << 20)
        );
    }
}

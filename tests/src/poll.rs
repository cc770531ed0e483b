//! The one way a test waits: [`eventually`] probes until the probe yields a value, and on
//! timeout panics naming what it waited for and what the last probe saw.
//!
//! Tests never sleep to wait for something to happen. The few fixed sleeps left in them are
//! either an observation window (nothing may change during it) or a fault injected at a chosen
//! moment, and each says which.

use std::fmt::{Debug, Display};
use std::time::{Duration, Instant};

/// How long a test waits for the system to converge before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How long [`eventually`] rests between two probes.
const INTERVAL: Duration = Duration::from_millis(50);

/// What one probe saw: the awaited value, or a description of what stood in its place.
///
/// A `bool` probe awaits `true`; an `Option` awaits `Some`; a `Result` awaits `Ok` and reports
/// its last `Err`, which is where a probe puts what it observed.
pub trait Observation {
    /// What the wait returns once it is over.
    type Value;

    /// `Ok` with the awaited value, or `Err` with what was seen instead.
    fn into_result(self) -> Result<Self::Value, String>;
}

impl Observation for bool {
    type Value = ();

    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition did not hold".into())
        }
    }
}

impl<T> Observation for Option<T> {
    type Value = T;

    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".into())
    }
}

impl<T, E: Display> Observation for Result<T, E> {
    type Value = T;

    fn into_result(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// Probes every 50 ms until `probe` yields a value and returns it; after `timeout` (at least
/// one probe, the last one at or past the deadline) panics naming `what` (phrased to follow
/// "waiting until") and what the last probe saw.
pub fn eventually<O: Observation>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> O,
) -> O::Value {
    let start = Instant::now();
    loop {
        let seen = match probe().into_result() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}; last seen:\n{seen}");
        }
        std::thread::sleep(INTERVAL);
    }
}

/// A probe that reports what it saw: `seen` when `holds` is true of it, else `seen` in its
/// `Debug` form for [`eventually`] to show if the wait times out.
pub fn check<T: Debug>(seen: T, holds: impl FnOnce(&T) -> bool) -> Result<T, String> {
    if holds(&seen) {
        Ok(seen)
    } else {
        Err(format!("{seen:#?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_a_probe_yields() {
        let mut probes = 0;
        let value = eventually("the third probe", PATIENCE, || {
            probes += 1;
            (probes == 3).then_some(probes * 10)
        });
        assert_eq!((value, probes), (30, 3));
    }

    #[test]
    #[should_panic(expected = "waiting until the answer is 42; last seen:\n41")]
    fn a_timeout_names_what_was_awaited_and_the_last_observation() {
        eventually("the answer is 42", Duration::ZERO, || Err::<(), _>(41));
    }
}

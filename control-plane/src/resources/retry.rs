//! Writes that lose a race: a commit whose preconditions no longer hold (another writer, on
//! this server or another, changed what its checks read) is made again from its checks, once
//! the store's view has had a moment to catch up with the winner.

use std::time::{Duration, Instant};

use super::Error;

/// How long a write keeps trying again after losing races with concurrent writers.
const RACE_PATIENCE: Duration = Duration::from_secs(5);

/// Runs `attempt` (checks and a commit) again while its commit loses a race with another
/// writer ([`Error::raced`]: what its checks read changed before it
/// committed), after a pause that grows from 1 ms to 50 ms, so the store's view catches up
/// with the winner; after [`RACE_PATIENCE`] the last loss is the answer. Blocks the thread:
/// call it off the async workers.
pub(super) fn retrying<T>(mut attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let deadline = Instant::now() + RACE_PATIENCE;
    let mut pause = Duration::from_millis(1);
    loop {
        match attempt() {
            Err(e) if e.raced() && Instant::now() + pause < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

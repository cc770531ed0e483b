//! Writes that lose a race: a commit whose preconditions no longer hold (another writer, on
//! this server or another, changed what its checks read) is made again from its checks, once
//! the store's view has had a moment to catch up with the winner.

use std::future::Future;
use std::time::{Duration, Instant};

use super::Error;

/// How long a write keeps trying again after losing races with concurrent writers.
const RACE_PATIENCE: Duration = Duration::from_secs(5);

/// When to try again: after a pause that grows from 1 ms to 50 ms, while the last loss was a
/// race ([`Error::raced`]: what the checks read changed before the commit) and
/// [`RACE_PATIENCE`] lasts.
struct Patience {
    deadline: Instant,
    pause: Duration,
}

impl Patience {
    fn new() -> Self {
        Self {
            deadline: Instant::now() + RACE_PATIENCE,
            pause: Duration::from_millis(1),
        }
    }

    /// The pause before trying again after `error`, or `None` if `error` is the answer.
    fn after(&mut self, error: &Error) -> Option<Duration> {
        if !error.raced() || Instant::now() + self.pause >= self.deadline {
            return None;
        }
        let pause = self.pause;
        self.pause = (pause * 2).min(Duration::from_millis(50));
        Some(pause)
    }
}

/// Runs `attempt` (checks and a commit) again while its commit loses a race with another
/// writer, pausing between tries so the store's view catches up with the winner ([`Patience`]).
/// Blocks the thread: call it off the async workers.
pub(super) fn retrying<T>(mut attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut patience = Patience::new();
    loop {
        match attempt() {
            Err(e) => match patience.after(&e) {
                Some(pause) => std::thread::sleep(pause),
                None => return Err(e),
            },
            done => return done,
        }
    }
}

/// [`retrying`] for an async attempt.
pub(super) async fn retrying_async<T, F>(mut attempt: impl FnMut() -> F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    let mut patience = Patience::new();
    loop {
        match attempt().await {
            Err(e) => match patience.after(&e) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(e),
            },
            done => return done,
        }
    }
}

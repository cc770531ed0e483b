//! The caller's side of a run: its events, and a way to cancel it.
//!
//! A [`RunHandle`] owns the run. Dropping it without cancelling kills whatever step is running
//! (SIGKILL to its process group) and removes the work directory: a run nobody listens to
//! does not go on behind the agent's back. A [`Canceller`] only cancels; it does not keep the
//! run alive.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::event::RunEvent;

/// A run in progress.
#[derive(Debug)]
pub struct RunHandle {
    events: mpsc::Receiver<RunEvent>,
    canceller: Canceller,
    work_dir: Option<PathBuf>,
}

impl RunHandle {
    pub(crate) fn new(
        events: mpsc::Receiver<RunEvent>,
        kill_at: watch::Sender<Option<Instant>>,
        work_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            events,
            canceller: Canceller {
                kill_at: Arc::new(kill_at),
            },
            work_dir,
        }
    }

    /// The next event; `None` once [`RunEvent::Finished`] has been returned. The executor
    /// waits for the caller: a caller that stops reading holds the steps' output (and so,
    /// eventually, the steps) back, but never a cancel or a timeout.
    pub async fn next(&mut self) -> Option<RunEvent> {
        self.events.recv().await
    }

    /// Cancels the run: see [`Canceller::cancel`].
    pub fn cancel(&self, grace: Duration) {
        self.canceller.cancel(grace);
    }

    /// A way to cancel the run from elsewhere (the task that reads the control plane's
    /// messages, while another forwards the events).
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }

    /// The attempt's work directory on this machine (the steps' `HOME`), for the `process`
    /// executor; gone once the run has finished, unless the executor keeps work directories.
    pub fn work_dir(&self) -> Option<&Path> {
        self.work_dir.as_deref()
    }
}

/// Cancels one run; cheap to clone.
#[derive(Debug, Clone)]
pub struct Canceller {
    kill_at: Arc<watch::Sender<Option<Instant>>>,
}

impl Canceller {
    /// Stops the run: no further step starts; the running step's process group gets SIGTERM
    /// now and SIGKILL once `grace` has passed if any of it is still there; the run ends
    /// [`Cancelled`](super::Phase::Cancelled). Cancelling again can only shorten the grace
    /// (a second cancel with no grace kills at once).
    pub fn cancel(&self, grace: Duration) {
        let at = Instant::now() + grace;
        self.kill_at.send_if_modified(|kill_at| match kill_at {
            Some(earlier) if *earlier <= at => false,
            _ => {
                *kill_at = Some(at);
                true
            }
        });
    }
}

//! A step's process group: the step's process leads it (spawned with `process_group(0)`), and
//! everything it starts belongs to it unless it leaves on purpose (`setsid`). Signals go to the
//! whole group, so a `sleep` in a background subshell stops with the step.
//!
//! The group is killed (SIGKILL) when dropped still armed: whatever ends the task that runs a
//! step (its handle dropped, the runtime shutting down, a panic) leaves no process behind.

use rustix::io::Errno;
use rustix::process::{Pid, Signal, kill_process_group};

/// The process group of a running step.
pub(crate) struct Group {
    /// `None` once disarmed.
    leader: Option<Pid>,
}

impl Group {
    /// The group led by the process `pid`. `None` for pids that do not name one of our
    /// children (0 and 1 would signal far more than a step).
    pub(crate) fn led_by(pid: u32) -> Option<Self> {
        let raw = i32::try_from(pid).ok().filter(|&raw| raw > 1)?;
        Some(Self {
            leader: Pid::from_raw(raw),
        })
    }

    /// Asks every process of the group to stop (SIGTERM).
    pub(crate) fn terminate(&self) {
        self.signal(Signal::TERM);
    }

    /// Kills every process of the group (SIGKILL).
    pub(crate) fn kill(&self) {
        self.signal(Signal::KILL);
    }

    /// Kills what is left of the group and forgets it. Called once the leader has been reaped,
    /// so that no later signal can reach a group that reuses the number.
    pub(crate) fn kill_and_disarm(&mut self) {
        self.kill();
        self.leader = None;
    }

    fn signal(&self, signal: Signal) {
        let Some(leader) = self.leader else { return };
        match kill_process_group(leader, signal) {
            // The group is already empty.
            Ok(()) | Err(Errno::SRCH) => {}
            Err(error) => tracing::warn!(
                group = leader.as_raw_pid(),
                signal = signal.as_raw(),
                %error,
                "cannot signal a build step's process group"
            ),
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_that_would_signal_more_than_a_step_are_refused() {
        assert!(Group::led_by(0).is_none());
        assert!(Group::led_by(1).is_none());
        assert!(Group::led_by(u32::MAX).is_none());
        let mut group = Group::led_by(i32::MAX as u32).unwrap();
        // No such group: signalling it is not an error worth reporting.
        group.kill_and_disarm();
    }
}

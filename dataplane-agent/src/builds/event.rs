//! What an executor reports about a run, in the order it happens: for each step
//! [`RunEvent::StepStarted`], its output as [`RunEvent::Log`] lines, [`RunEvent::StepFinished`];
//! then one [`RunEvent::Finished`] with the run's [`Phase`] and its outputs, after which the
//! handle yields nothing more.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// How a step or a run ended: exactly one of these, never two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Every step exited with code 0 and every required output was reported.
    Succeeded,
    /// A step exited non-zero, was killed by a signal or could not start, or a required
    /// output is missing.
    Failed,
    /// A step, or the whole run, went over its timeout and was stopped.
    TimedOut,
    /// Someone cancelled the run and it was stopped.
    Cancelled,
}

impl Phase {
    /// The phase as WorkflowRun statuses spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::TimedOut => "TimedOut",
            Phase::Cancelled => "Cancelled",
        }
    }
}

/// Which output of a step a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One thing that happened in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// A step's process was about to be started.
    StepStarted {
        /// The step's name.
        step: String,
        /// When.
        at: SystemTime,
    },
    /// A line a step wrote, without its newline. Lines longer than the executor's limit
    /// arrive cut, with a marker saying how many bytes were dropped; bytes that are not
    /// UTF-8 arrive as U+FFFD.
    Log {
        /// 1 for the first line of the attempt, then one more for each line, across steps
        /// and streams, in the order the lines were read: no gap, no repeat.
        seq: u64,
        /// The step that wrote it.
        step: String,
        /// Where it wrote it.
        stream: LogStream,
        /// The line.
        line: String,
        /// When it was read.
        at: SystemTime,
    },
    /// A step ended; a step that did not succeed is the last one of the run.
    StepFinished {
        /// The step's name.
        step: String,
        /// How it ended.
        phase: Phase,
        /// Its exit code, if it exited rather than being killed by a signal or not starting.
        exit_code: Option<i32>,
        /// What happened, in one line: `exited with code 3`, `killed by signal 9 (SIGKILL)`,
        /// `went over its timeout of 30s; stopped with SIGTERM`.
        message: String,
        /// When.
        at: SystemTime,
    },
    /// The run ended; nothing follows.
    Finished {
        /// How it ended.
        phase: Phase,
        /// Every output the steps reported (empty unless the run succeeded).
        outputs: BTreeMap<String, String>,
        /// What happened, in one line, naming the step or the output at fault.
        message: String,
    },
}

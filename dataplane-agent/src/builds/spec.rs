//! What a run is, as an executor receives it: fully resolved by the control plane (templates
//! expanded, parameters in place), so the executor only checks it and runs it.
//!
//! A step's command is an argv, never a shell line: a parameter reaches a step as one
//! argument or one environment value, byte for byte, and nothing in it is interpreted unless
//! the step itself chooses to run a shell on it. [`RunSpec::validate`] refuses, before
//! anything runs, what could not be run as written: no steps, a step without a command, a
//! working directory that leaves the work directory, a NUL byte, an environment name the
//! executor reserves.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::error::Error;

/// Environment names the executor sets itself; a step may not set them.
pub const RESERVED_ENV_PREFIX: &str = "TROUPE_";

/// The longest run id accepted: it names a directory.
const MAX_RUN_ID: usize = 128;

/// One attempt of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The run's id (the WorkflowRun, `NAMESPACE/NAME`); given to steps as `TROUPE_RUN`.
    pub run: String,
    /// Which attempt this is, from 1; given to steps as `TROUPE_ATTEMPT`.
    pub attempt: u32,
    /// The steps, run in order; the first that does not succeed ends the run.
    pub steps: Vec<StepSpec>,
    /// How long the whole run may take, steps and all.
    pub timeout: Option<Duration>,
    /// The outputs the run must report (`image`, `digest`); a run that reports one of them
    /// empty or not at all fails.
    pub outputs: Vec<String>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    /// The step's name, unique in its run; given to it as `TROUPE_STEP`.
    pub name: String,
    /// The container image it runs in, for executors that run containers (`kubernetes`);
    /// the `process` executor runs the command on this machine and ignores it.
    pub image: Option<String>,
    /// The program and its arguments. A program without a `/` is looked up in the step's
    /// `PATH`; a relative one with a `/` is taken from the step's working directory.
    pub command: Vec<String>,
    /// Environment of the step, on top of the executor's fixed set.
    pub env: Vec<(String, String)>,
    /// Where the step runs, relative to the run's work directory; `None` is the work
    /// directory itself. Absolute paths and `..` are refused.
    pub working_dir: Option<PathBuf>,
    /// How long this step may take.
    pub timeout: Option<Duration>,
}

impl RunSpec {
    /// A run of `steps`, with no timeout and no required output.
    pub fn new(run: impl Into<String>, attempt: u32, steps: Vec<StepSpec>) -> Self {
        Self {
            run: run.into(),
            attempt,
            steps,
            timeout: None,
            outputs: Vec::new(),
        }
    }

    /// The same run with a timeout over all of it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same run, required to report these outputs.
    pub fn with_outputs<S: Into<String>>(mut self, outputs: impl IntoIterator<Item = S>) -> Self {
        self.outputs = outputs.into_iter().map(Into::into).collect();
        self
    }

    /// Refuses a run that could not run as written; nothing has run when this fails.
    pub fn validate(&self) -> Result<(), Error> {
        let bad_run = |reason: String| Error::BadRun {
            run: self.run.clone(),
            reason,
        };
        if self.run.is_empty() || self.run.len() > MAX_RUN_ID {
            return Err(bad_run(format!("a run id has 1 to {MAX_RUN_ID} bytes")));
        }
        if self.steps.is_empty() {
            return Err(bad_run("a run needs at least one step".into()));
        }
        let mut names = HashSet::new();
        for step in &self.steps {
            if !names.insert(step.name.as_str()) {
                return Err(bad_run(format!("two steps are named {:?}", step.name)));
            }
            step.validate().map_err(|reason| Error::BadStep {
                run: self.run.clone(),
                step: step.name.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// The name of this attempt's directory: `run-ID-ATTEMPT`, the id with every byte but
    /// letters, digits, `-`, `_` and `.` written `%XX`. Two different (run, attempt) pairs
    /// never share a name: the attempt is the digits after the last `-`.
    pub(crate) fn dir_name(&self) -> String {
        let mut name = String::from("run-");
        for byte in self.run.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
                name.push(byte as char);
            } else {
                name.push_str(&format!("%{byte:02X}"));
            }
        }
        name.push_str(&format!("-{}", self.attempt));
        name
    }
}

impl StepSpec {
    /// A step running `command`, with no extra environment, in the work directory, with no
    /// timeout of its own.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        command: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            name: name.into(),
            image: None,
            command: command.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            working_dir: None,
            timeout: None,
        }
    }

    /// The same step, in a container of `image`.
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// The same step with one more environment variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The same step, run in `dir` under the work directory.
    pub fn with_working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// The same step with a timeout of its own.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['\0', '\n', '\r']) {
            return Err("a step name is one non-empty line".into());
        }
        if self.command.first().is_none_or(String::is_empty) {
            return Err("the step has no command".into());
        }
        if self.command.iter().any(|arg| arg.contains('\0')) {
            return Err("an argument of the command holds a NUL byte".into());
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!("{name:?} is not an environment variable name"));
            }
            if name.starts_with(RESERVED_ENV_PREFIX) {
                return Err(format!(
                    "{name} is set by the executor; names starting with {RESERVED_ENV_PREFIX} are reserved"
                ));
            }
            if value.contains('\0') {
                return Err(format!("the value of {name} holds a NUL byte"));
            }
        }
        if let Some(dir) = &self.working_dir {
            inside(dir).map_err(|why| format!("working directory {dir:?} {why}"))?;
        }
        Ok(())
    }
}

/// Whether `dir` stays inside the directory it is relative to, by its words alone.
fn inside(dir: &Path) -> Result<(), &'static str> {
    for part in dir.components() {
        match part {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("leaves the work directory (`..`)"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("is absolute; it must be relative to the work directory");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_run(step: StepSpec) -> RunSpec {
        RunSpec::new("acme/build-1", 1, vec![step])
    }

    fn refusal(step: StepSpec) -> String {
        mk_run(step).validate().unwrap_err().to_string()
    }

    #[test]
    fn working_dirs_that_leave_the_work_dir_are_refused() {
        let step = StepSpec::new("s", ["true"]);
        assert!(
            mk_run(step.clone().with_working_dir("src/./app"))
                .validate()
                .is_ok()
        );
        let up = refusal(step.clone().with_working_dir("src/../../etc"));
        assert!(up.contains("leaves the work directory"), "{up}");
        let absolute = refusal(step.with_working_dir("/etc"));
        assert!(absolute.contains("is absolute"), "{absolute}");
    }

    #[test]
    fn what_cannot_run_as_written_is_refused() {
        assert!(refusal(StepSpec::new("s", Vec::<String>::new())).contains("no command"));
        assert!(refusal(StepSpec::new("s", ["echo", "a\0b"])).contains("NUL"));
        let reserved = refusal(StepSpec::new("s", ["true"]).with_env("TROUPE_RUN", "x"));
        assert!(reserved.contains("reserved"), "{reserved}");
        assert!(refusal(StepSpec::new("s", ["true"]).with_env("A=B", "x")).contains("not an"));
        let twice = RunSpec::new(
            "r",
            1,
            vec![StepSpec::new("s", ["true"]), StepSpec::new("s", ["true"])],
        );
        assert!(
            twice
                .validate()
                .unwrap_err()
                .to_string()
                .contains("two steps")
        );
        assert!(RunSpec::new("r", 1, vec![]).validate().is_err());
        assert!(
            RunSpec::new("", 1, vec![StepSpec::new("s", ["true"])])
                .validate()
                .is_err()
        );
    }

    #[test]
    fn directory_names_are_safe_and_distinct() {
        let name = |run: &str, attempt| {
            mk_run(StepSpec::new("s", ["true"]))
                .with_run(run, attempt)
                .dir_name()
        };
        assert_eq!(name("acme/build-1", 2), "run-acme%2Fbuild-1-2");
        assert_eq!(name("..", 1), "run-..-1");
        assert_ne!(name("a-1", 2), name("a", 12));
        assert_ne!(name("a%2F", 1), name("a/", 1));
    }

    impl RunSpec {
        fn with_run(mut self, run: &str, attempt: u32) -> Self {
            self.run = run.into();
            self.attempt = attempt;
            self
        }
    }
}

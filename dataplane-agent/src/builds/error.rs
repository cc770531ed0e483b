//! Why a run was refused before any of it ran.

use std::path::PathBuf;

/// A run that cannot start: its spec is wrong, or its work directory cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something about the run as a whole.
    #[error("run {run:?}: {reason}")]
    BadRun {
        /// The run id.
        run: String,
        /// What is wrong.
        reason: String,
    },
    /// Something about one step.
    #[error("run {run:?}, step {step:?}: {reason}")]
    BadStep {
        /// The run id.
        run: String,
        /// The step's name.
        step: String,
        /// What is wrong.
        reason: String,
    },
    /// The attempt's work directory could not be created, or it already exists (an attempt
    /// never reuses a directory).
    #[error("creating the work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_run_and_the_step() {
        let bad = Error::BadStep {
            run: "acme/build-1".into(),
            step: "compile".into(),
            reason: "working directory \"../x\" leaves the work directory".into(),
        };
        assert_eq!(
            bad.to_string(),
            "run \"acme/build-1\", step \"compile\": working directory \"../x\" leaves the work directory"
        );
    }
}

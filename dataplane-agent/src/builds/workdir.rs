//! The work directory of one attempt: `ROOT/run-ID-ATTEMPT/` holds `work/` (the steps' `HOME`
//! and the base of their working directories) and `outputs` (the file `$TROUPE_OUTPUTS`
//! names), kept beside the work so that a step archiving its work directory does not pick
//! it up.
//!
//! The attempt directory is created with `create_dir`, never reused: if it exists, the attempt
//! is refused. It is removed when the run ends (or when this value is dropped, whatever ended
//! the run), unless the executor is told to keep it for debugging.

use std::fs::{self, DirBuilder, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::Error;

/// An attempt's directory, removed when dropped unless kept.
pub(crate) struct WorkDir {
    attempt: PathBuf,
    work: PathBuf,
    outputs: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Creates `root/name/` (only the owner may enter it; builds handle secrets), its
    /// `work/` and an empty `outputs` file. `root` is created if missing.
    pub(crate) fn create(root: &Path, name: &str, keep: bool) -> Result<Self, Error> {
        let error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::WorkDir { path, source }
        };
        fs::create_dir_all(root).map_err(error(root))?;
        let attempt = root.join(name);
        DirBuilder::new()
            .mode(0o700)
            .create(&attempt)
            .map_err(error(&attempt))?;
        // From here, dropping `dir` removes what was made.
        let dir = Self {
            work: attempt.join("work"),
            outputs: attempt.join("outputs"),
            attempt,
            keep,
        };
        fs::create_dir(&dir.work).map_err(error(&dir.work))?;
        File::create_new(&dir.outputs).map_err(error(&dir.outputs))?;
        Ok(dir)
    }

    /// The steps' home and the base of their working directories.
    pub(crate) fn work(&self) -> &Path {
        &self.work
    }

    /// The file steps append their outputs to.
    pub(crate) fn outputs(&self) -> &Path {
        &self.outputs
    }

    /// Removes the directory now, off the runtime's threads (it may be large), unless kept.
    pub(crate) async fn remove(mut self) {
        if self.keep {
            return;
        }
        self.keep = true;
        let attempt = self.attempt.clone();
        let _ = tokio::task::spawn_blocking(move || remove_tree(&attempt)).await;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            remove_tree(&self.attempt);
        }
    }
}

/// Removes `path` and everything under it. Build tools leave read-only directories behind (Go's
/// module cache does), whose entries cannot be unlinked: those are made writable first.
fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    make_writable(path);
    if let Err(error) = fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), %error, "cannot remove a build's work directory");
    }
}

/// Gives the owner write access to `dir` and every directory under it (symlinks not followed).
fn make_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            make_writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_directory_is_never_reused() {
        let root = tempfile::tempdir().unwrap();
        let first = WorkDir::create(root.path(), "run-a-1", true).unwrap();
        assert!(first.work().is_dir() && first.outputs().is_file());
        let again = WorkDir::create(root.path(), "run-a-1", false);
        assert!(matches!(again, Err(Error::WorkDir { .. })));
        // The refusal did not remove the first attempt's directory.
        assert!(first.work().is_dir());
    }

    #[test]
    fn dropping_removes_the_directory_unless_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = WorkDir::create(root.path(), "run-a-1", false).unwrap();
        fs::write(dir.work().join("artifact"), "x").unwrap();
        let attempt = root.path().join("run-a-1");
        drop(dir);
        assert!(!attempt.exists());
        drop(WorkDir::create(root.path(), "run-a-2", true).unwrap());
        assert!(root.path().join("run-a-2/work").is_dir());
    }
}

//! A running `troupe-agent`, with the directory applier (it writes each release's manifests
//! under its target directory, where the tests read them back) or the Kubernetes applier
//! (against the cluster of a kubeconfig, usually a [`crate::kube_api::KubeApi`]'s).
//!
//! A test starts one through [`crate::Platform`], which places its state and target
//! directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::troupe_agent_bin;

/// A running `troupe-agent` process with the directory applier, killed when dropped.
pub struct Agent {
    child: Child,
    /// The name the platform knows it by (its directories are named after it).
    pub name: String,
    /// Where it writes manifests (with the Kubernetes applier: its kubeconfig).
    pub target: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
}

impl Agent {
    /// Starts agent `name` for `data_plane` against `control_plane` (`https://…`), keeping its
    /// state in `state_dir`, writing under `target` and resyncing every second; `token` is
    /// needed on the first start, later starts reuse the identity in the state directory.
    pub(crate) fn start(
        control_plane: &str,
        data_plane: &str,
        token: Option<&str>,
        name: &str,
        state_dir: &Path,
        target: &Path,
    ) -> Agent {
        Self::start_with(
            control_plane,
            data_plane,
            token,
            name,
            state_dir,
            target,
            &[],
        )
    }

    /// [`Agent::start`] with `extra` arguments (`--allow-kinds …`).
    pub(crate) fn start_with(
        control_plane: &str,
        data_plane: &str,
        token: Option<&str>,
        name: &str,
        state_dir: &Path,
        target: &Path,
        extra: &[&str],
    ) -> Agent {
        let mut command = Command::new(troupe_agent_bin());
        command
            .arg("--apply")
            .arg(format!("dir:{}", target.display()))
            .args(["--resync-interval", "1"]);
        Self::launch(
            command,
            control_plane,
            data_plane,
            token,
            name,
            state_dir,
            target,
            extra,
        )
    }

    /// Starts agent `name` like [`Agent::start_with`], but applying to the Kubernetes cluster
    /// of `kubeconfig` (`--apply kubernetes`, `KUBECONFIG`) and resyncing every
    /// `resync_seconds`. Its `target` is unused.
    #[allow(clippy::too_many_arguments, reason = "each is one agent flag")]
    pub(crate) fn start_kubernetes(
        control_plane: &str,
        data_plane: &str,
        token: Option<&str>,
        name: &str,
        state_dir: &Path,
        kubeconfig: &Path,
        resync_seconds: u64,
        extra: &[&str],
    ) -> Agent {
        let mut command = Command::new(troupe_agent_bin());
        command
            .args(["--apply", "kubernetes"])
            .args(["--resync-interval", &resync_seconds.to_string()])
            .env("KUBECONFIG", kubeconfig);
        Self::launch(
            command,
            control_plane,
            data_plane,
            token,
            name,
            state_dir,
            kubeconfig,
            extra,
        )
    }

    /// Adds the flags every agent takes to `command` (which names its applier) and spawns it.
    #[allow(clippy::too_many_arguments, reason = "each is one agent flag")]
    fn launch(
        mut command: Command,
        control_plane: &str,
        data_plane: &str,
        token: Option<&str>,
        name: &str,
        state_dir: &Path,
        target: &Path,
        extra: &[&str],
    ) -> Agent {
        command
            .args(["--control-plane", control_plane])
            .args(["--dataplane", data_plane])
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        Agent {
            child: command.spawn().expect("starting troupe-agent"),
            name: name.to_string(),
            target: target.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// Stops the agent with SIGSTOP: it sends and reads nothing more, and its connections stay
    /// open, so its server sees no disconnect (until a heartbeat is missed).
    pub fn freeze(&self) {
        let status = std::process::Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status()
            .expect("kill -STOP");
        assert!(status.success(), "kill -STOP: {status}");
    }

    /// Kills the agent with SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The programs the tests drive: Troupe's own binaries, built on first use so a test never
//! runs stale code, and the external tools the test command installs.
//!
//! The first call in a test process runs `cargo build --workspace --bins` into the target
//! directory this test executable was built in, with the features it was built with (`etcd`):
//! the build `scripts/test.sh` (and so CI) runs before the tests, so it is a no-op when the
//! binaries are fresh and never changes feature resolution. Cargo's own lock on that directory serialises test processes that build at the
//! same time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::workspace_root;

/// The `troupe` binary, built from the current sources.
pub fn troupe_bin() -> PathBuf {
    built("troupe")
}

/// `troupe server` over `data_dir` on free loopback ports, to run to its end: for a test of
/// how a server refuses to start.
pub fn troupe_server(data_dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(troupe_bin());
    command
        .args(["server", "--listen", "127.0.0.1:0"])
        .args(["--agent-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir);
    command
}

/// The `troupe-agent` binary, built from the current sources.
pub fn troupe_agent_bin() -> PathBuf {
    built("troupe-agent")
}

/// The grpcurl binary.
pub fn grpcurl_bin() -> PathBuf {
    tool("TROUPE_GRPCURL", ".tools/venv/bin/grpcurl")
}

/// The Python interpreter with grpcio-tools and PyYAML.
pub fn python_bin() -> PathBuf {
    tool("TROUPE_PYTHON", ".tools/venv/bin/python")
}

/// `name` in the profile directory, once this process has built the workspace's binaries.
fn built(name: &str) -> PathBuf {
    // A failed build is kept, not retried: every test of the process reports the same error
    // instead of each compiling again.
    static PROFILE_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = PROFILE_DIR
        .get_or_init(build)
        .as_ref()
        .unwrap_or_else(|error| panic!("{error}"));
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing after `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

/// Builds the workspace's binaries into the profile directory of this test executable
/// (`target/debug/deps/<test>` → `target/debug`) and returns that directory.
fn build() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the test executable: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in a target directory", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} is not in a target directory", exe.display()))?;
    // Cargo sets CARGO for the tests it runs: the same cargo, hence the same toolchain.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--workspace", "--bins"])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir);
    // What cargo sets for the test's own crate (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, …) is no
    // setting of this build: ring's build script watches some of it, so passing it on would
    // rebuild ring and all above it, unlike the build scripts/test.sh runs from a shell.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_crate = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "CARGO_TARGET_TMPDIR";
        if per_crate {
            command.env_remove(name.as_ref());
        }
    }
    // The features scripts/test.sh builds with: binaries with what the tests drive (`--store
    // etcd://…`), and nothing to rebuild.
    if cfg!(feature = "etcd") {
        command.args(["--features", "troupe-tests/etcd"]);
    }
    // Tests built with another profile (`cargo test --release`) run that profile's binaries.
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    let output = command.output().map_err(|e| {
        format!(
            "running {} to build the binaries the tests run: {e}",
            cargo.to_string_lossy()
        )
    })?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build --workspace --bins` failed ({}), so the end-to-end tests cannot run:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(profile_dir.to_path_buf())
}

/// A tool installed by the test command, overridable by an environment variable.
fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(default));
    assert!(
        path.exists(),
        "{} not found: run scripts/test.sh, which installs it (or set {env})",
        path.display()
    );
    path
}

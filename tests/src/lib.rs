//! Scaffolding for Troupe's end-to-end tests, which drive the real `troupe` and
//! `troupe-agent` binaries over TCP: [`Platform`] starts a server (and agents) in a temporary
//! directory, [`Server`] talks to it with the generated Rust client, the CLI and grpcurl,
//! [`eventually`] is how a test waits for the system to converge, and [`Proxy`] injects
//! network faults between an agent and the control plane. [`FakeIssuer`] is an OIDC identity
//! provider whose tokens a server started with its [`FakeIssuer::server_args`] accepts.
//!
//! The binaries are built from the current sources on first use (see [`troupe_bin`]), so
//! `cargo test` never runs stale code. Tool paths come from `TROUPE_GRPCURL` and
//! `TROUPE_PYTHON`, defaulting to what the test command (`scripts/test.sh`) installs under
//! `.tools/`.

mod agent;
mod binaries;
pub mod http;
pub mod kube_api;
pub mod oidc;
mod platform;
mod poll;
pub mod probes;
mod proxy;
mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

pub use agent::Agent;
pub use binaries::{grpcurl_bin, python_bin, troupe_agent_bin, troupe_bin, troupe_server};
pub use oidc::FakeIssuer;
pub use platform::{PEOPLE, Platform, PlatformBuilder, UNGATED_PIPELINE, free_port};
pub use poll::{Observation, PATIENCE, check, eventually};
pub use proxy::Proxy;
pub use server::{Bearer, Client, Connection, Server};
/// A real etcd on free ports for the tests of `--store etcd://…`.
#[cfg(feature = "etcd")]
pub use troupe_control_plane::store::LocalEtcd;

/// Component `c{i}` of the example `service` type and its Workload (namespace acme, project
/// shop), deploying on its own to the first environment: a Deployment whose container has
/// `SEQ={seq}`, a ConfigMap of one file and a Service without routes.
pub fn service_component(i: usize, seq: u64) -> String {
    format!(
        "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: shop}}
  componentType: {{name: deployment/service}}
  autoDeploy: true
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {{name: c{i}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: c{i}}}
  container:
    image: ghcr.io/acme/c{i}:1.0.0
    env: [{{key: SEQ, value: \"{seq}\"}}]
    files: [{{key: app.yaml, mountPath: /etc/app.yaml, value: \"n: {i}\"}}]
  endpoints: [{{name: http, type: HTTP, port: 8080, visibility: []}}]
"
    )
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Path of the example platform applied by the tests.
pub fn examples_dir() -> PathBuf {
    workspace_root().join("examples")
}

/// The files the directory applier wrote under `target` for release `NAMESPACE/NAME`, by
/// file name.
pub fn release_files(target: &Path, namespace: &str, name: &str) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(target.join(namespace).join(name)) else {
        return Default::default();
    };
    entries
        .flatten()
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), text)
        })
        .collect()
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The lines `child` prints on its standard output (which must be piped), as they come; the
/// channel closes when it closes its output.
pub fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, lines) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("a piped standard output");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Asserts the command succeeded, showing its output if not; returns stdout.
pub fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

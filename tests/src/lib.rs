//! Helpers for Troupe's end-to-end tests: start the real `troupe` binary on a free port, talk
//! to it with the generated Rust client, the CLI, grpcurl and Python, and kill or restart it.
//!
//! The binary is the one `cargo build --workspace --bins` leaves in `target/debug`; the test
//! command (`scripts/test.sh`) builds it before running the tests. Tool paths come from
//! `TROUPE_GRPCURL` and `TROUPE_PYTHON`, defaulting to what the test command installs under
//! `.tools/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tonic::transport::Channel;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;

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

/// The `troupe` binary built next to this test executable.
pub fn troupe_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> → target/debug/troupe
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("troupe");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test.sh does)",
        bin.display()
    );
    bin
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

/// The grpcurl binary.
pub fn grpcurl_bin() -> PathBuf {
    tool("TROUPE_GRPCURL", ".tools/venv/bin/grpcurl")
}

/// The Python interpreter with grpcio-tools and PyYAML.
pub fn python_bin() -> PathBuf {
    tool("TROUPE_PYTHON", ".tools/venv/bin/python")
}

/// A running `troupe server` process, killed when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `127.0.0.1:PORT` of the agent endpoint.
    pub agent_addr: String,
    /// The data directory (kept by the caller's `TempDir`).
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts a server on a free port over `data_dir` and waits until it serves.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// As [`Server::start`], with extra `troupe server` arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let mut command = Command::new(troupe_bin());
        command.args(["server", "--listen", "127.0.0.1:0"]);
        if !extra.contains(&"--agent-listen") {
            command.args(["--agent-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting troupe server");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the server's first line");
        let addr = line
            .trim()
            .strip_prefix("troupe server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
            .to_string();
        line.clear();
        stdout
            .read_line(&mut line)
            .expect("reading the server's second line");
        let agent_addr = line
            .trim()
            .strip_prefix("troupe agent endpoint listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected second line from the server: {line:?}"))
            .to_string();
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Server {
            child,
            addr,
            agent_addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// `https://127.0.0.1:PORT` of the agent endpoint.
    pub fn agent_url(&self) -> String {
        format!("https://{}", self.agent_addr)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A generated Rust client connected to the server.
    pub async fn client(&self) -> ResourceServiceClient<Channel> {
        let channel = Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("connecting");
        ResourceServiceClient::new(channel)
    }

    /// Runs the `troupe` CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    /// Polls `troupe get KIND NAME -n NAMESPACE -o OUTPUT` until it succeeds and `check`
    /// holds for its output, which it returns; panics after about five seconds.
    pub fn wait_get(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        output: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            let out = self.cli(&["get", kind, name, "-n", namespace, "-o", output]);
            last = stdout(&out) + &stderr(&out);
            if out.status.success() && check(&stdout(&out)) {
                return stdout(&out);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{kind} {namespace}/{name} never got there; last seen:\n{last}");
    }

    /// Runs the `troupe` CLI against this server, feeding `stdin`.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(troupe_bin())
            .args(args)
            .env("TROUPE_SERVER", self.url())
            .env_remove("TROUPE_NAMESPACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running troupe");
        {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("piped stdin");
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes()).expect("writing stdin");
            }
        }
        child.wait_with_output().expect("waiting for troupe")
    }

    /// Runs grpcurl against this server (plaintext).
    pub fn grpcurl(&self, args: &[&str]) -> Output {
        Command::new(grpcurl_bin())
            .arg("-plaintext")
            .args(args)
            .output()
            .expect("running grpcurl")
    }

    /// Kills the server with SIGKILL: no shutdown hook runs.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping");
    }

    /// Sends SIGTERM and waits for a clean exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not stop within 5 s of SIGTERM");
    }
}

/// How long a test waits for the system to converge before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 50 ms until it holds; panics naming `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < PATIENCE {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting until {what}");
}

/// The files the directory applier wrote under `target` for release `NAMESPACE/NAME`, by
/// file name.
pub fn release_files(
    target: &Path,
    namespace: &str,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
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

impl Server {
    /// `troupe dataplane token create DATA_PLANE --ttl TTL`.
    pub fn token(&self, data_plane: &str, ttl: &str) -> String {
        let out = success(&self.cli(&["dataplane", "token", "create", data_plane, "--ttl", ttl]));
        out.trim().to_string()
    }

    /// `troupe release create COMPONENT -n acme`: the new (or unchanged) release's name.
    pub fn cut_release(&self, component: &str) -> String {
        let out = success(&self.cli(&["release", "create", component, "-n", "acme"]));
        out.split_whitespace()
            .next()
            .expect("release create prints the release")
            .trim_start_matches("componentrelease/")
            .to_string()
    }

    /// Applies ReleaseBinding `COMPONENT-ENV` in acme (project shop) pointing at `release`,
    /// with `extra` spec lines (indented two spaces) appended.
    pub fn bind(&self, component: &str, env: &str, release: &str, extra: &str) {
        let yaml = format!(
            "apiVersion: troupe.dev/v1alpha1
kind: ReleaseBinding
metadata: {{name: {component}-{env}, namespace: acme}}
spec:
  owner: {{projectName: shop, componentName: {component}}}
  environment: {env}
  releaseName: {release}
{extra}"
        );
        success(&self.cli_with_stdin(&["apply", "-f", "-"], Some(&yaml)));
    }

    /// `troupe get KIND NAME -n NAMESPACE -o json`, or `None` when it fails (not found).
    pub fn get_json(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let out = self.cli(&["get", kind, name, "-n", namespace, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_str(&stdout(&out)).expect("JSON from troupe get"))
    }
}

/// The `troupe-agent` binary built next to `troupe`.
pub fn troupe_agent_bin() -> PathBuf {
    troupe_bin().with_file_name("troupe-agent")
}

/// A running `troupe-agent` process with the directory applier, killed when dropped.
pub struct Agent {
    child: Child,
    /// Where it writes manifests.
    pub target: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
}

impl Agent {
    /// Starts an agent for `data_plane` against `control_plane` (`https://…`), keeping its
    /// state in `state_dir` and writing under `target`; `token` is needed on the first start.
    pub fn start(
        control_plane: &str,
        data_plane: &str,
        token: Option<&str>,
        state_dir: &Path,
        target: &Path,
    ) -> Agent {
        let mut command = Command::new(troupe_agent_bin());
        command
            .args(["--control-plane", control_plane, "--dataplane", data_plane])
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--apply")
            .arg(format!("dir:{}", target.display()))
            .args(["--resync-interval", "1"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        Agent {
            child: command.spawn().expect("starting troupe-agent"),
            target: target.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// Kills the agent with SIGKILL.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping");
    }

    /// Waits for the agent to exit by itself (it fails to register, say), at most 10 s.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the agent did not exit");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on loopback in front of `upstream` that the test can cut: every open
/// connection is reset at once, as a flaky network or a load balancer restart would.
pub struct Proxy {
    /// `127.0.0.1:PORT` to connect to instead of the upstream.
    pub addr: String,
    connections: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    /// Milliseconds each forwarded read is held back.
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Starts forwarding to `upstream`.
    pub fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let connections: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (conns, delay) = (connections.clone(), delay_ms.clone());
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                {
                    let mut open = conns.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let delay = delay.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buffer = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let ms = delay.load(Ordering::Relaxed);
                            if ms > 0 {
                                std::thread::sleep(Duration::from_millis(ms));
                            }
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            connections,
            delay_ms,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Resets every open connection.
    pub fn cut(&self) {
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Holds back each forwarded read by `ms` milliseconds (0: none).
    pub fn delay(&self, ms: u64) {
        self.delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A free loopback port (bound and released; good enough for a test's restarts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
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

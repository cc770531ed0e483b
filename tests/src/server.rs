//! A running `troupe server` and the ways a test talks to it: the generated Rust client, the
//! CLI, grpcurl, and a few CLI shortcuts the tests share (tokens, releases, bindings, reads).
//!
//! A test gets one through [`crate::Platform`], which owns its data directory and restarts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tonic::transport::Channel;
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;

use crate::{eventually, grpcurl_bin, stderr, stdout, success, troupe_bin};

/// A running `troupe server` process, killed when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `127.0.0.1:PORT` of the agent endpoint.
    pub agent_addr: String,
    /// The data directory (kept by the platform's temporary directory).
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts a server on a free port over `data_dir`, with extra `troupe server` arguments,
    /// and waits until it serves (it prints its addresses once it listens).
    pub(crate) fn start(data_dir: &Path, extra: &[String]) -> Server {
        let mut command = Command::new(troupe_bin());
        command.args(["server", "--listen", "127.0.0.1:0"]);
        if !extra.iter().any(|a| a == "--agent-listen") {
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

    /// `troupe get KIND NAME -n NAMESPACE -o OUTPUT` once, as a probe for
    /// [`eventually`]: its output, or everything it printed when it failed.
    pub fn get_text(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        output: &str,
    ) -> Result<String, String> {
        let out = self.cli(&["get", kind, name, "-n", namespace, "-o", output]);
        if out.status.success() {
            Ok(stdout(&out))
        } else {
            Err(stdout(&out) + &stderr(&out))
        }
    }

    /// `troupe get KIND NAME -n NAMESPACE -o json`, or `None` when it fails (not found).
    pub fn get_json(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let out = self.cli(&["get", kind, name, "-n", namespace, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_str(&stdout(&out)).expect("JSON from troupe get"))
    }

    /// The release `component`'s binding in `env` names (namespace `acme`); empty without one.
    pub fn bound(&self, component: &str, env: &str) -> String {
        self.get_json("rb", "acme", &format!("{component}-{env}"))
            .map(|b| b["spec"]["releaseName"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    /// Whether `component` (namespace `acme`) is ready in `env`, as `troupe status` says;
    /// while it is not, the status, for a wait to report.
    pub fn ready(&self, component: &str, env: &str) -> Result<(), serde_json::Value> {
        let out = success(&self.cli(&["status", component, "-n", "acme", "-o", "json"]));
        let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON from troupe status");
        let is_ready = doc["environments"].as_array().is_some_and(|envs| {
            envs.iter()
                .any(|e| e["environment"] == env && e["ready"] == true)
        });
        if is_ready { Ok(()) } else { Err(doc) }
    }

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

    /// Kills the server with SIGKILL: no shutdown hook runs.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping");
    }

    /// Sends SIGTERM and waits (5 s at most) for the server to exit; returns whether it
    /// exited successfully.
    pub(crate) fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let status = eventually(
            "the server stops after SIGTERM",
            Duration::from_secs(5),
            || self.child.try_wait().expect("try_wait"),
        );
        status.success()
    }

    /// Stops the server if it still runs, so another may open its data directory.
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

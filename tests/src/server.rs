//! A running `troupe server` and the ways a test talks to it: the generated Rust client, the
//! CLI, grpcurl, and a few CLI shortcuts the tests share (tokens, releases, bindings, reads).
//!
//! A test gets one through [`crate::Platform`], which owns its data directory and restarts.
//! Every way in speaks TLS, trusting the server's CA (`DATA_DIR/pki/ca.crt`), and sends the
//! admin token (`DATA_DIR/admin.token`) as `authorization: Bearer …` when the server wrote
//! one; the `*_as` variants send another token. The CLI's config file is kept beside the data
//! directory, so no test reads or writes the user's own.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use troupe_common::pb::v1alpha1::resource_service_client::ResourceServiceClient;

use crate::{eventually, grpcurl_bin, stderr, stdout, success, troupe_bin};

/// A connection to the server that sends a token with every call.
pub type Connection = InterceptedService<Channel, Bearer>;

/// A generated resource-service client over a [`Connection`].
pub type Client = ResourceServiceClient<Connection>;

/// Sends `authorization: Bearer TOKEN` with every call (nothing without a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Sends `token`, or nothing.
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| format!("Bearer {t}").parse().expect("an ASCII token")))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A running `troupe server` process, killed when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Whether the API endpoint speaks TLS (it does unless started with `--plaintext`).
    pub tls: bool,
    /// The server's first line: `troupe server listening on ADDR (TRANSPORT)`.
    pub announced: String,
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
        command.arg("server");
        if !extra.iter().any(|a| a == "--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if !extra.iter().any(|a| a == "--agent-listen") {
            command.args(["--agent-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn,rustls=error")
            .env("TROUPE_CONFIG", config_path(data_dir))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting troupe server");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading the server's first line");
        let (addr, transport) = line
            .trim()
            .strip_prefix("troupe server listening on ")
            .and_then(|rest| rest.split_once(' '))
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"));
        // A server on every interface is reached on loopback.
        let addr = addr.replace("0.0.0.0:", "127.0.0.1:");
        let (announced, tls) = (line.trim().to_string(), transport.starts_with("(TLS"));
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
            tls,
            announced,
            agent_addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// `https://127.0.0.1:PORT` of the agent endpoint.
    pub fn agent_url(&self) -> String {
        format!("https://{}", self.agent_addr)
    }

    /// `https://127.0.0.1:PORT` (`http://` when the server runs `--plaintext`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA the API endpoint's certificate is signed by.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("pki").join("ca.crt")
    }

    /// The admin token the server wrote to `DATA_DIR/admin.token`, if it did.
    pub fn admin_token(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.data_dir.join("admin.token")).ok()?;
        Some(text.trim().to_string()).filter(|t| !t.is_empty())
    }

    /// The CLI config file the harness's CLI runs use (beside the data directory).
    pub fn config_path(&self) -> PathBuf {
        config_path(&self.data_dir)
    }

    /// A connection to the API sending the admin token (if any).
    pub async fn channel(&self) -> Connection {
        self.channel_as(self.admin_token().as_deref()).await
    }

    /// A connection to the API sending `token` (nothing when `None`).
    pub async fn channel_as(&self, token: Option<&str>) -> Connection {
        let mut endpoint = Channel::from_shared(self.url()).expect("a valid URL");
        if self.tls {
            let ca = std::fs::read_to_string(self.ca_path()).expect("reading the server's CA");
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .expect("TLS settings");
        }
        let channel = endpoint.connect().await.expect("connecting");
        InterceptedService::new(channel, Bearer::new(token))
    }

    /// A generated Rust client connected to the server, sending the admin token.
    pub async fn client(&self) -> Client {
        ResourceServiceClient::new(self.channel().await)
    }

    /// A generated Rust client sending `token` instead.
    pub async fn client_as(&self, token: &str) -> Client {
        ResourceServiceClient::new(self.channel_as(Some(token)).await)
    }

    /// Runs the `troupe` CLI against this server (admin token).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    /// Runs the `troupe` CLI against this server with `token`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        self.run_cli(self.cli_command(Some(token)).args(args), None)
    }

    /// A `troupe` command set up for this server: its URL, CA, and `token` (the admin token
    /// when `None`), with the config file beside the data directory.
    pub fn cli_command(&self, token: Option<&str>) -> Command {
        let mut command = Command::new(troupe_bin());
        self.cli_env(&mut command, token);
        command
    }

    /// Runs the `troupe` CLI against this server (admin token) under `timeout`, stopped after
    /// `seconds`: for verbs that stream until stopped, such as `watch`.
    pub fn cli_for(&self, seconds: u32, args: &[&str]) -> Output {
        self.cli_env(&mut Command::new("timeout"), None)
            .arg(seconds.to_string())
            .arg(troupe_bin())
            .args(args)
            .output()
            .unwrap()
    }

    /// Sets the environment by which a `troupe` CLI run (directly, or under a wrapper such as
    /// `timeout`) reaches this server: see [`Server::cli_command`].
    pub fn cli_env<'c>(&self, command: &'c mut Command, token: Option<&str>) -> &'c mut Command {
        command
            .env("TROUPE_SERVER", self.url())
            .env("TROUPE_CA", self.ca_path())
            .env("TROUPE_CONFIG", self.config_path())
            .env_remove("TROUPE_CONTEXT")
            .env_remove("TROUPE_TOKEN")
            .env_remove("TROUPE_NAMESPACE");
        if let Some(token) = token.map(str::to_string).or_else(|| self.admin_token()) {
            command.env("TROUPE_TOKEN", token);
        }
        command
    }

    /// Runs the `troupe` CLI against this server, feeding `stdin`.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_cli(self.cli_command(None).args(args), stdin)
    }

    /// Runs the `troupe` CLI against this server as the holder of `token`, feeding `stdin`.
    pub fn cli_as_with_stdin(&self, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_cli(self.cli_command(Some(token)).args(args), stdin)
    }

    fn run_cli(&self, command: &mut Command, stdin: Option<&str>) -> Output {
        let mut child = command
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

    /// Runs grpcurl against this server, trusting its CA and sending the admin token.
    pub fn grpcurl(&self, args: &[&str]) -> Output {
        self.grpcurl_command(self.admin_token().as_deref())
            .args(args)
            .output()
            .expect("running grpcurl")
    }

    /// Runs grpcurl against this server with `token`.
    pub fn grpcurl_as(&self, token: &str, args: &[&str]) -> Output {
        self.grpcurl_command(Some(token))
            .args(args)
            .output()
            .expect("running grpcurl")
    }

    /// A grpcurl command with this server's transport flags (`-cacert CA`, or `-plaintext`)
    /// and `authorization: Bearer TOKEN` when given; the address and method come after.
    pub fn grpcurl_command(&self, token: Option<&str>) -> Command {
        let mut command = Command::new(grpcurl_bin());
        if self.tls {
            command.arg("-cacert").arg(self.ca_path());
        } else {
            command.arg("-plaintext");
        }
        if let Some(token) = token {
            command.args(["-H", &format!("authorization: Bearer {token}")]);
        }
        command
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

/// The CLI config file of the server over `data_dir`: beside it, in the test's temporary
/// directory.
fn config_path(data_dir: &Path) -> PathBuf {
    data_dir
        .parent()
        .unwrap_or(data_dir)
        .join("troupe-config.yaml")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

//! [`LocalEtcd`]: a real single-member etcd on free loopback ports with a data directory of its
//! own, for tests and benchmarks. It runs the `etcd` binary from `PATH` (Debian package
//! `etcd-server`), polls until the member answers `/health`, and is killed, and its directory
//! removed, when dropped. Started with [`LocalEtcd::start_tls`], it serves clients over TLS
//! only and asks each for a certificate signed by its CA ([`LocalTls`]); `/health` is then
//! polled on a plain-HTTP metrics port of its own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::local_tls::LocalTls;
use crate::store::StoreLocation;

/// How long a starting member may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at starting on fresh ports, should another process take a port first.
const START_ATTEMPTS: usize = 3;

/// A running etcd member; killed, and its data removed, when dropped.
pub struct LocalEtcd {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Where `/health` answers: the client port, or with TLS a plain metrics port.
    health_port: u16,
    tls: Option<LocalTls>,
    /// With JWT tokens, the flag that turns them on (its keys are in `dir`).
    auth_token: Option<String>,
    /// `--quota-backend-bytes`, when smaller than etcd's default (2 GiB).
    quota: Option<u64>,
    /// The member's name, and every member's `NAME=PEER_URL` (itself alone, unless it was
    /// started as one of a cluster).
    name: String,
    initial_cluster: Option<String>,
}

/// How a member serves clients and signs tokens.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Tls,
    /// Plain, with JWT tokens (ES256) rather than etcd's default simple tokens.
    Jwt,
}

impl LocalEtcd {
    /// Starts a member on free ports with a fresh data directory and waits until it answers.
    /// Fails with how to install etcd if there is none on `PATH`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Mode::Plain, None)
    }

    /// Starts a member as [`LocalEtcd::start`] does, serving clients over TLS only (`https://`)
    /// with a certificate of a fresh CA, and refusing clients without a certificate that CA
    /// signed (`--client-cert-auth`). [`LocalEtcd::tls`] names the files.
    pub fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(Mode::Tls, None)
    }

    /// Starts a member as [`LocalEtcd::start`] does, giving JWT tokens (`--auth-token jwt,…`,
    /// signed ES256 with a fresh key) once authentication is on. Unlike simple tokens, each
    /// carries the revision of etcd's users and roles it was given at, and is refused as old
    /// after any change to them.
    pub fn start_jwt() -> anyhow::Result<Self> {
        Self::start_with(Mode::Jwt, None)
    }

    /// Starts a member as [`LocalEtcd::start`] does, whose database holds at most `bytes`
    /// (`--quota-backend-bytes`): past it, etcd raises its NOSPACE alarm and refuses every
    /// write but deletes until an operator frees space and disarms the alarm.
    pub fn start_with_quota(bytes: u64) -> anyhow::Result<Self> {
        Self::start_with(Mode::Plain, Some(bytes))
    }

    /// Starts a cluster of `members` members on free ports (plain HTTP), and waits until
    /// each answers with a leader elected. Each member is killed, and its data removed, when
    /// dropped; [`LocalEtcd::kill`] and [`LocalEtcd::restart`] act on one member.
    pub fn start_cluster(members: usize) -> anyhow::Result<Vec<Self>> {
        let mut last = None;
        // A port found free may be taken by another process before a member binds it: then
        // the cluster starts again on other ports.
        for _ in 0..START_ATTEMPTS {
            match Self::try_cluster(members) {
                Ok(cluster) => return Ok(cluster),
                Err(e) if e.to_string().contains("address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn try_cluster(members: usize) -> anyhow::Result<Vec<Self>> {
        let mut cluster = (0..members)
            .map(|i| Self::plain(format!("troupe-test-{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let initial = cluster
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        // All start before any is waited for: none has a leader until a majority runs.
        for member in &mut cluster {
            member.initial_cluster = Some(initial.clone());
            member.spawn()?;
        }
        for member in &mut cluster {
            let log = member.dir.join("etcd.log");
            member.wait_healthy(&log)?;
        }
        Ok(cluster)
    }

    /// The store URL of `prefix` on every member of `cluster`:
    /// `etcd://127.0.0.1:PORT,127.0.0.1:PORT,…/PREFIX`.
    pub fn cluster_url(cluster: &[Self], prefix: &str) -> String {
        let members: Vec<String> = cluster
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!(
            "etcd://{}/{}",
            members.join(","),
            prefix.trim_start_matches('/')
        )
    }

    /// Whether this member leads its cluster now.
    pub async fn is_leader(&self) -> anyhow::Result<bool> {
        let status = self.client().await?.status().await?;
        let header = status.header().context("no header")?;
        Ok(status.leader() == header.member_id())
    }

    fn start_with(mode: Mode, quota: Option<u64>) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let mut etcd = Self::plain("troupe-test".into())?;
            match mode {
                Mode::Tls => {
                    etcd.health_port = free_port()?;
                    etcd.tls = Some(LocalTls::generate(&etcd.dir)?);
                }
                Mode::Jwt => etcd.auth_token = Some(jwt_keys(&etcd.dir)?),
                Mode::Plain => {}
            }
            etcd.quota = quota;
            match etcd.run() {
                Ok(()) => return Ok(etcd),
                Err(e) if e.to_string().contains("address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// A member named `name`, not started: a fresh directory, free ports, plain HTTP, alone
    /// in its cluster.
    fn plain(name: String) -> anyhow::Result<Self> {
        let client_port = free_port()?;
        Ok(Self {
            child: None,
            dir: fresh_dir()?,
            client_port,
            peer_port: free_port()?,
            health_port: client_port,
            tls: None,
            auth_token: None,
            quota: None,
            name,
            initial_cluster: None,
        })
    }

    /// `http://127.0.0.1:PORT`, the client endpoint (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The store URL of `prefix` on this member, without TLS options:
    /// `etcd://127.0.0.1:PORT/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "etcd://127.0.0.1:{}/{}",
            self.client_port,
            prefix.trim_start_matches('/')
        )
    }

    /// The store URL of `prefix` with everything needed to reach this member: for a member
    /// started with TLS, `etcd://127.0.0.1:PORT/PREFIX?ca=…&cert=…&key=…`; otherwise
    /// [`LocalEtcd::url`].
    pub fn url_tls(&self, prefix: &str) -> String {
        match &self.tls {
            Some(tls) => format!(
                "{}?ca={}&cert={}&key={}",
                self.url(prefix),
                tls.ca.display(),
                tls.client_cert.display(),
                tls.client_key.display()
            ),
            None => self.url(prefix),
        }
    }

    /// The certificates of a member started with TLS.
    pub fn tls(&self) -> Option<&LocalTls> {
        self.tls.as_ref()
    }

    /// A client of this member, over TLS with the client certificate if it has TLS, for a
    /// test that reads or writes etcd behind the store's back.
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        let url = match self.url_tls("").parse::<StoreLocation>() {
            Ok(StoreLocation::Etcd(url)) => url,
            other => bail!("the member's own URL does not parse: {other:?}"),
        };
        Ok(super::connect_client(&url).await?)
    }

    /// What an operator does for a member out of space, once the data it no longer needs is
    /// deleted: compacts its history up to now, defragments it, and disarms its alarms.
    pub async fn free_space(&self) -> anyhow::Result<()> {
        use etcd_client::{AlarmAction, AlarmOptions, AlarmType, CompactionOptions};
        let mut client = self.client().await?;
        let head = client
            .get("/", None)
            .await?
            .header()
            .context("no header")?
            .revision();
        let physical = CompactionOptions::new().with_physical();
        client.compact(head, Some(physical)).await?;
        client.defragment().await?;
        let raised = client
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await?;
        for alarm in raised.alarms() {
            let mut options = AlarmOptions::new();
            options.with_member(alarm.member_id());
            client
                .alarm(AlarmAction::Deactivate, alarm.alarm(), Some(options))
                .await?;
        }
        Ok(())
    }

    /// Kills the member (SIGKILL); its data stays for [`LocalEtcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the member with SIGSTOP: it answers nothing, but its port still takes
    /// connections (the kernel accepts them), as a member stalled on its disk would.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen member go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill {signal}: {status}");
        }
    }

    /// Starts the member again on the same ports and data, and waits until it answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.run()
    }

    fn run(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        let log_path = self.dir.join("etcd.log");
        self.wait_healthy(&log_path)
    }

    /// Starts the member's process, its output going to `etcd.log` in its directory.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let name = self.name.clone();
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let initial = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{name}={peer}"));
        let log_path = self.dir.join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(self.tls_args())
            .args(
                self.auth_token
                    .iter()
                    .flat_map(|t| ["--auth-token", t.as_str()]),
            )
            .args(
                self.quota
                    .iter()
                    .flat_map(|q| ["--quota-backend-bytes".to_string(), q.to_string()]),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "etcd is not installed (no `etcd` on PATH): install the Debian package \
                 etcd-server (`apt-get install -y etcd-server`; scripts/test.sh does)"
            ),
            Err(e) => return Err(e).context("starting etcd"),
        };
        self.child = Some(child);
        Ok(())
    }

    /// With TLS, the member's certificate and CA, client certificates required, and `/health`
    /// on a plain metrics port.
    fn tls_args(&self) -> Vec<String> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--cert-file".into(),
            path(&tls.server_cert),
            "--key-file".into(),
            path(&tls.server_key),
            "--trusted-ca-file".into(),
            path(&tls.ca),
            "--client-cert-auth".into(),
            "--listen-metrics-urls".into(),
            format!("http://127.0.0.1:{}", self.health_port),
        ]
    }

    /// Polls `/health` until the member says it is healthy (it has a leader).
    fn wait_healthy(&mut self, log_path: &std::path::Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if health(self.health_port) {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                self.kill();
                bail!(
                    "etcd on 127.0.0.1:{} {} ; its last log lines:\n{}",
                    self.client_port,
                    if exited {
                        "exited"
                    } else {
                        "did not become healthy within 30 s"
                    },
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the member on `port` answers `GET /health` with `"health":"true"`.
fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A new directory under the system's temporary directory.
fn fresh_dir() -> anyhow::Result<PathBuf> {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "troupe-etcd-{}-{}-{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes an ES256 key pair for JWT tokens into `dir`; returns the `--auth-token` value that
/// names it.
fn jwt_keys(dir: &std::path::Path) -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate().context("generating a JWT signing key")?;
    let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
    std::fs::write(&private, key.serialize_pem())?;
    std::fs::write(&public, key.public_key_pem())?;
    Ok(format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=10m",
        public.display(),
        private.display()
    ))
}

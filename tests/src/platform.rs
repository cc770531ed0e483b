//! The one way a test gets a running Troupe: [`Platform::builder`] names what the test needs
//! (the example platform, extra YAML, server flags, agents), [`PlatformBuilder::start`] brings
//! it up in a fresh temporary directory, and the [`Platform`] keeps everything alive until the
//! test ends.
//!
//! Layout of that directory: the server's data directory is `data/`; agent `NAME` keeps its
//! state in `NAME-state/` and writes manifests under `NAME-target/`, so a restarted agent (or
//! a twin given a copy of its state) finds its identity where the first one left it.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::kube_api::KubeApi;
use crate::{Agent, PATIENCE, Server, eventually, examples_dir, success};

/// The example pipeline (development → staging → production) requiring nothing on any
/// edge: no approval, no gate. A user's apply may point a binding at a release only where the
/// pipeline requires nothing on the way in, so a test that binds releases directly into
/// production (and is not about promotion) applies this first: see [`PlatformBuilder::ungated`].
pub const UNGATED_PIPELINE: &str = "apiVersion: troupe.dev/v1alpha1
kind: DeploymentPipeline
metadata: {name: default, namespace: acme}
spec:
  promotionPaths:
    - sourceEnvironment: development
      targets: [{environment: staging}]
    - sourceEnvironment: staging
      targets: [{environment: production}]
";

/// The people the promotion tests act as (`--as NAME`, impersonated by the admin token):
/// alice, bob, carol, dave and mallory are developers everywhere, ci is a CI publisher. A
/// test that is about promotion rules, not access, applies this: see
/// [`PlatformBuilder::people`].
pub const PEOPLE: &str = "apiVersion: troupe.dev/v1alpha1
kind: ClusterRoleBinding
metadata: {name: test-developers}
spec:
  roleRef: {kind: ClusterRole, name: developer}
  subjects:
    - {kind: User, name: alice}
    - {kind: User, name: bob}
    - {kind: User, name: carol}
    - {kind: User, name: dave}
    - {kind: User, name: mallory}
---
apiVersion: troupe.dev/v1alpha1
kind: ClusterRoleBinding
metadata: {name: test-ci}
spec:
  roleRef: {kind: ClusterRole, name: ci-publisher}
  subjects: [{kind: User, name: ci}]
";

/// What [`PlatformBuilder::start`] sets up, in order: a server with the flags, the example
/// platform, its samples, the extra YAML, then the agents.
#[derive(Default)]
pub struct PlatformBuilder {
    examples: bool,
    samples: bool,
    yaml: Vec<String>,
    args: Vec<String>,
    fixed_agent_port: bool,
    agents: Vec<(String, String)>,
}

impl PlatformBuilder {
    /// Applies the example platform (`examples/`): namespace acme, DataPlane local, three
    /// environments, the pipeline, project shop and component api.
    pub fn examples(mut self) -> Self {
        self.examples = true;
        self
    }

    /// Applies the examples and then the samples in `examples/samples/`.
    pub fn samples(mut self) -> Self {
        self.examples = true;
        self.samples = true;
        self
    }

    /// Applies `yaml` (one or more documents) after the examples.
    pub fn apply(mut self, yaml: &str) -> Self {
        self.yaml.push(yaml.to_string());
        self
    }

    /// Replaces the example pipeline by [`UNGATED_PIPELINE`], so the test may bind releases
    /// directly into every environment.
    pub fn ungated(self) -> Self {
        self.apply(UNGATED_PIPELINE)
    }

    /// Grants the [`PEOPLE`] their roles, so a test may act as them with `--as`.
    pub fn people(self) -> Self {
        self.apply(PEOPLE)
    }

    /// Runs the server with `--dev`: an embedded agent for acme/local writing under
    /// `DATA_DIR/dataplane-local/`.
    pub fn dev(self) -> Self {
        self.args(&["--dev"])
    }

    /// Extra `troupe server` arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Serves the agent endpoint on one port for the platform's whole life, so agents
    /// reconnect to a restarted server.
    pub fn fixed_agent_port(mut self) -> Self {
        self.fixed_agent_port = true;
        self
    }

    /// Starts agent `name` for `data_plane` once the YAML is applied, registered with a fresh
    /// token; [`Platform::agent`] finds it.
    pub fn agent(mut self, data_plane: &str, name: &str) -> Self {
        self.agents.push((data_plane.to_string(), name.to_string()));
        self
    }

    /// Starts the platform; panics if any step fails.
    pub fn start(self) -> Platform {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut args = self.args;
        if self.fixed_agent_port {
            args.extend([
                "--agent-listen".to_string(),
                format!("127.0.0.1:{}", free_port()),
            ]);
        }
        let server = Server::start(&dir.path().join("data"), &args);
        let mut platform = Platform {
            server,
            agents: Vec::new(),
            args,
            dir,
        };
        let mut dirs = Vec::new();
        if self.examples {
            dirs.push(examples_dir());
        }
        if self.samples {
            dirs.push(examples_dir().join("samples"));
        }
        for dir in dirs {
            success(&platform.cli(&["apply", "-f", dir.to_str().unwrap()]));
        }
        if self.examples {
            // The deploy controller notes the component's latest release in its status, which
            // changes its resourceVersion: a test that reads the component and applies it back
            // must not race that write.
            eventually(
                "the deploy controller notes acme/api's latest release",
                PATIENCE,
                || {
                    let yaml = platform.get_text("comp", "acme", "api", "yaml")?;
                    if yaml.contains("latestRelease:") {
                        Ok(())
                    } else {
                        Err(yaml)
                    }
                },
            );
        }
        for yaml in &self.yaml {
            success(&platform.cli_with_stdin(&["apply", "-f", "-"], Some(yaml)));
        }
        for (data_plane, name) in &self.agents {
            let agent = platform.register_agent(data_plane, name);
            platform.agents.push(agent);
        }
        platform
    }
}

/// A running platform: a `troupe server` over a data directory in a temporary directory, and
/// the agents the builder started. It dereferences to its [`Server`]; dropping it stops every
/// process before the directory goes.
pub struct Platform {
    server: Server,
    /// The agents [`PlatformBuilder::agent`] started, in that order.
    pub agents: Vec<Agent>,
    args: Vec<String>,
    // Last, so the processes above are gone before their directories are removed.
    dir: tempfile::TempDir,
}

impl Platform {
    /// A builder for a platform with nothing applied and no agent.
    pub fn builder() -> PlatformBuilder {
        PlatformBuilder::default()
    }

    /// The temporary directory everything lives in.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The agent the builder started as `name`.
    pub fn agent(&self, name: &str) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no running agent {name}"))
    }

    /// Where agent `name` writes manifests, whether or not it runs.
    pub fn agent_target(&self, name: &str) -> PathBuf {
        self.root().join(format!("{name}-target"))
    }

    /// Where agent `name` keeps its state, whether or not it runs.
    pub fn agent_state_dir(&self, name: &str) -> PathBuf {
        self.root().join(format!("{name}-state"))
    }

    /// Starts agent `name` for `data_plane`, registered with a fresh one-hour token.
    pub fn register_agent(&self, data_plane: &str, name: &str) -> Agent {
        let token = self.token(data_plane, "1h");
        self.start_agent(&self.agent_url(), data_plane, name, Some(&token))
    }

    /// [`Platform::register_agent`] with `extra` agent arguments (`--allow-kinds …`).
    pub fn register_agent_with(&self, data_plane: &str, name: &str, extra: &[&str]) -> Agent {
        let token = self.token(data_plane, "1h");
        Agent::start_with(
            &self.agent_url(),
            data_plane,
            Some(&token),
            name,
            &self.agent_state_dir(name),
            &self.agent_target(name),
            extra,
        )
    }

    /// Starts agent `name` for `data_plane` with the Kubernetes applier against `kube`,
    /// registered with a fresh one-hour token and resyncing every `resync_seconds`; its
    /// kubeconfig is `NAME-kubeconfig` in [`Platform::root`].
    pub fn register_kube_agent(
        &self,
        data_plane: &str,
        name: &str,
        kube: &KubeApi,
        resync_seconds: u64,
    ) -> Agent {
        self.register_kube_agent_with(data_plane, name, kube, resync_seconds, &[])
    }

    /// [`Platform::register_kube_agent`] with `extra` agent arguments (`--allow-kinds …`).
    pub fn register_kube_agent_with(
        &self,
        data_plane: &str,
        name: &str,
        kube: &KubeApi,
        resync_seconds: u64,
        extra: &[&str],
    ) -> Agent {
        let kubeconfig = self.root().join(format!("{name}-kubeconfig"));
        kube.write_kubeconfig(&kubeconfig)
            .expect("writing the agent's kubeconfig");
        let token = self.token(data_plane, "1h");
        Agent::start_kubernetes(
            &self.agent_url(),
            data_plane,
            Some(&token),
            name,
            &self.agent_state_dir(name),
            &kubeconfig,
            resync_seconds,
            extra,
        )
    }

    /// Starts agent `name` for `data_plane` again, with the identity in its state directory.
    pub fn restart_agent(&self, data_plane: &str, name: &str) -> Agent {
        self.start_agent(&self.agent_url(), data_plane, name, None)
    }

    /// Starts agent `name` for `data_plane` against `control_plane` (the agent endpoint's
    /// `https://…`, or a proxy in front of it), with `token` if given.
    pub fn start_agent(
        &self,
        control_plane: &str,
        data_plane: &str,
        name: &str,
        token: Option<&str>,
    ) -> Agent {
        Agent::start(
            control_plane,
            data_plane,
            token,
            name,
            &self.agent_state_dir(name),
            &self.agent_target(name),
        )
    }

    /// Kills the server with SIGKILL: no shutdown hook runs.
    pub fn kill_server(&mut self) {
        self.server.kill();
    }

    /// Sends the server SIGTERM and waits for it to exit; returns whether it exited cleanly.
    pub fn terminate_server(&mut self) -> bool {
        self.server.terminate()
    }

    /// Starts the server again as [`Platform::restart_server`] does, with `args` added to its
    /// flags from now on.
    pub fn restart_server_with(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self.restart_server();
    }

    /// Starts the server again as [`Platform::restart_server`] does, without `args` among
    /// its flags from now on.
    pub fn restart_server_without(&mut self, args: &[&str]) {
        self.args.retain(|a| !args.contains(&a.as_str()));
        self.restart_server();
    }

    /// Starts the server again over the same data directory with the same flags (a fixed
    /// agent port stays), killing it first if it still runs. Its client address changes.
    pub fn restart_server(&mut self) {
        self.server.stop();
        let data_dir = self.server.data_dir.clone();
        self.server = Server::start(&data_dir, &self.args);
    }
}

impl Deref for Platform {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

/// A free loopback port (bound and released; good enough for a test's restarts).
/// A TCP port nothing listens on now, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

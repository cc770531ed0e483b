//! Real `troupe` and `troupe-agent` processes over TCP with mTLS: registration, delivery,
//! updates, prunes, undeploy, and the faults the agent protocol must survive (DESIGN §6):
//! a killed agent, a restarted control plane, cut connections, a second agent with the same
//! identity, foreign and expired credentials, an oversized release next to a normal one.
//!
//! Every test asserts the end state on the applier's side (files under the agent's target)
//! and in the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use troupe_tests::{
    Agent, Proxy, Server, examples_dir, free_port, release_files, stderr, stdout, success,
    troupe_agent_bin, wait_until, workspace_root,
};

fn platform(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), extra);
    success(&server.cli(&["apply", "-f", examples_dir().to_str().unwrap()]));
    (server, dir)
}

fn files(target: &Path, name: &str) -> BTreeMap<String, String> {
    release_files(target, "acme", name)
}

fn deployment(target: &Path, name: &str) -> String {
    files(target, name)
        .into_iter()
        .find(|(f, _)| f.starts_with("deployment_"))
        .map(|(_, text)| text)
        .unwrap_or_default()
}

/// `troupe status api -n acme -o json`, the entry of `env`.
fn status_of(server: &Server, env: &str) -> Value {
    let out = success(&server.cli(&["status", "api", "-n", "acme", "-o", "json"]));
    let doc: Value = serde_json::from_str(&out).unwrap();
    doc["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["environment"] == env)
        .cloned()
        .unwrap_or(Value::Null)
}

fn ready(server: &Server, env: &str) -> bool {
    status_of(server, env)["ready"] == true
}

fn get_json(server: &Server, kind: &str, name: &str) -> Option<Value> {
    server.get_json(kind, "acme", name)
}

fn start_agent(url: &str, root: &Path, name: &str, token: Option<&str>) -> Agent {
    Agent::start(
        url,
        "acme/local",
        token,
        &root.join(format!("{name}-state")),
        &root.join(format!("{name}-target")),
    )
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn release_dir(agent: &Agent, name: &str) -> PathBuf {
    agent.target.join("acme").join(name)
}

#[test]
fn an_agent_registers_receives_its_releases_and_prunes_only_what_left() {
    let (server, dir) = platform(&[]);
    let token = server.token("acme/local", "1h");
    let agent = start_agent(&server.agent_url(), dir.path(), "a", Some(&token));
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    server.bind("api", "staging", &release, "");

    wait_until("both environments are ready", || {
        ready(&server, "development") && ready(&server, "staging")
    });
    assert!(deployment(&agent.target, "api-development").contains("kind: Deployment"));
    assert_eq!(files(&agent.target, "api-staging").len(), 5);
    let dp = get_json(&server, "dp", "local").unwrap();
    assert_eq!(dp["status"]["agentConnection"]["connected"], true, "{dp}");
    assert_eq!(
        dp["status"]["conditions"][0]["reason"], "AgentConnected",
        "{dp}"
    );
    let rel = get_json(&server, "release", "api-staging").unwrap();
    assert_eq!(
        rel["status"]["appliedGeneration"], rel["metadata"]["generation"],
        "{rel}"
    );
    assert_eq!(
        rel["status"]["resources"].as_array().unwrap().len(),
        5,
        "{rel}"
    );

    // An override reaches the files; the other environment's files are not rewritten.
    let staging_deployment = std::fs::read_dir(release_dir(&agent, "api-staging"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("deployment_"))
        .unwrap();
    let before = modified(&staging_deployment);
    server.bind(
        "api",
        "development",
        &release,
        "  componentTypeEnvironmentConfigs: {replicas: 3}\n",
    );
    wait_until("replicas 3 is applied", || {
        deployment(&agent.target, "api-development").contains("replicas: 3")
    });
    wait_until("development is ready again", || {
        ready(&server, "development")
    });
    assert_eq!(modified(&staging_deployment), before);

    // Undeploy: the files go, then the Release leaves the store; the binding says why.
    server.bind("api", "development", &release, "  state: Undeploy\n");
    wait_until("development is pruned", || {
        !release_dir(&agent, "api-development").exists()
            && get_json(&server, "release", "api-development").is_none()
    });
    assert_eq!(status_of(&server, "development")["reason"], "Undeployed");

    // Deleting a binding prunes its release too; nothing else moves.
    let out = success(&server.cli(&["delete", "rb", "api-staging", "-n", "acme"]));
    assert!(
        out.contains("Release acme/api-staging deleted once its data plane has pruned its objects"),
        "{out}"
    );
    wait_until("staging is pruned", || {
        !release_dir(&agent, "api-staging").exists()
            && get_json(&server, "release", "api-staging").is_none()
    });
    assert!(
        !agent.target.join("acme").exists(),
        "empty folders are removed too"
    );

    // Deleting the project takes the bindings with it, and the agent prunes their releases.
    server.bind("api", "production", &release, "");
    wait_until("production is ready", || ready(&server, "production"));
    success(&server.cli(&["delete", "project", "shop", "-n", "acme"]));
    wait_until("production is pruned", || {
        !release_dir(&agent, "api-production").exists()
            && get_json(&server, "release", "api-production").is_none()
    });
}

#[test]
fn a_killed_agent_catches_up_on_restart_without_reapplying_what_is_unchanged() {
    let (server, dir) = platform(&[]);
    let token = server.token("acme/local", "1h");
    let agent = start_agent(&server.agent_url(), dir.path(), "a", Some(&token));
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    wait_until("development is ready", || ready(&server, "development"));
    let dev = release_dir(&agent, "api-development");
    let times: Vec<_> = std::fs::read_dir(&dev)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), modified(&e.path())))
        .collect();
    agent.kill();

    // While the agent is away, its files stay and the new binding waits for it.
    server.bind("api", "staging", &release, "");
    wait_until("staging says it waits for the agent", || {
        status_of(&server, "staging")["reason"] == "AgentDisconnected"
    });
    let dp = get_json(&server, "dp", "local").unwrap();
    assert_ne!(dp["status"]["agentConnection"]["connected"], true, "{dp}");

    // Restarted without a token: it reuses its identity and catches up.
    let agent = start_agent(&server.agent_url(), dir.path(), "a", None);
    wait_until("staging is ready", || ready(&server, "staging"));
    assert_eq!(files(&agent.target, "api-staging").len(), 5);
    for (path, time) in times {
        assert_eq!(modified(&path), time, "{} was rewritten", path.display());
    }
}

#[test]
fn a_control_plane_restart_prunes_nothing_and_the_agent_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent_listen = format!("127.0.0.1:{}", free_port());
    let args = ["--agent-listen", agent_listen.as_str()];
    let server = Server::start_with(&data, &args);
    success(&server.cli(&["apply", "-f", examples_dir().to_str().unwrap()]));
    let token = server.token("acme/local", "1h");
    let agent = start_agent(&server.agent_url(), dir.path(), "a", Some(&token));
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    wait_until("development is ready", || ready(&server, "development"));
    server.kill();

    // The agent keeps its files while the control plane is gone (it resyncs every second).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(files(&agent.target, "api-development").len(), 5);

    let server = Server::start_with(&data, &args);
    server.bind("api", "staging", &release, "");
    wait_until("staging is ready after the restart", || {
        ready(&server, "staging")
    });
    success(&server.cli(&["delete", "rb", "api-development", "-n", "acme"]));
    wait_until("development is pruned", || {
        !release_dir(&agent, "api-development").exists()
            && get_json(&server, "release", "api-development").is_none()
    });
    assert_eq!(files(&agent.target, "api-staging").len(), 5);
}

#[test]
fn cut_and_slow_connections_lose_no_update() {
    let (server, dir) = platform(&[]);
    let proxy = Proxy::start(&server.agent_addr);
    let token = server.token("acme/local", "1h");
    let agent = start_agent(&proxy.url(), dir.path(), "a", Some(&token));
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    wait_until("development is ready", || ready(&server, "development"));

    for replicas in 2..=6 {
        if replicas == 4 {
            proxy.delay(100);
        }
        server.bind(
            "api",
            "development",
            &release,
            &format!("  componentTypeEnvironmentConfigs: {{replicas: {replicas}}}\n"),
        );
        std::thread::sleep(Duration::from_millis(30 * replicas));
        proxy.cut();
    }
    proxy.delay(0);
    wait_until("the last update is applied and acknowledged", || {
        let rel = get_json(&server, "release", "api-development").unwrap();
        deployment(&agent.target, "api-development").contains("replicas: 6")
            && rel["status"]["appliedGeneration"] == rel["metadata"]["generation"]
            && ready(&server, "development")
    });
}

#[test]
fn credentials_are_checked_and_an_agent_sees_only_its_own_data_plane() {
    let (server, dir) = platform(&[]);
    let run_agent = |data_plane: &str, token: &str, name: &str| {
        Command::new(troupe_agent_bin())
            .args([
                "--control-plane",
                &server.agent_url(),
                "--dataplane",
                data_plane,
            ])
            .args(["--token", token, "--apply"])
            .arg(format!("dir:{}", dir.path().join(name).display()))
            .arg("--state-dir")
            .arg(dir.path().join(format!("{name}-state")))
            .output()
            .unwrap()
    };
    // A token made for another data plane.
    let edge_token = server.token("acme/edge", "1h");
    let out = run_agent("acme/local", &edge_token, "x");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("registers data plane acme/edge, not acme/local")
            && stderr(&out).contains("PermissionDenied"),
        "{}",
        stderr(&out)
    );
    // An expired token.
    let short = server.token("acme/local", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    let out = run_agent("acme/local", &short, "y");
    assert!(
        stderr(&out).contains("has expired") && stderr(&out).contains("Unauthenticated"),
        "{}",
        stderr(&out)
    );
    // No client certificate: the stream is refused.
    let out = Command::new(troupe_tests::grpcurl_bin())
        .args(["-insecure", "-import-path"])
        .arg(workspace_root().join("proto"))
        .args(["-proto", "troupe/v1alpha1/agent_service.proto", "-d", "{}"])
        .args([&server.agent_addr, "troupe.v1alpha1.AgentService/Session"])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("Unauthenticated"), "{}", stderr(&out));

    // The edge agent (registered as DataPlane acme/edge, created at registration) gets
    // nothing of acme/local's releases.
    let local_token = server.token("acme/local", "1h");
    let local = start_agent(&server.agent_url(), dir.path(), "local", Some(&local_token));
    let edge = Agent::start(
        &server.agent_url(),
        "acme/edge",
        Some(&edge_token),
        &dir.path().join("edge-state"),
        &dir.path().join("edge-target"),
    );
    let release = server.cut_release("api");
    server.bind("api", "development", &release, "");
    wait_until("edge is connected and development ready", || {
        let edge = get_json(&server, "dp", "edge");
        edge.is_some_and(|dp| dp["status"]["agentConnection"]["connected"] == true)
            && ready(&server, "development")
    });
    assert_eq!(files(&local.target, "api-development").len(), 5);
    assert!(!edge.target.join("acme").exists());

    // A second agent with local's identity displaces the first; one session at a time, and
    // the survivor gets every later change.
    copy_dir(&local.state_dir, &dir.path().join("twin-state"));
    let twin = Agent::start(
        &server.agent_url(),
        "acme/local",
        None,
        &dir.path().join("twin-state"),
        &dir.path().join("twin-target"),
    );
    wait_until("the twin holds development too", || {
        files(&twin.target, "api-development").len() == 5
    });
    let dp = get_json(&server, "dp", "local").unwrap();
    assert_eq!(
        dp["status"]["agentConnection"]["connectedAgents"], 1,
        "{dp}"
    );
    local.kill();
    server.bind("api", "staging", &release, "");
    wait_until("the twin gets staging", || {
        files(&twin.target, "api-staging").len() == 5 && ready(&server, "staging")
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn an_oversized_release_fails_alone() {
    let (server, dir) = platform(&["--agent-max-release-bytes", "40000"]);
    let token = server.token("acme/local", "1h");
    let agent = start_agent(&server.agent_url(), dir.path(), "a", Some(&token));
    let release = server.cut_release("api");
    let big = "x".repeat(60_000);
    server.bind(
        "api",
        "development",
        &release,
        &format!("  workloadOverrides: {{container: {{env: [{{key: BIG, value: {big}}}]}}}}\n"),
    );
    server.bind("api", "staging", &release, "");
    wait_until("staging is ready and development failed", || {
        ready(&server, "staging") && status_of(&server, "development")["reason"] == "ApplyFailed"
    });
    let dev = status_of(&server, "development");
    assert!(
        dev["message"]
            .as_str()
            .unwrap()
            .contains("--agent-max-release-bytes"),
        "{dev}"
    );
    let rb = get_json(&server, "rb", "api-development").unwrap();
    let degraded = rb["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap();
    assert_eq!(degraded["status"], "True", "{rb}");
    assert!(files(&agent.target, "api-development").is_empty());

    // Shrunk back under the limit, it goes through.
    server.bind("api", "development", &release, "");
    wait_until("development is ready", || ready(&server, "development"));
}

#[test]
fn dev_mode_applies_a_new_component_to_its_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--dev"]);
    let component = "apiVersion: troupe.dev/v1alpha1
kind: Component
metadata: {name: hello, namespace: acme}
spec:
  owner: {projectName: shop}
  componentType: {name: deployment/service}
  autoDeploy: true
---
apiVersion: troupe.dev/v1alpha1
kind: Workload
metadata: {name: hello, namespace: acme}
spec:
  owner: {projectName: shop, componentName: hello}
  container: {image: ghcr.io/acme/hello:1.0.0}
";
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(component)));
    let local = dir.path().join("dataplane-local").join("acme");
    wait_until("hello is ready in development", || {
        let out = server.cli(&["status", "hello", "-n", "acme", "-o", "json"]);
        let Ok(doc) = serde_json::from_str::<Value>(&stdout(&out)) else {
            return false;
        };
        doc["environments"][0]["environment"] == "development"
            && doc["environments"][0]["ready"] == true
    });
    let written: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        written.iter().any(|d| d.starts_with("hello")),
        "{written:?}"
    );
}

#[test]
fn a_cluster_data_plane_agent_serves_the_environments_on_it() {
    let (server, dir) = platform(&[]);
    // A ClusterDataPlane with the example's gateways, claimed by its agent at registration
    // (a token for a bare `NAME` is a ClusterDataPlane's); the `edge` environment is on it.
    let local = server.cli(&["get", "dp", "local", "-n", "acme", "-o", "json"]);
    let spec = serde_json::from_str::<Value>(&stdout(&local)).unwrap()["spec"].to_string();
    let shared = format!(
        "apiVersion: troupe.dev/v1alpha1
kind: ClusterDataPlane
metadata: {{name: shared}}
spec: {spec}
---
apiVersion: troupe.dev/v1alpha1
kind: Environment
metadata: {{name: edge, namespace: acme}}
spec: {{dataPlaneRef: {{kind: ClusterDataPlane, name: shared}}}}
"
    );
    success(&server.cli_with_stdin(&["apply", "-f", "-"], Some(&shared)));
    let token = server.token("shared", "1h");
    let agent = Agent::start(
        &server.agent_url(),
        "shared",
        Some(&token),
        &dir.path().join("shared-state"),
        &dir.path().join("shared-target"),
    );
    let release = server.cut_release("api");
    server.bind("api", "edge", &release, "");
    server.bind("api", "development", &release, "");
    wait_until("edge is ready", || ready(&server, "edge"));
    assert_eq!(files(&agent.target, "api-edge").len(), 5);
    // development is on acme/local, which has no agent: the shared agent never sees it.
    wait_until("development waits for its own agent", || {
        status_of(&server, "development")["reason"] == "AgentDisconnected"
    });
    assert!(files(&agent.target, "api-development").is_empty());
    let cdp = server.cli(&["get", "cdp", "shared", "-o", "json"]);
    let cdp: Value = serde_json::from_str(&stdout(&cdp)).unwrap();
    assert_eq!(cdp["status"]["agentConnection"]["connected"], true, "{cdp}");
}
